"""DomainBed's per-domain 80/20 split, seeded by the trial seed alone.

Every hyper-parameter setting and run seed of a trial sees the same split, so their
validation accuracies are comparable and their models can be combined.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any values, identical across processes and Python versions; a NumPy scalar counts as the
    Python value it holds (its repr differs, and changed in NumPy 2)."""
    plain = tuple(part.item() if isinstance(part, np.generic) else part for part in parts)
    digest = hashlib.sha256(repr(plain).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class DomainSplit:
    train: np.ndarray
    holdout: np.ndarray


def split_domain(num_images: int, domain: str, trial_seed: int, holdout_fraction: float = 0.2) -> DomainSplit:
    """Shuffle a domain's indices with a seed of (trial seed, domain) and hold out a fraction."""
    order = np.random.default_rng(stable_seed("split", trial_seed, domain)).permutation(num_images)
    cut = int(round(num_images * holdout_fraction))
    return DomainSplit(train=np.sort(order[cut:]), holdout=np.sort(order[:cut]))
