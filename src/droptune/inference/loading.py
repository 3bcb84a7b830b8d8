"""Load a run's model back for use: the weights it selected, its class names and its evaluation transform."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from droptune.errors import DroptuneError
from droptune.models.loading import load_strict, read_state_dict
from droptune.training.config import TrainConfig
from droptune.runs.folder import RunDir

VARIANTS = ("best", "swa", "ema", "swad")


@dataclass
class LoadedModel:
    model: nn.Module
    classes: list[str]
    transform: object  # PIL image → uint8 CHW tensor, as the run evaluated
    config: TrainConfig
    results: dict


def load_model(path: str | os.PathLike, variant: str = "best", device: str = "cpu") -> LoadedModel:
    """The model of a finished run folder in eval mode; no download (the backbone is built without weights)."""
    from droptune.data.domains import open_dataset
    from droptune.data.transforms import eval_transform
    from droptune.models.model import build_model

    if variant not in VARIANTS:
        raise DroptuneError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    run = RunDir(Path(path))
    if not run.config.is_file():
        raise DroptuneError(f"{run.path} is not a droptune run folder (no config.yaml)")
    config = TrainConfig.load(run.config)
    if config.linearized:
        raise DroptuneError(f"{run.path} is a linearized run; load_model reads ordinary runs only")
    weights = run.best if variant == "best" else run.baseline(variant)
    if not weights.is_file():
        what = "no selected model" if variant == "best" else f"no {variant} model"
        raise DroptuneError(f"run {run.path} has {what}: {weights.name} is missing")
    classes = list(open_dataset(config.dataset, config.data_dir).classes)
    done = run.read_results()
    results = dataclasses.asdict(done) if done is not None else {}
    model = build_model(config.backbone, len(classes), config.dropout, weights="none", freeze_bn=config.freeze_bn)
    load_strict(model, read_state_dict(weights), str(weights))
    model.to(device).eval()
    return LoadedModel(model, classes, eval_transform(config.image_size), config, results)
