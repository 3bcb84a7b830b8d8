"""A run opened for analysis: its models and its split's evaluation images, outputs kept in split order."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from droptune.combining.runs import Run, Split
from droptune.data.loaders import EvalSplit, make_loader
from droptune.data.splits import stable_seed
from droptune.errors import DroptuneError
from droptune.models.loading import load_strict, read_state_dict
from droptune.models.model import DropoutClassifier
from droptune.training.bench import Bench
from droptune.training.device import place
from droptune.training.evaluate import accuracy_of, autocast
from droptune.training.run_inputs import initial_model, trained_model


@dataclass
class Outputs:
    """One row per evaluation image, in the order of the bench's splits."""

    values: torch.Tensor
    labels: torch.Tensor


class Subject:
    """A finished run, its evaluation images (at most `max_images` per split, a seeded subset), and its models."""

    def __init__(self, run: Run, device: torch.device, workers: int = 0, max_images: int | None = None,
                 data_dir: str | None = None):
        if max_images is not None and max_images < 1:
            raise DroptuneError(f"invalid max_images = {max_images}: expected a positive number of images")
        self.run = run
        self.config = run.config
        self.split = Split(run.config, device, workers, data_dir)
        self.split.require_unchanged([run], "analyze")
        splits = None if max_images is None else [subset(s, max_images) for s in self.split.protocol.eval_splits]
        self.bench: Bench = self.split.bench(run, splits)
        self.device = device
        self.max_images = max_images
        self.num_classes = len(self.split.dataset.classes)

    @property
    def splits(self) -> list[EvalSplit]:
        return self.bench.splits

    def model(self, state: dict[str, torch.Tensor] | None = None) -> DropoutClassifier:
        """The model the run trained and scored (a linearized run's first-order one) with its selected weights
        (or `state`)."""
        return self.split.model(self.run, state).eval()

    def network(self) -> DropoutClassifier:
        """The plain network holding the run's selected weights, also for a linearized run."""
        plain = self.config.replace(linearized=False)
        return self._placed(trained_model(plain, self.num_classes, self.weights(), str(self.run.weights)))

    def pretrained(self) -> DropoutClassifier:
        """The pre-trained backbone the run started from, with the run's fine-tuned head."""
        model = initial_model(self.config, self.num_classes)
        head = {k.removeprefix("head."): v for k, v in self.weights().items() if k.startswith("head.")}
        load_strict(model.head, head, str(self.run.weights))
        return self._placed(model)

    def weights(self) -> dict[str, torch.Tensor]:
        return read_state_dict(self.run.weights)

    def _placed(self, model: nn.Module) -> nn.Module:
        return place(model, self.device, self.config.channels_last).eval()

    @torch.no_grad()
    def outputs(self, function) -> Outputs:
        """`function` (a model, or its `features`) applied to every evaluation image; no autograd, forward AD works."""
        batches, _ = self.bench.batches
        values, labels = [], []
        for x, y in make_loader(self.bench.images, batches, self.bench.workers):
            x = x.to(self.device)
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.config.amp):
                values.append(function(x).float())
            labels.append(y.to(self.device))
        return Outputs(torch.cat(values), torch.cat(labels))

    def scores(self, logits: torch.Tensor, labels: torch.Tensor) -> dict:
        """iid, ood, ood_out and per-domain accuracy, as a run reports them."""
        return self.split.protocol.summarize(accuracy_of(logits, labels, self.splits))

    def rows(self, which: str) -> torch.Tensor:
        """Row mask of the i.i.d. images (training domains' held-out parts) or the o.o.d. ones (test domain's 80%)."""
        masks = []
        for split in self.splits:
            iid = split.domain != self.split.protocol.test_domain
            keep = iid if which == "iid" else (not iid and split.split == "in")
            masks.append(torch.full((len(split.keys),), keep, dtype=torch.bool))
        return torch.cat(masks).to(self.device)

    def describe(self) -> dict:
        config = self.config
        return {"run": self.run.name, "path": str(self.run.folder.path), "dataset": self.run.results.dataset,
                "test_domain": self.run.results.test_domain, "dropout": config.dropout,
                "linearized": config.linearized, "weights": config.weights, "seed": config.seed,
                "max_images": self.max_images, "images": sum(len(s.keys) for s in self.splits)}


def subset(split: EvalSplit, max_images: int) -> EvalSplit:
    """At most `max_images` of a split, drawn with a seed of its name so every run of the split gets the same."""
    if len(split.keys) <= max_images:
        return split
    rng = np.random.default_rng(stable_seed("analysis", split.domain, split.split))
    chosen = np.sort(rng.choice(len(split.keys), max_images, replace=False))
    return EvalSplit(split.domain, split.split, [split.keys[i] for i in chosen])


def write_json(data: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
