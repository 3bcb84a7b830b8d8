"""Run folders → one pandas table. A folder that cannot be used is listed with the reason, never dropped.

One row per finished run, plus one per along-run baseline it reports in results["variants"]
(an ensemble or a weight average of the same run, named "<method> + <variant>"), plus one per
across-run combination of a sweep (SWEEP_DIR/combined: "<method> + uniform soup", ...). For each
selection method a row holds the validation accuracy it selects by and the i.i.d./o.o.d. accuracy
of the checkpoint it chose. A run's hyper-parameter setting is what its config varies among the
runs of its (dataset, method): the sweep's grid or random draws, with nothing to declare.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from droptune.combining.methods import COMBINATIONS
from droptune.errors import DroptuneError
from droptune.runs.folder import COMBINED, GROUP_FILE, RunDir, holder, spec_files
from droptune.runs.results import CombinationResults, RunResults
from droptune.training.config import RUNTIME_FIELDS, TrainConfig, base_type, field_types
from droptune.training.selection import SELECTIONS

SCORE_COLUMNS = tuple(f"{s}.{m}" for s in SELECTIONS for m in ("val", "iid", "ood"))  # runs.csv's selected scores
CELL_FIELDS = ("dataset", "data_dir", "test_domain", "seed", "trial_seed")
RUN_FILES = ("job", "config", "results", "error", "last")  # RunDir's files that make a folder a run's
CURVE_COLUMNS = ["dataset", "method", "test_domain", "run", "step", "iid", "loss"]
SKIPPED_COLUMNS = ["path", "reason", "dataset", "method", "test_domain"]
RUNS_TABLE, SKIPPED_TABLE = "runs.csv", "skipped.csv"  # what `droptune report` writes of a collection


class Unusable(Exception):
    """Why a run folder is not in the table."""


@dataclass
class Collection:
    """What `collect` read: the runs' rows (the report's and summary's tables are computed from them), the
    folders it could not use, and the i.i.d. curves."""

    runs: pd.DataFrame  # one row per (run, variant)
    skipped: pd.DataFrame  # path, reason, and the dataset/method/test domain when known
    curves: pd.DataFrame  # one row per evaluation of a finished run: its i.i.d. accuracy and loss by step
    problems: list[str] = field(default_factory=list)  # what kept the collection from knowing every planned run


def run_folders(root: Path) -> list[Path]:
    """`root`/runs/* for a sweep; otherwise the folders of `root` that hold run files."""
    root = Path(root)
    if (root / "runs").is_dir():
        return sorted(p for p in (root / "runs").iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and any(getattr(RunDir(p), name).exists() for name in RUN_FILES))


def collect(root: str | Path) -> Collection:
    """Every run folder under `root` (a sweep folder, or a folder of run folders) read into tables; a folder
    that cannot be used is in `skipped` with the reason."""
    if not Path(root).is_dir():
        raise DroptuneError(f"folder of runs not found: {root}")
    rows, skipped, curves, problems = [], [], [], []
    for path in run_folders(root):
        config, method = None, None
        try:
            config, method = describe(path)
            run_rows = rows_of_run(path, config, method)
        except Unusable as reason:
            skipped.append({"path": str(path), "reason": str(reason), "dataset": _dataset_name(config),
                            "method": method, "test_domain": None if config is None else config.get("test_domain")})
            continue
        rows += run_rows
        try:
            curves += read_curve(path, run_rows[0])
        except Unusable as reason:  # the run's scores are in results.json: only its convergence curve is lost
            problems.append(f"{path.name}: {reason}: the run is in the tables, its curve left out of the "
                            "convergence figure")
    for path in sorted(p for p in Path(root).glob(f"{COMBINED}/*/*") if p.is_dir()):
        try:
            rows.append(read_combination(path))
        except Unusable as reason:
            skipped.append({"path": str(path), "reason": str(reason), "dataset": None, "method": None,
                            "test_domain": None})
    planned, unlisted = planned_without_folder(Path(root))
    runs = label_hparams(pd.DataFrame(rows))
    return Collection(runs, pd.DataFrame(skipped + planned, columns=SKIPPED_COLUMNS),
                      pd.DataFrame(curves, columns=CURVE_COLUMNS), problems + unlisted)


