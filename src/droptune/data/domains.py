"""Multi-domain image datasets: a class index shared by all domains and images read on demand."""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from droptune.console import counted
from droptune.data.images import read_rgb
from droptune.errors import DroptuneError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


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

    def image_names(self, domain: int) -> list[str] | None:
        """Each image's name within the dataset, in `labels`' order; None where images are not files."""
        return None

    def __len__(self) -> int:
        return sum(len(self.labels(d)) for d in range(len(self.domains)))

    def domain_index(self, domain: str | int, role: str = "test domain") -> int:
        """Index of a domain given by name or position; otherwise a clear error that calls it a `role`."""
        position = domain_position(self.domains, domain)
        if position is not None:
            return position
        raise DroptuneError(
            f"unknown {role} {domain!r} for {self.name}: expected one of "
            f"{', '.join(self.domains)} (or an index 0-{len(self.domains) - 1})"
        )


def domain_position(domains: Sequence[str], domain: str | int) -> int | None:
    """The position of a domain given by name or by index (a name that reads as a number is a name first)."""
    if domain in domains:
        return list(domains).index(domain)
    if isinstance(domain, int) or (isinstance(domain, str) and domain.isdigit()):
        return int(domain) if 0 <= int(domain) < len(domains) else None
    return None


ARCHIVE_METADATA = ("__MACOSX",)  # what macOS's archiver adds beside the archived folders


def subfolders(path: Path) -> list[str]:
    """The names of the folders in `path` that are neither hidden nor archive metadata, sorted. A broken symbolic
    link is refused: it may stand for a domain or a class folder, and skipping it would report that folder as
    missing."""
    entries = [p for p in path.iterdir() if not p.name.startswith(".") and p.name not in ARCHIVE_METADATA]
    broken = sorted(p for p in entries if p.is_symlink() and not p.exists())
    if broken:
        raise DroptuneError(f"{broken[0]} is a broken or looping symbolic link: expected a folder of images")
    return sorted(p.name for p in entries if p.is_dir())


