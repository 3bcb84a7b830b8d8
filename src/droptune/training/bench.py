"""The fixed evaluation of one leave-one-domain-out protocol, shared by training and by combined models.

Every model that is compared (a run's checkpoints, its averages, ensembles and soups of runs)
is scored on the same images, in the same order, with the same transform and loader.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from droptune.data.loaders import DomainBalancedBatches, DomainImages, EvalSplit, eval_batches, make_loader
from droptune.data.splits import stable_seed
from droptune.models.averaging import recompute_bn
from droptune.training.config import TrainConfig
from droptune.training.device import eval_batch_size
from droptune.training.evaluate import Evaluation, evaluate
from droptune.training.protocol import LeaveOneDomainOut


class Bench:
    """Scores models on a protocol's evaluation sets; re-estimates BatchNorm statistics on its training part.

    `splits` replaces the protocol's evaluation sets (e.g. by subsets of them, for analyses).
    """

    def __init__(self, images: DomainImages, protocol: LeaveOneDomainOut, batch_size: int, workers: int,
                 device: torch.device, amp: str = "none", channels_last: bool = False, train_batch_size: int = 32,
                 splits: Sequence[EvalSplit] | None = None):
        self.images = images
        self.protocol = protocol
        self.splits = list(splits if splits is not None else protocol.eval_splits)
        self.iid_splits = [s for s in self.splits if s.domain != protocol.test_domain]
        self.batches = eval_batches(self.splits, batch_size)
        self.iid_batches = eval_batches(self.iid_splits, batch_size)
        self.workers = workers
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.train_batch_size = train_batch_size

    @classmethod
    def for_run(cls, config: TrainConfig, protocol: LeaveOneDomainOut, device: torch.device, workers: int,
                splits: Sequence[EvalSplit] | None = None) -> Bench:
        """The evaluation a run scores itself with: its image size and augmentation (its model normalizes), its
        batches and precision. Anything scored beside the run's own models must be built here too."""
        images = DomainImages(protocol.dataset, config.image_size, config.augment)
        return cls(images, protocol, eval_batch_size(config, device), workers, device, config.amp,
                   config.channels_last, config.batch_size, splits)

    def evaluate(self, model: nn.Module, keep_logits: bool = False, iid_only: bool = False) -> Evaluation:
        """Accuracy and loss on every split; `iid_only` scores the training domains' held-out parts alone."""
        batches, owners = self.iid_batches if iid_only else self.batches
        loader = make_loader(self.images, batches, self.workers, pin_memory=self.device.type == "cuda")
        return evaluate(model, loader, owners, self.iid_splits if iid_only else self.splits, self.device,
                        self.amp, self.channels_last, keep_logits)

    def score(self, model: nn.Module) -> dict:
        """iid, ood, ood_out and acc of a model."""
        return self.protocol.summarize(self.evaluate(model).acc)

    def iid(self, model: nn.Module) -> float:
        """Mean held-out accuracy of the training domains: all a choice between models may look at."""
        return self.protocol.iid(self.evaluate(model, iid_only=True).acc)

    def recompute_bn(self, model: nn.Module, steps: int, seed: int = 0) -> None:
        """BatchNorm statistics of (averaged) weights from `steps` augmented training batches."""
        batches = DomainBalancedBatches(self.protocol.train_parts(), self.train_batch_size, stable_seed("bn", seed),
                                        0, steps)
        loader = make_loader(self.images, batches, self.workers, pin_memory=self.device.type == "cuda")
        recompute_bn(model, loader, self.device, self.channels_last)
