"""Argument types the commands share: a bad value is argparse's one-line usage error, not a traceback later."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def count(minimum: int) -> Callable[[str], int]:
    """An integer of at least `minimum` (batch sizes: 1, worker processes: 0)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}, got {value}")
        return value
    return parse


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """One `--device` for every command that runs a model: like training's, `auto` takes CUDA where there is one."""
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N")
