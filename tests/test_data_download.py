"""`droptune data download` against stand-ins served from 127.0.0.1: no other network is used."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import sys
import tarfile
import threading
import types
import urllib.error
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from PIL import Image

from droptune.cli.main import main
from droptune.data import download as dl
from droptune.data import transfer
from droptune.data.archives import extract
from droptune.data.registry import DATASETS
from droptune.errors import DroptuneError


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def tree(prefix: str, domains, classes, per_class: int = 2) -> dict[str, bytes]:
    """Archive members `prefix<domain>/<class>/<n>.png`."""
    files, seed = {}, 0
    for domain in domains:
        for cls in classes:
            for n in range(per_class):
                seed += 1
                files[f"{prefix}{domain}/{cls}/{n}.png"] = png(seed)
    return files


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def tar_gz_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class StandIn(BaseHTTPRequestHandler):
    """Files with Range support, connections cut on demand, and Google Drive's confirmation page."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        state["requests"].append((url.path, self.headers.get("Range")))
        if url.path == "/uc" and query.get("id") in state["drive"]:
            fields = {"id": query["id"], "export": "download", "confirm": "t", "uuid": "e1f"}
            inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
            return self._page(f'<html><body><p>Google Drive can\'t scan this file for viruses.</p>'
                              f'<form id="download-form" action="{state["base"]}/download" method="get">'
                              f'<input type="submit" value="Download anyway">{inputs}</form></body></html>')
        if url.path == "/download" and query.get("confirm") == "t" and query.get("uuid") == "e1f":
            return self._file(url.path, state["drive"][query["id"]])
        if url.path in state["files"]:
            return self._file(url.path, state["files"][url.path])
        if url.path in state["pages"]:
            return self._page(state["pages"][url.path])
        self.send_error(404)

    def _page(self, html: str) -> None:
        body = html.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, path: str, data: bytes) -> None:
        state = self.server.state
        start = 0
        asked = self.headers.get("Range")
        if asked and not state["ignore_range"]:
            start = int(asked.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        rest = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if state["cuts"].get(path, 0) > 0:
            state["cuts"][path] -= 1
            self.wfile.write(rest[: state["cut_after"]])
            self.close_connection = True
            return
        self.wfile.write(rest)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(transfer, "RETRY_WAIT_S", 0.0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    httpd.state = {"files": {}, "drive": {}, "pages": {}, "requests": [], "cuts": {}, "cut_after": 1000,
                   "ignore_range": False, "base": f"http://127.0.0.1:{httpd.server_address[1]}"}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def shrink(monkeypatch, name: str, classes, per_class: int = 2, counts: dict[str, int] | None = None):
    """Make the registry expect a small version of `name`, so tests need only a few images."""
    spec = DATASETS[name]
    counts = counts or {d: len(classes) * per_class for d in spec.domains}
    monkeypatch.setitem(DATASETS, name, replace(spec, num_classes=len(classes), counts=counts))


def use_sources(monkeypatch, name: str, **by_key: tuple[tuple[str, ...], str | None]):
    """Point a recipe's resources at other URLs (and MD5s), as if they were droptune's own sources."""
    spec = DATASETS[name]
    resources = tuple(replace(r, urls=by_key[r.key][0], md5=by_key[r.key][1]) for r in spec.recipe.resources)
    monkeypatch.setitem(DATASETS, name, replace(spec, recipe=replace(spec.recipe, resources=resources)))


PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_CLASSES = ("dog", "horse", "person")


@pytest.fixture
def pacs_zip(monkeypatch) -> bytes:
    shrink(monkeypatch, "PACS", PACS_CLASSES)
    return zip_bytes(tree("kfold/", PACS_DOMAINS, PACS_CLASSES))


def test_pacs_through_drive_confirmation_page(server, pacs_zip, monkeypatch, tmp_path, capsys):
    server["drive"]["PACSID"] = pacs_zip
    use_sources(monkeypatch, "PACS", PACS=((f"{server['base']}/uc?id=PACSID",), md5(pacs_zip)))

    assert main(["data", "download", "PACS", "--data-dir", str(tmp_path)]) == 0

    assert f"{tmp_path / 'PACS'}: 4 domains, 24 images, complete" in capsys.readouterr().out
    dataset = DATASETS["PACS"].open(tmp_path)
    assert dataset.domains == list(PACS_DOMAINS) and dataset.classes == sorted(PACS_CLASSES)
    assert [len(dataset.labels(d)) for d in range(4)] == [6] * 4
    marker = json.loads((tmp_path / "PACS" / dl.MARKER).read_text())
    assert marker["images"] == dict.fromkeys(PACS_DOMAINS, 6)
    assert marker["sources"] == {"PACS": f"{server['base']}/uc?id=PACSID"}
    assert [path for path, _ in server["requests"]] == ["/uc", "/download"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PACS"]  # downloads and staging cleaned up

    server["requests"].clear()
    assert dl.download("PACS", tmp_path) == tmp_path / "PACS"
    assert server["requests"] == []  # complete: nothing fetched again


def test_a_complete_folder_is_checked_not_trusted(server, pacs_zip, monkeypatch, tmp_path, capsys):
    """Mutants: a rerun on a complete folder said the marker was "written"; a marker trusted on a folder whose images
    were deleted since; a marker of the wrong shape a KeyError or TypeError traceback."""
    server["files"]["/PACS.zip"] = pacs_zip
    use_sources(monkeypatch, "PACS", PACS=((f"{server['base']}/PACS.zip",), md5(pacs_zip)))
    assert main(["data", "download", "PACS", "--data-dir", str(tmp_path)]) == 0
    assert "24 images, complete (.droptune-complete written)" in capsys.readouterr().out
    assert main(["data", "download", "PACS", "--data-dir", str(tmp_path)]) == 0
    assert "24 images, already complete (.droptune-complete of 20" in capsys.readouterr().out

    marker = tmp_path / "PACS" / dl.MARKER
    written = marker.read_text()
    for wrong in ('{"dataset": "PACS"}', "[1]", '{"images": {"cartoon": "six"}}', "{"):
        marker.write_text(wrong)
        assert main(["data", "download", "PACS", "--data-dir", str(tmp_path)]) == 2
        assert capsys.readouterr().err == (f"droptune: error: {marker} is not a completion marker (expected JSON with "
                                           "each domain's image count): delete it, then check the dataset with "
                                           f"`droptune data verify {tmp_path / 'PACS'}`\n"), wrong
    marker.write_text(written)
    shutil.rmtree(tmp_path / "PACS" / "sketch")
    with pytest.raises(DroptuneError, match=r"PACS has a \.droptune-complete \(prepared 20.*\) but no longer holds "
                                            r"what was prepared: .*missing \['sketch'\].*; delete it to download"):
        dl.download("PACS", tmp_path)


def test_resumes_after_a_cut_connection(server, pacs_zip, monkeypatch, tmp_path):
    server["files"]["/PACS.zip"] = pacs_zip
    server["cuts"]["/PACS.zip"] = 1
    use_sources(monkeypatch, "PACS", PACS=((f"{server['base']}/PACS.zip",), md5(pacs_zip)))

    dl.download("PACS", tmp_path)

    assert server["requests"] == [("/PACS.zip", None), ("/PACS.zip", "bytes=1000-")]
    assert (tmp_path / "PACS" / dl.MARKER).is_file()


def test_a_rerun_resumes_a_download_that_kept_failing(server, pacs_zip, monkeypatch, tmp_path):
    server["files"]["/PACS.zip"] = pacs_zip
    server["cuts"]["/PACS.zip"] = transfer.ATTEMPTS
    use_sources(monkeypatch, "PACS", PACS=((f"{server['base']}/PACS.zip",), md5(pacs_zip)))

    with pytest.raises(DroptuneError, match="run the command again to resume") as failure:
        dl.download("PACS", tmp_path)

    assert "PACS.zip" in str(failure.value) and "--source PACS=URL_OR_PATH" in str(failure.value)
    part = transfer.part_file(f"{server['base']}/PACS.zip", tmp_path / dl.DOWNLOADS / "PACS" / "PACS.zip")
    assert part.read_bytes() == pacs_zip[: transfer.ATTEMPTS * 1000]
    assert not (tmp_path / "PACS").exists()

    server["requests"].clear()
    dl.download("PACS", tmp_path)
    assert server["requests"] == [("/PACS.zip", f"bytes={transfer.ATTEMPTS * 1000}-")]
    assert (tmp_path / "PACS" / dl.MARKER).is_file()


def test_the_next_mirror_keeps_what_an_earlier_one_gave_for_a_rerun(server, pacs_zip, monkeypatch, tmp_path):
    """Mutant: one `.part` for every mirror: trying the next one deleted what the first had given, while the error
    said those bytes were kept for a rerun to resume."""
    server["files"]["/PACS.zip"] = pacs_zip
    server["cuts"]["/PACS.zip"] = transfer.ATTEMPTS
    use_sources(monkeypatch, "PACS", PACS=((f"{server['base']}/PACS.zip", f"{server['base']}/gone.zip"),
                                           md5(pacs_zip)))

    with pytest.raises(DroptuneError, match=f"with {transfer.ATTEMPTS * 1000:,} bytes kept: run the command again"):
        dl.download("PACS", tmp_path)

    server["requests"].clear()
    dl.download("PACS", tmp_path)
    assert server["requests"] == [("/PACS.zip", f"bytes={transfer.ATTEMPTS * 1000}-")]
    assert (tmp_path / "PACS" / dl.MARKER).is_file()


def test_a_host_that_does_not_resolve_fails_at_once_in_one_line(monkeypatch, tmp_path, capsys):
    """Mutant: a failed name lookup retried as a cut transfer, four times a mirror, each "interrupted at 0 bytes
    ...; resuming", before the error (about 25 s offline)."""
    tried = []

    def offline(self, part):
        tried.append(self.url)
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    monkeypatch.setattr(transfer._Transfer, "into", offline)
    monkeypatch.setattr(transfer, "RETRY_WAIT_S", 0.0)
    use_sources(monkeypatch, "PACS", PACS=(("https://one.invalid/PACS.zip", "https://two.invalid/PACS.zip"), None))

    assert main(["data", "download", "PACS", "--data-dir", str(tmp_path)]) == 2

    assert tried == ["https://one.invalid/PACS.zip", "https://two.invalid/PACS.zip"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resolve one.invalid (" in err and "cannot resolve two.invalid (" in err
    assert "no network?" in err and not list((tmp_path / dl.DOWNLOADS).rglob("*.part*"))


def test_a_server_that_ignores_ranges_restarts_the_file(server, pacs_zip, monkeypatch, tmp_path):
    server["files"]["/PACS.zip"] = pacs_zip
    server["cuts"]["/PACS.zip"] = 1
    server["ignore_range"] = True
    use_sources(monkeypatch, "PACS", PACS=((f"{server['base']}/PACS.zip",), md5(pacs_zip)))

    dl.download("PACS", tmp_path)

    assert (tmp_path / "PACS" / dl.MARKER).is_file()


def test_checksum_mismatch_deletes_the_download_and_says_so(server, pacs_zip, monkeypatch, tmp_path, capsys):
    server["files"]["/PACS.zip"] = pacs_zip
    use_sources(monkeypatch, "PACS", PACS=((f"{server['base']}/PACS.zip",), "0" * 32))

    assert main(["data", "download", "PACS", "--data-dir", str(tmp_path)]) == 2

    error = capsys.readouterr().err.splitlines()[-1]  # after the progress bars
    assert error.startswith("droptune: error: could not download PACS.zip")
    assert f"MD5 {md5(pacs_zip)} does not match the known {'0' * 32}; deleted the download" in error
    assert not (tmp_path / dl.DOWNLOADS / "PACS" / "PACS.zip").exists()
    assert not (tmp_path / "PACS").exists()


def test_falls_back_to_a_mirror_and_names_every_failed_url(server, pacs_zip, monkeypatch, tmp_path):
    server["files"]["/mirror/PACS.zip"] = pacs_zip
    server["pages"]["/quota"] = "<html><body>Too many users have viewed or downloaded this file</body></html>"
    dead, quota, mirror = (f"{server['base']}{p}" for p in ("/dead/PACS.zip", "/quota", "/mirror/PACS.zip"))

    use_sources(monkeypatch, "PACS", PACS=((dead, quota), None))
    with pytest.raises(DroptuneError) as failure:
        dl.download("PACS", tmp_path)
    assert f"{dead}: HTTP 404" in str(failure.value)
    assert f"{quota}: got an HTML page instead of the file" in str(failure.value)

    use_sources(monkeypatch, "PACS", PACS=((dead, mirror), md5(pacs_zip)))
    dl.download("PACS", tmp_path)
    assert json.loads((tmp_path / "PACS" / dl.MARKER).read_text())["sources"] == {"PACS": mirror}


def test_a_new_source_replaces_an_earlier_download(server, pacs_zip, tmp_path):
    server["files"]["/wrong.zip"] = zip_bytes(tree("other/", ("a", "b"), ("dog",)))
    server["files"]["/right.zip"] = pacs_zip
    with pytest.raises(DroptuneError, match="holds no folder with the domains"):
        dl.download("PACS", tmp_path, [f"PACS={server['base']}/wrong.zip"])

    dl.download("PACS", tmp_path, [f"PACS={server['base']}/right.zip"])

    assert [path for path, _ in server["requests"]] == ["/wrong.zip", "/right.zip"]
    assert (tmp_path / "PACS" / dl.MARKER).is_file()


def test_vlcs_from_a_local_archive(monkeypatch, tmp_path):
    domains, classes = ("Caltech101", "LabelMe", "SUN09", "VOC2007"), ("bird", "car", "dog")
    shrink(monkeypatch, "VLCS", classes, per_class=1)
    archive = tmp_path / "downloaded by hand.tar.gz"
    archive.write_bytes(tar_gz_bytes(tree("VLCS/", domains, classes, per_class=1)))

    dl.download("VLCS", tmp_path / "data", [str(archive)])

    assert DATASETS["VLCS"].open(tmp_path / "data").classes == list(classes)
    assert archive.is_file()  # the user's file is left alone


def test_office_home_from_a_folder_of_archives(monkeypatch, tmp_path):
    domains, classes = ("Art", "Clipart", "Product", "Real World"), ("Alarm_Clock", "Bike")
    shrink(monkeypatch, "OfficeHome", classes)
    files = tree("OfficeHomeDataset_10072016/", domains, classes)
    files["OfficeHomeDataset_10072016/ImageInfo.csv"] = b"name,source\n"
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "office_home.zip").write_bytes(zip_bytes(files))

    target = dl.download("OfficeHome", tmp_path / "data", [str(tmp_path / "archives")])

    assert target == tmp_path / "data" / "office_home"
    assert sorted(p.name for p in target.iterdir()) == [dl.MARKER, "Art", "Clipart", "ImageInfo.csv",
                                                        "Product", "Real World"]


def test_office31_lifts_the_images_folders_of_the_authors_archive(monkeypatch, tmp_path):
    domains, classes = ("amazon", "dslr", "webcam"), ("back_pack", "bike")
    shrink(monkeypatch, "Office31", classes)
    files = {name.replace("/back_pack/", "/images/back_pack/").replace("/bike/", "/images/bike/"): data
             for name, data in tree("", domains, classes).items()}
    archive = tmp_path / "domain_adaptation_images.tar.gz"
    archive.write_bytes(tar_gz_bytes(files))

    target = dl.download("Office31", tmp_path / "data", [str(archive)])

    assert target == tmp_path / "data" / "Office31"
    assert sorted(p.name for p in target.iterdir()) == [dl.MARKER, *domains]
    assert DATASETS["Office31"].open(target.parent).classes == list(classes)


def test_office31_without_its_images_folders_is_refused(monkeypatch, tmp_path):
    domains, classes = ("amazon", "dslr", "webcam"), ("back_pack", "bike")
    shrink(monkeypatch, "Office31", classes)
    archive = tmp_path / "flat.tar.gz"
    archive.write_bytes(tar_gz_bytes(tree("", domains, classes)))

    with pytest.raises(DroptuneError, match=r"no amazon/images/ folder"):
        dl.download("Office31", tmp_path / "data", [str(archive)])
    assert not (tmp_path / "data" / "Office31" / dl.MARKER).exists()


def test_terra_incognita_is_built_from_images_and_annotations(server, monkeypatch, tmp_path):
    images = {f"eccv_18_all_images_sm/img{n}.jpg": png(n) for n in range(12)}
    rows = [  # (image, location, classes): DomainBed keeps locations 38, 46, 100, 43 and ten classes
        (0, "38", ["bobcat"]), (1, "38", ["empty"]), (2, 46, ["bobcat"]), (3, "46", ["empty", "bobcat"]),
        (4, "100", ["bobcat"]), (5, "100", ["empty"]), (6, "43", ["bobcat"]), (7, "43", ["empty"]),
        (8, "33", ["bobcat"]),  # another location
        (9, "38", ["deer"]),  # another class
        (10, "43", []),  # no annotation
        (11, "38", ["bobcat", "bobcat"]),  # the same class twice
    ]
    categories = [{"id": i, "name": n} for i, n in enumerate(["bobcat", "empty", "deer"])]
    ids = {c["name"]: c["id"] for c in categories}
    annotations = {
        "images": [{"id": f"i{n}", "file_name": f"img{n}.jpg", "location": loc} for n, loc, _ in rows],
        "annotations": [{"image_id": f"i{n}", "category_id": ids[c]} for n, _, names in rows for c in names],
        "categories": categories,
    }
    server["files"]["/images.tar.gz"] = tar_gz_bytes(images)
    server["files"]["/labels.zip"] = zip_bytes({"caltech_images_20210113.json": json.dumps(annotations).encode()})
    shrink(monkeypatch, "TerraIncognita", ("bobcat", "empty"),
           counts={"location_38": 3, "location_46": 3, "location_100": 2, "location_43": 2})

    dl.download("TerraIncognita", tmp_path, [f"images={server['base']}/images.tar.gz",
                                             f"annotations={server['base']}/labels.zip"])

    root = tmp_path / "terra_incognita"
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    assert found == ["location_100/bobcat/img4.jpg", "location_100/empty/img5.jpg",
                     "location_38/bobcat/img0.jpg", "location_38/bobcat/img11.jpg", "location_38/empty/img1.jpg",
                     "location_43/bobcat/img6.jpg", "location_43/empty/img7.jpg",
                     "location_46/bobcat/img2.jpg", "location_46/bobcat/img3.jpg", "location_46/empty/img3.jpg"]
    assert (root / "location_46" / "empty" / "img3.jpg").read_bytes() == png(3)
    assert (root / dl.MARKER).is_file()


def test_domain_net_checksums_and_duplicate_removal(server, monkeypatch, tmp_path):
    domains, classes = DATASETS["DomainNet"].domains, ("aircraft_carrier", "zebra")
    sources = {}
    for domain in domains:
        data = zip_bytes(tree("", (domain,), classes, per_class=3))
        server["files"][f"/{domain}.zip"] = data
        sources[domain] = ((f"{server['base']}/{domain}.zip",), md5(data))
    server["files"]["/duplicates.txt"] = (b"clipart/zebra/0.png\nreal/aircraft_carrier/2.png\n\n"
                                          b"sketch/zebra/not_there.png\n")
    sources["duplicates"] = ((f"{server['base']}/duplicates.txt",), None)
    use_sources(monkeypatch, "DomainNet", **sources)
    counts = dict.fromkeys(domains, 6) | {"clipart": 5, "real": 5}
    shrink(monkeypatch, "DomainNet", classes, counts=counts)

    dl.download("DomainNet", tmp_path)

    root = tmp_path / "domain_net"
    assert not (root / "clipart" / "zebra" / "0.png").exists()
    assert not (root / "real" / "aircraft_carrier" / "2.png").exists()
    assert (root / "sketch" / "zebra" / "0.png").is_file()
    assert json.loads((root / dl.MARKER).read_text())["images"] == counts


def test_a_bad_duplicates_list_is_refused(monkeypatch, tmp_path):
    domains, classes = DATASETS["DomainNet"].domains, ("zebra",)
    archives = tmp_path / "archives"
    archives.mkdir()
    for domain in domains:
        (archives / f"{domain}.zip").write_bytes(zip_bytes(tree("", (domain,), classes, per_class=1)))
    (archives / "domain_net_duplicates.txt").write_text("clipart/zebra/0.png\n../../etc/passwd\n")
    shrink(monkeypatch, "DomainNet", classes, per_class=1)

    with pytest.raises(DroptuneError, match=r"domain_net_duplicates.txt line 2: expected <domain>/<class>/<image>"):
        dl.download("DomainNet", tmp_path / "data", [str(archives)])


def test_a_damaged_archive_is_named_and_a_downloaded_one_deleted(server, pacs_zip, monkeypatch, tmp_path):
    truncated = pacs_zip[: len(pacs_zip) // 2]
    local = tmp_path / "PACS.zip"
    local.write_bytes(truncated)
    with pytest.raises(DroptuneError, match=rf"archive {local} is damaged or incomplete .*get a new copy"):
        dl.download("PACS", tmp_path / "data", [str(local)])
    assert local.is_file()

    server["files"]["/PACS.zip"] = truncated
    with pytest.raises(DroptuneError, match="damaged or incomplete .*deleted it: run the command again"):
        dl.download("PACS", tmp_path / "data", [f"PACS={server['base']}/PACS.zip"])
    assert not (tmp_path / "data" / dl.DOWNLOADS / "PACS" / "PACS.zip").exists()
    assert not (tmp_path / "data" / "PACS").exists()


def test_a_python_without_tar_filters_is_one_line_and_zip_errors_still_named(pacs_zip, monkeypatch, tmp_path):
    """Mutant: `except tarfile.FilterError`, evaluated for any error, on a Python before 3.10.12 or 3.11.4 (which
    lack it) turned every damaged zip into an AttributeError, and a tar archive failed on `filter=`."""
    monkeypatch.delattr(tarfile, "FilterError")
    monkeypatch.delattr(tarfile, "data_filter")
    local = tmp_path / "PACS.zip"
    local.write_bytes(pacs_zip[: len(pacs_zip) // 2])
    with pytest.raises(DroptuneError, match=rf"archive {local} is damaged or incomplete"):
        dl.download("PACS", tmp_path / "data", [str(local)])
    archive = tmp_path / "flat.tar.gz"
    archive.write_bytes(tar_gz_bytes({"a/b/c.png": b""}))
    with pytest.raises(DroptuneError, match=r"extracting flat.tar.gz safely needs tarfile's extraction filters, in "
                                            r"Python 3.10.12, 3.11.4 or later; this is Python 3\."):
        extract(archive, tmp_path / "out", owned=False)


def test_a_users_copy_with_another_checksum_is_used_with_a_warning(pacs_zip, monkeypatch, tmp_path, caplog):
    local = tmp_path / "PACS.zip"
    local.write_bytes(pacs_zip)
    use_sources(monkeypatch, "PACS", PACS=(("http://127.0.0.1:9/unused",), "0" * 32))

    dl.download("PACS", tmp_path / "data", [str(local)])

    assert "does not match the known" in caplog.text
    assert (tmp_path / "data" / "PACS" / dl.MARKER).is_file()


def test_wrong_counts_leave_no_marker(pacs_zip, monkeypatch, tmp_path):
    local = tmp_path / "PACS.zip"
    local.write_bytes(pacs_zip)
    shrink(monkeypatch, "PACS", PACS_CLASSES, counts=dict.fromkeys(PACS_DOMAINS, 6) | {"sketch": 7})

    with pytest.raises(DroptuneError, match=r"sketch has 6 images, expected 7 \(1 missing\); no \.droptune-complete"):
        dl.download("PACS", tmp_path / "data", [str(local)])
    assert not (tmp_path / "data" / "PACS" / dl.MARKER).exists()

    with pytest.raises(DroptuneError, match="exists but has no .droptune-complete: .*delete it to download again"):
        dl.download("PACS", tmp_path / "data", [str(local)])


def test_an_archive_without_the_domains_is_refused(pacs_zip, monkeypatch, tmp_path):
    local = tmp_path / "PACS.zip"
    local.write_bytes(zip_bytes(tree("kfold/", PACS_DOMAINS[:3], PACS_CLASSES)))

    with pytest.raises(DroptuneError, match=r"holds no folder with the domains art_painting, cartoon, photo, "
                                            r"sketch \(its top level: \['kfold'\]\)"):
        dl.download("PACS", tmp_path / "data", [str(local)])


def test_an_archive_escaping_its_folder_is_refused(tmp_path):
    local = tmp_path / "PACS.zip"
    local.write_bytes(zip_bytes({"kfold/photo/dog/1.png": png(1), "../evil.txt": b"x"}))

    with pytest.raises(DroptuneError, match=r"holds a path outside its folder, '\.\./evil\.txt'"):
        dl.download("PACS", tmp_path / "data", [str(local)])
    assert not (tmp_path / "evil.txt").exists()


def test_source_arguments_are_checked(tmp_path):
    with pytest.raises(DroptuneError, match="TerraIncognita is built from 2 files, so say which one .*images, "
                                            "annotations"):
        dl.download("TerraIncognita", tmp_path, ["http://127.0.0.1:9/x.tar.gz"])
    with pytest.raises(DroptuneError, match=r"the folder holds none of DomainNet's files \(clipart.zip, "):
        dl.download("DomainNet", tmp_path, [str(tmp_path)])
    with pytest.raises(DroptuneError, match=r"--source PACS: .*missing.zip is not a file \(expected PACS.zip\)"):
        dl.download("PACS", tmp_path, [str(tmp_path / "missing.zip")])
    with pytest.raises(DroptuneError, match="no download recipe for 'RotatedDigits': expected one of PACS, VLCS"):
        dl.download("RotatedDigits", tmp_path)


def test_drive_links_go_through_gdown_when_it_is_installed(pacs_zip, monkeypatch, tmp_path):
    calls = []

    def fake_download(url, output, quiet, resume):
        calls.append((url, resume))
        Path(output).write_bytes(pacs_zip)
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fake_download))
    dl.download("PACS", tmp_path)

    assert calls == [(DATASETS["PACS"].recipe.resources[0].urls[0], True)]
    assert (tmp_path / "PACS" / dl.MARKER).is_file()


def test_drive_sharing_links_become_download_requests():
    url = transfer._drive_download_url("https://drive.google.com/file/d/1AbC/view?usp=sharing")
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("drive.google.com", "/uc")
    assert parse_qs(parts.query) == {"usp": ["sharing"], "id": ["1AbC"], "export": ["download"]}
    assert transfer._drive_download_url("https://drive.google.com/uc?id=1AbC") == \
        "https://drive.google.com/uc?" + urlencode({"id": "1AbC", "export": "download"})
