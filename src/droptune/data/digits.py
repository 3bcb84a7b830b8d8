"""RotatedDigits: DomainBed's RotatedMNIST recipe on scikit-learn's bundled digits (no download).

The 1,797 8×8 digits are shuffled once with a fixed seed and dealt into six disjoint domains,
each rotated by its angle (0°, 15°, …, 75°), as DomainBed does with MNIST.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from droptune.data.domains import MultiDomainDataset

NATIVE_SIZE = 32
ANGLES = ("0", "15", "30", "45", "60", "75")


class RotatedDigits(MultiDomainDataset):
    name = "RotatedDigits"
    augment_by_default = False  # DomainBed does not augment RotatedMNIST: the rotation is the domain

    def __init__(self, size: int = NATIVE_SIZE, shuffle_seed: int = 0):
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.domains = list(ANGLES)
        self.classes = [str(c) for c in range(10)]
        order = np.random.default_rng(shuffle_seed).permutation(len(digits.target))
        pixels = (digits.images * (255.0 / 16.0)).astype(np.uint8)
        self._images: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        for d, angle in enumerate(self.domains):
            chosen = order[d :: len(self.domains)]
            self._images.append(np.stack([_rotate(pixels[i], float(angle), size) for i in chosen]))
            self._labels.append(digits.target[chosen].astype(np.int64))

    def labels(self, domain: int) -> np.ndarray:
        return self._labels[domain]

    def read(self, domain: int, index: int, shrink_to: int | None = None) -> Image.Image:
        return Image.fromarray(self._images[domain][index]).convert("RGB")


def _rotate(image: np.ndarray, angle: float, size: int) -> np.ndarray:
    big = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    return np.asarray(big.rotate(angle, resample=Image.BILINEAR, fillcolor=0))
