"""droptune: fine-tuning with very large dropout under the DomainBed protocol.

The names below are imported on first use, so that reading run folders (`droptune report`) does not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from droptune.errors import DroptuneError

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
    from droptune.combining.combine import combine
    from droptune.experiments.collect import collect
    from droptune.inference.export import export
    from droptune.inference.loading import load_model
    from droptune.inference.predict import predict
    from droptune.inference.scoring import score
    from droptune.models.model import build_model
    from droptune.training.config import TrainConfig
    from droptune.training.trainer import train

_LAZY = {"TrainConfig": "droptune.training.config", "build_model": "droptune.models.model",
         "train": "droptune.training.trainer", "load_model": "droptune.inference.loading",
         "score": "droptune.inference.scoring", "predict": "droptune.inference.predict",
         "export": "droptune.inference.export", "combine": "droptune.combining.combine",
         "collect": "droptune.experiments.collect"}

__all__ = ["DroptuneError", "TrainConfig", "build_model", "train", "load_model", "score", "predict", "export",
           "combine", "collect"]  # spelled out for linters; test_architecture checks it against _LAZY
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'droptune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
