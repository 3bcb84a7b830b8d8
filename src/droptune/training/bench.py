"""The fixed evaluation of one leave-one-domain-out split, shared by training and by combined models.

Every model that is compared (a run's checkpoints, its averages, ensembles and soups of runs)
is scored on the same images, in the same order, with the same transform and loader.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from droptune.combining.averaging import recompute_bn
from droptune.data.domains import MultiDomainDataset
from droptune.data.loaders import DomainBalancedBatches, DomainImages, EvalSplit, eval_batches, make_loader
from droptune.data.splits import DomainSplit, stable_seed
from droptune.training.config import TrainConfig
from droptune.training.evaluate import Evaluation, evaluate, summarize


def holdout_splits(dataset: MultiDomainDataset, splits: Sequence[DomainSplit], test: int, clean: bool = True,
                   seed: int = 0) -> list[EvalSplit]:
    """Held-out 20% of each training domain (i.i.d.), both parts of the test domain (o.o.d.).

    Without `clean`, held-out images get the training augmentation, seeded by the run seed (DomainBed's way).
    """
    names = dataset.domains
    result = []
    for d in range(len(names)):
        if d == test:
            continue
        keys = [(d, int(i), None if clean else stable_seed("holdout", seed, d, int(i))) for i in splits[d].holdout]
        result.append(EvalSplit(names[d], "out", keys))
    for part, indices in (("in", splits[test].train), ("out", splits[test].holdout)):
        result.append(EvalSplit(names[test], part, [(test, int(i), None) for i in indices]))
    return result



def eval_batch_size(config: TrainConfig, device: torch.device) -> int:
    """The config's, else what suits the device: large batches keep a GPU busy, small ones stay in a CPU's
    cache (Lite0 at 112 px on 2 cores: 420 images/s at 32, 360 at 64, 260 at 128)."""
    if config.eval_batch_size is not None:
        return config.eval_batch_size
    return 256 if device.type == "cuda" else 32

class Bench:
    """Scores models on a split's evaluation sets; re-estimates BatchNorm statistics on its training part."""

    def __init__(self, images: DomainImages, splits: list[EvalSplit], test_domain: str, batch_size: int,
                 workers: int, device: torch.device, amp: str = "none", channels_last: bool = False,
                 train: Sequence[tuple[int, np.ndarray]] = (), train_batch_size: int = 32):
        self.images = images
        self.splits = splits
        self.test_domain = test_domain
        self.train_domains = [s.domain for s in splits if s.domain != test_domain]
        self.iid_splits = [s for s in splits if s.domain != test_domain]
        self.batches = eval_batches(splits, batch_size)
        self.iid_batches = eval_batches(self.iid_splits, batch_size)
        self.workers = workers
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.train = list(train)
        self.train_batch_size = train_batch_size

    def evaluate(self, model: nn.Module, keep_logits: bool = False, iid_only: bool = False) -> Evaluation:
        """Accuracy and loss on every split; `iid_only` scores the training domains' held-out parts alone."""
        batches, owners = self.iid_batches if iid_only else self.batches
        loader = make_loader(self.images, batches, self.workers, pin_memory=self.device.type == "cuda")
        return evaluate(model, loader, owners, self.iid_splits if iid_only else self.splits, self.device,
                        self.amp, self.channels_last, keep_logits)

    def summarize(self, acc: dict) -> dict:
        return summarize(acc, self.train_domains, self.test_domain)

    def score(self, model: nn.Module) -> dict:
        """iid, ood, ood_out and acc of a model."""
        return self.summarize(self.evaluate(model).acc)

    def iid(self, model: nn.Module) -> float:
        """Mean held-out accuracy of the training domains: all a choice between models may look at."""
        acc = self.evaluate(model, iid_only=True).acc
        return float(np.mean([acc[d]["out"] for d in self.train_domains]))

    def iid_loss(self, evaluation: Evaluation) -> float:
        return float(np.mean([evaluation.loss[d]["out"] for d in self.train_domains]))

    def recompute_bn(self, model: nn.Module, steps: int, seed: int = 0) -> None:
        """BatchNorm statistics of (averaged) weights from `steps` augmented training batches."""
        batches = DomainBalancedBatches(self.train, self.train_batch_size, stable_seed("bn", seed), 0, steps)
        loader = make_loader(self.images, batches, self.workers, pin_memory=self.device.type == "cuda")
        recompute_bn(model, loader, self.device, self.channels_last)
