"""Atomic files: a reader never sees half a file, an interruption never corrupts one; text files read with an
error that names them."""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from droptune.errors import DroptuneError

TOKEN_BYTES = 8
PARTIAL = re.compile(rf"^\.(?P<name>.+)\.[0-9a-f]{{{2 * TOKEN_BYTES}}}$")  # atomic_write's temporary file
FULL_BELOW = 64 * 2**20  # free bytes under which a failed write is taken for a full disk


class NoSpace(DroptuneError):
    """A write that failed for want of disk space."""


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
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        free = _free_if_full(path.parent, error)
        if free is not None:
            raise NoSpace(f"cannot write {path}: no space left on its file system ({free / 2**20:.0f} MiB free); "
                          "the file it would replace is unchanged") from None
        raise


def _free_if_full(folder: Path, error: BaseException) -> int | None:
    """The free bytes of `folder`'s file system when `error` came from its being full, else None. torch and
    safetensors say it in their own words ("unexpected pos ...", an I/O error), so the free space decides."""
    if not isinstance(error, Exception):
        return None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    return free if getattr(error, "errno", None) == errno.ENOSPC or free < FULL_BELOW else None


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
