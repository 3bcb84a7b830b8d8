"""Shared fixtures: small generated datasets and the real PACS slice (skipped where ../shared is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PACS = SHARED_DATA / "PACS"


def make_image_folder(root: Path, domains=("a", "b", "c"), classes=("cat", "dog"), per_class=6, size=20,
                      seed=0) -> Path:
    """A tiny DomainBed-layout dataset whose classes differ in brightness, so it is learnable."""
    rng = np.random.default_rng(seed)
    for d, domain in enumerate(domains):
        for c, cls in enumerate(classes):
            folder = root / domain / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = 40 + 160 * c + 10 * d
                pixels = np.clip(rng.normal(base, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def pretrained_file(tmp_path: Path) -> Path:
    """A random resnet10t saved as 'pre-trained' weights: runs that load it share their start, as soups need."""
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "pretrained.safetensors"
    save_file(timm.create_model("resnet10t").state_dict(), str(path))
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "toy")


@pytest.fixture(scope="session")
def pacs_slice(tmp_path_factory) -> Path:
    """A few real PACS images per class and domain, linked (not copied) into a temporary folder."""
    if not PACS.is_dir():
        pytest.skip(f"real PACS not found at {PACS} (../shared/data is only present in the project workspace)")
    root = tmp_path_factory.mktemp("pacs") / "PACS"
    for domain in sorted(p.name for p in PACS.iterdir() if p.is_dir()):
        for cls in sorted(p.name for p in (PACS / domain).iterdir() if p.is_dir()):
            target = root / domain / cls
            target.mkdir(parents=True)
            for image in sorted((PACS / domain / cls).iterdir())[:12]:
                os.symlink(image, target / image.name)
    return root
