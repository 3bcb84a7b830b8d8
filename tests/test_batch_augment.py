"""Batch augmentation on the device: the per-image path's parameters, distribution and pixels, in whole batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from droptune.data.batch_augment import (BRIGHTNESS, FLIP, GRAY, HEIGHT, HUE, LEFT, ORDER, TOP, WIDTH, _crop_box,
                                         augment_batch, resized_crops, sample_params)
from droptune.data.loaders import seeded
from droptune.data.transforms import CROP_RATIO, CROP_SCALE, train_transform
from droptune.training.config import TrainConfig
from droptune.training.trainer import Trainer, train

SIZE = 48


def smooth_images(count: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Random uint8 images blurred a little, so that interpolation and colour operations have structure to act on."""
    noise = torch.randint(0, 256, (count, 3, size, size), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.avg_pool2d(noise.float(), 5, 1, 2).round().to(torch.uint8)


def params_for(seeds, size: int = SIZE, width: int | None = None) -> torch.Tensor:
    """Each seed's parameter row for a size×size image (size×width with `width`)."""
    rows = []
    for seed in seeds:
        with seeded(seed):
            rows.append(sample_params(size, width or size))
    return torch.stack(rows)


def recorded_params(monkeypatch, image: Image.Image, seed: int) -> dict:
    """The parameters the real per-image pipeline (PIL) applies to `image` under `seed`."""
    seen: dict = {"flip": False, "gray": False}

    def recorder(cls, name):
        original = cls.transform

        def transform(self, inpt, params):
            seen[name] = params if name in ("crop", "jitter") else True
            return original(self, inpt, params)

        monkeypatch.setattr(cls, "transform", transform)

    for cls, name in ((v2.RandomResizedCrop, "crop"), (v2.RandomHorizontalFlip, "flip"),
                      (v2.ColorJitter, "jitter"), (v2.RandomGrayscale, "gray")):
        recorder(cls, name)
    with seeded(seed):
        train_transform(SIZE)(image)
    return seen


def test_parameters_are_the_per_image_pipelines(monkeypatch):
    image = Image.fromarray(smooth_images(1)[0].permute(1, 2, 0).numpy())
    for seed in range(40):
        seen = recorded_params(monkeypatch, image, seed)
        row = params_for([seed])[0]
        crop = seen["crop"]
        assert [crop["top"], crop["left"], crop["height"], crop["width"]] == row[[TOP, LEFT, HEIGHT, WIDTH]].tolist()
        assert bool(seen["flip"]) == bool(row[FLIP]) and bool(seen["gray"]) == bool(row[GRAY])
        jitter = seen["jitter"]
        assert jitter["fn_idx"].tolist() == row[ORDER].long().tolist()
        factors = [jitter[f"{name}_factor"] for name in ("brightness", "contrast", "saturation", "hue")]
        assert factors == row[BRIGHTNESS:HUE + 1].tolist()


@pytest.mark.parametrize("height, width", [(10, 100), (100, 10), (30, 31), (7, 5), (1, 1)])
def test_crop_box_is_torchvisions_on_any_shape_to_the_pixel_and_the_draw(height, width):
    """Mutants of the crop box's attempts and of its fallback (the centre crop after ten failed draws, which only a
    very wide or tall image reaches): the box, or the number of random draws it took (which moves every later
    draw: flip, jitter, grayscale), differs from torchvision's for the same seed."""
    crop = v2.RandomResizedCrop(SIZE, scale=CROP_SCALE, ratio=CROP_RATIO)
    sampler = getattr(crop, "make_params", None) or crop._get_params
    for seed in range(20):
        with seeded(seed):
            ours = _crop_box(height, width), torch.rand(1)
        with seeded(seed):
            theirs = sampler([torch.zeros(3, height, width)]), torch.rand(1)
        box = theirs[0]
        assert ours[0] == (box["top"], box["left"], box["height"], box["width"]), seed
        assert torch.equal(ours[1], theirs[1]), seed


def test_parameter_distribution():
    """Against torchvision's own crop sampler on independent draws, and the configured rates and ranges."""
    rows = params_for(range(3000))
    assert abs(rows[:, FLIP].mean().item() - 0.5) < 0.04
    assert abs(rows[:, GRAY].mean().item() - 0.1) < 0.02
    crop = v2.RandomResizedCrop(SIZE, scale=(0.7, 1.0))
    sampler = getattr(crop, "make_params", None) or crop._get_params
    torch.manual_seed(12345)
    boxes = [sampler([torch.zeros(3, SIZE, SIZE)]) for _ in range(3000)]
    # Tolerances: a few times the sampling error of a quantile of 3,000 draws (area in px², ratio, top in px).
    for ours, theirs, rtol, atol in (
            (rows[:, HEIGHT] * rows[:, WIDTH], [b["height"] * b["width"] for b in boxes], 0.02, 0.0),
            (rows[:, WIDTH] / rows[:, HEIGHT], [b["width"] / b["height"] for b in boxes], 0.0, 0.02),
            (rows[:, TOP], [b["top"] for b in boxes], 0.0, 1.0)):
        quantiles = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
        expected = torch.quantile(torch.tensor(theirs, dtype=torch.float64), quantiles)
        torch.testing.assert_close(torch.quantile(ours, quantiles), expected, rtol=rtol, atol=atol)
    area = rows[:, HEIGHT] * rows[:, WIDTH] / SIZE**2
    assert area.min() > 0.66 and area.max() <= 1.0
    assert (rows[:, TOP] + rows[:, HEIGHT] <= SIZE).all() and (rows[:, LEFT] + rows[:, WIDTH] <= SIZE).all()
    assert len({tuple(r) for r in rows[:, ORDER].long().tolist()}) == 24
    assert rows[:, BRIGHTNESS:HUE].min() >= 0.7 and rows[:, BRIGHTNESS:HUE].max() <= 1.3
    assert rows[:, HUE].abs().max() <= 0.3 and abs(rows[:, HUE].mean().item()) < 0.02


def test_the_augmentation_is_domainbeds():
    """Mutants: the colour jitter weakened to 0.2 (every other test here still passed), the crop's area widened to
    0.5-1. DomainBed's: RandomResizedCrop(scale=(0.7, 1.0)), RandomHorizontalFlip(), ColorJitter(0.3, 0.3, 0.3,
    0.3), RandomGrayscale() (p = 0.1)."""
    crop, flip, jitter, gray, _ = train_transform(SIZE).transforms
    assert (tuple(crop.size), crop.scale, crop.ratio) == ((SIZE, SIZE), (0.7, 1.0), (3 / 4, 4 / 3))
    assert flip.p == 0.5 and gray.p == 0.1
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.7, 1.3), (0.7, 1.3),
                                                                                  (0.7, 1.3), (-0.3, 0.3))


