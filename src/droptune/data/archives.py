"""Unpacking downloaded archives: zip and tar, refusing any entry that would land outside the folder."""

from __future__ import annotations

import gzip
import platform
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from droptune.errors import DroptuneError


def safe_parts(name: str) -> tuple[str, ...] | None:
    """The parts of a relative path that stays inside its folder, else None."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path.parts


def _refuse_unsafe(archive: Path, name: str) -> None:
    if safe_parts(name) is None:
        raise DroptuneError(f"archive {archive} holds a path outside its folder, {name!r}: refusing to extract it")


def extract(archive: Path, into: Path, owned: bool) -> None:
    """Unpack a zip or tar archive; a damaged one (deleted if droptune downloaded it) is a clear error."""
    try:
        if archive.name.endswith(".zip") or zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                names = bundle.namelist()
                for name in names:
                    _refuse_unsafe(archive, name)
                for name in tqdm(names, desc=f"extracting {archive.name}", unit="file"):
                    bundle.extract(name, into)
        else:
            if not hasattr(tarfile, "data_filter"):
                raise DroptuneError(f"extracting {archive.name} safely needs tarfile's extraction filters, in Python "
                                    f"3.10.12, 3.11.4 or later; this is Python {platform.python_version()}: upgrade "
                                    "it, or extract the archive yourself and check the result with `droptune data "
                                    "verify`")
            with tarfile.open(archive, "r:*") as bundle:
                for member in tqdm(bundle, desc=f"extracting {archive.name}", unit="file"):
                    _refuse_unsafe(archive, member.name)
                    bundle.extract(member, into, filter="data")
    except getattr(tarfile, "FilterError", ()) as error:  # absent before Python 3.10.12 and 3.11.4
        raise DroptuneError(f"archive {archive} holds an unsafe entry ({error}): refusing to extract it") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError,
            zlib.error) as error:
        if owned:
            archive.unlink()
        remedy = "deleted it: run the command again to download it anew" if owned else "get a new copy"
        raise DroptuneError(f"archive {archive} is damaged or incomplete ({error}); {remedy}") from None
    except OSError as error:
        raise DroptuneError(f"cannot extract {archive} into {into}: {error}") from None
