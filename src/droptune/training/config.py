"""The typed training configuration: the paper's defaults, overridable by YAML files and CLI flags."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from droptune.data.registry import DATASETS, data_dir_reference, dataset_reference
from droptune.errors import DroptuneError
from droptune.training.selection import SELECTIONS

AMP_MODES = ("none", "bf16", "fp16")
ENSEMBLE_OUTPUTS = ("probs", "logits")  # what an output ensemble averages: softmax probabilities or logits
# The linear probe's recipe (head_init: probe): Adam steps, learning rate and batch on cached features, its weight
# decay (the paper's default, whatever the run's) and its seed (shared by every run of a split).
PROBE_STEPS, PROBE_LR, PROBE_BATCH, PROBE_WEIGHT_DECAY, PROBE_SEED = 1000, 1e-3, 256, 1e-4, 0
DEVICE_AUGMENT = ("auto", "on", "off")


def option(default: Any, description: str, runtime: bool = False, later: bool = False) -> Any:
    """A config field: its default, the help of its command-line flag, and what `identity()` leaves out.

    `runtime`: where and how fast a run goes, not its numbers; left out, and free to change on resume.
    `later`: added after run folders existed; left out at its default, so that older runs keep their identity.
    """
    return field(default=default, metadata={"help": description, "runtime": runtime, "later": later})


@dataclass
class TrainConfig:
    """One fine-tuning run under leave-one-domain-out. The training defaults are the paper's recipe (Zhang &
    Bottou, 2024) but for clean validation images (`clean_holdout`) and, on CUDA, the crop of the image resized
    first (`device_augment`); the dataset and backbone default to the offline demo's (the paper fine-tunes
    ResNet-50)."""

    dataset: str = option("RotatedDigits", f"registered dataset name ({', '.join(DATASETS)}) or a folder laid out "
                                           "as <domain>/<class>/<image>")
    data_dir: str | None = field(default_factory=lambda: os.environ.get("DROPTUNE_DATA_DIR"),
                                 metadata={"help": "folder that holds the datasets (default: $DROPTUNE_DATA_DIR)",
                                           "runtime": True})
    test_domain: str = option("0", "held-out domain, by name or index")
    backbone: str = option("efficientnet_lite0", "resnet18/34/50/101 (torchvision), efficientnet_lite0/1/2 (offline "
                                                 "weights), or any timm name")
    weights: str = option("default", "'default' (the backbone's pre-trained weights), 'none', a torchvision enum such "
                                     "as IMAGENET1K_V1, a timm pretrained tag such as a1_in1k, or a weights file")
    dropout: float = option(0.9, "dropout rate on the penultimate features (the method: 0.9; plain fine-tuning: 0)")
    freeze_bn: bool = option(True, "keep BatchNorm running statistics at their pre-trained values")
    linearized: bool = option(False, "fine-tune the first-order Taylor model of the network around its pre-trained "
                                     "weights (about twice the cost of a step; needs frozen BatchNorm)", later=True)
    linear_blocks: int | None = option(None, "train the paper's linear fine-tuning model instead: the backbone frozen, "
                                             "the pooled outputs of its last N residual blocks weighted by trained "
                                             "vectors and summed, then the head (paper: 3)", later=True)
    lr: float = option(1e-3, "SGD learning rate of the backbone (the head's is --head-lr-mult times it)")
    head_lr_mult: float = option(1.0, "learning-rate multiplier for the linear head")
    weight_decay: float = option(1e-4, "SGD weight decay, on every weight")
    momentum: float = option(0.9, "SGD momentum")
    steps: int = option(10_000, "SGD steps")
    lr_milestones: list[int] | None = option(None, "steps at which the lr is multiplied by --lr-gamma (default: "
                                                   "half-way)")
    lr_gamma: float = option(0.1, "factor that multiplies the lr at each of --lr-milestones")
    batch_size: int = option(32, "images per training domain per step")
    image_size: int = option(224, "side of the square input images in pixels")
    augment: bool | None = option(None, "DomainBed's training augmentation (default: on, off for RotatedDigits)")
    device_augment: str = option("auto", "augment whole training batches on the device (auto: on CUDA) instead of "
                                         "each image in the loader; same parameters per seed, drawn for the image "
                                         "resized to --image-size", runtime=True)
    clean_holdout: bool = option(True, "evaluate training-domain validation images without augmentation "
                                       "(--no-clean-holdout reproduces DomainBed, which augments them)")
    holdout_fraction: float = option(0.2, "fraction of each domain held out for validation")
    eval_every: int = option(300, "steps between evaluations (and checkpoints)")
    eval_batch_size: int | None = option(None, "evaluation batch (default: 32 on CPU, where small batches stay in "
                                               "cache; 256 on CUDA)", runtime=True)
    selection: str = option("training_domain", "model selection: training_domain (i.i.d. validation) or oracle "
                                               "(test-domain validation)")
    seed: int = option(0, "run seed: head initialization, dropout masks, batch order, augmentation")
    trial_seed: int = option(0, "seed of the 80/20 splits, shared by all runs of a trial")
    head_seed: int | None = option(None, "seed of the head's initialization, shared by runs to be weight-averaged "
                                         "(default: the run seed)")
    head_init: str | None = option(None, "start the head from a linear probe, shared by runs to be weight-averaged: "
                                         "'probe' (probe this run's split first, with its dropout) or a file made by "
                                         "`droptune probe`")
    ensemble_start: int | None = option(None, "also report the ensemble of the checkpoints evaluated from this step "
                                              "on (paper: 300)")
    ensemble_outputs: str = option("probs", "what the checkpoint ensemble averages: probs (softmax) or logits")
    average_start: int | None = option(None, "also report the uniform (SWA) average of the weights of every step from "
                                             "this one")
    ema_decay: float | None = option(None, "also report the exponential moving average of the weights with this decay "
                                           "(e.g. 0.999)")
    swad: bool = option(False, "also report SWAD: dense weight averaging over the validation-loss valley (Cha et al., "
                               "2021)")
    bn_steps: int = option(100, "training batches that re-estimate BatchNorm statistics of averaged weights (with "
                                "--no-freeze-bn)")
    output_dir: str | None = option(None, "run folder (default: runs/<name from the config>)", runtime=True)
    device: str = option("auto", "auto, cpu, cuda or cuda:N", runtime=True)
    amp: str = option("none", "mixed precision: none, bf16 or fp16")
    channels_last: bool = option(True, "channels-last memory layout (faster on CPU and GPU)")
    compile: bool = option(False, "torch.compile the model")
    workers: int | None = option(None, "data-loader processes (default: chosen per device)", runtime=True)
    cache_dir: str | None = option(None, "decode every image once, resized to --image-size, into a memory-mapped "
                                         "cache in this folder")
    progress: bool | None = option(None, "progress bar; None: a bar when stderr is a terminal, else one plain line "
                                         "per evaluation", runtime=True)
    tensorboard: bool = option(False, "also write TensorBoard event files of metrics.jsonl's scalars to "
                                      "RUN_DIR/tensorboard", runtime=True)

    def __post_init__(self) -> None:
        # Values as a config file would give them (dropout=0 is 0.0, test_domain=1 is "1"), so that a config built
        # in Python has the identity, run folder and resumability of the same config read back from config.yaml.
        for name, value in list(vars(self).items()):
            setattr(self, name, coerce_value(name, value, "TrainConfig"))
        self.validate()

    def validate(self) -> None:
        """Raise a one-line error naming the first field whose value cannot work."""
        checks = [
            ("dropout", 0.0 <= self.dropout < 1.0, "0 <= p < 1"),
            ("lr", self.lr > 0, "a positive number"),
            ("head_lr_mult", self.head_lr_mult > 0, "a positive number"),
            ("weight_decay", self.weight_decay >= 0, "a non-negative number"),
            ("momentum", 0 <= self.momentum < 1, "0 <= momentum < 1"),
            ("steps", self.steps > 0, "a positive integer"),
            ("batch_size", self.batch_size > 0, "a positive integer (images per training domain)"),
            ("image_size", self.image_size >= 16, "at least 16 pixels"),
            ("holdout_fraction", 0 < self.holdout_fraction < 1, "between 0 and 1"),
            ("eval_every", self.eval_every > 0, "a positive integer"),
            ("eval_batch_size", self.eval_batch_size is None or self.eval_batch_size > 0, "a positive integer"),
            ("selection", self.selection in SELECTIONS, f"one of {', '.join(SELECTIONS)}"),
            ("amp", self.amp in AMP_MODES, f"one of {', '.join(AMP_MODES)}"),
            ("device_augment", self.device_augment in DEVICE_AUGMENT, f"one of {', '.join(DEVICE_AUGMENT)}"),
            ("lr_milestones", self.lr_milestones is None or all(0 < m < self.steps for m in self.lr_milestones),
             f"steps between 1 and {self.steps - 1}"),
            ("workers", self.workers is None or self.workers >= 0, "a non-negative integer"),
            ("head_init", self.head_init is None or self.head_seed is None, "unset when head_seed is set"),
            ("ensemble_start", self.ensemble_start is None or 0 < self.ensemble_start <= self.steps,
             f"a step between 1 and {self.steps}"),
            ("ensemble_outputs", self.ensemble_outputs in ENSEMBLE_OUTPUTS, f"one of {', '.join(ENSEMBLE_OUTPUTS)}"),
            ("average_start", self.average_start is None or 0 <= self.average_start < self.steps,
             f"a step between 0 and {self.steps - 1}"),
            ("ema_decay", self.ema_decay is None or 0 < self.ema_decay < 1, "0 < decay < 1"),
            ("bn_steps", self.bn_steps > 0, "a positive integer"),
            ("linearized", not self.linearized or self.freeze_bn, "false when freeze_bn is false (the first-order "
             "model needs frozen BatchNorm statistics)"),
            ("linear_blocks", self.linear_blocks is None or self.linear_blocks > 0, "a positive integer"),
            ("linear_blocks", self.linear_blocks is None or self.freeze_bn, "unset when freeze_bn is false (the "
             "linear fine-tuning model's backbone, BatchNorm statistics included, stays as pre-trained)"),
            ("linear_blocks", self.linear_blocks is None or not self.linearized, "unset when linearized is true (the "
             "linear fine-tuning model trains no backbone weight to expand)"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise DroptuneError(f"invalid {name} = {getattr(self, name)!r}: expected {expected}")

    @property
    def milestones(self) -> list[int]:
        """Steps where the lr is multiplied by `lr_gamma`: the paper decays once, half-way."""
        return sorted(self.lr_milestones) if self.lr_milestones is not None else [self.steps // 2]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> str:
        """A stable hash of everything that determines the run's numbers."""
        numeric = {k: v for k, v in self.to_dict().items()
                   if k not in RUNTIME_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        return hashlib.sha256(json.dumps(numeric, sort_keys=True).encode()).hexdigest()[:12]

    def default_run_name(self) -> str:
        return (f"{Path(self.dataset).name}-{self.test_domain}-{self.backbone.replace('/', '_')}"
                f"-p{self.dropout:g}-lr{self.lr:g}-wd{self.weight_decay:g}-s{self.seed}-{self.identity()[:8]}")

    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.default_run_name()

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **coerce(changes, "arguments"))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """A config from a YAML file; unknown fields and ill-typed values are errors naming the file."""
        return cls(**{**read_yaml(path), **coerce(overrides, "arguments")})