def planned_without_folder(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The jobs a sweep folder's files plan that have no run folder yet (a folder restored from run records holds
    its finished runs alone), as runs not started: the tables' averages, the summary's counts and the report then
    see the whole design, not only the runs at hand. Also a line for each file whose jobs cannot be listed."""
    from droptune.experiments.sweep import load_spec

    rows: dict[str, dict[str, Any]] = {}
    problems = []
    for spec in spec_files(root):
        try:
            jobs = load_spec(spec).jobs(root)
        except DroptuneError as error:
            problems.append(f"{spec.name}: cannot list the runs it plans, so runs without a folder are not counted "
                            f"({error})")
            continue
        for job in jobs:
            if not job.run.path.exists():
                rows[str(job.run.path)] = {"path": str(job.run.path), "reason": "not started", "method": job.method,
                                           "dataset": _dataset_name(job.config.to_dict()),
                                           "test_domain": job.config.test_domain}
    return list(rows.values()), problems


def read_report_tables(folder: Path) -> Collection:
    """The runs.csv and skipped.csv a `droptune report` wrote: the collection of run folders that are not at hand
    (run folders stay out of the repository, their report folders do not). No curves."""
    tables = []
    for name, text_columns in ((RUNS_TABLE, ["run", "path", "dataset", "test_domain", "method", "variant", "hparams"]),
                               (SKIPPED_TABLE, SKIPPED_COLUMNS)):
        path = Path(folder) / name
        try:
            tables.append(pd.read_csv(path, dtype={column: str for column in text_columns}))
        except pd.errors.EmptyDataError:  # what to_csv writes of an empty table
            tables.append(pd.DataFrame())
        except FileNotFoundError:
            raise DroptuneError(f"{path}: not found: expected the {name} of a folder written by droptune report"
                                ) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as error:
            raise DroptuneError(f"{path}: not a table droptune report wrote ({str(error).splitlines()[0]})") from None
    runs, skipped = tables
    missing = [c for c in ("run", "dataset", "test_domain", "method", "seed", "trial_seed", "hparams",
                           *SCORE_COLUMNS) if c not in runs]
    if missing and not runs.empty:
        raise DroptuneError(f"{Path(folder) / RUNS_TABLE}: no column {missing[0]!r}: expected runs.csv as droptune "
                            "report writes it")
    for column in (c for c in SCORE_COLUMNS if c in runs):
        values = pd.to_numeric(runs[column], errors="coerce")
        required = column in ("training_domain.iid", "training_domain.ood")  # every completed run has them
        bad = (values.isna() & (runs[column].notna() | required)) | ~values.between(0, 1) & values.notna()
        if bad.any():
            run, value = runs[bad].iloc[0][["run", column]]
            shown = repr(value) if isinstance(value, str) else "blank" if pd.isna(value) else f"{value:g}"
            raise DroptuneError(f"{Path(folder) / RUNS_TABLE}: run {run}: {column} is {shown}: expected an accuracy "
                                "(a fraction from 0 to 1)")
        runs[column] = values
    return Collection(runs, skipped.reindex(columns=SKIPPED_COLUMNS), pd.DataFrame(columns=CURVE_COLUMNS))


def describe(path: Path) -> tuple[dict | None, str | None]:
    """The run's config and method name: from job.json (a sweep's), else config.yaml and its dropout rate.

    A job.json that cannot be read is Unusable: the run's method would otherwise be named after its dropout
    rate and averaged into another method's cell."""
    job_file = RunDir(path).job
    if job_file.exists():
        try:
            job = json.loads(job_file.read_text())
            if isinstance(job["config"], dict) and isinstance(job["method"], str):
                return job["config"], job["method"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raise Unusable("job.json is unreadable or lacks its config or method")
    try:
        config = yaml.safe_load(RunDir(path).config.read_text())
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8 text
        return None, None
    if not isinstance(config, dict) or not isinstance(config.get("dropout"), (int, float)):
        return None, None
    return config, f"dropout {config['dropout']:g}"


def rows_of_run(path: Path, config: dict | None, method: str | None) -> list[dict[str, Any]]:
    """A finished run's table rows: its own, and one per along-run baseline it reports; Unusable with the reason
    otherwise. (combining.runs.read_run reads a run to combine it.)"""
    if config is None:
        raise Unusable("no readable job.json or config.yaml")
    results = _results(path, RunResults)
    if results.status != "completed":
        raise Unusable(f"status {results.status!r} in results.json")
    check_same_run(results, config)
    try:
        base = {"run": path.name, "path": str(path), "dataset": results.dataset,
                "test_domain": str(results.test_domain), "run_method": method,
                "seed": results.seed, "trial_seed": results.trial_seed,
                "dropout": float(config["dropout"]), "collapsed": results.collapsed,
                "wall_time_s": results.wall_time_s, "train_images_per_s": results.train_images_per_s,
                "images": json.dumps(results.images, sort_keys=True) if results.images else None,
                "files": json.dumps(results.files, sort_keys=True) if results.files else None,
                **{f"config.{k}": _scalar(v) for k, v in {**config_defaults(), **config}.items()}}
        rows = [{**base, "method": method, "variant": None, **_selected(results.selections),
                 "effective_features": _effective_features(path)}]
        for name, variant in results.variants.items():
            if variant is not None:
                rows.append({**base, "method": f"{method} + {name}", "variant": name,
                             **_selected(variant["selections"])})
    except (KeyError, TypeError, ValueError) as error:
        raise Unusable(f"results.json lacks or mangles {error}") from None
    if pd.isna(rows[0]["training_domain.val"]):  # its validation accuracy is the i.i.d. accuracy
        raise Unusable("results.json has no evaluation selected by training-domain validation")
    if pd.isna(rows[0]["training_domain.ood"]):
        raise Unusable("results.json has no selections.training_domain.ood")
    return rows


def check_same_run(results: RunResults, config: dict) -> None:
    """A results.json whose held-out domain or seeds differ from its folder's config was copied from another run:
    its scores would be filed under this run's method and cell."""
    from droptune.data.domains import domain_position
    from droptune.data.registry import get_spec

    for name in ("seed", "trial_seed"):
        if name in config and str(config[name]) != str(getattr(results, name)):
            raise Unusable(f"results.json's {name} {getattr(results, name)!r} differs from its config's "
                           f"{config[name]!r}: the results belong to another run")
    wanted = str(config.get("test_domain", results.test_domain))
    spec = get_spec(config["dataset"]) if isinstance(config.get("dataset"), str) else None
    position = domain_position(spec.domains, wanted) if spec else None
    wanted = wanted if position is None else spec.domains[position]
    if wanted != str(results.test_domain) and not wanted.isdigit():  # an index of a folder dataset: not checkable
        raise Unusable(f"results.json's test_domain {results.test_domain!r} differs from its config's {wanted!r}: "
                       "the results belong to another run")


@functools.cache
def config_defaults() -> dict[str, Any]:
    """Every config field's default: a run recorded before a field existed ran with it (its job id is unchanged,
    training.config.LATER_FIELDS), and must not look like another hyper-parameter setting."""
    return TrainConfig().to_dict()


def read_curve(path: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's evaluations from metrics.jsonl: training-domain accuracy and loss at each step."""
    try:
        return [{"dataset": row["dataset"], "method": row["run_method"], "test_domain": row["test_domain"],
                 "run": row["run"], "step": int(record["step"]), "iid": float(record["iid"]),
                 "loss": float(record["loss"])} for record in RunDir(path).read_metrics()]
    except DroptuneError as error:
        raise Unusable(str(error)) from None
    except (ValueError, KeyError, TypeError) as error:
        raise Unusable(f"metrics.jsonl lacks or mangles {error}") from None


def read_combination(path: Path) -> dict[str, Any]:
    """One row for an across-run combination (experiments/combos.py): its replicate is the trial seed alone."""
    results = _results(path, CombinationResults)
    if not (path.parent / GROUP_FILE).is_file():
        raise Unusable(f"no {GROUP_FILE} beside it: only the combinations a sweep makes are collected (a "
                       "`droptune combine` folder is for `droptune.load_model` and `droptune evaluate`)")
    try:
        group = json.loads((path.parent / GROUP_FILE).read_text())
        method = f"{group['method']} + {results.label or COMBINATIONS[results.method].label}"
        scores = {"iid": results.iid, "ood": results.ood}
        return {"run": f"{path.parent.name}/{path.name}", "path": str(path), "dataset": results.dataset,
                "test_domain": str(results.test_domain), "run_method": method, "seed": float("nan"),
                "trial_seed": int(group["trial_seed"]), "dropout": float(group["dropout"]), "collapsed": False,
                "method": method, "variant": results.method, "members": len(results.members),
                **{f"{s}.val": getattr(results, SELECTIONS[s].validation) for s in SELECTIONS},
                **{f"{s}.{m}": v for s in SELECTIONS for m, v in scores.items()}}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise Unusable(f"combination results lack or mangle {error}") from None


def _results(path: Path, kind: type[RunResults] | type[CombinationResults]) -> RunResults | CombinationResults:
    try:
        results = RunDir(path).read_results(kind)
    except DroptuneError as error:
        raise Unusable(str(error).replace(f"{path}/", "")) from None
    if results is None:
        raise Unusable(_why_unfinished(path))
    return results


def _why_unfinished(path: Path) -> str:
    run = RunDir(path)
    running = holder(path)
    if running:  # before error.json: a sweep's retry of a failed job is running
        step = _last_evaluated_step(run)
        return f"running ({running}, " + ("no evaluation yet)" if step is None else f"last evaluation at step {step})")
    if run.error.exists():
        try:
            record = json.loads(run.error.read_text())
            return f"failed after {record['attempts']} attempt(s): {record['message']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "failed (error.json unreadable)"
    if run.last.exists():
        stopped = run.read_interrupted()
        how = f"stopped by {stopped['signal']} at step {stopped['step']}, " if stopped else ""
        step = _last_evaluated_step(run)
        return (f"interrupted ({how}last evaluation at step {'?' if step is None else step}); running the sweep "
                "again resumes it")
    return "not started"


def _last_evaluated_step(run: RunDir) -> int | None:
    try:
        return int(json.loads(run.metrics.read_text().splitlines()[-1])["step"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _effective_features(path: Path) -> float:
    """The participation ratio of the run's selected head (`droptune analyze features`); NaN when it has none."""
    try:
        return float(json.loads(RunDir(path).feature_usage.read_text())["participation_ratio"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")


def _selected(selections: dict) -> dict[str, float]:
    """Per selection method: the validation accuracy it maximized, and i.i.d./o.o.d. accuracy of its choice."""
    row = {}
    for selection in SELECTIONS:
        chosen = selections.get(selection) or {}
        if not isinstance(chosen, dict):
            raise Unusable(f"results.json's selections.{selection} is {chosen!r}: expected a mapping")
        for key, column in ((SELECTIONS[selection].validation, "val"), ("iid", "iid"), ("ood", "ood")):
            row[f"{selection}.{column}"] = _accuracy(chosen.get(key), f"selections.{selection}.{key}")
    return row


def _accuracy(value: Any, name: str) -> float:
    """An accuracy of results.json as a fraction; NaN where it has none."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isnan(value) or 0 <= value <= 1):
        raise Unusable(f"results.json's {name} is {value!r}: expected an accuracy (a fraction from 0 to 1)")
    return float(value)


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _dataset_name(config: dict | None) -> str | None:
    from droptune.data.registry import get_spec

    if config is None or not isinstance(config.get("dataset"), str):
        return None
    spec = get_spec(config["dataset"])
    return spec.name if spec else Path(config["dataset"]).name


def hparam_fields(runs: pd.DataFrame) -> list[str]:
    """The config fields that differ among `runs` (of one dataset and method), apart from the cell's own."""
    fixed = set(CELL_FIELDS) | set(RUNTIME_FIELDS)
    columns = [c for c in runs.columns if c.startswith("config.") and c.removeprefix("config.") not in fixed]
    return [c.removeprefix("config.") for c in columns if runs[c].map(str).nunique() > 1]


def config_value(name: str, value: Any) -> Any:
    """A config value as its field's type (an integer field's column is float where combinations leave it empty);
    "none" for an unset field (its default, such as the random head of head_init: None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    kind = base_type(field_types()[name])[0] if name in field_types() else None
    return int(value) if kind is int and isinstance(value, float) and value.is_integer() else value


def label_hparams(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `hparams` ("lr=0.001, weight_decay=0.0001", or "default") and `hparam_fields` to every row."""
    if runs.empty:
        return runs.assign(hparams=pd.Series(dtype=str), hparam_fields=pd.Series(dtype=str))
    runs = runs.copy()
    for _, group in runs.groupby(["dataset", "run_method"], sort=False):
        names = hparam_fields(group)
        values = group[[f"config.{n}" for n in names]].itertuples(index=False)
        runs.loc[group.index, "hparams"] = [", ".join(f"{n}={config_value(n, v)}" for n, v in zip(names, row))
                                            or "default" for row in values]
        runs.loc[group.index, "hparam_fields"] = ",".join(names)
    return runs
