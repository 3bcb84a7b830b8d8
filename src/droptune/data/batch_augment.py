"""DomainBed's training augmentation applied to whole uint8 batches with tensor operations, on the device.

Per-image augmentation in loader processes (PIL, one image at a time) cannot feed a GPU that
trains at thousands of images/s. Here the loader only reads each image resized to the training
size and draws its augmentation parameters (`sample_params`, the same random draws in the same
order as `transforms.train_transform`, so a seed gives the same crop box, flip, jitter and
grayscale as the per-image path on that image); `augment_batch` then applies them to the whole
batch on the device. The colour operations are torchvision's tensor kernels with one factor per
image; the crop-and-resize is bilinear interpolation of the crop, torchvision's resize for a crop
no larger than the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import to_dtype
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_grayscale_image, _rgb_to_hsv

from droptune.data.transforms import CROP_RATIO, CROP_SCALE, FLIP_P, GRAYSCALE_P, JITTER

# Columns of a parameter row.
TOP, LEFT, HEIGHT, WIDTH, FLIP, GRAY, BRIGHTNESS, CONTRAST, SATURATION, HUE = range(10)
ORDER = slice(10, 14)  # the colour operations' order: 0 brightness, 1 contrast, 2 saturation, 3 hue
PARAMS = 14


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high).item())


def _crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (top, left, height, width), drawn the way it draws it."""
    area = height * width
    log_ratio = torch.log(torch.tensor(CROP_RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(*CROP_SCALE).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)).item())
            left = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(CROP_RATIO):
        w, h = width, int(round(width / min(CROP_RATIO)))
    elif in_ratio > max(CROP_RATIO):
        w, h = int(round(height * max(CROP_RATIO))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_params(height: int, width: int) -> torch.Tensor:
    """One image's augmentation parameters from the global CPU generator, as `train_transform` draws them."""
    row = torch.zeros(PARAMS, dtype=torch.float64)
    row[TOP], row[LEFT], row[HEIGHT], row[WIDTH] = _crop_box(height, width)
    row[FLIP] = float(torch.rand(1) < FLIP_P)
    row[ORDER] = torch.randperm(4).double()
    row[BRIGHTNESS] = _uniform(1 - JITTER, 1 + JITTER)
    row[CONTRAST] = _uniform(1 - JITTER, 1 + JITTER)
    row[SATURATION] = _uniform(1 - JITTER, 1 + JITTER)
    row[HUE] = _uniform(-JITTER, JITTER)
    row[GRAY] = float(torch.rand(1) < GRAYSCALE_P)
    return row


def resized_crops(images: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's crop box resized to size×size by bilinear interpolation (float, not rounded).

    Output pixel i of a crop of side s samples the crop at (i + 0.5)·s/size − 0.5, clamped to the
    crop: torchvision's (antialiased) bilinear resize whenever s <= size, the case of a crop of a
    size×size image.
    """
    boxes = params[:, [TOP, LEFT, HEIGHT, WIDTH]].to(images.device, torch.float32)
    top, left, height, width = boxes.unbind(1)
    steps = torch.arange(size, device=images.device, dtype=torch.float32) + 0.5

    def coordinates(start, extent, side):
        at = (steps[None] * (extent / size)[:, None] - 0.5).clamp(min=0)
        at = torch.minimum(at, (extent - 1)[:, None]) + start[:, None]
        return at * (2 / (side - 1)) - 1  # align_corners=True: -1 and 1 are the first and last pixels' centres

    ys = coordinates(top, height, images.shape[-2])
    xs = coordinates(left, width, images.shape[-1])
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return images.mul(ratio).addcmul_(other, 1 - ratio).clamp_(0, 255).to(torch.uint8)


def _gray(images: torch.Tensor) -> torch.Tensor:
    return _rgb_to_grayscale_image(images, num_output_channels=1, preserve_dtype=False).floor_()


def _brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return images.mul(factor).clamp_(0, 255).to(torch.uint8)


def _contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _gray(images).mean(dim=(-3, -2, -1), keepdim=True), factor)


def _saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _gray(images), factor)


def _hue(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(to_dtype(images, torch.float32, scale=True))
    h, s, v = hsv.unbind(dim=-3)
    h = h.add(factor[:, :, 0]).remainder_(1.0)
    return to_dtype(_hsv_to_rgb(torch.stack((h, s, v), dim=-3)), torch.uint8, scale=True)


COLOUR_OPS = ((_brightness, BRIGHTNESS), (_contrast, CONTRAST), (_saturation, SATURATION), (_hue, HUE))


def augment_batch(images: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 3, S, S) images and CPU parameter rows → the augmented uint8 (B, 3, size, size) batch.

    Which images each operation touches is read from the CPU parameters, so nothing waits on the device.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a uint8 batch of shape (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    params = params.cpu()
    out = resized_crops(images, params, size).round_().clamp_(0, 255).to(torch.uint8)
    device = images.device

    def where(mask: torch.Tensor) -> torch.Tensor:
        return mask.nonzero().flatten().to(device, non_blocking=True)

    flips = where(params[:, FLIP] > 0)
    out[flips] = out[flips].flip(-1)
    order = params[:, ORDER].long()
    factors = params.float().to(device, non_blocking=True)
    for position in range(4):
        for op_index, (op, column) in enumerate(COLOUR_OPS):
            chosen = where(order[:, position] == op_index)
            if len(chosen):
                out[chosen] = op(out[chosen], factors[chosen, column].view(-1, 1, 1, 1))
    grays = where(params[:, GRAY] > 0)
    out[grays] = _rgb_to_grayscale_image(out[grays], num_output_channels=3, preserve_dtype=True)
    return out