RUNTIME_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("runtime"))
LATER_FIELDS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.metadata.get("later")}


def load_recorded(path: str | os.PathLike) -> TrainConfig:
    """A run folder's config.yaml, which droptune writes whole: one that lacks fields (cut short, hand-edited) is an
    error, not the defaults' config. Older versions did not write the later and runtime fields: those may be absent."""
    data = read_yaml(path)
    missing = [f.name for f in dataclasses.fields(TrainConfig)
               if f.name not in data and f.name not in LATER_FIELDS and f.name not in RUNTIME_FIELDS]
    if missing:
        raise DroptuneError(f"{path} lacks {', '.join(missing)}: a run folder's config.yaml holds every field of "
                            "the run (is it cut short, or edited?)")
    return TrainConfig(**data)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The config fields set in a YAML file, checked against TrainConfig's fields and types."""
    data = load_yaml_file(path, "config file")
    if not isinstance(data, dict):
        raise DroptuneError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
    return coerce(data, str(path))


def load_yaml_file(path: str | os.PathLike, what: str) -> Any:
    """The YAML document in a text file; a missing, unreadable, binary or malformed file is a one-line error."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise DroptuneError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as error:
        raise DroptuneError(f"{path} is not a text file (byte {error.start} is not UTF-8): "
                            f"expected a YAML {what}") from None
    except OSError as error:
        raise DroptuneError(f"cannot read {what} {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise DroptuneError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from None


@functools.cache
def field_types() -> dict[str, Any]:
    """TrainConfig's field annotations, resolved once (every config built checks its values against them)."""
    return typing.get_type_hints(TrainConfig)


