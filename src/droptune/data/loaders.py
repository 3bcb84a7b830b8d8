"""Batches for the DomainBed protocol: one batch per training domain each step, and evaluation sets.

Training batches are a pure function of (seed, step): the sampling order and each image's
augmentation seed are derived from them, so a resumed run draws exactly the batches an
uninterrupted one would, with any number of loader workers.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from droptune.data.batch_augment import sample_params
from droptune.data.domains import MultiDomainDataset
from droptune.data.splits import stable_seed
from droptune.data.transforms import eval_transform, train_transform

Key = tuple[int, int, int | None]  # (domain, image index, augmentation seed or None)


class DomainImages(Dataset):
    """Reads and transforms images addressed by (domain, index, seed) keys into uint8 tensors.

    A key with a seed gets DomainBed's training augmentation (none with `augment=False`; by default
    the dataset's choice), seeded; a key without one the evaluation transform, which resizes the
    whole image to `size`, so the image is read already shrunk towards that size.
    """

    def __init__(self, dataset: MultiDomainDataset, size: int, augment: bool | None = None):
        self.dataset = dataset
        self.augment = dataset.augment_by_default if augment is None else augment
        self.train_transform = train_transform(size, self.augment)
        self.eval_transform = eval_transform(size)
        self.size = size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key):
        domain, index, seed = key
        image = self.dataset.read(domain, index, self.size if seed is None else None)
        if seed is None:
            x = self.eval_transform(image)
        else:
            with seeded(seed):
                x = self.train_transform(image)
        return x, int(self.dataset.labels(domain)[index])


class BatchAugmentImages(Dataset):
    """Training images for `batch_augment.augment_batch`: ((uint8 size×size image, parameters), label) per key.

    Each image is read resized to `size`×`size` (as the evaluation transform and the decoded cache do)
    and its augmentation parameters are drawn from its key's seed, so the loader only reads, and
    the device augments whole batches.
    """

    def __init__(self, dataset: MultiDomainDataset, size: int):
        self.dataset = dataset
        self.resize = eval_transform(size)
        self.size = size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key):
        domain, index, seed = key
        x = self.resize(self.dataset.read(domain, index, self.size))
        with seeded(seed):
            params = sample_params(self.size, self.size)
        return (x, params), int(self.dataset.labels(domain)[index])


@contextlib.contextmanager
def seeded(seed: int):
    """Seed the CPU generator (which torchvision's transforms draw from) and restore it afterwards.

    Not `torch.manual_seed`: on CUDA builds it also queues a CUDA seeding with a captured stack
    trace, which costs more than the transform itself.
    """
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


class DomainBalancedBatches:
    """Batch sampler: for each step, `batch_size` images from each training domain, concatenated.

    Each domain is read in epochs of a fresh permutation seeded by (seed, domain, epoch).
    """

    def __init__(self, domains: Sequence[tuple[int, np.ndarray]], batch_size: int, seed: int,
                 start_step: int, end_step: int):
        self.domains = list(domains)
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.end_step = end_step
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def _permutation(self, domain: int, epoch: int, size: int) -> np.ndarray:
        key = (domain, epoch)
        if key not in self._permutations:
            self._permutations = {k: v for k, v in self._permutations.items() if k[0] != domain}
            rng = np.random.default_rng(stable_seed("order", self.seed, domain, epoch))
            self._permutations[key] = rng.permutation(size)
        return self._permutations[key]

    def batch(self, step: int) -> list[Key]:
        keys: list[Key] = []
        for domain, indices in self.domains:
            for slot in range(self.batch_size):
                position = step * self.batch_size + slot
                epoch, offset = divmod(position, len(indices))
                index = int(indices[self._permutation(domain, epoch, len(indices))[offset]])
                keys.append((domain, index, stable_seed("augment", self.seed, step, domain, slot)))
        return keys

    def __iter__(self) -> Iterator[list[Key]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch(step)


@dataclass(frozen=True)
class EvalSplit:
    """A named set of images to score, e.g. ("photo", "holdout")."""

    domain: str
    split: str
    keys: list[Key]


def ignore_stop_signals(_worker_id: int) -> None:
    """Loader workers leave Ctrl-C (SIGINT, sent to the whole process group) to the trainer, which finishes its
    step and saves. SIGTERM keeps its default: multiprocessing ends leftover workers with it at exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(images: DomainImages, batches, workers: int, pin_memory: bool = False) -> DataLoader:
    """A loader that leaves the global RNG alone (its own generator), so dropout masks survive a resume."""
    return DataLoader(
        images,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator(),
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )


def eval_batches(splits: Sequence[EvalSplit], batch_size: int) -> tuple[list[list[Key]], list[int]]:
    """Batches that never mix splits, and the split index of each batch."""
    batches, owners = [], []
    for owner, split in enumerate(splits):
        for start in range(0, len(split.keys), batch_size):
            batches.append(split.keys[start : start + batch_size])
            owners.append(owner)
    return batches, owners
