"""Accuracy and loss on evaluation splits in one pass over one loader."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from droptune.data.loaders import EvalSplit
from droptune.training.protocol import Scores



def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@dataclass
class Evaluation:
    acc: Scores
    loss: Scores
    logits: torch.Tensor | None = None  # every image's logits, in loader order, when asked for
    labels: torch.Tensor | None = None


@torch.inference_mode()
def evaluate(model: nn.Module, loader, owners: Sequence[int], splits: Sequence[EvalSplit],
             device: torch.device, amp: str = "none", channels_last: bool = False,
             keep_logits: bool = False) -> Evaluation:
    """Accuracy and mean cross-entropy per split; sums stay on the device until the end (no per-batch sync).

    `keep_logits` also returns every image's logits, which output ensembles accumulate.
    """
    was_training = model.training
    model.eval()
    correct = torch.zeros(len(splits), dtype=torch.long, device=device)
    loss = torch.zeros(len(splits), dtype=torch.float64, device=device)
    kept_logits, kept_labels = [], []
    for owner, (x, y) in zip(owners, loader):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        correct[owner] += (logits.argmax(1) == y).sum()
        loss[owner] += F.cross_entropy(logits, y, reduction="sum").double()
        if keep_logits:
            kept_logits.append(logits)
            kept_labels.append(y)
    model.train(was_training)
    sizes = [max(1, len(split.keys)) for split in splits]
    evaluation = Evaluation(_by_split(splits, [c / n for c, n in zip(correct.tolist(), sizes)]),
                            _by_split(splits, [s / n for s, n in zip(loss.tolist(), sizes)]))
    if keep_logits:
        evaluation.logits = torch.cat(kept_logits)
        evaluation.labels = torch.cat(kept_labels)
    return evaluation


def accuracy_of(outputs: torch.Tensor, labels: torch.Tensor, splits: Sequence[EvalSplit]) -> Scores:
    """Accuracy per split of whole-set outputs (rows in the order of `splits`' keys, as `evaluate` keeps them)."""
    hits = (outputs.argmax(1) == labels).cpu()
    sizes = [len(split.keys) for split in splits]
    ends = np.cumsum(sizes)
    return _by_split(splits, [hits[end - size:end].sum().item() / max(1, size) for size, end in zip(sizes, ends)])


def _by_split(splits: Sequence[EvalSplit], values: Sequence[float]) -> Scores:
    result: Scores = {}
    for split, value in zip(splits, values):
        result.setdefault(split.domain, {})[split.split] = value
    return result
