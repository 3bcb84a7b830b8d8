"""Getting one file from a URL: resumable HTTP transfers, Google Drive's confirmation page, retries.

A transfer cut off is resumed from its `.part` file (also by a later run of the command); a source
that cannot give the file raises `SourceFailed`, so that the caller can try the next mirror.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

ATTEMPTS = 4
RETRY_WAIT_S = 2.0
TIMEOUT_S = 60
CHUNK = 1 << 20
RETRYABLE_HTTP = (408, 425, 429, 500, 502, 503, 504)
DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com")


class SourceFailed(Exception):
    """One URL did not yield the file; the next mirror may."""


def is_url(value: str) -> bool:
    return urllib.parse.urlsplit(value).scheme in ("http", "https")


def _drive_download_url(url: str) -> str:
    """A Drive sharing link (`/file/d/ID/view`, `/uc?id=ID`) as a direct-download request."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    segments = parts.path.split("/")
    if "d" in segments and segments.index("d") + 1 < len(segments):
        query["id"] = segments[segments.index("d") + 1]
    if "id" not in query:
        return url
    query.setdefault("export", "download")
    return urllib.parse.urlunsplit(("https", parts.netloc, "/uc", urllib.parse.urlencode(query), ""))


class _ConfirmPage(HTMLParser):
    """Finds the download link on Google Drive's "can't scan this file for viruses" page."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.link: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None and values.get("action"):
            self.action, self._in_form = values["action"], True
        elif tag == "input" and self._in_form and values.get("type") == "hidden" and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")
        elif tag == "a" and self.link is None and "confirm=" in values.get("href", ""):
            self.link = values["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def _confirmed_url(page: bytes, base: str, cookies: CookieJar) -> str | None:
    """Where the confirmation page sends the download, or None if it is no confirmation page."""
    parser = _ConfirmPage()
    parser.feed(page.decode("utf-8", "replace"))
    if parser.action and "id" in parser.fields:
        return urllib.parse.urljoin(base, parser.action) + "?" + urllib.parse.urlencode(parser.fields)
    if parser.link:
        return urllib.parse.urljoin(base, parser.link)
    token = next((c.value for c in cookies if c.name.startswith("download_warning")), None)
    if token:
        separator = "&" if urllib.parse.urlsplit(base).query else "?"
        return f"{base}{separator}confirm={urllib.parse.quote(token)}"
    return None


def _is_html(response: http.client.HTTPResponse) -> bool:
    return response.headers.get_content_type() == "text/html"


class _Transfer:
    """Resumable HTTP GET into a `.part` file, through a Drive-style confirmation page if one comes."""

    def __init__(self, url: str):
        self.url = url
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def _request(self, url: str, start: int) -> http.client.HTTPResponse:
        headers = {"User-Agent": "droptune", **({"Range": f"bytes={start}-"} if start else {})}
        return self.opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)

    def _open(self, start: int) -> http.client.HTTPResponse:
        response = self._request(self.url, start)
        if not _is_html(response):
            return response
        with response:
            page, base = response.read(1 << 20), response.geturl()
        confirmed = _confirmed_url(page, base, self.cookies)
        if confirmed is None:
            raise SourceFailed("got an HTML page instead of the file (a sign-in, quota or removed-file page?)")
        response = self._request(confirmed, start)
        if _is_html(response):
            response.close()
            raise SourceFailed("the download was still refused after confirming (Google Drive's daily quota?)")
        return response

    def into(self, part: Path) -> None:
        """Append the rest of the file to `part`; raises OSError or HTTPException when cut off."""
        start = part.stat().st_size if part.exists() else 0
        try:
            response = self._open(start)
        except urllib.error.HTTPError as error:
            if error.code == 416 and start:
                complete = error.headers.get("Content-Range", "").endswith(f"/{start}")
                error.close()
                if complete:
                    return
                part.unlink()
                raise ConnectionError("the partial file does not fit the server's copy: starting over") from None
            error.close()
            if error.code in RETRYABLE_HTTP:
                raise ConnectionError(f"HTTP {error.code} {error.reason}") from None
            raise SourceFailed(f"HTTP {error.code} {error.reason}") from None
        with response:
            if response.status == 206:
                content_range = response.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {start}-"):
                    raise SourceFailed(f"asked for bytes {start}- but got Content-Range {content_range!r}")
            else:
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            with part.open("ab" if start else "wb") as out, \
                    tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=part.name.rsplit(".", 2)[0]) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        size = part.stat().st_size
        if total is not None and size != total:
            raise ConnectionError(f"connection closed at {size:,} of {total:,} bytes")


def part_file(url: str, destination: Path) -> Path:
    """Where a transfer of `url` to `destination` grows: one file per URL, so that trying the next mirror keeps what
    an earlier one gave for a later run to resume."""
    return destination.with_name(f"{destination.name}.{hashlib.sha256(url.encode()).hexdigest()[:8]}.part")


def _fetch_http(url: str, destination: Path) -> None:
    """Download `url` to `destination`, retrying and resuming a cut transfer from its `.part` file."""
    part = part_file(url, destination)
    host = urllib.parse.urlsplit(url).hostname
    transfer = _Transfer(_drive_download_url(url) if host in DRIVE_HOSTS else url)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            transfer.into(part)
            break
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            if isinstance(reason, socket.gaierror):
                raise SourceFailed(f"cannot resolve {host} ({reason.strerror or reason}; no network?)") from None
            done = part.stat().st_size if part.exists() else 0
            if attempt == ATTEMPTS:
                progress = f", with {done:,} bytes kept: run the command again to resume from {part}" if done else ""
                raise SourceFailed(f"failed {ATTEMPTS} times ({reason}){progress}") from None
            if done:
                log.warning("download of %s interrupted at %s bytes (%s); resuming", url, f"{done:,}", reason)
            else:
                log.warning("download of %s failed (%s); trying again", url, reason)
            time.sleep(RETRY_WAIT_S * attempt)
    part.replace(destination)
    for other in destination.parent.glob(f"{glob.escape(destination.name)}.*.part"):
        other.unlink()


def _fetch_drive_with_gdown(gdown, url: str, destination: Path) -> None:
    try:
        result = gdown.download(url=url, output=str(destination), quiet=False, resume=True)
    except Exception as error:  # gdown's own error types vary across its versions
        raise SourceFailed(f"gdown could not download it: {error}") from None
    if result is None or not destination.is_file():
        raise SourceFailed("gdown could not download it (quota exceeded or file removed?)")


def fetch(url: str, destination: Path) -> None:
    """Download a URL; Google Drive through gdown when it is installed, since it tracks Drive's changes."""
    if urllib.parse.urlsplit(url).hostname in DRIVE_HOSTS:
        try:
            import gdown
        except ImportError:
            pass
        else:
            _fetch_drive_with_gdown(gdown, url, destination)
            return
    _fetch_http(url, destination)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as stream, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=f"checking {path.name}") as bar:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()
