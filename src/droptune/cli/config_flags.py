"""TrainConfig fields as kebab-case CLI flags, layered: dataclass defaults → YAML file → flags."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from droptune.errors import DroptuneError
from droptune.training.config import (RUNTIME_FIELDS, TrainConfig, base_type, coerce, element_type, field_types,
                                      load_recorded, read_yaml, recorded_value)
from droptune.runs.folder import RunDir


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                     defaults: Mapping[str, Any] | None = None) -> None:
    """One flag per TrainConfig field; unset flags stay absent so lower layers show through. `defaults`: the
    command's own base layer (e.g. `compare`'s budget), shown in the help instead of the paper's value."""
    defaults = defaults or {}
    group = parser.add_argument_group("training config (defaults: the paper's recipe"
                                      + (", but this command's budget where marked)" if defaults else ")"))
    group.add_argument("--config", type=Path, help="YAML file of config fields (flags override it)")
    types = field_types()
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        kind, _ = base_type(types[f.name])
        flag = "--" + f.name.replace("_", "-")
        if f.name in defaults:
            help_text = f"{f.metadata['help']} (default for this command: {defaults[f.name]})"
        elif "(default:" in f.metadata["help"]:  # the field's help explains its default
            help_text = f.metadata["help"]
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            help_text = f"{f.metadata['help']} (default: {default})"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif kind is list:
            group.add_argument(flag, type=element_type(types[f.name]), nargs="+", default=argparse.SUPPRESS,
                               help=help_text)
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
    layers = {k: recorded_value(k, v) for k, v in layers.items()}
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
        raise DroptuneError(f"cannot resume {run_dir}: it holds no checkpoint (last.pt): the run stopped before its "
                            f"first one was saved; start it again from step 0 with `droptune train --config "
                            f"{config_file} --output-dir {run_dir}`")
    config = load_recorded(config_file)
    changed = {k: v for k, v in flag_values(args).items()
               if recorded_value(k, getattr(config, k)) != recorded_value(k, v)}
    fixed = sorted(set(changed) - set(RUNTIME_FIELDS))
    if fixed:
        name = fixed[0]
        raise DroptuneError(f"cannot change {name} when resuming {run_dir} "
                            f"(it was {getattr(config, name)!r}); only {', '.join(RUNTIME_FIELDS)} may change")
    return config.replace(**changed, output_dir=str(run_dir))
