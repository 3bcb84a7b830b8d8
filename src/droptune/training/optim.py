"""The paper's optimizer: SGD with momentum, weight decay on all weights, step decay of the lr."""

from __future__ import annotations

import torch

from droptune.models.model import DropoutClassifier
from droptune.training.config import TrainConfig


def param_groups(model: DropoutClassifier, lr: float, head_lr_mult: float) -> list[dict]:
    """Backbone at `lr`, head at `lr × head_lr_mult` (the paper's variant uses 10×)."""
    return [
        {"name": "backbone", "params": list(model.backbone.parameters()), "lr": lr},
        {"name": "head", "params": list(model.head.parameters()), "lr": lr * head_lr_mult},
    ]


def make_optimizer(model: DropoutClassifier, config: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, config.lr, config.head_lr_mult), lr=config.lr,
                           momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.lr_gamma)