def missing_folder(path: Path) -> str:
    """Why a folder cannot be read from `path`, for an error message: `not found: PATH`, or that it is a file."""
    return f"{path} is a file, not a folder" if path.exists() else f"not found: {path}"


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _files_below(folder: Path, visited: set[str]) -> Iterator[Path]:
    """Files below `folder`, skipping hidden names and following links to folders not in `visited`."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        raise DroptuneError(f"cannot list the folder {folder}: {error.strerror or error}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file() or entry.is_symlink()
        except OSError:  # a link to itself
            is_dir, is_file = False, True
        if is_dir:
            real = os.path.realpath(entry.path)
            if real not in visited:
                visited.add(real)
                yield from _files_below(Path(entry.path), visited)
        elif is_file:  # a broken or looping link included, for its reader to name
            yield Path(entry.path)


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """The images below `folder` and its other files, each sorted: what training, `data verify` and `predict` read.

    Hidden files and folders are skipped; links to folders are followed, as torchvision's ImageFolder does, each
    real folder read once, and never one that holds `folder` (a link to an ancestor would loop, or read other
    classes' images).
    """
    real = Path(os.path.realpath(folder))
    files = sorted(_files_below(folder, {str(real), *map(str, real.parents)}))
    return [p for p in files if _is_image(p)], [p for p in files if not _is_image(p)]


def _by_suffix(paths: list[Path]) -> str:
    """`2 .txt, 1 .db`: how many of `paths` have each suffix, the most common first."""
    counts = Counter(p.suffix.lower() or "without a suffix" for p in paths)
    return ", ".join(f"{n} {suffix}" for suffix, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


@dataclass
class Layout:
    """What a `<domain>/<class>/<image>` folder holds, listed the one way training, `data verify` and `info` list it,
    without judging it."""

    root: Path
    domains: list[str]
    classes: dict[str, list[str]]
    images: dict[str, dict[str, list[Path]]]
    ignored: list[Path]  # files in class folders that are not images
    stray: list[Path]  # images outside class folders

    @property
    def all_classes(self) -> list[str]:
        return sorted({c for classes in self.classes.values() for c in classes})

    def count(self, domain: str, cls: str | None = None) -> int:
        if cls is not None:
            return len(self.images[domain].get(cls, []))
        return sum(len(paths) for paths in self.images[domain].values())

    def all_images(self) -> list[Path]:
        return [p for d in self.domains for c in self.classes[d] for p in self.images[d][c]]

    def notes(self) -> list[str]:
        """A line for each kind of file that is not read: files that are not images, images outside class folders."""
        notes = []
        if self.ignored:
            notes.append(f"ignored {counted(len(self.ignored), 'non-image file')}: {_by_suffix(self.ignored)}; "
                         f"e.g. {self.ignored[0]}")
        if self.stray:
            notes.append(f"ignored {counted(len(self.stray), 'image')} outside class folders (expected "
                         f"<domain>/<class>/<image>): {_by_suffix(self.stray)}; e.g. {self.stray[0]}")
        return notes


def scan(root: str | os.PathLike) -> Layout:
    """What `root` holds as `<domain>/<class>/<image>` (hidden files and folders skipped at every level)."""
    root = Path(root)
    if not root.is_dir():
        raise DroptuneError(f"dataset folder {missing_folder(root)} (expected {root}/<domain>/<class>/<image>)")
    domains = subfolders(root)
    classes: dict[str, list[str]] = {}
    images: dict[str, dict[str, list[Path]]] = {}
    ignored: list[Path] = []
    stray: list[Path] = []
    for folder in (root, *(root / d for d in domains)):
        stray += sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _is_image(p))
    for domain in domains:
        classes[domain] = subfolders(root / domain)
        images[domain] = {}
        for cls in classes[domain]:
            images[domain][cls], others = list_images(root / domain / cls)
            ignored += others
    return Layout(root, domains, classes, images, ignored, stray)


def single_class(root: str | os.PathLike, cls: str) -> str:
    return f"{root} holds a single class folder ({cls}): a classifier needs at least 2 classes"


def single_domain(root: str | os.PathLike, domain: str) -> str:
    return (f"{root} holds a single domain folder ({domain}): leave-one-domain-out needs at least 2, one to train on "
            "and one held out")


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
    domains = subfolders(root)
    if not domains:
        raise DroptuneError(f"no domain folders in {root}: expected <domain>/<class>/<image>")
    if not any(subfolders(root / d) for d in domains):
        raise DroptuneError(f"no class folders in {root}'s domain folders ({', '.join(domains[:3])}"
                            f"{', ...' if len(domains) > 3 else ''}): expected {root}/<domain>/<class>/<image> "
                            "(is it one domain's folder, or a folder of images without class folders?)")


class ImageFolderDomains(MultiDomainDataset):
    """A dataset laid out as `<root>/<domain>/<class>/<image>` (DomainBed's layout)."""

    decodes_files = True

    def __init__(self, root: str | os.PathLike, name: str | None = None, domains: Sequence[str] | None = None,
                 same_classes: bool = True):
        """`name` and `domains`: what a registered dataset's folder must hold (data/registry.py). `same_classes`
        off: domains may lack some of the classes (to score a model, not to train one); `classes` is their union."""
        self.root = Path(root)
        self.name = name or self.root.name
        if not self.root.is_dir():
            raise DroptuneError(f"dataset directory {missing_folder(self.root)} "
                                f"(expected {self.root}/<domain>/<class>/<image>; check --data-dir)")
        require_class_folders(self.root)
        layout = scan(self.root)
        self.domains = layout.domains
        if domains is not None and set(self.domains) != set(domains):
            missing = sorted(set(domains) - set(self.domains))
            extra = sorted(set(self.domains) - set(domains))
            raise DroptuneError(
                f"{self.root} does not hold {self.name}'s domains: missing {missing}, unexpected {extra}"
            )
        self.classes = layout.all_classes
        differences = _class_differences(layout.classes)
        if differences and same_classes:
            raise DroptuneError(f"class folders differ across domains in {self.root}: {differences}")
        self._paths: list[list[Path]] = []
        self._labels: list[np.ndarray] = []
        for domain in self.domains:
            paths, labels = [], []
            for label, cls in enumerate(self.classes):
                if cls not in layout.images[domain]:
                    continue  # a class this domain lacks, only without same_classes
                images = layout.images[domain][cls]
                broken = [p for p in images if not p.exists()]
                if broken:
                    raise DroptuneError(f"{broken[0]} is a broken or looping symbolic link: expected an image file")
                if not images:
                    raise DroptuneError(f"empty class folder: {self.root / domain / cls} has no images")
                paths += images
                labels += [label] * len(images)
            if not paths:  # only without same_classes: a domain without class folders lacks every class
                raise DroptuneError(f"empty domain folder: {self.root / domain} holds no class folder of images")
            self._paths.append(paths)
            self._labels.append(np.asarray(labels, dtype=np.int64))
        for note in layout.notes():
            log.warning("%s: %s", self.root, note)

    def labels(self, domain: int) -> np.ndarray:
        return self._labels[domain]

    def path(self, domain: int, index: int) -> Path:
        return self._paths[domain][index]

    def describe(self, domain: int, index: int) -> str:
        return str(self.path(domain, index))

    def image_names(self, domain: int) -> list[str] | None:
        return [path.relative_to(self.root).as_posix() for path in self._paths[domain]]

    def read(self, domain: int, index: int, shrink_to: int | None = None) -> Image.Image:
        return read_rgb(self.path(domain, index), shrink_to)

