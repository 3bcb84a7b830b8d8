"""SWAD (Cha et al., NeurIPS 2021): dense weight averaging over the validation-loss valley.

Weights are averaged at every step, in segments that end at each evaluation, where the live
model's training-domain validation loss is measured. The valley opens at the first segment
that is the lowest of a window of `n_converge` (the loss stopped falling); its tolerance is
(1 + `tolerance_ratio`) × the window's mean loss; it closes before `n_tolerance` segments in a
row above the tolerance (a "dead" valley), or at the end of training, after the last segment
within it. The defaults are the published ones (n_converge 3, n_tolerance 6, ratio 0.3).

Unlike the reference implementation, no segment is counted twice. At most `n_converge`
segment averages are held before the valley opens, two afterwards: the valley's, and that of
the segments above the tolerance that wait for the verdict of the next ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from droptune.models.averaging import State, WeightAverage
from droptune.errors import DroptuneError

N_CONVERGE = 3
N_TOLERANCE = 6
TOLERANCE_RATIO = 0.3


@dataclass
class Segment:
    average: WeightAverage
    start: int  # first step averaged
    end: int  # the evaluation that closed it
    loss: float  # the live model's validation loss there


class LossValley:
    def __init__(self, n_converge: int = N_CONVERGE, n_tolerance: int = N_TOLERANCE,
                 tolerance_ratio: float = TOLERANCE_RATIO):
        if n_converge < 1 or n_tolerance < 1 or tolerance_ratio < 0:
            raise DroptuneError(f"invalid SWAD settings n_converge={n_converge}, n_tolerance={n_tolerance}, "
                                f"tolerance_ratio={tolerance_ratio}: expected positive windows and ratio >= 0")
        self.n_converge = n_converge
        self.n_tolerance = n_tolerance
        self.tolerance_ratio = tolerance_ratio
        self.window: list[Segment] = []  # closed segments before the valley opens
        self.open = WeightAverage()  # the segment in progress, then also the segments awaiting a verdict
        self.open_start = 0
        self.valley: Segment | None = None  # its loss is unused
        self.threshold: float | None = None
        self.above = 0  # segments in a row above the tolerance
        self.dead = False

    def add(self, state: State, step: int) -> None:
        """Average the weights after `step` into the current segment."""
        if self.dead:
            return
        if self.open.count == 0:
            self.open_start = step
        self.open.add(state)

    def close(self, step: int, loss: float) -> None:
        """End the current segment at an evaluation, with the live model's validation loss there."""
        if self.dead or self.open.count == 0:
            return
        if self.threshold is not None:
            self._judge(step, loss)
            return
        self.window = [*self.window, Segment(self.open, self.open_start, step, loss)][-self.n_converge:]
        self.open = WeightAverage()
        losses = [s.loss for s in self.window]
        if len(self.window) < self.n_converge or int(np.argmin(losses)) != 0:
            return
        self.threshold = float(np.mean(losses)) * (1.0 + self.tolerance_ratio)
        first, *rest = self.window
        self.window = []
        self.valley = first
        for segment in rest:
            if self.dead:
                break
            self.open.merge(segment.average)
            self._judge(segment.end, segment.loss)

    def _judge(self, end: int, loss: float) -> None:
        """The open segments join the valley when this one is within tolerance; too many above it end the valley."""
        if loss <= self.threshold:
            self.valley.average.merge(self.open)
            self.valley.end = end
            self.above = 0
            self.open = WeightAverage()
            return
        self.above += 1
        if self.above >= self.n_tolerance:
            self.dead = True
            self.open = WeightAverage()

    def result(self) -> Segment | None:
        """The valley's average; before the valley opens, the last segment (as the reference does)."""
        if self.valley is not None:
            return self.valley
        return self.window[-1] if self.window else None

    @property
    def converged(self) -> bool:
        return self.valley is not None

    def state_dict(self) -> dict:
        def segment(s: Segment | None) -> dict | None:
            return None if s is None else {"average": s.average.state_dict(), "start": s.start, "end": s.end,
                                           "loss": s.loss}

        return {"window": [segment(s) for s in self.window], "open": self.open.state_dict(),
                "open_start": self.open_start, "valley": segment(self.valley), "threshold": self.threshold,
                "above": self.above, "dead": self.dead}

    def load_state_dict(self, state: dict) -> None:
        def segment(s: dict | None) -> Segment | None:
            if s is None:
                return None
            average = WeightAverage()
            average.load_state_dict(s["average"])
            return Segment(average, s["start"], s["end"], s["loss"])

        self.window = [segment(s) for s in state["window"]]
        self.open.load_state_dict(state["open"])
        self.open_start = state["open_start"]
        self.valley = segment(state["valley"])
        self.threshold, self.above, self.dead = state["threshold"], state["above"], state["dead"]
