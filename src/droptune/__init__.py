"""droptune: fine-tuning with very large dropout under the DomainBed protocol."""

from droptune.errors import DroptuneError
from droptune.inference.loading import load_model
from droptune.models import build_model
from droptune.training.config import TrainConfig
from droptune.training.trainer import train

__all__ = ["DroptuneError", "TrainConfig", "build_model", "load_model", "train"]
__version__ = "0.1.0"
