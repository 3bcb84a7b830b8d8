"""DomainBed's training augmentation and the clean evaluation transform."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_normalized(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def eval_transform(size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """Resize to size×size and normalize: no crop, no randomness (DomainBed's evaluation)."""
    return v2.Compose([v2.Resize((size, size), antialias=True), *_to_normalized(mean, std)])


def train_transform(
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augment: bool = True,
):
    """DomainBed's augmentation (the paper's): crop 70-100%, flip, colour jitter 0.3, grayscale."""
    if not augment:
        return eval_transform(size, mean, std)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.3, 0.3, 0.3, 0.3),
        v2.RandomGrayscale(),
        *_to_normalized(mean, std),
    ])
