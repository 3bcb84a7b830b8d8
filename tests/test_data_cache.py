"""The decoded-image cache: same images through the same API, rebuilt only when files change."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from droptune.data.cache import CachedDomains
from droptune.data.domains import ImageFolderDomains
from droptune.data.loaders import DomainImages
from droptune.errors import DroptuneError


@pytest.fixture
def dataset(tmp_path) -> ImageFolderDomains:
    rng = np.random.default_rng(0)
    for domain, count in (("day", 3), ("night", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / "pets" / domain / cls).mkdir(parents=True)
            for n in range(count):
                pixels = rng.integers(0, 256, (10 + n, 14, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "pets" / domain / cls / f"{n}.png")
    return ImageFolderDomains(tmp_path / "pets")


def evaluation_pixels(source, domain: int, index: int, size: int = 8) -> torch.Tensor:
    """An image as evaluation reads it (DomainImages' clean path), from the cache or from the files."""
    return DomainImages(source, size)[(domain, index, None)][0]


def test_reads_the_resized_images_through_the_dataset_api(dataset, tmp_path):
    cached = CachedDomains(dataset, 8, tmp_path / "cache")

    assert (cached.name, cached.domains, cached.classes) == ("pets", ["day", "night"], ["cat", "dog"])
    assert len(cached) == 10 and list(cached.labels(1)) == [0, 0, 1, 1]
    for domain, index in ((0, 0), (0, 5), (1, 3)):
        image = cached.read(domain, index)
        assert image.mode == "RGB" and image.size == (8, 8)
        assert torch.equal(evaluation_pixels(cached, domain, index), evaluation_pixels(dataset, domain, index))
    assert cached.describe(1, 3) == str(dataset.path(1, 3))
    assert np.load(cached.path, mmap_mode="r").shape == (10, 8, 8, 3)
    with pytest.raises(IndexError):
        cached.read(1, 4)

    x, label = DomainImages(cached, 8)[(1, 3, None)]
    assert tuple(x.shape) == (3, 8, 8) and x.dtype == torch.uint8 and label == 1


def test_a_second_open_reuses_the_cache_without_decoding(dataset, tmp_path, monkeypatch):
    first = CachedDomains(dataset, 8, tmp_path / "cache")
    stamp = first.path.stat().st_mtime_ns
    monkeypatch.setattr(dataset, "read", lambda *key, **hint: pytest.fail("decoded an image again"))

    second = CachedDomains(dataset, 8, tmp_path / "cache")

    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp
    assert np.array_equal(np.asarray(second.read(0, 2)), np.asarray(first.read(0, 2)))


def test_a_changed_file_rebuilds_the_cache(dataset, tmp_path):
    old = CachedDomains(dataset, 8, tmp_path / "cache")
    changed = dataset.path(0, 1)
    Image.new("RGB", (14, 10), (255, 0, 0)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))

    new = CachedDomains(ImageFolderDomains(dataset.root), 8, tmp_path / "cache")

    assert new.path != old.path and not old.path.exists()
    assert np.all(np.asarray(new.read(0, 1)) == (255, 0, 0))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [new.path.name]


def test_each_size_has_its_own_cache(dataset, tmp_path):
    small, large = CachedDomains(dataset, 4, tmp_path / "cache"), CachedDomains(dataset, 16, tmp_path / "cache")

    assert small.path.exists() and large.path.exists() and small.path != large.path
    assert large.read(0, 0).size == (16, 16)


def test_an_interrupted_build_leaves_no_cache(dataset, tmp_path, monkeypatch):
    read = dataset.read

    def failing(domain, index, shrink_to=None):
        if (domain, index) == (1, 2):
            raise DroptuneError(f"cannot read image {dataset.path(domain, index)}: broken")
        return read(domain, index, shrink_to)

    monkeypatch.setattr(dataset, "read", failing)
    with pytest.raises(DroptuneError, match="broken"):
        CachedDomains(dataset, 8, tmp_path / "cache", workers=1)
    assert list((tmp_path / "cache").iterdir()) == []

    monkeypatch.setattr(dataset, "read", read)
    assert CachedDomains(dataset, 8, tmp_path / "cache").path.exists()


