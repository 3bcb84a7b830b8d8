"""The first-order Taylor model of a DropoutClassifier around its pre-trained backbone weights.

The paper's argument assumes that fine-tuning stays in the linear regime: features move as
φ(θ) ≈ φ(θ₀) + J(θ₀)(θ − θ₀). This model *is* that expansion, computed with one forward-mode
pass (`torch.func.jvp`) at θ₀ along θ − θ₀, so that it can be trained (`linearized: true`) or
compared with the network at the same weights (`droptune analyze linearity`). The head, already
linear in the features, is kept as it is.
"""

from __future__ import annotations

import warnings

import torch
from torch.func import functional_call, jvp

from droptune.errors import DroptuneError
from droptune.models.model import DropoutClassifier


class LinearizedClassifier(DropoutClassifier):
    """`model`'s backbone and head, with features expanded to first order around the backbone's current weights.

    The weights at construction are the expansion point θ₀; the trainable weights are θ. At θ = θ₀ the
    model computes exactly what `model` computes. BatchNorm statistics must stay frozen (`freeze_bn`),
    otherwise the expanded function would change with every batch. The state dict has `model`'s keys,
    so a linearized run's weights load into an ordinary model (which then computes the network at θ).
    """

    def __init__(self, model: DropoutClassifier):
        if not model.freeze_bn:
            raise DroptuneError("a linearized model needs frozen BatchNorm statistics (freeze_bn: true)")
        super().__init__(model.backbone, model.num_features, model.num_classes, model.dropout, model.freeze_bn,
                         model.mean, model.std)
        self.head = model.head
        self.to(model.input_mean.device)
        self.origin = {name: p.detach().clone() for name, p in self.backbone.named_parameters()}
        self.train(model.training)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        weights = dict(self.backbone.named_parameters())
        change = {name: weights[name] - start for name, start in self.origin.items()}
        with warnings.catch_warnings():  # forward AD's first use scripts its decompositions: PyTorch's own warning
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            at_origin, first_order = jvp(lambda params: functional_call(self.backbone, params, (x,)),
                                         (self.origin,), (change,))
        return at_origin + first_order

    def _apply(self, fn, recurse: bool = True):
        """Move and convert the expansion point with the weights (`.to(device)`, channels-last)."""
        super()._apply(fn, recurse)
        if hasattr(self, "origin"):
            self.origin = {name: fn(start) for name, start in self.origin.items()}
        return self
