"""A run's dataset, initial model and trained model, built the one way training builds them.

The probe, combinations of runs and the analyses rebuild what a run trained on; built anywhere else,
a run with an image cache would be scored on other augmented held-out images (the cache crops the
resized image, the files the full one), and a run from random weights would start somewhere else.
"""

from __future__ import annotations

from pathlib import Path

import torch

from droptune.data.cache import CachedDomains
from droptune.data.domains import ImageFolderDomains, MultiDomainDataset, single_class
from droptune.data.registry import get_spec, open_dataset
from droptune.data.splits import stable_seed
from droptune.errors import DroptuneError
from droptune.models.block_features import BlockFeaturesClassifier
from droptune.models.linearized import LinearizedClassifier
from droptune.models.loading import load_strict
from droptune.models.model import DropoutClassifier, build_model
from droptune.training.config import TrainConfig


def run_dataset(config: TrainConfig, data_dir: str | None = None, progress: bool | None = False) -> MultiDomainDataset:
    """The run's dataset, read through its image cache if it used one. `data_dir`: where it has moved, holding the
    registered dataset or, for a dataset recorded by its folder's path, a folder of that name."""
    name = config.dataset
    if data_dir is not None and get_spec(name) is None and not Path(name).expanduser().is_dir():
        name = str(Path(data_dir) / Path(name).name)
    dataset = open_dataset(name, data_dir or config.data_dir)
    if len(dataset.classes) == 1:  # refused here, not by the model, to name the folder
        raise DroptuneError(single_class(getattr(dataset, "root", dataset.name), dataset.classes[0]))
    if config.cache_dir and isinstance(dataset, ImageFolderDomains):
        dataset = CachedDomains(dataset, config.image_size, config.cache_dir, progress=progress)
    return dataset


def initial_model(config: TrainConfig, num_classes: int) -> DropoutClassifier:
    """The model before its first step: pre-trained weights, and whatever is random (the head, or all of it with
    weights 'none') drawn from the run's seed. Seeds torch's global generator, as training does before it goes
    on to draw from it."""
    torch.manual_seed(stable_seed("init", config.seed))
    return _model(config, num_classes, config.weights)


def _model(config: TrainConfig, num_classes: int, weights: str) -> DropoutClassifier:
    model = build_model(config.backbone, num_classes, config.dropout, weights, config.freeze_bn,
                        image_size=config.image_size)
    return model if config.linear_blocks is None else BlockFeaturesClassifier(model, config.linear_blocks,
                                                                             config.image_size)


def trained_model(config: TrainConfig, num_classes: int, state: dict[str, torch.Tensor], source: str
                  ) -> DropoutClassifier:
    """The model the run trained, holding `state` (read from `source`). The pre-trained start is not loaded,
    except by a linearized run, whose model is a function of it."""
    if config.linearized:
        model = LinearizedClassifier(initial_model(config, num_classes))
    else:
        model = _model(config, num_classes, "none")
    load_strict(model, state, source)
    return model
