"""Accuracy along straight lines in weight space: pre-trained → fine-tuned (with the run's head), or run → run.

The paper's first figure contrasts interpolating weights with interpolating representations. Along
θ(α) = (1 − α) θ_start + α θ_end every floating-point tensor is interpolated, BatchNorm statistics
included (frozen, hence equal, in droptune's runs). At α = 0 and α = 1 the models are the endpoints
themselves, so a run's own accuracy appears at its end of the line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from droptune.analysis.subject import Subject
from droptune.errors import DroptuneError
from droptune.plotting import save

State = dict[str, torch.Tensor]


def between(start: State, end: State, alpha: float) -> State:
    if start.keys() != end.keys():
        raise DroptuneError(f"cannot interpolate models with different tensors: "
                            f"{sorted(start.keys() ^ end.keys())[:3]}")
    return {k: torch.lerp(start[k].float(), end[k].float(), alpha).to(start[k].dtype)
            if start[k].is_floating_point() else end[k] for k in start}


@torch.no_grad()
def line(subject: Subject, start: State, end: State, alphas: list[float]) -> list[dict]:
    """i.i.d. and o.o.d. accuracy at each α of the model `subject`'s run trained (a linearized run's first-order
    one), on `subject`'s evaluation images."""
    points = []
    for alpha in alphas:
        model = subject.model(between(start, end, alpha))
        found = subject.outputs(model)
        scores = subject.scores(found.values, found.labels)
        points.append({"alpha": alpha, "iid": scores["iid"], "ood": scores["ood"]})
    return points


def pretrained_state(subject: Subject) -> State:
    return {k: v.detach().cpu() for k, v in subject.pretrained().state_dict().items()}


def alpha_grid(points: int) -> list[float]:
    if points < 2:
        raise DroptuneError(f"invalid number of interpolation points = {points}: expected at least 2")
    return [float(a) for a in np.linspace(0.0, 1.0, points)]


def plot(lines: list[dict], stem: Path) -> list[Path]:
    figure = Figure(figsize=(6.5, 4.2))
    axes = figure.subplots()
    for i, drawn in enumerate(lines):
        alphas = [p["alpha"] for p in drawn["points"]]
        axes.plot(alphas, [100 * p["ood"] for p in drawn["points"]], "-o", color=f"C{i}", ms=3,
                  label=f"{drawn['label']} o.o.d.")
        axes.plot(alphas, [100 * p["iid"] for p in drawn["points"]], "--", color=f"C{i}", alpha=0.6,
                  label=f"{drawn['label']} i.i.d.")
    axes.set(xlabel="α (0: start, 1: end)", ylabel="accuracy (%)", title="straight lines in weight space")
    axes.legend(fontsize=7)
    return save(figure, stem)
