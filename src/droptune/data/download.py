"""`droptune data download`: fetch, check and lay out the five DomainBed benchmarks.

Links die, archives change and transfers break, so each step checks its result. Transfers
resume where they stopped; known MD5 sums are compared; archives are extracted into a staging
folder and moved into place only when complete; `.droptune-complete` is written last, once the
image counts match the registry. The sources are DomainBed's (`domainbed/scripts/download.py`),
with mirrors where known, and `--source` replaces any of them with another URL or a local file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from droptune.data.registry import DatasetSpec, get_spec
from droptune.data.verify import verify
from droptune.errors import DroptuneError

log = logging.getLogger(__name__)

MARKER = ".droptune-complete"
DOWNLOADS = ".droptune-downloads"
STAGING = ".droptune-staging"
ATTEMPTS = 4
RETRY_WAIT_S = 2.0
TIMEOUT_S = 60
CHUNK = 1 << 20
RETRYABLE_HTTP = (408, 425, 429, 500, 502, 503, 504)
DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com")


@dataclass(frozen=True)
class Resource:
    """One file a dataset is built from: where to get it and, where known, its MD5."""

    key: str
    filename: str
    urls: tuple[str, ...]
    md5: str | None = None

    @property
    def is_archive(self) -> bool:
        return self.filename.endswith((".zip", ".tar", ".tar.gz", ".tgz"))


@dataclass(frozen=True)
class Recipe:
    """How a registered dataset is built: its files, then `assemble(staging, spec, files) -> root`."""

    dataset: str
    resources: tuple[Resource, ...]
    assemble: Callable[[Path, DatasetSpec, dict[str, Path]], Path]


class SourceFailed(Exception):
    """One URL did not yield the file; the next mirror may."""


# ---- assembling the extracted archives into `<domain>/<class>/<image>` ----


def find_domains_root(staging: Path, spec: DatasetSpec) -> Path:
    """The extracted folder that holds the dataset's domain folders (PACS ships them in `kfold/`)."""
    wanted = set(spec.domains)
    level = [staging]
    for _ in range(4):
        for folder in level:
            if wanted <= {p.name for p in folder.iterdir() if p.is_dir()}:
                return folder
        level = sorted(p for folder in level for p in folder.iterdir() if p.is_dir())
    top = sorted(p.name for p in staging.iterdir())
    raise DroptuneError(f"the {spec.name} archive holds no folder with the domains {', '.join(spec.domains)} "
                        f"(its top level: {top}): is the source the right file?")


def _assemble_folders(staging: Path, spec: DatasetSpec, files: dict[str, Path]) -> Path:
    return find_domains_root(staging, spec)


def _safe_parts(name: str) -> tuple[str, ...] | None:
    """The parts of a relative path that stays inside its folder, else None."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path.parts


def _assemble_domain_net(staging: Path, spec: DatasetSpec, files: dict[str, Path]) -> Path:
    """DomainNet's folders, less the images DomainBed lists as duplicates."""
    root = find_domains_root(staging, spec)
    listing = files["duplicates"]
    removed = 0
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        parts = _safe_parts(entry)
        if parts is None or len(parts) != 3 or parts[0] not in spec.domains:
            raise DroptuneError(f"{listing} line {number}: expected <domain>/<class>/<image> with a DomainNet "
                                f"domain, got {entry!r}")
        path = root.joinpath(*parts)
        if path.is_file():
            path.unlink()
            removed += 1
    log.info("removed %d duplicate images listed in %s", removed, listing.name)
    return root


# DomainBed's choice of camera locations (the domains) and classes.
TERRA_LOCATIONS = ("38", "46", "100", "43")
TERRA_CLASSES = ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel")
TERRA_IMAGES_FOLDER = "eccv_18_all_images_sm"


