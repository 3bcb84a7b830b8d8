"""droptune: fine-tuning with very large dropout under the DomainBed protocol.

The names below are imported on first use, so that reading run folders (`droptune report`) does not load torch.
"""

from importlib import import_module

from droptune.errors import DroptuneError

_LAZY = {"TrainConfig": "droptune.training.config", "build_model": "droptune.models.model",
         "load_model": "droptune.inference.loading", "train": "droptune.training.trainer"}

__all__ = ["DroptuneError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'droptune' has no attribute {name!r}")
