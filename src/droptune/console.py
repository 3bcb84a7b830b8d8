"""What droptune shows on stderr: progress bars for a person at a terminal; a log file (a sweep's, CI's) gets
plain lines instead of thousands of carriage-return updates. `progress`: None follows whether stderr is a
terminal, True and False force the bars on and off."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm


def shown(progress: bool | None = None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def bar(progress: bool | None = None, **options) -> tqdm:
    """A tqdm bar (same options), disabled unless `shown(progress)`."""
    return tqdm(disable=not shown(progress), dynamic_ncols=True, **options)


def line(text: str) -> None:
    """One plain line on stderr, where a bar would have been."""
    print(text, file=sys.stderr, flush=True)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """"1 domain", "3 domains", "1,200 images"; `plural` where adding an s is wrong ("classes")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: when stderr is a terminal; otherwise plain lines)")