def _assemble_terra_incognita(staging: Path, spec: DatasetSpec, files: dict[str, Path]) -> Path:
    """`location_<n>/<class>/<image>` from the camera-trap images and their annotations, as DomainBed does.

    An image annotated with two of the classes goes into both class folders.
    """
    images = staging / TERRA_IMAGES_FOLDER
    if not images.is_dir():
        raise DroptuneError(f"{files['images']} has no {TERRA_IMAGES_FOLDER}/ folder: expected Caltech Camera "
                            f"Traps' {TERRA_IMAGES_FOLDER}.tar.gz")
    found = sorted(staging.glob("*.json"))
    if len(found) != 1:
        raise DroptuneError(f"{files['annotations']} should hold one .json annotation file, "
                            f"found {[p.name for p in found]}")
    annotations = found[0]
    try:
        data = json.loads(annotations.read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        labels: dict[object, set[str]] = defaultdict(set)
        for annotation in data["annotations"]:
            labels[annotation["image_id"]].add(names[annotation["category_id"]])
        wanted = [(str(i["location"]), i["file_name"], labels[i["id"]]) for i in data["images"]]
    except (ValueError, KeyError, TypeError) as error:
        raise DroptuneError(f"{annotations} is not a Caltech Camera Traps annotation file "
                            f"(images, annotations, categories): {type(error).__name__} {error}") from None
    root = staging / spec.folder
    missing = []
    for location, file_name, classes in tqdm(wanted, desc="sorting TerraIncognita", unit="img"):
        chosen = sorted(classes.intersection(TERRA_CLASSES)) if location in TERRA_LOCATIONS else []
        parts = _safe_parts(file_name)
        if chosen and parts is None:
            raise DroptuneError(f"{annotations}: image file name {file_name!r} leaves the images folder")
        for cls in chosen:
            source = images.joinpath(*parts)
            if not source.is_file():
                missing.append(file_name)
                break
            destination = root / f"location_{location}" / cls / parts[-1]
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
    if not root.is_dir():
        raise DroptuneError(f"{annotations.name} annotates no image at locations {', '.join(TERRA_LOCATIONS)} "
                            f"with the classes {', '.join(TERRA_CLASSES)}: is it the Caltech Camera Traps file?")
    if missing:
        raise DroptuneError(f"{len(missing)} images annotated in {annotations.name} are not in {files['images']}, "
                            f"e.g. {missing[0]}: the two files do not belong together")
    return root


def _assemble_office31(staging: Path, spec: DatasetSpec, files: dict[str, Path]) -> Path:
    """The authors' archive keeps each domain's class folders in `<domain>/images/`: lift them one level."""
    found = find_domains_root(staging, spec)
    root = staging / spec.folder
    for domain in spec.domains:
        images = found / domain / "images"
        if not images.is_dir():
            raise DroptuneError(f"{files['images']} has no {domain}/images/ folder: expected the authors' "
                                "domain_adaptation_images.tar.gz")
        root.mkdir(exist_ok=True)
        images.rename(root / domain)
    return root


def _drive(file_id: str, **extra: str) -> str:
    return "https://drive.google.com/uc?" + urllib.parse.urlencode({"id": file_id, **extra})


DOMAIN_NET = "http://csr.bu.edu/ftp/visda/2019/multi-source"
LILA = "caltechcameratraps"

RECIPES: dict[str, Recipe] = {r.dataset: r for r in (
    Recipe("PACS", (Resource("PACS", "PACS.zip", (
        _drive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd"),
        # A GitHub copy of the same folders, pinned to a commit.
        "https://github.com/MachineLearning2020/Homework3-PACS/archive/"
        "33f7def03be34c3fbb1a4d5c97384ab602884833.zip",
    )),), _assemble_folders),
    Recipe("VLCS", (Resource("VLCS", "VLCS.tar.gz", (_drive("1skwblH1_okBwxWxmRsp9_qi15hyPpxg8"),)),),
           _assemble_folders),
    Recipe("OfficeHome", (Resource("office_home", "office_home.zip", (
        _drive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC"),
        _drive("0B81rNlvomiwed0V1YUxQdC1uOTg", resourcekey="0-2SNWq0CDAuWOBRRBL7ZZsw"),  # the authors' copy
    )),), _assemble_folders),
    # The authors' file (Saenko et al., 2010, linked from their project page); they publish no checksum,
    # so the image counts are the check. Office-Caltech-10 has no stable public source: see the README.
    Recipe("Office31", (Resource("images", "domain_adaptation_images.tar.gz", (
        _drive("0B4IapRTv9pJ1WGZVd1VDMmhwdlE"),
    )),), _assemble_office31),
    Recipe("TerraIncognita", (
        Resource("images", f"{TERRA_IMAGES_FOLDER}.tar.gz", (
            f"https://storage.googleapis.com/public-datasets-lila/{LILA}/{TERRA_IMAGES_FOLDER}.tar.gz",
            f"https://lilablobssc.blob.core.windows.net/{LILA}/{TERRA_IMAGES_FOLDER}.tar.gz",
        )),
        Resource("annotations", "caltech_camera_traps.json.zip", (
            f"https://storage.googleapis.com/public-datasets-lila/{LILA}/labels/caltech_camera_traps.json.zip",
            f"https://lilablobssc.blob.core.windows.net/{LILA}/labels/caltech_camera_traps.json.zip",
        )),
    ), _assemble_terra_incognita),
    Recipe("DomainNet", (
        Resource("clipart", "clipart.zip", (f"{DOMAIN_NET}/groundtruth/clipart.zip",),
                 "cd0d8f2d77a4e181449b78ed62bccf1e"),
        Resource("infograph", "infograph.zip", (f"{DOMAIN_NET}/infograph.zip",),
                 "720380b86f9e6ab4805bb38b6bd135f8"),
        Resource("painting", "painting.zip", (f"{DOMAIN_NET}/groundtruth/painting.zip",),
                 "1ae32cdb4f98fe7ab5eb0a351768abfd"),
        Resource("quickdraw", "quickdraw.zip", (f"{DOMAIN_NET}/quickdraw.zip",),
                 "bdc1b6f09f277da1a263389efe0c7a66"),
        Resource("real", "real.zip", (f"{DOMAIN_NET}/real.zip",), "dcc47055e8935767784b7162e7c7cca6"),
        Resource("sketch", "sketch.zip", (f"{DOMAIN_NET}/sketch.zip",), "658d8009644040ff7ce30bb2e820850f"),
        Resource("duplicates", "domain_net_duplicates.txt", tuple(
            f"https://raw.githubusercontent.com/facebookresearch/DomainBed/{ref}/domainbed/misc/"
            "domain_net_duplicates.txt" for ref in ("050aa5c866cb8010229ce1ebd2a6a34ea8103056", "main")
        )),
    ), _assemble_domain_net),
)}


def get_recipe(name: str) -> tuple[Recipe, DatasetSpec]:
    spec = get_spec(name)
    if spec is None or spec.name not in RECIPES:
        raise DroptuneError(f"no download recipe for {name!r}: expected one of {', '.join(RECIPES)}; "
                            "any other dataset is read from a <domain>/<class>/<image> folder as it is")
    return RECIPES[spec.name], spec


# ---- transfers ----


def _is_url(value: str) -> bool:
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
                         desc=part.name.removesuffix(".part")) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        size = part.stat().st_size
        if total is not None and size != total:
            raise ConnectionError(f"connection closed at {size:,} of {total:,} bytes")


