"""Sweeps, launchers, reports and the summary across sweeps."""

from pathlib import Path

PRESETS = Path(__file__).resolve().parent / "presets"  # the sweep files `droptune sweep NAME` knows
