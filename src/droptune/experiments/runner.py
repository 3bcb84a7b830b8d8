"""Running a sweep: skip finished jobs, resume interrupted ones, retry failures, show progress.

Idempotent by construction: a job's state is read from its run folder (`jobs.state`), so running
the same sweep again starts only what has not finished, and interrupted runs resume from last.pt.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from droptune import console
from droptune.experiments.jobs import DIVERGED, FAILED, FINAL, Job, prepare, record_error, state
from droptune.experiments.launchers import Launcher


class Progress:
    """One line for the whole sweep: jobs done, running (or queued on a cluster), failed, diverged, and an ETA;
    without a terminal, one plain line each time a job ends."""

    def __init__(self, jobs: Sequence[Job], progress: bool | None = None):
        self.states = {job.id: state(job.run) for job in jobs}
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.lines = not console.shown(progress)
        self.bar = console.bar(progress, total=len(jobs), initial=self._count(*FINAL), unit="job", desc="sweep")
        self._show()

    def started(self, job: Job) -> None:
        with self.lock:
            self.running.add(job.id)
            self._show()

    def ended(self, job: Job, crash: str | None) -> None:
        with self.lock:
            now = state(job.run)
            if crash is not None and now not in FINAL:  # not a worker dying after its results
                record_error(job.run, crash)
                now = FAILED
            self.states[job.id] = now
            self.running.discard(job.id)
            if now in FINAL:
                self.bar.update(1)
            self._show()
            if self.lines:
                console.line(f"sweep: {job.id} {now}; {self._count(*FINAL)}/{len(self.states)} jobs done, "
                             f"{self._tally()}")

    def _count(self, *states: str) -> int:
        return sum(s in states for s in self.states.values())

    def _tally(self) -> str:
        # a diverged run is done (a result), and counted apart from the failures
        diverged = self._count(DIVERGED)
        return f"running {len(self.running)}, failed {self._count(FAILED)}" + (
            f", diverged {diverged}" if diverged else "")

    def _show(self) -> None:
        self.bar.set_postfix_str(self._tally())

    def close(self) -> None:
        self.bar.close()


@dataclass(frozen=True)
class SweepSummary:
    states: dict[str, int]  # jobs per state after the sweep
    executions: int  # job attempts started by this invocation

    @property
    def complete(self) -> bool:
        """Every job finished: completed, or diverged (a result, which running it again would repeat)."""
        return set(self.states) <= set(FINAL)


def run_sweep(jobs: Sequence[Job], launcher: Launcher, max_retries: int = 1,
              progress: bool | None = None) -> SweepSummary:
    """Run every unfinished job, each up to 1 + `max_retries` times, without letting one failure stop the others."""
    for job in jobs:
        prepare(job)
    bar = Progress(jobs, progress)
    executions = 0
    try:
        todo = [job for job in jobs if state(job.run) not in FINAL]
        for _ in range(1 + max_retries):
            if not todo:
                break
            launcher.run(todo, bar)
            executions += len(todo)
            todo = [job for job in todo if state(job.run) not in FINAL]
    finally:
        bar.close()
    return SweepSummary(dict(Counter(state(job.run) for job in jobs)), executions)