def _fetch_http(url: str, destination: Path) -> None:
    """Download `url` to `destination`, retrying and resuming a cut transfer from its `.part` file."""
    part = destination.with_name(destination.name + ".part")
    origin = destination.with_name(destination.name + ".part-url")
    if part.exists() and (not origin.exists() or origin.read_text() != url):
        part.unlink()
    origin.write_text(url)
    transfer = _Transfer(_drive_download_url(url) if urllib.parse.urlsplit(url).hostname in DRIVE_HOSTS else url)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            transfer.into(part)
            break
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            done = part.stat().st_size if part.exists() else 0
            if attempt == ATTEMPTS:
                progress = f", with {done:,} bytes kept: run the command again to resume from {part}" if done else ""
                raise SourceFailed(f"failed {ATTEMPTS} times ({reason}){progress}") from None
            log.warning("download of %s interrupted at %s bytes (%s); resuming", url, f"{done:,}", reason)
            time.sleep(RETRY_WAIT_S * attempt)
    part.replace(destination)
    origin.unlink()


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


def _checksum_mismatch(path: Path, resource: Resource) -> str | None:
    if resource.md5 is None:
        return None
    found = md5sum(path)
    return None if found == resource.md5 else f"MD5 {found} does not match the known {resource.md5}"


def obtain(resource: Resource, override: str | None, downloads: Path) -> tuple[Path, str]:
    """The local file for `resource` and where it came from: a given path, a given URL, or a mirror.

    A file from droptune's own source list must match its known MD5. One the user chose may be a
    repacked copy, so a mismatch only warns: the image counts are checked after extraction anyway.
    """
    if override is not None and not _is_url(override):
        path = Path(override).expanduser()
        if not path.is_file():
            raise DroptuneError(f"--source {resource.key}: {path} is not a file (expected {resource.filename})")
        mismatch = _checksum_mismatch(path, resource)
        if mismatch:
            log.warning("%s: %s; using it anyway since you chose it", path, mismatch)
        return path, str(path)
    destination = downloads / resource.filename
    recorded = destination.with_name(destination.name + ".url")
    urls = (override,) if override is not None else resource.urls
    if destination.is_file() and recorded.is_file() and recorded.read_text() in urls:
        earlier = recorded.read_text()
        urls = (earlier, *(url for url in urls if url != earlier))
    else:
        destination.unlink(missing_ok=True)
    failures = []
    for url in urls:
        try:
            if not destination.is_file():
                fetch(url, destination)
                recorded.write_text(url)
            mismatch = _checksum_mismatch(destination, resource)
            if mismatch and override is None:
                destination.unlink()
                raise SourceFailed(f"{mismatch}; deleted the download")
            if mismatch:
                log.warning("%s from %s: %s; using it anyway since you chose it", destination, url, mismatch)
            return destination, url
        except SourceFailed as failure:
            failures.append(f"{url}: {failure}")
    raise DroptuneError(f"could not download {resource.filename}: {'; '.join(failures)}; pass "
                        f"--source {resource.key}=URL_OR_PATH with a working mirror or a copy on disk")


