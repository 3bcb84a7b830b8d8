"""TrainConfig fields as kebab-case CLI flags, layered: dataclass defaults → YAML file → flags."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from droptune.errors import DroptuneError
from droptune.training.config import RUNTIME_FIELDS, TrainConfig, base_type, coerce, field_types, read_yaml
from droptune.runs.folder import RunDir

HELP = {
    "dataset": "registered dataset name (PACS, VLCS, OfficeHome, TerraIncognita, DomainNet, Office31, OfficeCaltech10, RotatedDigits) "
               "or a folder laid out as <domain>/<class>/<image>",
    "data_dir": "folder that holds the datasets (default: $DROPTUNE_DATA_DIR)",
    "test_domain": "held-out domain, by name or index",
    "backbone": "resnet18/34/50/101 (torchvision), efficientnet_lite0/1/2 (offline weights), or any timm name",
    "weights": "'default' (the backbone's pre-trained weights), 'none', a torchvision enum such as "
               "IMAGENET1K_V1, or a weights file",
    "dropout": "dropout rate on the penultimate features (the method: 0.9; plain fine-tuning: 0)",
    "freeze_bn": "keep BatchNorm running statistics at their pre-trained values",
    "linearized": "fine-tune the first-order Taylor model of the network around its pre-trained weights "
                  "(about twice the cost of a step; needs frozen BatchNorm)",
    "head_lr_mult": "learning-rate multiplier for the linear head",
    "steps": "SGD steps",
    "lr_milestones": "steps at which the lr is multiplied by --lr-gamma (default: half-way)",
    "batch_size": "images per training domain per step",
    "image_size": "side of the square input images in pixels",
    "augment": "DomainBed's training augmentation (default: on, off for RotatedDigits)",
    "device_augment": "augment whole training batches on the device (auto: on CUDA) instead of each image in "
                      "the loader; same parameters per seed, drawn for the image resized to --image-size",
    "clean_holdout": "evaluate training-domain validation images without augmentation "
                     "(--no-clean-holdout reproduces DomainBed, which augments them)",
    "holdout_fraction": "fraction of each domain held out for validation",
    "eval_every": "steps between evaluations (and checkpoints)",
    "selection": "model selection: training_domain (i.i.d. validation) or oracle (test-domain validation)",
    "seed": "run seed: head initialization, dropout masks, batch order, augmentation",
    "trial_seed": "seed of the 80/20 splits, shared by all runs of a trial",
    "head_seed": "seed of the head's initialization, shared by runs to be weight-averaged (default: the run seed)",
    "head_init": "start the head from a linear probe, shared by runs to be weight-averaged: 'probe' (probe this "
                 "run's split first, with its dropout) or a file made by `droptune probe`",
    "ensemble_start": "also report the ensemble of the checkpoints evaluated from this step on (paper: 300)",
    "ensemble_outputs": "what the checkpoint ensemble averages: probs (softmax) or logits",
    "average_start": "also report the uniform (SWA) average of the weights of every step from this one",
    "ema_decay": "also report the exponential moving average of the weights with this decay (e.g. 0.999)",
    "swad": "also report SWAD: dense weight averaging over the validation-loss valley (Cha et al., 2021)",
    "bn_steps": "training batches that re-estimate BatchNorm statistics of averaged weights (with --no-freeze-bn)",
    "output_dir": "run folder (default: runs/<name from the config>)",
    "device": "auto, cpu, cuda or cuda:N",
    "amp": "mixed precision: none, bf16 or fp16",
    "channels_last": "channels-last memory layout (faster on CPU and GPU)",
    "compile": "torch.compile the model",
    "workers": "data-loader processes (default: chosen per device)",
    "eval_batch_size": "evaluation batch (default: 32 on CPU, where small batches stay in cache; 256 on CUDA)",
    "cache_dir": "decode every image once, resized to --image-size, into a memory-mapped cache in this folder",
    "progress": "progress bar; None: a bar when stderr is a terminal, else one plain line per evaluation",
    "tensorboard": "also write TensorBoard event files of metrics.jsonl's scalars to RUN_DIR/tensorboard",
}


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field; unset flags stay absent so lower layers show through."""
    group = parser.add_argument_group("training config (defaults: the paper's recipe)")
    group.add_argument("--config", type=Path, help="YAML file of config fields (flags override it)")
    types = field_types()
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        kind, _ = base_type(types[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = f"{HELP.get(f.name, '')} (default: {default})".strip()
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif kind is list:
            group.add_argument(flag, type=int, nargs="+", default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def flag_values(args: argparse.Namespace) -> dict:
    """The config fields given on the command line."""
    names = set(field_types())
    return {k: v for k, v in vars(args).items() if k in names}


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> TrainConfig:
    """base (e.g. a preset) → --config file → flags."""
    layers = dict(base or {})
    if args.config is not None:
        layers.update(read_yaml(args.config))
    layers.update(flag_values(args))
    try:
        return TrainConfig(**coerce(layers, "command line"))
    except DroptuneError as error:
        if args.config is None:
            raise
        raise DroptuneError(f"{error} (config: {args.config} and the command line)") from None


def resumed_config(run_dir: Path, args: argparse.Namespace) -> TrainConfig:
    """The config a run was started with; only runtime fields may change on resume."""
    run = RunDir(Path(run_dir))
    config_file = run.config
    if not config_file.exists():
        raise DroptuneError(f"cannot resume {run_dir}: no config.yaml there (is it a droptune run folder?)")
    if not run.last.exists() and run.read_results() is None:
        raise DroptuneError(f"cannot resume {run_dir}: it holds no checkpoint (last.pt), so the run stopped before "
                            f"its first evaluation; start it again from step 0 with `droptune train --config "
                            f"{config_file} --output-dir {run_dir}`")
    config = TrainConfig.load(config_file)
    changed = {k: v for k, v in flag_values(args).items() if getattr(config, k) != v}
    fixed = sorted(set(changed) - set(RUNTIME_FIELDS))
    if fixed:
        name = fixed[0]
        raise DroptuneError(f"cannot change {name} when resuming {run_dir} "
                            f"(it was {getattr(config, name)!r}); only {', '.join(RUNTIME_FIELDS)} may change")
    return config.replace(**changed, output_dir=str(run_dir))
