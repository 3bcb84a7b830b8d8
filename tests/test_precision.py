"""Mixed precision and memory layout change speed, not the protocol: the same numbers within a stated tolerance.

Images are 32 px: at 16 px resnet10t's last stage sees 1x1 maps, where PyTorch 2.14's CPU bf16 convolution leaves
the weight gradient of the kernel taps that only see padding uninitialized (garbage such as 6e25 whenever the
heap is dirty, as in a full test session; `MALLOC_PERTURB_=165` shows it in any process).
"""

from pathlib import Path

import pytest
import torch

from conftest import make_image_folder
from droptune.errors import DroptuneError
from droptune.models.model import build_model
from droptune.training.config import TrainConfig
from droptune.training.evaluate import evaluate
from droptune.runs.folder import RunDir
from droptune.training.trainer import Trainer, train
from test_scoring import SPLITS
from test_training import numbers

STEPS = 4


def config_for(folder: Path, output: Path, **changes) -> TrainConfig:
    return TrainConfig(**{**dict(dataset=str(folder), test_domain="c", backbone="resnet10t", weights="none",
                                 image_size=32, batch_size=3, steps=STEPS, eval_every=2, lr=0.05, dropout=0.5,
                                 workers=0, progress=False, device="cpu", amp="none", channels_last=False,
                                 output_dir=str(output)), **changes})


def weights_after(config: TrainConfig, until: int | None = None) -> dict[str, torch.Tensor]:
    """The weights in last.pt after training to `until` (0: the initial weights)."""
    train(config, until=until)
    return torch.load(RunDir(config.run_dir()).last, weights_only=True)["model"]


def travel_ratio(weights: dict, reference: dict, start: dict) -> float:
    """How far `weights` is from `reference`, as a fraction of how far training moved `reference` from `start`."""
    floats = [k for k, v in reference.items() if v.is_floating_point()]
    gap = torch.cat([(weights[k] - reference[k]).flatten() for k in floats]).norm()
    moved = torch.cat([(reference[k] - start[k]).flatten() for k in floats]).norm()
    assert moved > 0
    return (gap / moved).item()


@pytest.fixture(scope="module")
def fp32_nchw(tmp_path_factory):
    """The toy set, the initial weights and the weights and losses of an fp32 NCHW run of STEPS steps."""
    root = tmp_path_factory.mktemp("precision")
    folder = make_image_folder(root / "toy")
    start = weights_after(config_for(folder, root / "start"), until=0)
    config = config_for(folder, root / "fp32-nchw")
    return folder, root, start, weights_after(config), losses_of(config)


def losses_of(config: TrainConfig) -> list[float]:
    return [r["loss"] for r in numbers(RunDir(config.run_dir()).read_metrics())]


def logits_of(state: dict, amp: str, channels_last: bool) -> torch.Tensor:
    """Logits of fixed random 32 px images under the weights `state`, scored by droptune's evaluation."""
    model = build_model("resnet10t", 2, 0.5, "none")
    model.load_state_dict(state)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (9, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(9, dtype=torch.long)
    loader = [(images[i:j], labels[i:j]) for i, j in ((0, 3), (3, 5), (5, 9))]
    evaluation = evaluate(model, loader, [0, 1, 2], SPLITS, torch.device("cpu"), amp, channels_last, keep_logits=True)
    assert evaluation.logits.dtype == torch.float32
    return evaluation.logits


def test_bf16_evaluation_gives_the_fp32_logits_within_bf16_rounding(fp32_nchw):
    """Mutant: `--amp bf16` ignored by evaluation (exactly the fp32 logits).

    Tolerance: bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operand); through resnet10t's
    ~12 layers the errors add to about 1% of the logits' scale (0.4% measured), so each logit must lie within 5%
    of the largest fp32 logit, and must not equal it exactly (then autocast did not run).
    """
    _, _, _, trained, _ = fp32_nchw
    fp32, bf16 = logits_of(trained, "none", False), logits_of(trained, "bf16", False)
    scale = fp32.abs().max()
    assert (bf16 - fp32).abs().max() <= 0.05 * scale
    assert not torch.equal(bf16, fp32), "bf16 autocast rounds"


def test_bf16_training_follows_the_fp32_path_within_a_stated_tolerance(fp32_nchw):
    """Mutant: `--amp bf16` ignored by training (exactly the fp32 run), or weights kept or updated in bf16.

    Tolerance: autocast rounds activations and gradients to bf16 (about 1% each), never the fp32 master weights,
    so after STEPS steps the weights differ from the fp32 run's by at most 10% of the distance that run moved
    them (1.1% measured; weights stored in bf16 are off by 0.2% of their size, far more than a few steps'
    travel); the losses agree to a relative 2% (0.03% measured).
    """
    folder, root, start, trained, losses = fp32_nchw
    config = config_for(folder, root / "bf16", amp="bf16")
    weights = weights_after(config)
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point()), "weights stay fp32"
    ratio = travel_ratio(weights, trained, start)
    assert 0 < ratio <= 0.1
    assert losses_of(config) == pytest.approx(losses, rel=2e-2)


def test_channels_last_gives_the_numbers_of_the_default_layout(fp32_nchw):
    """Mutant: `channels_last` ignored (the model stays NCHW), or a layout that changes the numbers.

    Tolerance: an fp32 convolution in another memory layout only sums in another order (rounding 2^-24 per
    addition), so logits agree to a relative 1e-5 and, after STEPS steps, the weights differ by at most 1e-4 of
    the distance training moved them (7e-7 measured); the losses agree to a relative 1e-5.
    """
    folder, root, start, trained, losses = fp32_nchw
    config = config_for(folder, root / "channels-last", channels_last=True)
    convolution = next(p for p in Trainer(config).model.parameters() if p.dim() == 4)
    assert convolution.is_contiguous(memory_format=torch.channels_last)
    weights = weights_after(config)
    assert travel_ratio(weights, trained, start) <= 1e-4
    assert losses_of(config) == pytest.approx(losses, rel=1e-5)
    nchw, channels_last = logits_of(trained, "none", False), logits_of(trained, "none", True)
    assert channels_last == pytest.approx(nchw, rel=1e-5, abs=1e-5 * nchw.abs().max().item())


def test_missing_cuda_is_a_clear_error(image_folder, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = config_for(image_folder, tmp_path / "run", device="cuda")
    with pytest.raises(DroptuneError, match="CUDA is not available"):
        train(config)
