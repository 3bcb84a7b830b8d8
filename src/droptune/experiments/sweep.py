"""A sweep: datasets × test domains × hyper-parameter settings × seeds × methods, as TrainConfigs.

A sweep file is YAML (presets in `droptune/experiments/presets/`). It names no machine, so the same file runs with
every launcher. Each expanded job is identified by its config's hash and trains in
`SWEEP_DIR/runs/<job id>`, so expanding a sweep again finds the same jobs and folders.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from droptune.data.domains import domain_position
from droptune.data.registry import data_dir_reference, dataset_reference, get_spec, open_dataset
from droptune.data.splits import stable_seed
from droptune.errors import DroptuneError
from droptune.experiments import PRESETS, preset_names
from droptune.experiments.combos import check_methods, groups
from droptune.experiments.jobs import Job
from droptune.training.config import TrainConfig, coerce, coerce_value, load_yaml_file, recorded_value

# Set by the sweep for each job; a base or a method may not set them.
JOB_FIELDS = ("dataset", "data_dir", "test_domain", "seed", "trial_seed", "output_dir")
DISTRIBUTIONS = ("choice", "uniform", "log_uniform")
SPEC_KEYS = ("name", "datasets", "data_dir", "test_domains", "base", "grid", "random", "seeds", "trial_seeds",
             "methods", "combine")


@dataclass(frozen=True)
class Method:
    """A named set of config overrides, e.g. {name: "dropout 0.9", dropout: 0.9}."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RandomSearch:
    """`settings` hyper-parameter draws; each value is seeded by (seed, name, setting) alone,
    so adding a hyper-parameter to `space` leaves the others' values unchanged (DomainBed's habit)."""

    settings: int
    space: dict[str, dict[str, list]]
    seed: int = 0

    def draw(self, name: str, setting: int) -> Any:
        (kind, args), = self.space[name].items()
        rng = np.random.default_rng(stable_seed("hparam", self.seed, name, setting))
        if kind == "choice":
            return args[int(rng.integers(len(args)))]
        if kind == "uniform":
            return float(rng.uniform(*args))
        return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))

    def settings_list(self) -> list[dict[str, Any]]:
        return [coerce({name: self.draw(name, i) for name in sorted(self.space)}, "random.space")
                for i in range(self.settings)]


