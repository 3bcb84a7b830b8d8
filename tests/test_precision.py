"""Mixed precision and memory layout change speed, not the protocol: the same run within a stated tolerance."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from droptune.errors import DroptuneError
from droptune.training.config import TrainConfig
from droptune.training.run_dir import RunDir
from droptune.training.trainer import Trainer, train
from test_training import numbers


def config_for(image_folder: Path, output: Path, **changes) -> TrainConfig:
    return TrainConfig(**{**dict(dataset=str(image_folder), test_domain="c", backbone="resnet10t", weights="none",
                                 image_size=16, batch_size=3, steps=6, eval_every=3, lr=0.05, dropout=0.5, workers=0,
                                 progress=False, device="cpu", output_dir=str(output)), **changes})


def run(image_folder: Path, output: Path, **changes) -> tuple[list[dict], dict[str, torch.Tensor]]:
    config = config_for(image_folder, output, **changes)
    train(config)
    return numbers(RunDir(config.run_dir()).read_metrics()), load_file(str(RunDir(config.run_dir()).best))


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def fp32_nchw(tmp_path_factory):
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("precision")
    folder = make_image_folder(root / "toy")
    return folder, root, run(folder, root / "fp32-nchw", amp="none", channels_last=False)


def test_channels_last_gives_the_numbers_of_the_default_layout(fp32_nchw):
    """Mutant: `channels_last` ignored (the model stays NCHW), or a layout that changes the numbers.

    Tolerance: fp32 convolutions in another memory layout sum in another order, so losses agree to a
    relative 1e-5 and weights to 1e-4 after 6 steps; accuracies are equal.
    """
    folder, root, (base, base_weights) = fp32_nchw
    config = config_for(folder, root / "unused", amp="none", channels_last=True)
    convolution = next(p for p in Trainer(config).model.parameters() if p.dim() == 4)
    assert convolution.is_contiguous(memory_format=torch.channels_last)
    records, weights = run(folder, root / "fp32-cl", amp="none", channels_last=True)
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in base], rel=1e-5)
    assert [r["acc"] for r in records] == [r["acc"] for r in base]
    assert largest_difference(weights, base_weights) < 1e-4


def test_bf16_autocast_stays_within_a_stated_tolerance_of_fp32(fp32_nchw):
    """Mutants: `--amp bf16` ignored (exactly the fp32 numbers); weights kept or updated in bf16, or a float16 loss
    scale applied to bf16 (numbers far off).

    Tolerance: bf16 keeps 8 bits of mantissa, so after 6 steps losses agree to a relative 1e-2 and weights to 1e-2;
    on this easy toy set the accuracies are equal.
    """
    folder, root, (base, base_weights) = fp32_nchw
    records, weights = run(folder, root / "bf16", amp="bf16", channels_last=False)
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in base], rel=1e-2)
    assert [r["loss"] for r in records] != [r["loss"] for r in base], "bf16 autocast rounds"
    assert [r["acc"] for r in records] == [r["acc"] for r in base]
    assert largest_difference(weights, base_weights) < 1e-2
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point()), "weights stay fp32"


def test_missing_cuda_is_a_clear_error(image_folder, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = config_for(image_folder, tmp_path / "run", device="cuda")
    with pytest.raises(DroptuneError, match="CUDA is not available"):
        train(config)
