"""`droptune export`: a loaded model as a self-contained folder other programs use without droptune's run folder.

The folder follows the Hugging Face Hub layout as timm uses it (`timm.create_model("local-dir:DIR")`,
`hf-hub:REPO` once uploaded): model.safetensors in timm's key names, config.json, README.md. Each file is
checked against droptune's own model on real images before it is kept: timm's model rebuilt from the
weights, and the TorchScript or ONNX file run back (ONNX through onnxruntime when it is installed).
"""

from __future__ import annotations

import importlib
import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from droptune.errors import DroptuneError
from droptune.inference import hub_layout
from droptune.inference.loading import ABOUT_FIELDS, LoadedModel
from droptune.inference.model_card import model_card
from droptune.models.backbones import timm_input_size
from droptune.runs.files import atomic_write
from droptune.training.config import RUNTIME_FIELDS

FORMATS = ("safetensors", "torchscript", "onnx")
CHECK_IMAGES = 8
# Float noise only: the same weights in another graph differ by ~1e-6 relative; a wrong mapping by O(1).
TOLERANCE = 1e-4
ONNX_PACKAGES = ("onnx", "onnxscript")
INPUT = "uint8 RGB images, N×3×H×W, resized to H×W (no crop); the model normalizes them itself"


def missing_packages(names: Sequence[str]) -> list[str]:
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_packages(names: Sequence[str], purpose: str, extra: str) -> None:
    missing = missing_packages(names)
    if missing:
        raise DroptuneError(f"{purpose} needs the Python package{'s' if len(missing) > 1 else ''} "
                            f"{' and '.join(missing)}: pip install {' '.join(missing)} (or droptune[{extra}])")