def test_a_build_killed_on_this_machine_leaves_no_partial_file_behind(dataset, tmp_path):
    """Mutant: the partial file of a build killed before its cleanup (SIGKILL, a preempted job) stayed forever (1.5 GB
    for PACS at 224 px); one still being written, or written by another machine sharing the folder, is left alone."""
    first = CachedDomains(dataset, 8, tmp_path / "cache")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    killed, building, elsewhere = (first.path.with_name(f"{first.path.name}.{where}.partial") for where in
                                   (f"{host}.{finished.stdout.strip()}", f"{host}.{running.pid}", "other-host.1"))
    try:
        for path in (killed, building, elsewhere):
            path.write_bytes(b"")
        first.path.unlink()
        CachedDomains(dataset, 8, tmp_path / "cache")
    finally:
        running.kill()
        running.wait()
    assert not killed.exists() and building.exists() and elsewhere.exists()


def test_pickles_without_its_pixels_for_loader_workers(dataset, tmp_path):
    cached = CachedDomains(dataset, 32, tmp_path / "cache")
    cached.read(0, 0)

    copy = pickle.loads(pickle.dumps(cached))

    assert len(pickle.dumps(cached)) < 32 * 32 * 3 * 10
    assert np.array_equal(np.asarray(copy.read(1, 1)), np.asarray(cached.read(1, 1)))


def test_rejects_a_size_that_is_not_positive(dataset, tmp_path):
    with pytest.raises(DroptuneError, match="cache image size must be a positive number of pixels, got 0"):
        CachedDomains(dataset, 0, tmp_path / "cache")
    assert not Path(tmp_path / "cache").exists()


def same_pixels_as_the_files(cached: CachedDomains, dataset: ImageFolderDomains) -> bool:
    return all(torch.equal(evaluation_pixels(cached, d, i), evaluation_pixels(dataset, d, i))
               for d in range(len(dataset.domains)) for i in range(len(dataset.labels(d))))


def test_a_file_touched_alone_rebuilds_the_cache(dataset, tmp_path):
    """Mutant: the fingerprint ignores modification times (same bytes, same size, a new time)."""
    old = CachedDomains(dataset, 8, tmp_path / "cache")
    touched = dataset.path(1, 2)
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))

    new = CachedDomains(ImageFolderDomains(dataset.root), 8, tmp_path / "cache")

    assert new.path != old.path and not old.path.exists()


def test_a_file_of_another_size_with_its_old_time_rebuilds_the_cache(dataset, tmp_path):
    """Mutant: the fingerprint ignores file sizes (a file rewritten within the file system's time resolution)."""
    old = CachedDomains(dataset, 8, tmp_path / "cache")
    changed = dataset.path(0, 4)
    stat = changed.stat()
    Image.new("RGB", (40, 30), (0, 255, 0)).save(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert changed.stat().st_size != stat.st_size and changed.stat().st_mtime_ns == stat.st_mtime_ns

    new = CachedDomains(ImageFolderDomains(dataset.root), 8, tmp_path / "cache")

    assert new.path != old.path
    assert np.all(np.asarray(new.read(0, 4)) == (0, 255, 0))


def test_added_and_removed_images_rebuild_the_cache(dataset, tmp_path):
    """Mutant: a cache of the folder is reused after images were added or removed (the fingerprint leaves the file
    list out, and an array of another length is accepted)."""
    first = CachedDomains(dataset, 8, tmp_path / "cache")
    Image.new("RGB", (12, 12), (0, 0, 255)).save(dataset.root / "night" / "cat" / "9.png")
    grown = ImageFolderDomains(dataset.root)

    added = CachedDomains(grown, 8, tmp_path / "cache")

    assert added.path != first.path and len(added) == 11
    assert same_pixels_as_the_files(added, grown)
    (dataset.root / "day" / "dog" / "0.png").unlink()
    shrunk = ImageFolderDomains(dataset.root)

    removed = CachedDomains(shrunk, 8, tmp_path / "cache")

    assert removed.path not in (first.path, added.path) and len(removed) == 10
    assert same_pixels_as_the_files(removed, shrunk)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [removed.path.name]
