"""Output ensembles on a fixed evaluation set: one model's outputs at a time, summed per image."""

from __future__ import annotations

import torch

from droptune.errors import DroptuneError

OUTPUTS = ("probs", "logits")


class OutputEnsemble:
    """The mean of several models' softmax probabilities (or logits) on the same images in the same order.

    Only the running sum is kept (images × classes), never a model or a member's outputs, so an
    ensemble of checkpoints along a run or of N runs costs one model's memory at a time.
    """

    def __init__(self, outputs: str = "probs"):
        if outputs not in OUTPUTS:
            raise DroptuneError(f"unknown ensemble outputs {outputs!r}: expected one of {', '.join(OUTPUTS)}")
        self.outputs = outputs
        self.count = 0
        self.total: torch.Tensor | None = None

    def add(self, logits: torch.Tensor) -> None:
        """Add one member's logits for every image of the evaluation set."""
        values = logits.float().softmax(1) if self.outputs == "probs" else logits.float()
        if self.total is None:
            self.total = values.clone()
        elif self.total.shape != values.shape:
            raise DroptuneError(f"ensemble members disagree on the evaluation set: outputs of shape "
                                f"{tuple(values.shape)}, expected {tuple(self.total.shape)}")
        else:
            self.total += values
        self.count += 1

    def state_dict(self) -> dict:
        return {"outputs": self.outputs, "count": self.count, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.outputs, self.count, self.total = state["outputs"], state["count"], state["total"]
