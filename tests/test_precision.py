"""Mixed precision and memory layout change speed, not the protocol: runs complete with sane numbers."""

import math

import pytest

from droptune.training.config import TrainConfig
from droptune.training.trainer import train


@pytest.mark.parametrize("amp,channels_last", [("bf16", True), ("none", False)])
def test_cpu_runs_with_amp_and_layouts(image_folder, tmp_path, amp, channels_last):
    config = TrainConfig(dataset=str(image_folder), test_domain="c", backbone="resnet10t", weights="none",
                         image_size=16, batch_size=3, steps=6, eval_every=3, lr=0.05, dropout=0.5, workers=0,
                         progress=False, amp=amp, channels_last=channels_last, device="cpu",
                         output_dir=str(tmp_path / "run"))
    results = train(config)
    assert results["status"] == "completed" and results["steps_done"] == 6
    assert 0.0 <= results["iid"] <= 1.0 and 0.0 <= results["ood"] <= 1.0
    assert math.isfinite(results["train_images_per_s"])


def test_missing_cuda_is_a_clear_error(image_folder, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from droptune.errors import DroptuneError

    config = TrainConfig(dataset=str(image_folder), test_domain="c", backbone="resnet10t", weights="none",
                         device="cuda", progress=False, output_dir=str(tmp_path / "run"))
    with pytest.raises(DroptuneError, match="CUDA is not available"):
        train(config)
