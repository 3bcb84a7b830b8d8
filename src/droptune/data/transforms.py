"""DomainBed's training augmentation and the clean evaluation transform, on uint8 images.

Both end in uint8 CHW tensors: a quarter of the bytes of float through loader processes and to the
device, and the model normalizes whole batches itself (`DropoutClassifier.features`), as timm's
prefetcher does on the GPU.
"""

from __future__ import annotations

from torchvision.transforms import v2

CROP_SCALE = (0.7, 1.0)  # DomainBed's: the crop keeps 70-100% of the image's area
CROP_RATIO = (3 / 4, 4 / 3)
FLIP_P = 0.5
JITTER = 0.3  # brightness, contrast, saturation and hue
GRAYSCALE_P = 0.1


def eval_transform(size: int):
    """Resize to size×size: no crop, no randomness (DomainBed's evaluation)."""
    return v2.Compose([v2.Resize((size, size), antialias=True), v2.ToImage()])


def train_transform(size: int, augment: bool = True):
    """DomainBed's augmentation (the paper's): crop 70-100%, flip, colour jitter 0.3, grayscale."""
    if not augment:
        return eval_transform(size)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
        v2.RandomHorizontalFlip(FLIP_P),
        v2.ColorJitter(JITTER, JITTER, JITTER, JITTER),
        v2.RandomGrayscale(GRAYSCALE_P),
        v2.ToImage(),
    ])
