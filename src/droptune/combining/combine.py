"""Combining finished runs of one split every way asked (combining/methods.py lists the ways).

Each combination is scored on the same i.i.d. and o.o.d. splits as single runs and written in
the same results schema, with its cost: trainings it took, forward passes it needs per image.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from droptune.combining.methods import COMBINATIONS
from droptune.combining.runs import Run, Split, read_runs
from droptune.combining.soups import check_averageable
from droptune.errors import DroptuneError
from droptune.runs.folder import RunDir
from droptune.runs.results import CombinationResults
from droptune.training.checkpoint import save_weights
from droptune.training.config import ENSEMBLE_OUTPUTS, RUNTIME_FIELDS
from droptune.training.device import default_workers, resolve_device


SCORED = ("iid", "ood", "ood_out", "acc", "members")  # what every combination's function returns


def combine(paths: Sequence[str | os.PathLike], methods: str | Sequence[str], output: str | os.PathLike,
            device: str = "auto", workers: int | None = None, data_dir: str | None = None,
            outputs: str | None = None) -> dict[str, dict]:
    """Combine the runs (their folders) every way asked; write <output>/<method>/results.json (and a soup's
    soup.safetensors, which `droptune.load_model` reads). Returns each method's results.json.

    `outputs`: what an ensemble averages; by default what the runs' own ensembles do (their ensemble_outputs).
    """
    if isinstance(paths, (str, os.PathLike)):
        raise DroptuneError(f"combine takes a list of run folders, got one path: {paths}")
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in COMBINATIONS]
    if unknown:
        raise DroptuneError(f"unknown combination method {unknown[0]!r}: expected one of {', '.join(COMBINATIONS)}")
    if outputs is not None and outputs not in ENSEMBLE_OUTPUTS:
        raise DroptuneError(f"unknown ensemble outputs {outputs!r}: expected one of {', '.join(ENSEMBLE_OUTPUTS)}")
    runs = read_runs(paths)
    outputs = outputs or runs[0].config.ensemble_outputs
    if any(COMBINATIONS[method].averages_weights for method in methods):
        check_averageable(runs)  # before anything is written
    first = runs[0]
    torch_device = resolve_device(device)
    split = Split(first.config, torch_device, workers if workers is not None else default_workers(torch_device),
                  data_dir)
    split.require_unchanged(runs, "combine")
    combined = {}
    for method in methods:
        start = time.perf_counter()
        combination = COMBINATIONS[method]
        scores, weights = combination.run(runs, split, outputs)
        missing = [key for key in SCORED if key not in scores]
        if missing:
            raise DroptuneError(f"combination {method!r} ({combination.function}) returned no {missing[0]!r}: "
                                f"expected {', '.join(SCORED)}, and any other keys")
        folder = RunDir(Path(output) / method)
        recorded = dict(
            status="completed",
            run=f"{Path(output).name}/{method}",
            method=method,
            label=combination.label,
            **split.protocol.describe(),
            selection=first.config.selection,
            outputs=None if combination.averages_weights else outputs,
            runs=members_brief(runs),
            cost={"trainings": len(runs), "forward_passes": combination.forward_passes(len(scores["members"]))},
            wall_time_s=time.perf_counter() - start,
            classes=list(split.dataset.classes),
        )
        fields = {f.name for f in dataclasses.fields(CombinationResults)} - set(recorded) - {"details"}
        details = {key: value for key, value in scores.items() if key not in fields}
        results = CombinationResults(**recorded, **{k: v for k, v in scores.items() if k in fields},
                                     details=details or None)
        if weights is not None:
            save_weights(weights, folder.soup, {"method": method, "members": scores["members"],
                                                "config": first.config.to_dict()})
        folder.write_results(results)
        combined[method] = dataclasses.asdict(results)
    return combined


def members_brief(runs: Sequence[Run]) -> list[dict]:
    """Each member run: its config's identity, the config fields in which the members differ (whatever they are:
    the sweep's grid, seeds, a field added later), its head start, and how it scored alone."""
    configs = [run.config.to_dict() for run in runs]
    varied = [name for name in configs[0] if name not in RUNTIME_FIELDS
              and len({json.dumps(c[name], sort_keys=True) for c in configs}) > 1]
    return [{"run": run.name, "config_id": run.config.identity(), "hparams": {name: c[name] for name in varied},
             "head_start": run.results.head_start, "step": run.results.step, "iid": run.results.iid,
             "ood": run.results.ood} for run, c in zip(runs, configs)]
