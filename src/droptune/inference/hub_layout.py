"""The exported folder, in the Hugging Face Hub layout timm reads: model.safetensors in timm's key names,
config.json (timm's fields and droptune's), README.md (the model card).

droptune's model is `backbone.*` (a timm model without its classifier, or a torchvision ResNet, whose
keys and layers are timm's `resnetN`) and `head.fc.*` (timm's classifier); `head.dropout` holds no
weights and is the identity in eval mode, so the same tensors under timm's names are timm's model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from droptune.errors import DroptuneError
from droptune.models.backbones import TORCHVISION_RESNETS
from droptune.models.model import DropoutClassifier

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
FORMAT_FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
HEAD = "head.fc."
BACKBONE = "backbone."


def timm_architecture(backbone: str, model: DropoutClassifier) -> str:
    """timm's name for the architecture of droptune's `backbone` (efficientnet_lite0 → tf_efficientnet_lite0)."""
    cfg = getattr(model.backbone, "pretrained_cfg", None)
    if cfg:
        return cfg["architecture"]
    if backbone in TORCHVISION_RESNETS:
        return backbone
    raise DroptuneError(f"backbone {backbone!r} has no timm counterpart to export to")


def to_timm(state: dict[str, torch.Tensor], classifier: str) -> dict[str, torch.Tensor]:
    """droptune's state dict under timm's key names; `classifier` is timm's head module (`fc`, `head.fc`, ...)."""
    return {(f"{classifier}.{key.removeprefix(HEAD)}" if key.startswith(HEAD) else key.removeprefix(BACKBONE)): value
            for key, value in state.items()}


def from_timm(state: dict[str, torch.Tensor], classifier: str) -> dict[str, torch.Tensor]:
    """timm's state dict under droptune's key names."""
    prefix = classifier + "."
    return {(HEAD + key.removeprefix(prefix) if key.startswith(prefix) else BACKBONE + key): value
            for key, value in state.items()}


def is_export(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


def read_config(folder: Path) -> dict:
    """config.json of an exported folder, checked for the fields droptune reads back."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DroptuneError(f"cannot read {path}: {error}") from None
    missing = [k for k in ("architecture", "label_names", "pretrained_cfg", "droptune") if k not in config]
    if missing:
        raise DroptuneError(f"{path} is not a droptune export's config: it lacks {', '.join(missing)}")
    return config
