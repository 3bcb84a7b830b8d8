"""docs/architecture.md's layers hold in the code: a package imports only from the packages below it in the
page's table (not from one of the same row), and the modules beside the packages import none of them (but
droptune/__init__.py, the public names, which imports them from the packages on first use)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO / "src" / "droptune"


def layers() -> dict[str, int]:
    """Package -> its row in the Layers table, counted from the bottom: a package may import lower numbers."""
    section = (REPO / "docs" / "architecture.md").read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {package: len(rows) - i for i, row in enumerate(rows)
            for package in re.findall(r"`(\w+)/`", row.split("|")[1])}


def droptune_imports(path: Path) -> list[tuple[int, str]]:
    """(line, droptune sub-package or module) of every import in the file, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names
                  if name.startswith("droptune.")]
    return found


def test_the_table_names_every_package():
    packages = {path.name for path in PACKAGE_ROOT.iterdir() if (path / "__init__.py").is_file()}
    assert set(layers()) == packages


def test_packages_import_only_from_below():
    rank = layers()
    breaks = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = path.relative_to(PACKAGE_ROOT).parts
        if parts == ("__init__.py",):
            continue
        for line, target in droptune_imports(path):
            if len(parts) == 1:
                if target in rank:
                    breaks.append(f"{parts[0]}:{line} (beside the packages) imports {target}/")
            elif target in rank and target != parts[0] and rank[target] >= rank[parts[0]]:
                breaks.append(f"{'/'.join(parts)}:{line} imports {target}/, not below {parts[0]}/")
    assert breaks == []


def test_the_public_names_are_the_lazy_ones_and_each_resolves():
    import droptune

    assert set(droptune.__all__) == {"DroptuneError", *droptune._LAZY}
    assert all(callable(getattr(droptune, name)) for name in droptune.__all__)
