"""`droptune data verify` and `droptune data info`: check a dataset folder before training on it.

A half-extracted archive, a folder one level too deep, a class folder missing from one domain or
one corrupt JPEG otherwise surfaces hours into a run, or never. `verify` collects every such
problem at once (layout, class folders, the registry's image counts, images that fail to decode)
and names each file; `info` describes any `<domain>/<class>/<image>` folder, registered or not.
"""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from droptune import console
from droptune.data.domains import Layout, MultiDomainDataset, scan, single_class, single_domain, subfolders
from droptune.data.images import UnreadableImage, read_rgb
from droptune.data.registry import DatasetSpec, get_spec, spec_of_folder, unregistered_folder
from droptune.errors import DroptuneError

PER_CLASS_TABLE_LIMIT = 30
T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    """Threads that decode images: PIL releases the GIL, and more than 4 gain little on a disk."""
    return min(4, os.cpu_count() or 1)


def decode_error(path: Path) -> str | None:
    """Why the image at `path` cannot be decoded, or None when it decodes fully."""
    try:
        read_rgb(path)
    except UnreadableImage as error:
        return error.reason
    return None


def threaded_map(function: Callable[[T], R], items: Sequence[T], workers: int | None, desc: str,
                 progress: bool | None = None) -> Iterator[R]:
    """`function` over `items` in threads (PIL decodes without the GIL), in order, with a progress bar.

    Submits a block at a time, so that half a million images do not become half a million futures.
    """
    block = 1024
    if not console.shown(progress):
        console.line(f"{desc}: {len(items):,} images")
    with ThreadPoolExecutor(workers or default_threads()) as pool, \
            console.bar(progress, total=len(items), desc=desc, unit="img") as bar:
        for start in range(0, len(items), block):
            for result in pool.map(function, items[start:start + block]):
                bar.update()
                yield result


def find_undecodable(paths: list[Path], workers: int | None = None) -> list[tuple[Path, str]]:
    """Every image in `paths` that fails to decode, with the reason."""
    errors = threaded_map(decode_error, paths, workers, "decoding images")
    return [(path, error) for path, error in zip(paths, errors) if error is not None]


@dataclass
class DomainSummary:
    name: str
    classes: int
    images: int
    expected: int | None = None
    bad: int = 0


@dataclass
class Report:
    """The outcome of `verify`: a row per domain and one line per problem, each naming its file."""

    root: Path
    name: str
    spec: DatasetSpec | None
    classes: list[str]
    domains: list[DomainSummary]
    decoded: bool
    problems: list[str] = field(default_factory=list)
    bad_files: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def images(self) -> int:
        return sum(d.images for d in self.domains)

    def table(self) -> str:
        rows = [("domain", "classes", "images", "expected", "undecodable")]
        for d in self.domains:
            rows.append((d.name, str(d.classes), f"{d.images:,}", _maybe(d.expected),
                         f"{d.bad:,}" if self.decoded else "not checked"))
        expected = [d.expected for d in self.domains]
        rows.append(("total", str(len(self.classes)), f"{self.images:,}",
                     _maybe(sum(expected) if expected and None not in expected else None),
                     f"{len(self.bad_files):,}" if self.decoded else "not checked"))
        return _format_table(rows)

    def render(self) -> str:
        checked = "counts checked against the registry" if self.spec else "no registered counts to check"
        sizes = (console.counted(len(self.domains), "domain"), console.counted(len(self.classes), "class", "classes"),
                 console.counted(self.images, "image"))
        lines = [f"{_title(self.name, self.root)}: {', '.join(sizes)} ({checked})", "", self.table(), ""]
        lines += [f"note: {note}" for note in self.notes]
        if self.ok:
            decoded = "; every image decodes" if self.decoded else "; images not decoded (--no-decode)"
            lines.append(f"OK: layout, class folders and counts check out{decoded}")
        else:
            lines.append(f"FAILED: {console.counted(len(self.problems), 'problem')}:")
            lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def _title(name: str, root: Path) -> str:
    """`NAME at PATH`, or the path alone where it is the name (`droptune data info mydata`)."""
    return str(root) if str(root) == name else f"{name} at {root}"


