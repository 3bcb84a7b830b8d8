"""Finished run folders read back for combining: config, results, selected weights, and their protocol."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from droptune.data.loaders import EvalSplit
from droptune.errors import DroptuneError
from droptune.models.loading import read_state_dict
from droptune.models.model import DropoutClassifier
from droptune.runs.folder import RunDir
from droptune.runs.results import RunResults
from droptune.training.bench import Bench
from droptune.training.config import TrainConfig
from droptune.training.device import place
from droptune.training.protocol import PROTOCOL_FIELDS, LeaveOneDomainOut
from droptune.training.run_inputs import run_dataset, trained_model


@dataclass
class Run:
    folder: RunDir
    config: TrainConfig
    results: RunResults

    @property
    def name(self) -> str:
        return self.folder.path.name

    @property
    def weights(self) -> Path:
        return self.folder.best


def _protocol_value(name: str) -> Callable[[Run], object]:
    """A run's protocol field; its test domain by name, as results.json records it (a config may give an index)."""
    return lambda run: getattr(run.results if name == "test_domain" else run.config, name)


# What runs must share to be compared or combined: the same images in the same train/held-out/test parts.
PROTOCOL: dict[str, Callable[[Run], object]] = {
    "dataset": lambda run: run.results.dataset,
    **{label: _protocol_value(name) for name, label in PROTOCOL_FIELDS.items()},
}

# What runs must share for their weights to be points of one space, each scored as the same function of them.
SAME_MODEL: dict[str, Callable[[Run], object]] = {
    "backbone": lambda run: run.config.backbone,
    "image size": lambda run: run.config.image_size,
    "linearized": lambda run: run.config.linearized,
    "linear blocks": lambda run: run.config.linear_blocks,
}


def read_run(path: str | os.PathLike, action: str = "combine") -> Run:
    """A completed run folder, for `action` (combine, analyze: the verb its errors use)."""
    folder = RunDir(Path(path))
    if not folder.path.is_dir():
        raise DroptuneError(f"run folder not found: {path}")
    if not folder.config.exists():
        raise DroptuneError(f"{path} is not a droptune run folder: it has no config.yaml")
    results = folder.read_results()
    if results is None or results.status != "completed":
        status = "unfinished" if results is None else results.status
        raise DroptuneError(f"run {path} is {status}: only completed runs can be {action}d "
                            f"(finish it with `droptune train --resume {path}`)")
    if not folder.best.exists():
        raise DroptuneError(f"run {path} has no best.safetensors: its selected model is missing")
    return Run(folder, TrainConfig.load(folder.config), results)


def read_runs(paths: Sequence[str | os.PathLike], action: str = "combine") -> list[Run]:
    """Completed runs of one split, refused with the reason when they differ in what makes them comparable."""
    if not paths:
        raise DroptuneError("no run folders given")
    resolved = [Path(p).resolve() for p in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise DroptuneError(f"run {paths[i]} is given twice")
    runs = [read_run(p, action) for p in paths]
    require_same(runs, PROTOCOL, f"{action} these runs together: they were not trained and evaluated on the same "
                                 "split")
    return runs


def require_same(runs: Sequence[Run], keys: Mapping[str, Callable[[Run], object]], purpose: str) -> None:
    """Raise naming the first key on which a run differs from the first run."""
    first = runs[0]
    for label, key in keys.items():
        for run in runs[1:]:
            if key(run) != key(first):
                raise DroptuneError(f"cannot {purpose}; {label} differs: {first.name} has {key(first)!r}, "
                                    f"{run.name} has {key(run)!r}")


class Split:
    """The protocol of a set of runs, rebuilt from the first one's config: the evaluation sets they were scored on."""

    def __init__(self, config: TrainConfig, device: torch.device, workers: int, data_dir: str | None = None):
        self.dataset = run_dataset(config, data_dir)
        self.protocol = LeaveOneDomainOut.from_config(config, self.dataset)
        self.device = device
        self.workers = workers

    def require_unchanged(self, runs: Sequence[Run], action: str) -> None:
        """Refuse runs trained on other images than the dataset now holds: its 80/20 splits are not theirs, and
        the held-out 20% may hold images they trained on (what a resume refuses too)."""
        for run in runs:
            changes = self.protocol.changes_since(run.results.images, run.results.files) if run.results.images else None
            if changes:
                raise DroptuneError(f"cannot {action} {run.name}: {self.dataset.name} changed since it was trained "
                                    f"({changes}), so its 80/20 splits are not the run's; put the images back")

    def model(self, run: Run, weights: dict[str, torch.Tensor] | None = None) -> DropoutClassifier:
        """The run's trained model holding its selected weights (or `weights`)."""
        model = trained_model(run.config, len(self.dataset.classes),
                              weights if weights is not None else read_state_dict(run.weights), str(run.weights))
        return place(model, self.device, run.config.channels_last)

    def bench(self, run: Run, splits: Sequence[EvalSplit] | None = None) -> Bench:
        """Scoring as the run scored itself, on the protocol's evaluation sets (or `splits`)."""
        return Bench.for_run(run.config, self.protocol, self.device, self.workers, splits)