@pytest.mark.parametrize("height, width", [(SIZE, SIZE), (40, SIZE), (SIZE, 40)])
def test_crop_is_torchvisions_resized_crop(height, width):
    """Mutant (on images that are not square): the rows sampled at the columns' coordinates."""
    images = smooth_images(64)[:, :, :height, :width]
    params = params_for(range(64), height, width)
    crops = resized_crops(images, params, SIZE)
    for b in range(64):
        top, left, h, w = (int(v) for v in params[b, [TOP, LEFT, HEIGHT, WIDTH]])
        expected = TF.resized_crop(images[b].float(), top, left, h, w, [SIZE, SIZE], antialias=True)
        torch.testing.assert_close(crops[b], expected, atol=2e-3, rtol=0)


def test_flip_jitter_grayscale_equal_torchvisions_kernels_exactly():
    """Mutants: brightness clamped to 256, which wraps a saturated pixel to black; the crop's pixels clamped from 1
    (a third of the images are bright, a third have black pixels)."""
    images = smooth_images(96)
    images[::3] = images[::3] // 4 + 190
    images[1::3] = (images[1::3].int() - 100).clamp(min=0).to(torch.uint8)
    params = params_for(range(96))
    params[:, [TOP, LEFT]], params[:, [HEIGHT, WIDTH]] = 0.0, float(SIZE)  # the whole image: no resampling
    out = augment_batch(images, params, SIZE)
    kernels = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for b in range(96):
        x = TF.horizontal_flip(images[b]) if params[b, FLIP] else images[b]
        for op in params[b, ORDER].long().tolist():
            x = kernels[op](x, float(params[b, BRIGHTNESS + op]))
        if params[b, GRAY]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        assert torch.equal(out[b], x), f"image {b} differs"


def test_whole_batch_is_close_to_the_per_image_pil_path():
    images = smooth_images(64)
    out = augment_batch(images, params_for(range(64)), SIZE)
    per_image = []
    for b in range(64):
        with seeded(b):
            per_image.append(train_transform(SIZE)(Image.fromarray(images[b].permute(1, 2, 0).numpy())))
    difference = (out.int() - torch.stack(per_image).int()).abs().float()
    # PIL's colour kernels round differently from torchvision's tensor kernels (hue most): levels, not structure.
    assert difference.mean() < 1.0 and np.percentile(difference.numpy(), 99) <= 6


def test_batch_must_be_uint8_rgb():
    with pytest.raises(ValueError, match="uint8 batch"):
        augment_batch(torch.zeros(2, 3, 8, 8), params_for(range(2), 8), 8)


def toy(image_folder, tmp_path, **changes) -> TrainConfig:
    base = dict(dataset=str(image_folder), test_domain="c", backbone="resnet10t", weights="none", image_size=16,
                batch_size=3, steps=6, eval_every=3, lr=0.05, dropout=0.5, workers=0, progress=False, device="cpu",
                augment=True, output_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **changes})


def test_training_with_device_augment_on_cpu(image_folder, tmp_path, monkeypatch):
    config = toy(image_folder, tmp_path, device_augment="on")
    trainer = Trainer(config)
    assert trainer.augment_on_device
    (images, params), labels = trainer.train_images[(0, 1, 7)]
    assert images.shape == (3, 16, 16) and images.dtype == torch.uint8 and params.shape == (14,)
    with seeded(7):
        assert torch.equal(params, sample_params(16, 16))
    batches = []

    def recorded(images, params, size):
        batches.append((images.shape, params.shape, size))
        return augment_batch(images, params, size)

    monkeypatch.setattr("droptune.training.trainer.augment_batch", recorded)
    results = train(toy(image_folder, tmp_path, device_augment="on", output_dir=str(tmp_path / "run2")))
    assert results["status"] == "completed" and results["steps_done"] == 6
    assert len(batches) == 6, "every training step augments its batch on the device"
    assert all(shape[0] == rows[0] == 6 and rows[1] == 14 and size == 16 for shape, rows, size in batches)


def test_device_augment_choice(image_folder, tmp_path):
    assert not Trainer(toy(image_folder, tmp_path)).augment_on_device  # auto: off on CPU
    assert not Trainer(toy(image_folder, tmp_path, device_augment="on", augment=False)).augment_on_device
    with pytest.raises(Exception, match="invalid device_augment = 'gpu': expected one of auto, on, off"):
        toy(image_folder, tmp_path, device_augment="gpu")
    # Where the augmentation runs is not part of the run's identity: runs resume across the choice.
    assert toy(image_folder, tmp_path).identity() == toy(image_folder, tmp_path, device_augment="on").identity()
