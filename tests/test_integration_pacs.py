"""Fine-tunes the offline ImageNet Lite0 on a slice of the real PACS (skipped without ../shared)."""

import pytest
import torch
from safetensors.torch import load_file

from droptune.training.config import TrainConfig
from droptune.runs.folder import RunDir
from droptune.training.trainer import train

pytestmark = pytest.mark.integration
TIMING = ("images_per_s", "eval_images_per_s", "elapsed_s")


def pacs_config(root, output, **changes):
    base = dict(dataset=str(root), test_domain="photo", backbone="efficientnet_lite0", image_size=64,
                batch_size=8, steps=30, eval_every=15, lr=2e-3, head_lr_mult=1, lr_milestones=[25], dropout=0.0, workers=1,
                progress=False, output_dir=str(output))
    return TrainConfig(**{**base, **changes})


def test_lite0_on_pacs_beats_chance_and_resumes_exactly(pacs_slice, tmp_path):
    full = pacs_config(pacs_slice, tmp_path / "full")
    results = train(full)
    chance = 1 / 7
    assert results["status"] == "completed" and not results["collapsed"]
    assert results["ood"] > chance + 0.15, f"o.o.d. accuracy {results['ood']:.3f} is near chance"
    assert results["iid"] > chance + 0.15

    part = pacs_config(pacs_slice, tmp_path / "part")
    assert train(part, until=20) is None
    resumed = train(part, resume=True)
    for key in ("step", "iid", "ood", "acc", "selections"):
        assert resumed[key] == results[key]
    strip = lambda records: [{k: v for k, v in r.items() if k not in TIMING} for r in records]  # noqa: E731
    assert strip(RunDir(tmp_path / "part").read_metrics()) == strip(RunDir(tmp_path / "full").read_metrics())
    a, b = load_file(str(RunDir(tmp_path / "full").best)), load_file(str(RunDir(tmp_path / "part").best))
    assert all(torch.equal(a[k], b[k]) for k in a)
