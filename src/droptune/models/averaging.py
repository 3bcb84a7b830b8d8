"""One streaming weight average, uniform or exponential, for SWA, EMA, SWAD and model soups.

Weights are folded in one state dict at a time, in place, so averaging N models or N steps
holds one average, never N copies. BatchNorm running statistics are averaged like any other
float tensor: exact when they are frozen (droptune's default, so every model holds the same
pre-trained statistics); otherwise `recompute_bn` re-estimates them for the averaged weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from droptune.errors import DroptuneError

State = Mapping[str, torch.Tensor]


class WeightAverage:
    """The uniform mean of the states added so far or, with `decay`, their exponential moving average.

    The uniform mean is updated as mean += (w - mean) / n, so N copies of one model average to
    exactly that model. Integer tensors (BatchNorm's step counters) keep their latest value.
    """

    def __init__(self, decay: float | None = None):
        if decay is not None and not 0.0 < decay < 1.0:
            raise DroptuneError(f"EMA decay must satisfy 0 < decay < 1, got {decay}")
        self.decay = decay
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    def add(self, state: State) -> None:
        """Fold one model's weights into the average."""
        if self.count == 0:
            self.mean = {k: v.detach().clone() for k, v in state.items()}
        else:
            self._check_keys(state)
            weight = 1.0 / (self.count + 1) if self.decay is None else 1.0 - self.decay
            floats = [k for k, v in self.mean.items() if v.is_floating_point()]
            torch._foreach_lerp_([self.mean[k] for k in floats], [state[k].detach() for k in floats], weight)
            for k, v in self.mean.items():
                if not v.is_floating_point():
                    v.copy_(state[k])
        self.count += 1

    def merge(self, other: WeightAverage) -> None:
        """Become the uniform mean of both averages' states, as if each of `other`'s had been added here."""
        if self.decay is not None or other.decay is not None:
            raise DroptuneError("only uniform averages can be merged")
        if other.count == 0:
            return
        if self.count == 0:
            self.mean = {k: v.clone() for k, v in other.mean.items()}
        else:
            self._check_keys(other.mean)
            weight = other.count / (self.count + other.count)
            for k, v in self.mean.items():
                if v.is_floating_point():
                    v.lerp_(other.mean[k], weight)
                else:
                    v.copy_(other.mean[k])
        self.count += other.count

    def load_into(self, model: nn.Module, extra: State | None = None) -> None:
        """Copy the average into `model`; with `extra`, the uniform average as if `extra` had been added too.

        The candidate of a greedy soup is built this way, in the model itself, without a second average.
        """
        if self.count == 0:
            raise DroptuneError("cannot load an empty weight average into a model")
        own = model.state_dict()
        self._check_keys(own)
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(self.mean[k])
                if extra is not None:
                    if v.is_floating_point():
                        v.lerp_(extra[k].to(v.device, v.dtype), 1.0 / (self.count + 1))
                    else:
                        v.copy_(extra[k])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "count": self.count, "mean": self.mean}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.count, self.mean = state["decay"], state["count"], dict(state["mean"])

    def _check_keys(self, state: State) -> None:
        if state.keys() != self.mean.keys():
            missing = sorted(set(self.mean) - set(state))
            extra = sorted(set(state) - set(self.mean))
            raise DroptuneError(f"cannot average models with different tensors: missing {missing[:3]}, "
                                f"unexpected {extra[:3]}")


@torch.no_grad()
def recompute_bn(model: nn.Module, batches: Iterable, device: torch.device, channels_last: bool = False) -> None:
    """Re-estimate BatchNorm running statistics of averaged weights on training batches (SWA's update_bn).

    Needed only when statistics were not frozen: an average of weights does not come with the
    statistics of its own activations. The global RNG (dropout) is left as it was.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches
    was_training = model.training
    model.train()
    for m in norms:
        m.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for x, _ in batches:
            x = x.to(device, non_blocking=True)
            model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
