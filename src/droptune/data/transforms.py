"""DomainBed's training augmentation and the clean evaluation transform, on uint8 images.

Both end in uint8 CHW tensors: a quarter of the bytes of float through loader processes and to the
device, and the model normalizes whole batches itself (`DropoutClassifier.features`), as timm's
prefetcher does on the GPU.
"""

from __future__ import annotations

from torchvision.transforms import v2


def eval_transform(size: int):
    """Resize to size×size: no crop, no randomness (DomainBed's evaluation)."""
    return v2.Compose([v2.Resize((size, size), antialias=True), v2.ToImage()])


def train_transform(size: int, augment: bool = True):
    """DomainBed's augmentation (the paper's): crop 70-100%, flip, colour jitter 0.3, grayscale."""
    if not augment:
        return eval_transform(size)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.3, 0.3, 0.3, 0.3),
        v2.RandomGrayscale(),
        v2.ToImage(),
    ])
