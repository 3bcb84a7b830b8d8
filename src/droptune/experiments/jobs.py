"""One sweep job: its config, its state on disk, and the function every launcher runs.

A job's state is read from its run folder alone, so any launcher, any machine and any later
invocation agree on it:

    job.json     the job (method, hyper-parameters, config); written before it first runs
    results.json the run finished (DONE, or DIVERGED when its status says so: a result, not a failure)
    error.json   its last attempt raised or its worker died: message, traceback, attempts (FAILED); removed when
                 a later attempt finishes
    last.pt      it was interrupted after a checkpoint and resumes from there (INTERRUPTED; interrupted.json
                 too when a signal stopped it)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from droptune.errors import DroptuneError
from droptune.runs.files import save_json
from droptune.training.config import TrainConfig
from droptune.training.interrupt import INTERRUPTED_EXIT, Interrupted
from droptune.runs.folder import FolderBusy, RunDir

DONE, DIVERGED, FAILED, INTERRUPTED, PENDING = "done", "diverged", "failed", "interrupted", "pending"
FINAL = (DONE, DIVERGED)  # rerunning these would give the same numbers
RECORDED = 3  # exit status of a worker process whose job failed and was recorded in error.json
PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(frozen=True)
class Job:
    config: TrainConfig
    method: str
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.config.identity()

    @property
    def run(self) -> RunDir:
        return RunDir(Path(self.config.output_dir))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "hparams": self.hparams, "config": self.config.to_dict()}

    @classmethod
    def read(cls, run_dir: str | Path) -> Job:
        """The job prepared in `run_dir`, pointed at that folder wherever it now is."""
        path = RunDir(Path(run_dir)).job
        try:
            data = json.loads(path.read_text())
            config = TrainConfig(**{**data["config"], "output_dir": str(Path(run_dir).resolve())})
            return cls(config, data["method"], data["hparams"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DroptuneError(f"cannot read job {path}: {error}") from None


def prepare(job: Job) -> None:
    """Create the run folder with its job.json, so that a report lists the job before it runs.

    job.json is rewritten each time: a renamed method keeps its runs (the id is the config's hash).
    """
    job.run.path.mkdir(parents=True, exist_ok=True)
    save_json(job.to_dict(), job.run.job)


def state(run: RunDir) -> str:
    try:
        results = run.read_results()
    except DroptuneError:
        return FAILED
    if results is not None:
        return DONE if results.status == "completed" else DIVERGED
    if run.error.exists():
        return FAILED
    return INTERRUPTED if run.last.exists() else PENDING


def read_error(run: RunDir) -> dict[str, Any] | None:
    try:
        return json.loads(run.error.read_text())
    except (OSError, ValueError):
        return None


def record_error(run: RunDir, message: str, trace: str = "") -> None:
    """Write (or update) error.json; `attempts` counts failures over all invocations of the sweep."""
    previous = read_error(run) or {}
    save_json({"message": message, "traceback": trace, "attempts": previous.get("attempts", 0) + 1},
              run.error)


def execute(job: Job) -> str:
    """Run or resume the job; a failure is recorded in its folder, never raised. Returns its new state.

    A stop signal is not a failure: `Interrupted` is raised, with the job's state saved for a resume.
    """
    from droptune.training.trainer import TrainingDiverged, train

    prepare(job)
    try:
        train(job.config, resume=True)
    except Interrupted:
        raise
    except (FolderBusy, TrainingDiverged) as ended:  # another process trains it, or a result: not a failure
        print(f"droptune: {ended}", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - one job's failure must not stop the sweep
        record_error(job.run, f"{type(error).__name__}: {error}", traceback.format_exc())
    now = state(job.run)
    if now in FINAL:  # a retry that finished: an earlier attempt's error.json would still say it failed
        job.run.error.unlink(missing_ok=True)
    return now


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """This process's output (file descriptors 1 and 2: Python's and native code's) appended to `path` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    try:
        with path.open("a") as log:
            for fd in (1, 2):
                os.dup2(log.fileno(), fd)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def execute_task(job: Job) -> str:
    """`execute` in a scheduler's task (Slurm's, Ray's), its output in the run folder's log.txt as a local worker's
    is, not in the scheduler's files or streamed into the sweep's terminal."""
    job.run.path.mkdir(parents=True, exist_ok=True)
    with output_to(job.run.log):
        return execute(job)


class RequeuedExecute:
    """`execute` for submitit: a task that receives a stop signal saves its run, then raises the signal again
    into submitit's own handler for it. For USR2, which Slurm sends `--slurm-signal-delay` seconds before the
    time limit, that handler calls `checkpoint` and requeues the task (`scontrol requeue`, within submitit's
    timeout count), and the requeued task resumes the run from last.pt. For SIGTERM (a preemption, scancel)
    submitit's handler only logs it ("bypass"): the task returns the run's interrupted state and submitit
    requeues nothing; Slurm itself restarts it only where PreemptMode=REQUEUE, else the next `droptune sweep`
    resumes it. Submitit recognizes a checkpointable function by its `checkpoint` method."""

    def __call__(self, job: Job) -> str:
        try:
            return execute_task(job)
        except Interrupted as stopped:
            signal.raise_signal(stopped.signum)  # submitit's handler again: it requeues on its own signal
            return state(job.run)

    def checkpoint(self, job: Job) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, job)


def die_with_parent() -> None:
    """Linux: end this process when the one that started it ends. A worker that outlived a killed sweep
    would train the same run folder as the worker a rerun starts."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str]) -> int:
    """`python -m droptune.experiments.jobs RUN_DIR`: how the local launcher runs a job in its own process."""
    die_with_parent()
    try:
        return 0 if execute(Job.read(argv[0])) in FINAL else RECORDED
    except Interrupted as stopped:
        print(f"droptune: {stopped}", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
