"""How a benchmark is built from the files it is distributed as: the files, then an assembly step.

Each assembler turns the extracted archives in a staging folder into `<domain>/<class>/<image>`
and returns that folder; the registry (data/registry.py) gives each dataset its recipe.
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from droptune.data.archives import safe_parts
from droptune.errors import DroptuneError

if TYPE_CHECKING:
    from droptune.data.registry import DatasetSpec

log = logging.getLogger(__name__)


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

    resources: tuple[Resource, ...]
    assemble: Callable[[Path, DatasetSpec, dict[str, Path]], Path]


def drive_link(file_id: str, **extra: str) -> str:
    """A Google Drive file's download link."""
    return "https://drive.google.com/uc?" + urllib.parse.urlencode({"id": file_id, **extra})


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


def assemble_folders(staging: Path, spec: DatasetSpec, files: dict[str, Path]) -> Path:
    return find_domains_root(staging, spec)


def assemble_domain_net(staging: Path, spec: DatasetSpec, files: dict[str, Path]) -> Path:
    """DomainNet's folders, less the images DomainBed lists as duplicates."""
    root = find_domains_root(staging, spec)
    listing = files["duplicates"]
    removed = 0
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        parts = safe_parts(entry)
        if parts is None or len(parts) != 3 or parts[0] not in spec.domains:
            raise DroptuneError(f"{listing} line {number}: expected <domain>/<class>/<image> with a DomainNet "
                                f"domain, got {entry!r}")
        path = root.joinpath(*parts)
        if path.is_file():
            path.unlink()
            removed += 1
    log.info("removed %d duplicate images listed in %s", removed, listing.name)
    return root


# DomainBed's choice of classes; its camera locations are the registry's domains, location_<n>.
TERRA_CLASSES = ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel")
TERRA_IMAGES_FOLDER = "eccv_18_all_images_sm"


def assemble_terra_incognita(staging: Path, spec: DatasetSpec, files: dict[str, Path]) -> Path:
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
    locations = [domain.removeprefix("location_") for domain in spec.domains]
    missing = []
    for location, file_name, classes in tqdm(wanted, desc="sorting TerraIncognita", unit="img"):
        chosen = sorted(classes.intersection(TERRA_CLASSES)) if location in locations else []
        parts = safe_parts(file_name)
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
        raise DroptuneError(f"{annotations.name} annotates no image at locations {', '.join(locations)} "
                            f"with the classes {', '.join(TERRA_CLASSES)}: is it the Caltech Camera Traps file?")
    if missing:
        raise DroptuneError(f"{len(missing)} images annotated in {annotations.name} are not in {files['images']}, "
                            f"e.g. {missing[0]}: the two files do not belong together")
    return root


def assemble_office31(staging: Path, spec: DatasetSpec, files: dict[str, Path]) -> Path:
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
