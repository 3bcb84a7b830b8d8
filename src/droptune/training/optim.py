"""The paper's optimizer: SGD with momentum, weight decay on all weights, step decay of the lr."""

from __future__ import annotations

import torch

from droptune.models.model import DropoutClassifier
from droptune.training.config import TrainConfig


def param_groups(model: DropoutClassifier, lr: float, head_lr_mult: float) -> list[dict]:
    """What trains below the head at `lr` (the backbone, or a linear fine-tuning model's block weights), the head
    at `lr × head_lr_mult` (the paper's variant uses 10×)."""
    head = list(model.head.parameters())
    below = [p for p in model.parameters() if p.requires_grad and all(p is not h for h in head)]
    return [
        {"name": "backbone", "params": below, "lr": lr},
        {"name": "head", "params": head, "lr": lr * head_lr_mult},
    ]


def make_optimizer(model: DropoutClassifier, config: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, config.lr, config.head_lr_mult), lr=config.lr,
                           momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.lr_gamma)