def check_images(loaded: LoadedModel, files: Sequence[Path] = ()) -> tuple[torch.Tensor, str]:
    """A batch to compare exports on: the files given, else images of the held-out domain when its dataset is
    found, else random pixels; and a description of it."""
    from droptune.data.registry import open_dataset

    if files:
        return torch.stack([loaded.read(f) for f in files]), f"{len(files)} images given"
    config = loaded.config
    try:
        dataset = open_dataset(config.dataset, config.data_dir)
        domain = dataset.domain_index(config.test_domain)
        count = len(dataset.labels(domain))
        picks = sorted({i * count // CHECK_IMAGES for i in range(CHECK_IMAGES)})
        images = [loaded.transform(dataset.read(domain, i, config.image_size)) for i in picks]
        return torch.stack(images), f"{len(images)} images of {dataset.name}/{dataset.domains[domain]}"
    except (DroptuneError, OSError):
        size = config.image_size
        pixels = torch.randint(0, 256, (CHECK_IMAGES, 3, size, size), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        return pixels, f"{CHECK_IMAGES} random images (the dataset {config.dataset} was not found)"


def max_difference(expected: torch.Tensor, got: torch.Tensor, what: str) -> float:
    """The largest absolute logit difference; an error when it is more than float noise."""
    difference = (expected - got).abs().max().item()
    if not difference <= TOLERANCE * (1 + expected.abs().max().item()):
        raise DroptuneError(f"{what} gives other logits than droptune's model (max abs difference "
                            f"{difference:.3g}); nothing was exported")
    return difference


def timm_model(loaded: LoadedModel, architecture: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """timm's model of the architecture holding the loaded weights, and those weights under timm's names."""
    import timm

    model = timm.create_model(architecture, pretrained=False, num_classes=len(loaded.classes),
                              **timm_input_size(architecture, loaded.config.image_size)).eval()
    state = hub_layout.to_timm(loaded.model.state_dict(), model.pretrained_cfg["classifier"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # a classifier with more than droptune's linear layer (LeViT's BatchNorm)
        reason = " ".join(line.strip() for line in str(error).strip().splitlines()[:2])
        raise DroptuneError(f"timm's {architecture} cannot hold droptune's model ({reason}); nothing was exported; "
                            "its run's best.safetensors loads with droptune.load_model") from None
    return model, state


def pretrained_cfg(loaded: LoadedModel, timm_cfg: dict) -> dict:
    """timm's preprocessing fields for the evaluation transform: squash-resize to the run's size, no crop."""
    model, size = loaded.model, loaded.config.image_size
    return {"input_size": [3, size, size], "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash",
            "mean": list(model.mean), "std": list(model.std), "num_classes": len(loaded.classes),
            "classifier": timm_cfg["classifier"], "first_conv": timm_cfg.get("first_conv"),
            "fixed_input_size": timm_cfg.get("fixed_input_size", False)}


def droptune_fields(loaded: LoadedModel) -> dict:
    """What the model is and how it was made, for config.json and the card."""
    from droptune import __version__

    about = loaded.about
    config = loaded.config
    identity = {k: about[k] for k in ("source", "name", "variant", "method", "members") if about.get(k) is not None}
    members = set(about.get("members") or ())
    # a member's rate is among its hparams where the members' rates differ (before those, a field of its own)
    rates = sorted({run.get("hparams", {}).get("dropout", run.get("dropout", config.dropout))
                    for run in loaded.results.get("runs") or () if run["run"] in members})
    return {"version": __version__, "paper": "arXiv:2403.00946", **identity,
            "backbone": config.backbone, "dropout": config.dropout, "image_size": config.image_size,
            **({"member_dropouts": rates} if len(rates) > 1 else {}),
            **{k: about.get(k) for k in ABOUT_FIELDS}, "input": INPUT,
            "training_config": {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS}}


def export(loaded: LoadedModel, output: Path, fmt: str = "safetensors", images: Sequence[Path] = ()) -> dict:
    """Write the exported folder; returns its config.json, whose `droptune.checks` hold each max logit difference."""
    if fmt not in FORMATS:
        raise DroptuneError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_packages(ONNX_PACKAGES, "--format onnx", "export")
    if loaded.about.get("source") == "run" and loaded.about.get("iid") is None:  # (an exported run keeps its scores)
        raise DroptuneError(f"run {loaded.about.get('name')} has not finished (no results.json): its model card "
                            "would have no selection or scores; finish it with `droptune train --resume`")
    if loaded.config.linear_blocks is not None:
        raise DroptuneError(f"run {loaded.about.get('name')} is a linear fine-tuning model (linear_blocks), which "
                            "no timm architecture holds; use it with droptune.load_model")
    output = Path(output).resolve()  # `.` has no name to stage its export beside
    if output.is_file():
        raise DroptuneError(f"output folder {output} is a file: choose a new folder")
    if output.exists() and any(output.iterdir()) and not hub_layout.is_export(output):
        raise DroptuneError(f"output folder {output} is not empty and holds no earlier export: choose a new folder")
    model = loaded.model.cpu().eval()
    architecture = hub_layout.timm_architecture(loaded.config.backbone, model)
    batch, described = check_images(loaded, images)
    with torch.inference_mode():
        logits = model(batch)
        converted, state = timm_model(loaded, architecture)
        checks = {"images": described,
                  "timm": max_difference(logits, converted(model.normalize(batch)), f"timm's {architecture}")}
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if fmt != "safetensors":
            checks[fmt] = EXPORTERS[fmt](model, batch, logits, staging / hub_layout.FORMAT_FILES[fmt])
        tensors = {k: v.contiguous() for k, v in state.items()}
        atomic_write(staging / hub_layout.WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
        config = {"architecture": architecture, "num_classes": len(loaded.classes),
                  "num_features": converted.num_features, "label_names": list(loaded.classes),
                  "pretrained_cfg": pretrained_cfg(loaded, converted.pretrained_cfg),
                  "droptune": {**droptune_fields(loaded), "checks": checks}}
        (staging / hub_layout.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (staging / hub_layout.CARD).write_text(model_card(config))
        shutil.rmtree(output, ignore_errors=True)
        staging.replace(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return config


def torchscript(model: torch.nn.Module, batch: torch.Tensor, logits: torch.Tensor, path: Path) -> float:
    with warnings.catch_warnings():  # PyTorch deprecates TorchScript; the format is asked for by name
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(model, batch[:2]).save(str(path))
        reloaded = torch.jit.load(str(path))
    with torch.inference_mode():
        return max_difference(logits, reloaded(batch), "the TorchScript file")


def onnx(model: torch.nn.Module, batch: torch.Tensor, logits: torch.Tensor, path: Path) -> float | str:
    """The max logit difference of onnxruntime's run of the file, or why it was not checked."""
    batch_size = torch.export.Dim("batch")
    torch.onnx.export(model, (batch,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_shapes=({0: batch_size},), dynamo=True, verbose=False, external_data=False)
    if missing_packages(["onnxruntime"]):
        return "not run: onnxruntime is not installed"
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
    return max_difference(logits, got, "the ONNX file under onnxruntime")


EXPORTERS = {"torchscript": torchscript, "onnx": onnx}


def push_to_hub(folder: Path, repo: str) -> str:
    """Upload the folder as is to a Hugging Face Hub model repository; returns its address."""
    require_packages(["huggingface_hub"], "--push-to-hub", "hub")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="droptune export")
    return f"https://huggingface.co/{repo}"
