"""`droptune data download`: fetch, check and lay out the DomainBed benchmarks.

Links die, archives change and transfers break, so each step checks its result. Transfers
resume where they stopped; known MD5 sums are compared; archives are extracted into a staging
folder and moved into place only when complete; `.droptune-complete` is written last, once the
image counts match the registry. The sources are DomainBed's (`domainbed/scripts/download.py`),
with mirrors where known, and `--source` replaces any of them with another URL or a local file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from droptune.data.archives import extract
from droptune.data.recipes import Resource
from droptune.data.registry import DATASETS, DatasetSpec, get_spec
from droptune.data.transfer import SourceFailed, fetch, is_url, md5sum
from droptune.data.verify import verify
from droptune.errors import DroptuneError

log = logging.getLogger(__name__)

MARKER = ".droptune-complete"
DOWNLOADS = ".droptune-downloads"
STAGING = ".droptune-staging"


def downloadable(name: str) -> DatasetSpec:
    """The registered dataset `name`, which must have a download recipe."""
    spec = get_spec(name)
    if spec is None or spec.recipe is None:
        known = ", ".join(s.name for s in DATASETS.values() if s.recipe is not None)
        raise DroptuneError(f"no download recipe for {name!r}: expected one of {known}; "
                            "any other dataset is read from a <domain>/<class>/<image> folder as it is")
    return spec


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
    if override is not None and not is_url(override):
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


def parse_sources(spec: DatasetSpec, sources: Sequence[str]) -> dict[str, str]:
    """`--source` values as {resource key: URL or path}.

    Each is `KEY=URL_OR_PATH`, a folder holding some of the files under their usual names, or,
    for a dataset built from one file, a bare URL or path.
    """
    resources = spec.recipe.resources
    keys = [r.key for r in resources]
    chosen: dict[str, str] = {}
    for source in sources:
        key, separator, value = source.partition("=")
        if separator and key in keys:
            chosen[key] = value
            continue
        folder = Path(source).expanduser()
        if folder.is_dir():
            found = {r.key: str(folder / r.filename) for r in resources if (folder / r.filename).is_file()}
            if not found:
                raise DroptuneError(f"--source {source}: the folder holds none of {spec.name}'s files "
                                    f"({', '.join(r.filename for r in resources)})")
            chosen.update(found)
        elif len(keys) == 1:
            chosen[keys[0]] = source
        else:
            raise DroptuneError(f"--source {source}: {spec.name} is built from {len(keys)} files, so say which "
                                f"one it replaces as KEY=URL_OR_PATH with KEY one of {', '.join(keys)}, "
                                "or pass a folder that holds them")
    return chosen


def _write_marker(target: Path, spec: DatasetSpec, counts: dict[str, int], sources: dict[str, str]) -> None:
    payload = {"dataset": spec.name, "images": counts, "sources": sources,
               "prepared": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    temporary = target / f"{MARKER}.tmp"
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(target / MARKER)


def read_marker(target: Path) -> dict | None:
    """The completion marker of a dataset folder (its image count per domain, sources, date), or None."""
    marker = target / MARKER
    if not marker.is_file():
        return None
    try:
        payload = json.loads(marker.read_text())
    except ValueError:
        payload = None
    counts = payload.get("images") if isinstance(payload, dict) else None
    if not isinstance(counts, dict) or not all(isinstance(n, int) for n in counts.values()):
        raise DroptuneError(f"{marker} is not a completion marker (expected JSON with each domain's image count): "
                            f"delete it, then check the dataset with `droptune data verify {target}`")
    return payload


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def download(name: str, data_dir: str | os.PathLike, sources: Sequence[str] = (),
             keep_archives: bool = False) -> Path:
    """Download, check and lay out a registered dataset under `data_dir`; returns its folder.

    Does nothing if the folder already holds a completion marker and the image counts it was checked against.
    Downloads persist in `<data_dir>/.droptune-downloads/` until the dataset is complete, so a rerun resumes them.
    """
    spec = downloadable(name)
    recipe = spec.recipe
    data_dir = Path(data_dir).expanduser()
    target = data_dir / spec.folder
    if target.exists() and not target.is_dir():
        raise DroptuneError(f"{target} is a file, not a folder: move it away to download {spec.name} there")
    marker = read_marker(target)
    if marker is not None:
        report = verify(target, spec, decode=False)
        if not report.ok:
            raise DroptuneError(f"{target} has a {MARKER} (prepared {marker.get('prepared', 'at an unknown time')}) "
                                f"but no longer holds what was prepared: {'; '.join(report.problems)}; delete it to "
                                "download again")
        return target
    if target.is_dir() and any(target.iterdir()):
        raise DroptuneError(f"{target} exists but has no {MARKER}: it is an incomplete or hand-made copy; delete it "
                            f"to download again, or check it with `droptune data verify {target}`")
    overrides = parse_sources(spec, sources)
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
