"""Known multi-domain datasets: folder names, domains and expected image counts.

A dataset not listed here is still readable from any `<domain>/<class>/<image>` folder;
the registry only adds checks (domain names, counts) and defaults (augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from droptune.errors import DroptuneError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str
    domains: tuple[str, ...]
    num_classes: int
    counts: dict[str, int] = field(default_factory=dict)
    augment: bool = True
    builtin: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


register(DatasetSpec(
    "PACS", "PACS", ("art_painting", "cartoon", "photo", "sketch"), 7,
    {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929},
))
register(DatasetSpec(
    "VLCS", "VLCS", ("Caltech101", "LabelMe", "SUN09", "VOC2007"), 5,
    {"Caltech101": 1415, "LabelMe": 2656, "SUN09": 3282, "VOC2007": 3376},
))
register(DatasetSpec(
    "OfficeHome", "office_home", ("Art", "Clipart", "Product", "Real World"), 65,
    {"Art": 2427, "Clipart": 4365, "Product": 4439, "Real World": 4357},
))
# DomainBed's paper says 24,788 images; its own download script yields these 24,330.
register(DatasetSpec(
    "TerraIncognita", "terra_incognita",
    ("location_100", "location_38", "location_43", "location_46"), 10,
    {"location_100": 4741, "location_38": 9736, "location_43": 3970, "location_46": 5883},
))
register(DatasetSpec(
    "DomainNet", "domain_net",
    ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), 345,
    {"clipart": 48129, "infograph": 51605, "painting": 72266, "quickdraw": 172500,
     "real": 172947, "sketch": 69128},
))
# Counts are the originals' (Saenko et al., 2010; Gong et al., 2012); Caltech's "backpack" is named
# back_pack so that the ten class names agree across domains.
register(DatasetSpec(
    "Office31", "Office31", ("amazon", "dslr", "webcam"), 31,
    {"amazon": 2817, "dslr": 498, "webcam": 795},
))
register(DatasetSpec(
    "OfficeCaltech10", "OfficeCaltech10", ("amazon", "caltech", "dslr", "webcam"), 10,
    {"amazon": 958, "caltech": 1123, "dslr": 157, "webcam": 295},
))
register(DatasetSpec(
    "RotatedDigits", "", ("0", "15", "30", "45", "60", "75"), 10,
    augment=False, builtin=True,
))


def get_spec(name: str) -> DatasetSpec | None:
    """The registered spec for `name` (case-insensitive, folder names accepted), else None."""
    key = name.lower()
    for spec in DATASETS.values():
        if key in (spec.name.lower(), spec.folder.lower()):
            return spec
    return None


def unknown_dataset(name: str) -> DroptuneError:
    return DroptuneError(
        f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)} "
        "or a path to a folder laid out as <domain>/<class>/<image>"
    )
