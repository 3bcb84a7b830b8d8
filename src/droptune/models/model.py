"""The paper's model: pre-trained backbone → pooled features → Dropout(p) → Linear."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from droptune.errors import DroptuneError
from droptune.models.backbones import IMAGENET_MEAN, IMAGENET_STD, create_backbone


class DropoutClassifier(nn.Module):
    """A backbone and a linear head with (very large) dropout on its input, nothing else.

    With `freeze_bn`, BatchNorm layers stay in eval mode through `.train()`: their running
    statistics keep their pre-trained values while their affine weights still train.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, dropout: float = 0.9,
                 freeze_bn: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise DroptuneError(f"dropout must be a number with 0 <= p < 1, got {dropout!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise DroptuneError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
        self.backbone = backbone
        self.head = nn.Sequential(OrderedDict(
            dropout=nn.Dropout(dropout),
            fc=nn.Linear(num_features, num_classes),
        ))
        self.num_features = num_features
        self.num_classes = num_classes
        self.freeze_bn = freeze_bn
        self.mean = tuple(mean)
        self.std = tuple(std)
        # Not persistent: they are the backbone's convention, not weights to save, average or load.
        self.register_buffer("input_mean", 255 * torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", 255 * torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.train()

    @property
    def dropout(self) -> float:
        return self.head.dropout.p

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features, shape (batch, num_features).

        uint8 images (what droptune's transforms give) are normalized with the backbone's mean and
        std first; float input is taken as already normalized.
        """
        return self.backbone(self.normalize(x))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != 3):  # a traced shape is constant
                raise DroptuneError(f"uint8 images must be RGB batches of shape N×3×H×W, got {tuple(x.shape)}")
            # in the model's dtype (the buffers'), so that a half or bfloat16 model takes uint8 images too
            return (x.to(self.input_mean.dtype) - self.input_mean) / self.input_std
        if not x.is_floating_point():
            raise DroptuneError(f"images must be uint8 (0-255, normalized by the model) or float (normalized), "
                                f"got {x.dtype}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> DropoutClassifier:
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


def build_model(backbone: str, num_classes: int, dropout: float = 0.9, weights: str | None = "default",
                freeze_bn: bool = True, *, image_size: int | None = None) -> DropoutClassifier:
    """A pre-trained `backbone` (see `create_backbone`) with a `Dropout(dropout) → Linear` head.

    `image_size`: the side of the images it will take; a backbone built for one input size (ViT) is built for it.
    """
    made = create_backbone(backbone, weights, image_size=image_size)
    return DropoutClassifier(made.module, made.num_features, num_classes, dropout, freeze_bn, made.mean, made.std)