def base_type(annotation: Any) -> tuple[type, bool]:
    """(the scalar type, or list, of a field annotation; whether None is allowed)."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    core = [a for a in args if a is not type(None)] or [annotation]
    kind = core[0]
    return (list if typing.get_origin(kind) is list else kind), optional


def element_type(annotation: Any) -> type:
    """The type of a list field's elements (`list[int] | None`: int)."""
    lists = [a for a in (annotation, *typing.get_args(annotation)) if typing.get_origin(a) is list]
    return typing.get_args(lists[0])[0]


_REFUSED = object()


def _scalar(kind: type, value: Any) -> Any:
    """`value` as a `kind` (int widened to float, a number or path to str), or _REFUSED."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads 1e-3 as a string; only 1.0e-3 is a float there.
        try:
            return float(value)
        except ValueError:
            return _REFUSED
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if kind is str and isinstance(value, os.PathLike):  # dataset=Path("data/PACS") from Python
        return os.fspath(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    return _REFUSED


def coerce_value(name: str, value: Any, source: str) -> Any:
    """`value` checked (and int→float widened) against the type of field `name`; a list element by element."""
    types = field_types()
    if name not in types:
        raise DroptuneError(f"unknown config field {name!r} in {source}: expected one of {', '.join(types)}")
    kind, optional = base_type(types[name])
    if value is None and optional:
        return None
    if name == "device_augment" and isinstance(value, bool):
        return "on" if value else "off"  # YAML 1.1 reads unquoted on/off (and yes/no) as booleans
    if kind is list:
        element = element_type(types[name])
        items = [_scalar(element, v) for v in value] if isinstance(value, (list, tuple)) else [_REFUSED]
        if not any(item is _REFUSED for item in items):
            return items
        expected = f"a list of {element.__name__}"
    else:
        result = _scalar(kind, value)
        if result is not _REFUSED:
            return result
        expected = kind.__name__
    raise DroptuneError(f"config field {name!r} in {source} must be {expected}"
                        f"{' or None (null in YAML)' if optional else ''}, got {value!r}")


def coerce(changes: dict[str, Any], source: str) -> dict[str, Any]:
    return {k: coerce_value(k, v, source) for k, v in changes.items()}


def recorded_value(name: str, value: Any) -> Any:
    """A field's value as a new run records it: a dataset folder, a data directory and a weights file by their
    absolute paths, so that the run folder can be evaluated, combined and resumed from any working directory (a
    sweep's job from a Slurm node's or a Ray worker's), and two runs started from one file by different relative
    paths share a pre-trained start."""
    if not isinstance(value, str):
        return value
    if name == "dataset":
        return dataset_reference(value)
    if name == "data_dir":
        return data_dir_reference(value)
    if name == "weights" and Path(value).expanduser().is_file():
        from droptune.models.backbones import weights_reference  # torch and timm: only for a weights file

        return weights_reference(value)
    return value