def _maybe(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _format_table(rows: list[tuple[str, ...]]) -> str:
    """Aligned columns: numbers to the right, text to the left."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [i > 0 and all(row[i][:1].isdigit() or row[i] == "-" for row in rows[1:])
               for i in range(len(widths))]
    return "\n".join(
        "  ".join((cell.rjust(w) if right else cell.ljust(w)) for cell, w, right in zip(row, widths, numeric)).rstrip()
        for row in rows
    )


def _spec_problems(layout: Layout, spec: DatasetSpec) -> list[str]:
    missing = sorted(set(spec.domains) - set(layout.domains))
    extra = sorted(set(layout.domains) - set(spec.domains))
    if not missing and not extra:
        return []
    problems = [f"{layout.root} does not hold {spec.name}'s domains: missing {missing}, unexpected {extra}"]
    for child in layout.domains:
        if set(spec.domains) <= set(subfolders(layout.root / child)):
            move = (f"move its domain folders up into {layout.root}" if layout.root.name == spec.folder else
                    f"move it to {layout.root.parent / spec.folder}")
            problems.append(f"{spec.name}'s domains are one level down, in {layout.root / child}: "
                            f"verify that folder, or {move}")
    return problems


def _class_problems(layout: Layout, spec: DatasetSpec | None) -> list[str]:
    problems = []
    for cls in layout.all_classes:
        lacking = [d for d in layout.domains if cls not in layout.classes[d]]
        if lacking:
            having = [d for d in layout.domains if cls in layout.classes[d]]
            problems.append(f"class folder {cls!r} is in {', '.join(having)} but missing from {', '.join(lacking)}")
    if spec is not None and layout.all_classes and len(layout.all_classes) != spec.num_classes:
        problems.append(f"{len(layout.all_classes)} class folders in {layout.root}, "
                        f"but {spec.name} has {spec.num_classes} classes")
    for domain in layout.domains:
        if not layout.classes[domain]:
            problems.append(f"domain folder {layout.root / domain} has no class folders")
        for cls in layout.classes[domain]:
            if not layout.images[domain][cls]:
                problems.append(f"empty class folder: {layout.root / domain / cls} has no images")
    return problems


def _training_problems(layout: Layout) -> list[str]:
    """What `droptune train` refuses in a folder that is otherwise well laid out."""
    problems = []
    if len(layout.domains) == 1:
        problems.append(single_domain(layout.root, layout.domains[0]))
    if len(layout.all_classes) == 1:
        problems.append(single_class(layout.root, layout.all_classes[0]))
    return problems


def verify(root: str | os.PathLike, spec: DatasetSpec | None = None, decode: bool = True,
           workers: int | None = None) -> Report:
    """Check layout, class folders, counts (when `spec` knows them) and, with `decode`, every image."""
    layout = scan(root)
    problems = [] if layout.domains else [f"no domain folders in {layout.root}: expected <domain>/<class>/<image>"]
    if spec is not None:
        problems += _spec_problems(layout, spec)
    problems += _class_problems(layout, spec)
    problems += _training_problems(layout)
    summaries = []
    for domain in layout.domains:
        expected = spec.counts.get(domain) if spec is not None else None
        found = layout.count(domain)
        if expected is not None and found != expected:
            difference = f"{expected - found:,} missing" if found < expected else f"{found - expected:,} too many"
            problems.append(f"{layout.root / domain} has {found:,} images, expected {expected:,} ({difference})")
        summaries.append(DomainSummary(domain, len(layout.classes[domain]), found, expected))
    bad_files = find_undecodable(layout.all_images(), workers) if decode else []
    for path, reason in bad_files:
        problems.append(f"cannot decode {path}: {reason}")
        domain = path.relative_to(layout.root).parts[0]
        next(s for s in summaries if s.name == domain).bad += 1
    name = spec.name if spec is not None else layout.root.name
    return Report(layout.root, name, spec, layout.all_classes, summaries, decode, problems, bad_files,
                  layout.notes())


def resolve(target: str, data_dir: str | os.PathLike | None = None) -> tuple[Path, DatasetSpec | None]:
    """The folder `open_dataset(target, data_dir)` reads, and the registered spec to check it against.

    A folder named after a registered dataset (`.../PACS`) is checked against that dataset.
    """
    spec = get_spec(target)
    if spec is None:
        root = unregistered_folder(target, data_dir)
        return root, spec_of_folder(root)
    root = spec.root(data_dir)
    if root.exists() and not root.is_dir():
        raise DroptuneError(f"{spec.name}'s folder {root} is a file, not a folder: move it away, or pass the "
                            f"--data-dir that holds {spec.name}")
    if not root.is_dir():
        raise DroptuneError(f"{spec.name} not found at {root}: download it with `droptune data download "
                            f"{spec.name} --data-dir {root.parent}`, or pass the --data-dir that holds it")
    return root, spec


def info(root: str | os.PathLike, name: str | None = None) -> str:
    """A description of any `<domain>/<class>/<image>` folder: domains, classes and image counts."""
    layout = scan(root)
    title = _title(name or layout.root.name, layout.root)
    if not layout.domains:
        return describe(title, {}) + "\n\nno domain folders: expected <domain>/<class>/<image>"
    text = describe(title, {d: {c: layout.count(d, c) for c in layout.classes[d]} for d in layout.domains})
    if any(layout.classes[d] != layout.all_classes for d in layout.domains):
        text += f"\n\nclass folders differ across domains: `droptune data verify {layout.root}` lists them"
    return text


def builtin_info(dataset: MultiDomainDataset) -> str:
    """The same description of a dataset droptune makes itself (RotatedDigits)."""
    counts = {}
    for index, domain in enumerate(dataset.domains):
        labels = Counter(int(label) for label in dataset.labels(index))
        counts[domain] = {dataset.classes[k]: labels[k] for k in sorted(labels)}
    return describe(f"{dataset.name} (built into droptune: no folder, nothing to download)", counts)


def describe(title: str, counts: dict[str, dict[str, int]]) -> str:
    """`title`: its sizes, then a table of domains and, for few classes, one of images per class and domain."""
    classes = sorted({c for per_class in counts.values() for c in per_class})
    total = sum(sum(per_class.values()) for per_class in counts.values())
    lines = [f"{title}: {console.counted(len(counts), 'domain')}, {console.counted(len(classes), 'class', 'classes')}"
             f", {console.counted(total, 'image')}", ""]
    if not counts:
        return lines[0]
    rows = [("domain", "classes", "images")]
    rows += [(d, str(len(per_class)), f"{sum(per_class.values()):,}") for d, per_class in counts.items()]
    lines += [_format_table(rows), ""]
    if len(classes) <= PER_CLASS_TABLE_LIMIT:
        rows = [("class", *counts)]
        rows += [(c, *(f"{counts[d].get(c, 0):,}" for d in counts)) for c in classes]
        lines.append(_format_table(rows))
    else:
        lines.append(textwrap.fill("classes: " + ", ".join(classes), width=100, subsequent_indent="  "))
    return "\n".join(lines)


def datasets_table(specs: Iterable[DatasetSpec]) -> str:
    """The registry: each dataset's folder, domains, classes, known image count and whether droptune downloads it."""
    rows = [("dataset", "folder", "domains", "classes", "images", "download")]
    rows += [(s.name, s.folder or "-", str(len(s.domains)), str(s.num_classes), f"{s.total:,}" if s.counts else "-",
              "yes" if s.recipe else "no" if s.folder else "built in") for s in specs]
    return _format_table(rows)
