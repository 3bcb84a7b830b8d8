"""Across-run baselines of a sweep: ensembles and soups of the runs that differ only in seed or hyper-parameters.

For each (dataset, test domain, trial seed, method) group, once every job of the group has ended,
the finished runs are combined as the sweep file's `combine` key lists, into
SWEEP_DIR/combined/<group>/<combination>/results.json beside group.json, which names the group.
A combination whose members have not changed is not redone, so the phase is idempotent like the jobs.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from droptune.combining.methods import COMBINATIONS
from droptune.errors import DroptuneError
from droptune.experiments.jobs import DONE, FINAL, Job, record_error, state
from droptune.runs.files import save_json
from droptune.runs.folder import COMBINED, GROUP_FILE, RunDir
from droptune.runs.results import CombinationResults



@dataclass(frozen=True)
class Group:
    dataset: str
    test_domain: str
    trial_seed: int
    method: str
    jobs: tuple[Job, ...]

    @property
    def name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.]+", "_", self.method).strip("_")
        return f"{Path(self.dataset).name}-{self.test_domain}-trial{self.trial_seed}-{slug}"

    def describe(self) -> dict:
        return {"dataset": self.dataset, "test_domain": self.test_domain, "trial_seed": self.trial_seed,
                "method": self.method, "dropout": self.jobs[0].config.dropout, "jobs": [j.id for j in self.jobs]}


def groups(jobs: Sequence[Job]) -> list[Group]:
    """The jobs that may be combined: same split and method, any seed or hyper-parameter setting."""
    found: dict[tuple, list[Job]] = {}
    for job in jobs:
        c = job.config
        found.setdefault((c.dataset, str(c.test_domain), c.trial_seed, job.method), []).append(job)
    return [Group(*key, tuple(members)) for key, members in found.items()]


def combine_sweep(jobs: Sequence[Job], sweep_dir: Path, methods: Sequence[str], device: str = "auto",
                  workers: int | None = None, log: Callable[[str], None] = print, sweep: str = "sweep") -> list[Path]:
    """Combine every group whose jobs have all ended and which has 2 or more finished runs.

    A combination that fails (soups of runs with different head starts, say) is recorded like a failed
    job, in its folder's error.json with no results.json left beside it, and the others go on; the next
    invocation tries it again. A group's folder that another sweep (`sweep`: the sweep file's name) of the same
    folder combined with a method of the same name is not overwritten: that is a failure too. Returns the folders
    of the combinations that failed.
    """
    from droptune.combining.combine import combine  # torch: the report expands sweep files without it

    failed = []
    for group in groups(jobs):
        states = [state(job.run) for job in group.jobs]
        done = [job for job, s in zip(group.jobs, states) if s == DONE]
        if len(done) < 2 or not all(s in FINAL for s in states):
            continue
        folder = Path(sweep_dir) / COMBINED / group.name
        members = sorted(job.id for job in done)
        outputs = group.jobs[0].config.ensemble_outputs  # an ensemble of runs averages what the runs' ensembles do
        todo = [m for m in methods
                if _outcome(RunDir(folder / m)) != (members, None if COMBINATIONS[m].averages_weights else outputs)]
        if not todo:
            continue
        owner = _owner(folder)
        if owner not in (None, sweep):
            message = (f"{folder} holds the combinations of sweep {owner!r}, whose method {group.method!r} runs on the "
                       f"same split: rename the method in one of the sweep files")
            log(f"cannot combine {group.name}: {message}")
            record_error(RunDir(folder), message)  # the group folder's, which its own sweep removes
            failed.append(folder)
            continue
        log(f"combining {len(done)} runs of {group.name}: {', '.join(todo)}")
        save_json({**group.describe(), "sweep": sweep, "combined": members}, folder / GROUP_FILE)
        RunDir(folder).error.unlink(missing_ok=True)
        paths = [job.run.path for job in sorted(done, key=lambda j: j.id)]
        for method in todo:
            outcome = RunDir(folder / method)
            try:
                combine(paths, [method], folder, device, workers, outputs=outputs)
            except Exception as error:  # noqa: BLE001 - one group's failure must not stop the others
                for stale in (outcome.results, outcome.soup):
                    stale.unlink(missing_ok=True)
                record_error(outcome, f"{type(error).__name__}: {error}", traceback.format_exc())
                log(f"cannot combine {group.name} by {method}: {error}")
                failed.append(outcome.path)
            else:
                outcome.error.unlink(missing_ok=True)
    return failed


def _owner(folder: Path) -> str | None:
    """The sweep whose combinations a group's folder holds (None: none yet, or written before sweeps were named)."""
    try:
        return json.loads((folder / GROUP_FILE).read_text()).get("sweep")
    except (OSError, ValueError, AttributeError):
        return None


def _outcome(combination: RunDir) -> tuple[list[str], str | None] | None:
    """The runs a finished combination combined, and the outputs an ensemble averaged (None for a soup)."""
    try:
        results = combination.read_results(CombinationResults)
        return None if results is None else (sorted(run["run"] for run in results.runs), results.outputs)
    except (DroptuneError, KeyError, TypeError):
        return None


def check_methods(methods: object, source: str) -> list[str]:
    if not isinstance(methods, list) or not all(m in COMBINATIONS for m in methods):
        raise DroptuneError(f"{source}: 'combine' must be a list of {', '.join(COMBINATIONS)}; got {methods!r}")
    return list(methods)