def parse_sources(recipe: Recipe, sources: Sequence[str]) -> dict[str, str]:
    """`--source` values as {resource key: URL or path}.

    Each is `KEY=URL_OR_PATH`, a folder holding some of the files under their usual names, or,
    for a dataset built from one file, a bare URL or path.
    """
    keys = [r.key for r in recipe.resources]
    chosen: dict[str, str] = {}
    for source in sources:
        key, separator, value = source.partition("=")
        if separator and key in keys:
            chosen[key] = value
            continue
        folder = Path(source).expanduser()
        if folder.is_dir():
            found = {r.key: str(folder / r.filename) for r in recipe.resources if (folder / r.filename).is_file()}
            if not found:
                raise DroptuneError(f"--source {source}: the folder holds none of {recipe.dataset}'s files "
                                    f"({', '.join(r.filename for r in recipe.resources)})")
            chosen.update(found)
        elif len(keys) == 1:
            chosen[keys[0]] = source
        else:
            raise DroptuneError(f"--source {source}: {recipe.dataset} is built from {len(keys)} files, so say which "
                                f"one it replaces as KEY=URL_OR_PATH with KEY one of {', '.join(keys)}, "
                                "or pass a folder that holds them")
    return chosen


# ---- extraction ----


def _refuse_unsafe(archive: Path, name: str) -> None:
    if _safe_parts(name) is None:
        raise DroptuneError(f"archive {archive} holds a path outside its folder, {name!r}: refusing to extract it")


