"""Sweeps, launchers, reports and the summary across sweeps."""

from pathlib import Path

PRESETS = Path(__file__).resolve().parent / "presets"  # the sweep files `droptune sweep NAME` knows


def preset_names() -> str:
    """The presets' names, comma-separated, for help and error messages."""
    return ", ".join(sorted(path.stem for path in PRESETS.glob("*.yaml")))
