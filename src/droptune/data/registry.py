"""Known datasets, one spec each: domains, classes and image counts, how to open it, how to download it.

A dataset not listed here is still readable from any `<domain>/<class>/<image>` folder;
the registry adds checks (domain names, counts) and, for the benchmarks, a download recipe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from droptune.data.digits import ANGLES, RotatedDigits
from droptune.data.domains import ImageFolderDomains, MultiDomainDataset, missing_folder
from droptune.data.recipes import (
    TERRA_CLASSES,
    TERRA_IMAGES_FOLDER,
    Recipe,
    Resource,
    assemble_domain_net,
    assemble_folders,
    assemble_office31,
    assemble_terra_incognita,
    drive_link,
)
from droptune.errors import DroptuneError


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset kept as `<data_dir>/<folder>/<domain>/<class>/<image>`; `recipe` says how to download it."""

    name: str
    folder: str | None
    domains: tuple[str, ...]
    num_classes: int
    counts: dict[str, int] = field(default_factory=dict)
    recipe: Recipe | None = None

    def __post_init__(self) -> None:
        """Counts, when given, are one per domain: a misspelt one would leave its domain unchecked."""
        odd = sorted(set(self.counts) ^ set(self.domains)) if self.counts else []
        if odd:
            raise DroptuneError(f"dataset {self.name}: counts must name its domains ({', '.join(self.domains)}) and "
                                f"only them; not in both: {', '.join(map(repr, odd))}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def root(self, data_dir: str | os.PathLike | None) -> Path:
        """The dataset's folder under `data_dir`."""
        if data_dir is None:
            raise DroptuneError(f"dataset {self.name} needs a data directory: pass --data-dir (data_dir in Python) "
                                "or set $DROPTUNE_DATA_DIR")
        return Path(data_dir) / self.folder

    def open(self, data_dir: str | os.PathLike | None) -> MultiDomainDataset:
        return ImageFolderDomains(self.root(data_dir), self.name, self.domains)


@dataclass(frozen=True, kw_only=True)
class BuiltinSpec(DatasetSpec):
    """A dataset droptune makes itself (`make()`): no folder to read, nothing to download."""

    make: Callable[[], MultiDomainDataset]

    def root(self, data_dir: str | os.PathLike | None) -> Path:
        raise DroptuneError(f"{self.name} is built into droptune: it has no folder")

    def open(self, data_dir: str | os.PathLike | None) -> MultiDomainDataset:
        return self.make()


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add `spec`, refused if its name or folder is another's (ignoring case, as `get_spec` finds them)."""
    keys = {key.lower() for key in (spec.name, spec.folder) if key}
    for other in DATASETS.values():
        clash = keys & {key.lower() for key in (other.name, other.folder) if key}
        if clash:
            raise DroptuneError(f"cannot register dataset {spec.name}: {min(clash)!r} already names dataset "
                                f"{other.name} (its name or folder)")
    DATASETS[spec.name] = spec
    return spec


DOMAIN_NET = "http://csr.bu.edu/ftp/visda/2019/multi-source"
LILA = "caltechcameratraps"

register(DatasetSpec(
    "PACS", "PACS", ("art_painting", "cartoon", "photo", "sketch"), 7,
    {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929},
    Recipe((Resource("PACS", "PACS.zip", (
        drive_link("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd"),
        # A GitHub copy of the same folders, pinned to a commit.
        "https://github.com/MachineLearning2020/Homework3-PACS/archive/"
        "33f7def03be34c3fbb1a4d5c97384ab602884833.zip",
    )),), assemble_folders),
))
register(DatasetSpec(
    "VLCS", "VLCS", ("Caltech101", "LabelMe", "SUN09", "VOC2007"), 5,
    {"Caltech101": 1415, "LabelMe": 2656, "SUN09": 3282, "VOC2007": 3376},
    Recipe((Resource("VLCS", "VLCS.tar.gz", (drive_link("1skwblH1_okBwxWxmRsp9_qi15hyPpxg8"),)),),
           assemble_folders),
))
register(DatasetSpec(
    "OfficeHome", "office_home", ("Art", "Clipart", "Product", "Real World"), 65,
    {"Art": 2427, "Clipart": 4365, "Product": 4439, "Real World": 4357},
    Recipe((Resource("office_home", "office_home.zip", (
        drive_link("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC"),
        drive_link("0B81rNlvomiwed0V1YUxQdC1uOTg", resourcekey="0-2SNWq0CDAuWOBRRBL7ZZsw"),  # the authors' copy
    )),), assemble_folders),
))
# DomainBed's paper says 24,788 images; its own download script yields these 24,330.
register(DatasetSpec(
    "TerraIncognita", "terra_incognita",
    ("location_100", "location_38", "location_43", "location_46"), len(TERRA_CLASSES),
    {"location_100": 4741, "location_38": 9736, "location_43": 3970, "location_46": 5883},
    Recipe((
        Resource("images", f"{TERRA_IMAGES_FOLDER}.tar.gz", (
            f"https://storage.googleapis.com/public-datasets-lila/{LILA}/{TERRA_IMAGES_FOLDER}.tar.gz",
            f"https://lilablobssc.blob.core.windows.net/{LILA}/{TERRA_IMAGES_FOLDER}.tar.gz",
        )),
        Resource("annotations", "caltech_camera_traps.json.zip", (
            f"https://storage.googleapis.com/public-datasets-lila/{LILA}/labels/caltech_camera_traps.json.zip",
            f"https://lilablobssc.blob.core.windows.net/{LILA}/labels/caltech_camera_traps.json.zip",
        )),
    ), assemble_terra_incognita),
))
register(DatasetSpec(
    "DomainNet", "domain_net",
    ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), 345,
    {"clipart": 48129, "infograph": 51605, "painting": 72266, "quickdraw": 172500,
     "real": 172947, "sketch": 69128},
    Recipe((
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
    ), assemble_domain_net),
))
# Counts are the originals' (Saenko et al., 2010; Gong et al., 2012); Caltech's "backpack" is named
# back_pack so that the ten class names agree across domains. The download is the authors' file (linked
# from their project page); they publish no checksum, so the image counts are the check.
register(DatasetSpec(
    "Office31", "Office31", ("amazon", "dslr", "webcam"), 31,
    {"amazon": 2817, "dslr": 498, "webcam": 795},
    Recipe((Resource("images", "domain_adaptation_images.tar.gz", (
        drive_link("0B4IapRTv9pJ1WGZVd1VDMmhwdlE"),
    )),), assemble_office31),
))
# No stable public source to download from: see the README.
register(DatasetSpec(
    "OfficeCaltech10", "OfficeCaltech10", ("amazon", "caltech", "dslr", "webcam"), 10,
    {"amazon": 958, "caltech": 1123, "dslr": 157, "webcam": 295},
))
register(BuiltinSpec(RotatedDigits.name, None, ANGLES, 10, make=RotatedDigits))