def extract(archive: Path, into: Path, owned: bool) -> None:
    """Unpack a zip or tar archive; a damaged one (deleted if droptune downloaded it) is a clear error."""
    try:
        if archive.name.endswith(".zip") or zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                names = bundle.namelist()
                for name in names:
                    _refuse_unsafe(archive, name)
                for name in tqdm(names, desc=f"extracting {archive.name}", unit="file"):
                    bundle.extract(name, into)
        else:
            with tarfile.open(archive, "r:*") as bundle:
                for member in tqdm(bundle, desc=f"extracting {archive.name}", unit="file"):
                    _refuse_unsafe(archive, member.name)
                    bundle.extract(member, into, filter="data")
    except tarfile.FilterError as error:
        raise DroptuneError(f"archive {archive} holds an unsafe entry ({error}): refusing to extract it") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError,
            zlib.error) as error:
        if owned:
            archive.unlink()
        remedy = "deleted it: run the command again to download it anew" if owned else "get a new copy"
        raise DroptuneError(f"archive {archive} is damaged or incomplete ({error}); {remedy}") from None
    except OSError as error:
        raise DroptuneError(f"cannot extract {archive} into {into}: {error}") from None


# ---- the command ----


def _write_marker(target: Path, spec: DatasetSpec, counts: dict[str, int], sources: dict[str, str]) -> None:
    payload = {"dataset": spec.name, "images": counts, "sources": sources,
               "prepared": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    temporary = target / f"{MARKER}.tmp"
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(target / MARKER)


def read_marker(target: Path) -> dict | None:
    marker = target / MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except ValueError:
        raise DroptuneError(f"{marker} is not valid JSON: delete it, then check the dataset with "
                            f"`droptune data verify {target}`") from None


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def download(name: str, data_dir: str | os.PathLike, sources: Sequence[str] = (),
             keep_archives: bool = False) -> Path:
    """Download, check and lay out a registered dataset under `data_dir`; returns its folder.

    Does nothing if the folder already holds a completion marker. Downloads persist in
    `<data_dir>/.droptune-downloads/` until the dataset is complete, so a rerun resumes them.
    """
    recipe, spec = get_recipe(name)
    data_dir = Path(data_dir).expanduser()
    target = data_dir / spec.folder
    if read_marker(target) is not None:
        return target
    if target.is_dir() and any(target.iterdir()):
        raise DroptuneError(f"{target} exists but has no {MARKER}: it is an incomplete or hand-made copy; delete it "
                            f"to download again, or check it with `droptune data verify {target}`")
    overrides = parse_sources(recipe, sources)
    downloads = data_dir / DOWNLOADS / spec.folder
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DroptuneError(f"cannot write into --data-dir {data_dir}: {error.strerror or error} "
                            f"({error.filename}); choose a folder you can write to") from None
    files, origins = {}, {}
    for resource in recipe.resources:
        files[resource.key], origins[resource.key] = obtain(resource, overrides.get(resource.key), downloads)
    staging = data_dir / STAGING / spec.folder
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for resource in recipe.resources:
        if resource.is_archive:
            extract(files[resource.key], staging, owned=files[resource.key].parent == downloads)
    root = recipe.assemble(staging, spec, files)
    if target.is_dir():
        target.rmdir()
    root.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    _remove_if_empty(data_dir / STAGING)
    report = verify(target, spec, decode=False)
    if not report.ok:
        raise DroptuneError(f"{spec.name} was extracted to {target} but does not match what was expected: "
                            f"{'; '.join(report.problems)}; no {MARKER} written: delete {target} to try again, "
                            "e.g. with another --source")
    _write_marker(target, spec, {d.name: d.images for d in report.domains}, origins)
    if not keep_archives:
        shutil.rmtree(downloads)
        _remove_if_empty(data_dir / DOWNLOADS)
    return target
