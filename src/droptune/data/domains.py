"""Multi-domain image datasets: a class index shared by all domains and images read on demand."""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from droptune.data.images import read_rgb
from droptune.errors import DroptuneError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class MultiDomainDataset(ABC):
    """Images grouped by domain, labelled with one class index shared across domains."""

    name: str
    domains: list[str]
    classes: list[str]
    decodes_files: bool = False  # whether `read` decodes an image file (worth a loader process)
    augment_by_default: bool = True  # DomainBed's training augmentation, unless a dataset has none

    @abstractmethod
    def labels(self, domain: int) -> np.ndarray:
        """Class index of every image of a domain, in the order `read` uses."""

    @abstractmethod
    def read(self, domain: int, index: int, shrink_to: int | None = None) -> Image.Image:
        """Image `index` of `domain` as an RGB PIL image.

        `shrink_to`: the caller resizes the whole image to this side next, so a JPEG may be decoded
        at a reduced scale (no smaller than that) first, which is several times faster.
        """

    def describe(self, domain: int, index: int) -> str:
        return f"{self.name}/{self.domains[domain]}[{index}]"

    def __len__(self) -> int:
        return sum(len(self.labels(d)) for d in range(len(self.domains)))

    def domain_index(self, domain: str | int, role: str = "test domain") -> int:
        """Index of a domain given by name or position; otherwise a clear error that calls it a `role`."""
        if isinstance(domain, int) or (isinstance(domain, str) and domain.isdigit()
                                       and domain not in self.domains):
            position = int(domain)
            if 0 <= position < len(self.domains):
                return position
        elif domain in self.domains:
            return self.domains.index(domain)
        raise DroptuneError(
            f"unknown {role} {domain!r} for {self.name}: expected one of "
            f"{', '.join(self.domains)} (or an index 0-{len(self.domains) - 1})"
        )


def _list_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_differences(per_domain: dict[str, list[str]]) -> str:
    """Which domains lack which class folders that the other domains have; empty when all hold the same."""
    lacking: dict[tuple[str, ...], list[str]] = {}
    for cls in sorted({c for classes in per_domain.values() for c in classes}):
        without = tuple(d for d, classes in per_domain.items() if cls not in classes)
        if without:
            lacking.setdefault(without, []).append(cls)
    parts = []
    for without, classes in lacking.items():
        having = [d for d in per_domain if d not in without]
        parts.append(f"{', '.join(without)} {'lacks' if len(without) == 1 else 'lack'} {classes} that "
                     f"{', '.join(having)} {'has' if len(having) == 1 else 'have'}")
    return "; ".join(parts)


def require_class_folders(root: Path) -> None:
    """Refuse a folder without domain folders, or whose domain folders hold no class folders: most often one
    domain's folder, given one level too deep, its class folders taken for domains."""
    domains = _list_dirs(root)
    if not domains:
        raise DroptuneError(f"no domain folders in {root}: expected <domain>/<class>/<image>")
    if not any(_list_dirs(root / d) for d in domains):
        raise DroptuneError(f"no class folders in {root}'s domain folders ({', '.join(domains[:3])}"
                            f"{', ...' if len(domains) > 3 else ''}): expected {root}/<domain>/<class>/<image> "
                            "(is it one domain's folder, or a folder of images without class folders?)")


class ImageFolderDomains(MultiDomainDataset):
    """A dataset laid out as `<root>/<domain>/<class>/<image>` (DomainBed's layout)."""

    decodes_files = True

    def __init__(self, root: str | os.PathLike, name: str | None = None, domains: Sequence[str] | None = None):
        """`name` and `domains`: what a registered dataset's folder must hold (data/registry.py)."""
        self.root = Path(root)
        self.name = name or self.root.name
        if not self.root.is_dir():
            raise DroptuneError(
                f"dataset directory not found: {self.root} "
                f"(expected {self.root}/<domain>/<class>/<image>; check --data-dir)"
            )
        require_class_folders(self.root)
        self.domains = _list_dirs(self.root)
        if domains is not None and set(self.domains) != set(domains):
            missing = sorted(set(domains) - set(self.domains))
            extra = sorted(set(self.domains) - set(domains))
            raise DroptuneError(
                f"{self.root} does not hold {self.name}'s domains: missing {missing}, unexpected {extra}"
            )
        per_domain = {d: _list_dirs(self.root / d) for d in self.domains}
        self.classes = per_domain[self.domains[0]]
        differences = _class_differences(per_domain)
        if differences:
            raise DroptuneError(f"class folders differ across domains in {self.root}: {differences}")
        self._paths: list[list[Path]] = []
        self._labels: list[np.ndarray] = []
        skipped: list[Path] = []
        for domain in self.domains:
            paths, labels = [], []
            for label, cls in enumerate(self.classes):
                folder = self.root / domain / cls
                files = sorted(p for p in folder.rglob("*")
                               if (p.is_file() or p.is_symlink() and not p.is_dir()) and not p.name.startswith("."))
                images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
                broken = [p for p in images if not p.exists()]
                if broken:
                    raise DroptuneError(f"{broken[0]} is a broken or looping symbolic link: expected an image file")
                skipped += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
                if not images:
                    raise DroptuneError(f"empty class folder: {folder} has no images")
                paths += images
                labels += [label] * len(images)
            self._paths.append(paths)
            self._labels.append(np.asarray(labels, dtype=np.int64))
        if skipped:
            log.warning("%s: ignored %d files that are not images, e.g. %s", self.root, len(skipped), skipped[0])

    def labels(self, domain: int) -> np.ndarray:
        return self._labels[domain]

    def path(self, domain: int, index: int) -> Path:
        return self._paths[domain][index]

    def describe(self, domain: int, index: int) -> str:
        return str(self.path(domain, index))

    def read(self, domain: int, index: int, shrink_to: int | None = None) -> Image.Image:
        return read_rgb(self.path(domain, index), shrink_to)

