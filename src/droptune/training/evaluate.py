"""Accuracy on evaluation splits in one pass over one loader."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from droptune.data.loaders import EvalSplit


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, owners: Sequence[int], splits: Sequence[EvalSplit],
             device: torch.device, amp: str = "none", channels_last: bool = False) -> dict[str, dict[str, float]]:
    """{domain: {split: accuracy}}; counts stay on the device until the end (no per-batch sync)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros(len(splits), dtype=torch.long, device=device)
    for owner, (x, y) in zip(owners, loader):
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x)
        correct[owner] += (logits.argmax(1) == y.to(device, non_blocking=True)).sum()
    model.train(was_training)
    result: dict[str, dict[str, float]] = {}
    for split, count in zip(splits, correct.tolist()):
        result.setdefault(split.domain, {})[split.split] = count / max(1, len(split.keys))
    return result
