"""Output ensembles on a fixed evaluation set: one model's outputs at a time, summed per image."""

from __future__ import annotations

import torch

from droptune.errors import DroptuneError


class OutputEnsemble:
    """The mean of several models' softmax probabilities (or logits) on the same images in the same order.

    Only the running sum is kept (images × classes), never a model or a member's outputs, so an
    ensemble of checkpoints along a run or of N runs costs one model's memory at a time.
    """

    def __init__(self, probabilities: bool = True):
        self.probabilities = probabilities
        self.count = 0
        self.total: torch.Tensor | None = None

    def add(self, logits: torch.Tensor) -> None:
        """Add one member's logits for every image of the evaluation set."""
        values = logits.float().softmax(1) if self.probabilities else logits.float()
        if self.total is None:
            self.total = values.clone()
        elif self.total.shape != values.shape:
            raise DroptuneError(f"ensemble members disagree on the evaluation set: outputs of shape "
                                f"{tuple(values.shape)}, expected {tuple(self.total.shape)}")
        else:
            self.total += values
        self.count += 1

    def state_dict(self) -> dict:
        return {"probabilities": self.probabilities, "count": self.count, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.probabilities, self.count, self.total = state["probabilities"], state["count"], state["total"]
