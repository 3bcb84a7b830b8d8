"""Argument types the commands share: a bad value is argparse's one-line usage error, not a traceback later."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _at_least(convert: Callable[[str], float], kind: str, minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {kind} of at least {minimum:g}, got {value:g}")
        return value
    return parse


def count(minimum: int) -> Callable[[str], int]:
    """An integer of at least `minimum` (batch sizes: 1, worker processes: 0)."""
    return _at_least(int, "an integer", minimum)


def amount(minimum: float) -> Callable[[str], float]:
    """A finite number of at least `minimum` (Ray's CPUs or GPUs per task, which may be fractions: 0)."""
    return _at_least(float, "a number", minimum)


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """One `--device` for every command that runs a model: like training's, `auto` takes CUDA where there is one."""
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N")
