"""Strict weight loading: a checkpoint that does not fit the model is an error, never half a model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from droptune.errors import DroptuneError


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors`, `.pth` or `.pt` file (unwrapping a `state_dict`/`model` entry)."""
    path = Path(path)
    if not path.is_file():
        raise DroptuneError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():  # e.g. about the pickle protocol of a file that is then refused
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any decoding failure is the file's fault
        raise DroptuneError(f"cannot read weights file {path}: {error}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DroptuneError(f"weights file {path} does not hold a state dict of tensors")
    return dict(state)


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, … ({len(keys)} in all)" if len(keys) > limit else shown


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor of `state` into `model`, or raise naming missing, unexpected and misshaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshaped:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listing(unexpected)}")
        if misshaped:
            problems.append(f"wrong shapes: {_listing(misshaped)}")
        raise DroptuneError(f"weights from {source} do not fit the model; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def module_names(names: str | Sequence[str]) -> tuple[str, ...]:
    """One sub-module name, or several: a distilled timm model's two classifiers, as its pretrained cfg names them
    (("head", "head_dist"))."""
    return (names,) if isinstance(names, str) else tuple(names)


def without_prefix(state: Mapping[str, torch.Tensor], prefix: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """The state dict less the tensors of a sub-module (an ImageNet classifier), or of several."""
    prefixes = tuple(f"{name}." for name in module_names(prefix))
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}