@dataclass(frozen=True)
class SweepSpec:
    name: str
    datasets: list[str]
    methods: list[Method]
    data_dir: str | None = None
    test_domains: str | list[str] | dict[str, str | list[str]] = "all"
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    random: RandomSearch | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    trial_seeds: list[int] | None = None
    combine: list[str] = field(default_factory=list)  # across-run combinations (experiments/combos.py)

    def hparam_settings(self) -> list[dict[str, Any]]:
        """The grid's product, the random draws, or one empty setting."""
        if self.random is not None:
            return self.random.settings_list()
        names = sorted(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*(self.grid[n] for n in names))]

    def replicates(self) -> list[tuple[int, int]]:
        """(trial seed, run seed) pairs: paired when trial_seeds is unset, else every combination."""
        if self.trial_seeds is None:
            return [(s, s) for s in self.seeds]
        return [(t, s) for t in self.trial_seeds for s in self.seeds]

    def domains(self, dataset: str) -> list[str]:
        """The held-out domains of one dataset, by name (given by name or by index, as `droptune train` takes them)."""
        chosen = self.test_domains.get(dataset, "all") if isinstance(self.test_domains, dict) else self.test_domains
        known = dataset_domains(dataset, self.data_dir)
        if chosen == "all":
            return known
        names: list[str] = []
        for domain in chosen:
            position = domain_position(known, domain)
            if position is None:
                raise DroptuneError(f"sweep {self.name!r}: {dataset} has no test domain {domain!r}: "
                                    f"expected one of {', '.join(known)} (or an index 0-{len(known) - 1})")
            name = known[position]
            if name in names:
                raise DroptuneError(f"sweep {self.name!r}: test domain {domain!r} of {dataset} is {name!r}, "
                                    "already listed")
            names.append(name)
        return names

    def jobs(self, sweep_dir: str | Path) -> list[Job]:
        """Every job of the sweep, each with its run folder under `sweep_dir`/runs."""
        runs = Path(sweep_dir).resolve() / "runs"
        where = {} if self.data_dir is None else {"data_dir": self.data_dir}
        jobs: dict[str, Job] = {}
        for dataset in self.datasets:
            spec = get_spec(dataset)
            if spec is not None and spec.folder is not None and TrainConfig(**where).data_dir is None:
                raise DroptuneError(f"sweep {self.name!r}: {spec.name} needs a data directory: set data_dir in the "
                                    "sweep file, pass --data-dir or set $DROPTUNE_DATA_DIR")
            cells = itertools.product(self.domains(dataset), self.hparam_settings(), self.replicates(), self.methods)
            for domain, hparams, (trial_seed, seed), method in cells:
                config = TrainConfig(**{"progress": False, **self.base, **hparams, **method.overrides, **where,
                                        "dataset": dataset, "test_domain": domain, "seed": seed,
                                        "trial_seed": trial_seed})
                job = Job(config.replace(output_dir=str(runs / config.identity())), method.name, hparams)
                if job.id in jobs:
                    raise DroptuneError(f"sweep {self.name!r}: two jobs of methods {jobs[job.id].method!r} and "
                                        f"{method.name!r} have the same config (a repeated method or grid value)")
                jobs[job.id] = job
        if self.combine and all(len(group.jobs) == 1 for group in groups(list(jobs.values()))):
            raise DroptuneError(f"sweep {self.name!r}: nothing to combine: each test domain, split and method has one "
                                "run (without trial_seeds every seed has its own split); set trial_seeds: [0] to "
                                "combine the seeds' runs on one split, or grid hyper-parameters")
        return list(jobs.values())

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in SPEC_KEYS if k not in ("methods", "random")}
        data["methods"] = [{"name": m.name, **m.overrides} for m in self.methods]
        if self.random is not None:
            data["random"] = {"settings": self.random.settings, "seed": self.random.seed, "space": self.random.space}
        return data


def unreadable_data(jobs: list[Job]) -> list[str]:
    """Why each dataset the jobs train on cannot be opened here (one message per dataset and data folder)."""
    problems = []
    for dataset, data_dir in dict.fromkeys((job.config.dataset, job.config.data_dir) for job in jobs):
        try:
            open_dataset(dataset, data_dir)
        except DroptuneError as error:
            problems.append(str(error))
    return problems


def unbuildable_models(jobs: list[Job]) -> list[str]:
    """Why a linear fine-tuning model the jobs train cannot be built (its blocks' widths differ, or it has too few),
    checked once per backbone, number of blocks and image size: every job of it would fail the same way, anywhere,
    after its start-up, and be retried."""
    shapes = dict.fromkeys((c.backbone, c.linear_blocks, c.image_size) for c in (job.config for job in jobs)
                           if c.linear_blocks is not None)
    if not shapes:
        return []
    from droptune.models.block_features import BlockFeaturesClassifier
    from droptune.models.model import build_model

    problems = []
    for backbone, blocks, size in shapes:
        try:
            BlockFeaturesClassifier(build_model(backbone, 2, weights="none", image_size=size), blocks, size)
        except DroptuneError as error:
            problems.append(f"{backbone} at {size} px: {error}")
    return problems


def dataset_domains(dataset: str, data_dir: str | None) -> list[str]:
    """A registered dataset's domains without touching the disk; a folder's from its subfolders."""
    spec = get_spec(dataset)
    return list(spec.domains) if spec is not None else open_dataset(dataset, data_dir).domains


