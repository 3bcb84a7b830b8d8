"""Backbones by name and the dropout-headed classifier built on them."""

from droptune.models.backbones import BACKBONES, create_backbone, lite_imagenet_classifier
from droptune.models.loading import load_strict, read_state_dict
from droptune.models.model import DropoutClassifier, build_model

__all__ = [
    "BACKBONES", "DropoutClassifier", "build_model", "create_backbone", "lite_imagenet_classifier",
    "load_strict", "read_state_dict",
]