def get_spec(name: str) -> DatasetSpec | None:
    """The registered spec for `name` (case-insensitive, folder names accepted), else None."""
    key = name.lower()
    return next((spec for spec in DATASETS.values() if key in (spec.name.lower(), (spec.folder or "").lower())),
                None)


def spec_of_folder(folder: Path) -> DatasetSpec | None:
    """The registered dataset a folder is named after (`.../PACS`, `.../office_home`), if it is kept in one."""
    spec = get_spec(folder.resolve().name)
    return spec if spec is not None and spec.folder is not None else None


def unknown_dataset(name: str) -> DroptuneError:
    return DroptuneError(
        f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)} "
        "or a path to a folder laid out as <domain>/<class>/<image>"
    )


def unregistered_folder(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a dataset that is not registered: the path `name`, else `data_dir/name`."""
    path = Path(name).expanduser()
    for candidate in [path] + ([Path(data_dir) / name] if data_dir is not None else []):
        if candidate.is_dir():
            return candidate
    if "/" in name or os.sep in name or path.exists():
        raise DroptuneError(f"dataset folder {missing_folder(path)} (expected {path}/<domain>/<class>/<image>)")
    raise unknown_dataset(name)


def dataset_reference(name: str) -> str:
    """How a new run records its dataset: a registered name as given, a folder by its absolute path, so that
    `mydata`, `./mydata` and `/work/mydata` are one dataset (one job id) and the run folder is usable anywhere."""
    path = Path(name).expanduser()
    return str(path.resolve()) if get_spec(name) is None and path.is_dir() else name


def data_dir_reference(data_dir: str) -> str:
    """How a new run records its data directory: an existing folder by its absolute path, so that the run folder can
    be evaluated, combined and resumed from any working directory (it is not part of a job's identity)."""
    path = Path(data_dir).expanduser()
    return str(path.resolve()) if path.is_dir() else data_dir


def open_dataset(name: str, data_dir: str | os.PathLike | None = None, same_classes: bool = True
                 ) -> MultiDomainDataset:
    """A dataset by registered name (under `data_dir` where it is kept in a folder), or by folder path; a folder's
    domains may lack some classes without `same_classes` (ImageFolderDomains)."""
    spec = get_spec(name)
    if spec is not None:
        return spec.open(data_dir)
    return ImageFolderDomains(unregistered_folder(name, data_dir), same_classes=same_classes)