def load_spec(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """A sweep from a preset name (`paper`, `cpu`) or a YAML file, with top-level keys overridden:
    mappings (base, grid) are merged into the file's, other keys replace it."""
    path = Path(name_or_path)
    if not path.exists() and (PRESETS / f"{name_or_path}.yaml").exists():
        path = PRESETS / f"{name_or_path}.yaml"
    if not path.is_file():
        raise DroptuneError(f"sweep file not found: {name_or_path} (expected a YAML file or a preset: "
                            f"{preset_names()})")
    data = load_yaml_file(path, "sweep file")
    if not isinstance(data, dict):
        raise DroptuneError(f"{path} must hold a mapping of sweep keys, got {type(data).__name__}")
    data = {"name": path.stem, **data}
    for key, value in (overrides or {}).items():
        merge = key in ("base", "grid") and isinstance(data.get(key), dict)
        data[key] = {**data[key], **value} if merge else value
    return parse_spec(data, str(path))


def parse_spec(data: dict[str, Any], source: str) -> SweepSpec:
    """A checked SweepSpec; every error names `source`, the key and what was expected."""
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise DroptuneError(f"unknown sweep key {unknown[0]!r} in {source}: expected one of {', '.join(SPEC_KEYS)}")
    datasets = [dataset_reference(name) for name in _list_of(data, "datasets", str, source)]
    _check_unique(datasets, "datasets", source)  # again: `mydata` and `./mydata` are one folder
    if not datasets:
        raise DroptuneError(f"{source}: 'datasets' must name at least one dataset")
    named: dict[str, str] = {}
    for dataset in datasets:  # results, tables and combinations know a dataset by its folder's name
        other = named.setdefault(Path(dataset).name, dataset)
        if other != dataset:
            raise DroptuneError(f"{source}: datasets {other} and {dataset} are both named {Path(dataset).name!r} "
                                "in results and tables: rename one folder, or sweep them into separate folders")
    base = config_overrides(data.get("base") or {}, f"{source} base")
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise DroptuneError(f"{source}: 'grid' must map config fields to non-empty lists of values, got {grid!r}")
    grid = {name: [recorded_value(name, coerce_value(name, v, f"{source} grid")) for v in values]
            for name, values in grid.items()}
    random = _random(data["random"], source) if data.get("random") else None
    if grid and random:
        raise DroptuneError(f"{source}: set either 'grid' or 'random', not both")
    varied = set(grid) | (set(random.space) if random else set())
    check_not_job_fields(varied, f"{source} grid/random")
    methods = _methods(data.get("methods"), source, varied)
    spec = SweepSpec(
        name=str(data.get("name", "sweep")), datasets=datasets, methods=methods,
        data_dir=None if data.get("data_dir") is None else data_dir_reference(str(data["data_dir"])),
        test_domains=_test_domains(data.get("test_domains", "all"), source),
        base=base, grid=grid, random=random,
        seeds=_list_of(data, "seeds", int, source, default=[0]),
        trial_seeds=_list_of(data, "trial_seeds", int, source) if data.get("trial_seeds") is not None else None,
        combine=check_methods(data.get("combine") or [], source),
    )
    # Fail on a bad value before any job starts (a typo in a grid must not surface hours later).
    for hparams in spec.hparam_settings():
        for method in methods:
            TrainConfig(**{**base, **hparams, **method.overrides})
    return spec


def _list_of(data: dict, key: str, kind: type, source: str, default: list | None = None) -> list:
    values = data.get(key, default)
    if isinstance(values, kind) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise DroptuneError(f"{source}: {key!r} must be a list of {kind.__name__}, got {values!r}")
    _check_unique(values, key, source)
    return values


def _check_unique(values: list, key: str, source: str) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise DroptuneError(f"{source}: {key!r} repeats {', '.join(repeated)}: each value once")


def config_overrides(values: Any, source: str) -> dict[str, Any]:
    """Config fields for every job of a method or of the sweep, checked; errors name `source`."""
    if not isinstance(values, dict):
        raise DroptuneError(f"{source} must be a mapping of config fields, got {values!r}")
    check_not_job_fields(values, source)
    return {name: recorded_value(name, value) for name, value in coerce(values, source).items()}


def check_not_job_fields(names, source: str) -> None:
    taken = sorted(set(names) & set(JOB_FIELDS))
    if taken:
        raise DroptuneError(f"{source} sets {taken[0]!r}, which the sweep sets for each job "
                            "(use the sweep keys datasets, data_dir, test_domains, seeds, trial_seeds)")


def _methods(values: Any, source: str, varied: set[str]) -> list[Method]:
    if not isinstance(values, list) or not values:
        raise DroptuneError(f"{source}: 'methods' must be a non-empty list like [{{name: erm, dropout: 0}}]")
    methods = []
    for entry in values:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise DroptuneError(f"{source}: each method needs a 'name' and config overrides, got {entry!r}")
        overrides = config_overrides({k: v for k, v in entry.items() if k != "name"},
                                     f"{source} method {entry['name']!r}")
        clash = sorted(set(overrides) & varied)
        if clash:
            raise DroptuneError(f"{source}: method {entry['name']!r} sets {clash[0]!r}, which the grid or random "
                                "search varies")
        methods.append(Method(entry["name"], overrides))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise DroptuneError(f"{source}: method names must differ, got {names}")
    return methods


def _test_domains(value: Any, source: str) -> str | list[str] | dict[str, str | list[str]]:
    def domains(v: Any) -> str | list[str]:
        if v == "all":
            return "all"
        if isinstance(v, list) and v:
            names = [str(d) for d in v]
            _check_unique(names, "test_domains", source)
            return names
        raise DroptuneError(f"{source}: 'test_domains' must be 'all', a list of domains, or a mapping "
                            f"from dataset to either; got {v!r}")

    if not isinstance(value, dict):
        return domains(value)
    _check_unique([dataset_reference(str(k)) for k in value], "test_domains", source)
    return {dataset_reference(str(k)): domains(v) for k, v in value.items()}


def _random(value: Any, source: str) -> RandomSearch:
    if not isinstance(value, dict) or not isinstance(value.get("settings"), int) or value["settings"] < 1:
        raise DroptuneError(f"{source}: 'random' needs 'settings' (a positive integer) and 'space', got {value!r}")
    unknown = sorted(set(value) - {"settings", "space", "seed"})
    if unknown:
        raise DroptuneError(f"{source}: unknown key {unknown[0]!r} in 'random': expected settings, space, seed")
    seed = value.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DroptuneError(f"{source}: random.seed must be an integer, got {seed!r}")
    space = value.get("space")
    if not isinstance(space, dict) or not space:
        raise DroptuneError(f"{source}: 'random.space' must map config fields to a distribution "
                            "like {log_uniform: [1e-4, 1e-2]}")
    return RandomSearch(value["settings"], {name: _distribution(name, dist, source) for name, dist in space.items()},
                        seed)


def _distribution(name: str, dist: Any, source: str) -> dict[str, list]:
    """One `random.space` entry, its values typed as the config field's; a range's bounds in order (and positive
    for log_uniform)."""
    where = f"random.space.{name}"
    (kind, args), = dist.items() if isinstance(dist, dict) and len(dist) == 1 else [(None, None)]
    if kind not in DISTRIBUTIONS or not isinstance(args, list) or not args or (kind != "choice" and len(args) != 2):
        raise DroptuneError(f"{source}: {where} must be one of {{choice: [values]}}, "
                            f"{{uniform: [low, high]}}, {{log_uniform: [low, high]}}; got {dist!r}")
    values = [coerce_value(name, arg, f"{source} random.space") for arg in args]
    if kind == "choice":
        return {kind: values}
    low, high = values
    if not (isinstance(low, float) and isinstance(high, float)):
        raise DroptuneError(f"{source}: {where}: {kind} draws real numbers and {name} is not one: "
                            f"use {{choice: {args!r}}}")
    if low > high or (kind == "log_uniform" and low <= 0):
        expected = "0 < low <= high" if kind == "log_uniform" else "low <= high"
        raise DroptuneError(f"{source}: {where}: {kind} bounds [{low:g}, {high:g}]: expected {expected}")
    return {kind: values}
