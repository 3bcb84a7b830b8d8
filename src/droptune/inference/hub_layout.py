"""The exported folder, in the Hugging Face Hub layout timm reads: model.safetensors in timm's key names,
config.json (timm's fields and droptune's), README.md (the model card).

droptune's model is `backbone.*` (a timm model without its classifier, or a torchvision ResNet, whose
keys and layers are timm's `resnetN`) and `head.fc.*` (timm's classifier); `head.dropout` holds no
weights and is the identity in eval mode, so the same tensors under timm's names are timm's model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from droptune.errors import DroptuneError
from droptune.models.backbones import TORCHVISION_RESNETS
from droptune.models.loading import module_names
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


def to_timm(state: dict[str, torch.Tensor], classifier: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """droptune's state dict under timm's key names; `classifier` is timm's head module (`fc`, `head.fc`, ...), or a
    distilled model's two (DeiT's `head` and `head_dist`), whose logits timm averages: droptune's one linear head
    held by both gives the same logits. Each has its own copy (safetensors does not save tensors sharing memory)."""
    head = {key.removeprefix(HEAD): value for key, value in state.items() if key.startswith(HEAD)}
    return {**{key.removeprefix(BACKBONE): value for key, value in state.items() if not key.startswith(HEAD)},
            **{f"{name}.{key}": value.clone() for name in module_names(classifier) for key, value in head.items()}}


def from_timm(state: dict[str, torch.Tensor], classifier: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """timm's state dict under droptune's key names (the head from timm's first classifier)."""
    first, *others = (f"{name}." for name in module_names(classifier))
    return {(HEAD + key.removeprefix(first) if key.startswith(first) else BACKBONE + key): value
            for key, value in state.items() if not key.startswith(tuple(others))}


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
