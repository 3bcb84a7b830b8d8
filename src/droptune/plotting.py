"""Figure files, for the report's figures and the analyses' alike: one way to write them, whoever draws them."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def save(figure: Figure, stem: Path) -> list[Path]:
    """PNG and PDF; matplotlib's object API, so no GUI backend or global figure state is involved."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    return paths
