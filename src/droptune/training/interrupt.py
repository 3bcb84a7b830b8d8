"""Preemption: SIGTERM, SIGINT and SIGUSR2 ask a run to stop after its current step and save a resumable checkpoint.

Clusters reclaim nodes with SIGTERM (Slurm, Kubernetes, Ray) and a person stops a run with Ctrl-C; either
way the run finishes the step it is in, writes `last.pt` as an evaluation would, marks its folder
interrupted and exits with INTERRUPTED_EXIT, so that `--resume` (or the sweep run again) continues it to
the numbers an uninterrupted run gives.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType

from droptune.errors import DroptuneError

# sysexits.h's EX_TEMPFAIL: "a temporary failure; the user is invited to retry", here with --resume.
INTERRUPTED_EXIT = 75
# SIGUSR2: what Slurm's --signal sends before the time limit by submitit's default.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class Interrupted(DroptuneError):
    """A run or sweep stopped on a signal after saving its state; its message says how to continue."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopRequest:
    """While entered, the stop signals only record that a stop was asked (`received`); the code polls it.

    A second signal while the first is being handled changes nothing, so a save in progress is never cut.
    Outside the main thread (where Python cannot install handlers) it records nothing and changes nothing.
    """

    def __init__(self, signals: Iterable[signal.Signals] = STOP_SIGNALS, then: Callable[[int], None] | None = None):
        self.signals = tuple(signals)
        self.then = then  # called with the first signal, e.g. to pass it on to worker processes
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            print(f"droptune: {signal_name(signum)} received: saving the state of what is running, "
                  "then stopping", file=sys.stderr, flush=True)
            if self.then is not None:
                self.then(signum)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in self.signals}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
