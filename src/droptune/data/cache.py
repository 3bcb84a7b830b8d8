"""An opt-in cache of decoded images, for machines where JPEG decoding is the bottleneck.

Every image is decoded and resized once to `size`×`size` into a uint8 `.npy` file that is then
memory-mapped, so later epochs and runs read pixels instead of decoding files. The file name
carries a hash of the file list, their sizes and modification times and `size`: any change to
the dataset gives a new name, and the stale file for the same folder and size is removed when
the new one is built.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from droptune.data.domains import ImageFolderDomains, MultiDomainDataset
from droptune.data.verify import threaded_map
from droptune.errors import DroptuneError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: JPEGs decoded at a reduced scale no smaller than the cache size


def _running(pid: int) -> bool:
    """Whether process `pid` of this machine still runs (a build of another machine sharing the folder is named by
    its host, and left alone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CachedDomains(MultiDomainDataset):
    """`dataset` with each image read from a memory-mapped cache, resized to `size`×`size`.

    The resize ignores the aspect ratio, as the evaluation transform does; pick a `size` at least
    the training image size so that the training crop still has pixels to work with.
    """

    def __init__(self, dataset: ImageFolderDomains, size: int, cache_dir: str | os.PathLike,
                 workers: int | None = None, progress: bool | None = None):
        if size < 1:
            raise DroptuneError(f"cache image size must be a positive number of pixels, got {size}")
        self.dataset = dataset
        self.name, self.domains, self.classes = dataset.name, dataset.domains, dataset.classes
        self.augment_by_default = dataset.augment_by_default
        self.size = size
        self._keys = [(d, i) for d in range(len(self.domains)) for i in range(len(dataset.labels(d)))]
        self._offsets = np.cumsum([0] + [len(dataset.labels(d)) for d in range(len(self.domains))])
        place = hashlib.sha256(str(dataset.root.resolve()).encode()).hexdigest()[:8]
        self._prefix = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{place}-{size}px-"
        self.path = Path(cache_dir).expanduser() / f"{self._prefix}{self._fingerprint()}.npy"
        self._array: np.ndarray | None = None
        if not self._usable():
            self._build(workers, progress)

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"droptune image cache v{FORMAT_VERSION}\n{self.size}\n".encode())
        for domain, index in self._keys:
            path = self.dataset.path(domain, index)
            try:
                stat = path.stat()
            except OSError as error:
                raise DroptuneError(f"cannot read image {path} for the cache: {error}") from None
            label = self.dataset.labels(domain)[index]
            relative = path.relative_to(self.dataset.root).as_posix()
            digest.update(f"{label}\t{relative}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:20]

    @property
    def _shape(self) -> tuple[int, int, int, int]:
        return (len(self._keys), self.size, self.size, 3)

    def _usable(self) -> bool:
        if not self.path.is_file():
            return False
        try:
            array = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return array.shape == self._shape and array.dtype == np.uint8

    def _resized(self, key: tuple[int, int]) -> np.ndarray:
        image = self.dataset.read(*key, shrink_to=self.size)
        return np.asarray(image.resize((self.size, self.size), Image.BILINEAR), dtype=np.uint8)

    def _build(self, workers: int | None, progress: bool | None) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise DroptuneError(f"cannot cache {self.name} in {self.path.parent}: a file is in the way of the "
                                "folder (cache_dir names a folder)") from None
        partial = self.path.with_name(f"{self.path.name}.{socket.gethostname()}.{os.getpid()}.partial")
        try:
            array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=self._shape)
            images = threaded_map(self._resized, self._keys, workers, f"caching {self.name} at {self.size}px",
                                  progress)
            for position, pixels in enumerate(images):
                array[position] = pixels
            array.flush()
            del array
            partial.replace(self.path)
        except OSError as error:
            raise DroptuneError(f"cannot write the image cache {partial}: {error}") from None
        finally:
            partial.unlink(missing_ok=True)
        for stale in self.path.parent.glob(f"{self._prefix}*.npy"):
            if stale != self.path:
                stale.unlink(missing_ok=True)
        for killed in self.path.parent.glob(f"{self._prefix}*.{glob.escape(socket.gethostname())}.*.partial"):
            if not _running(int(killed.name.rsplit(".", 2)[-2])):  # a build killed before its cleanup ran
                killed.unlink(missing_ok=True)
        log.info("cached %d images of %s in %s", len(self._keys), self.name, self.path)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def labels(self, domain: int) -> np.ndarray:
        return self.dataset.labels(domain)

    def describe(self, domain: int, index: int) -> str:
        return self.dataset.describe(domain, index)

    def image_names(self, domain: int) -> list[str] | None:
        return self.dataset.image_names(domain)

    def read(self, domain: int, index: int, shrink_to: int | None = None) -> Image.Image:
        if not 0 <= index < len(self.dataset.labels(domain)):
            raise IndexError(f"image {index} of {self.name}/{self.domains[domain]} does not exist")
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return Image.fromarray(np.array(self._array[self._offsets[domain] + index]))
