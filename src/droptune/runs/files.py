"""Atomic files: a reader never sees half a file, an interruption never corrupts one; text files read with an
error that names them."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from droptune.errors import DroptuneError


TOKEN_BYTES = 8
PARTIAL = re.compile(rf"^\.(?P<name>.+)\.[0-9a-f]{{{2 * TOKEN_BYTES}}}$")  # atomic_write's temporary file


def partial_writes(folder: Path) -> list[Path]:
    """The temporary files of `folder` that an atomic_write killed mid-write (kill -9, power loss) left behind."""
    return sorted(p for p in Path(folder).iterdir() if PARTIAL.match(p.name) and p.is_file())


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place.

    The file gets the umask's permissions, as `open` would give it: mkstemp's 0600, or safetensors' own, would hide
    weights and results from the rest of a group on a shared cluster file system."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(TOKEN_BYTES)}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = os.stat(tmp).st_mode
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file the user named (notes, a sweep file); one that is not text is a one-line error."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DroptuneError(f"cannot read {what} {path}: not UTF-8 text ({error.reason} at byte {error.start})"
                            ) from None


def save_json(obj: Any, path: Path) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")

    atomic_write(path, write)
