"""Weight averages of runs: the uniform soup (DiWA, Rame et al. 2022) and the greedy soup (Wortsman et al. 2022).

Weights are streamed: each run's selected weights are read, folded into one running average
and dropped, so N runs cost one average and one state dict at a time. Averaging is refused
for runs that did not start from the same place: same backbone and pre-trained weights, same
classes, same head initialization (a shared --head-seed or --head-init probe); `combine` checks
it once, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from droptune.models.averaging import WeightAverage
from droptune.combining.runs import SAME_MODEL, Run, Split, require_same
from droptune.errors import DroptuneError
from droptune.models.backbones import NO_WEIGHTS
from droptune.training.bench import Bench

PURPOSE = "average the weights of these runs"


def pretrained_start(run: Run) -> str:
    """The backbone weights fine-tuning started from; a random start is drawn from the run seed."""
    config = run.config
    if config.weights in NO_WEIGHTS:
        return f"{config.backbone}, random initialization from seed {config.seed}"
    return f"{config.backbone}, weights {config.weights}"


def tensor_shapes(run: Run) -> dict[str, tuple[int, ...]]:
    with safe_open(str(run.weights), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def check_averageable(runs: Sequence[Run]) -> None:
    """Refuse, with the reason, runs whose weights do not lie in one basin (DiWA's conditions)."""
    for run in runs:
        if run.results.head_start is None:
            raise DroptuneError(f"cannot {PURPOSE}; {run.name} does not record its head initialization "
                                "(trained by an older droptune): retrain it")
    shapes = {run.name: tensor_shapes(run) for run in runs}
    require_same(runs, {
        **SAME_MODEL,
        "pre-trained start": pretrained_start,
        "classes": lambda run: shapes[run.name].get("head.fc.weight", (None,))[0],
        "head initialization (train them from one --head-seed or --head-init)": lambda run: run.results.head_start,
    }, PURPOSE)
    first = runs[0]
    for run in runs[1:]:
        a, b = shapes[first.name], shapes[run.name]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                raise DroptuneError(f"cannot {PURPOSE}; tensor {key} differs: {first.name} has {a.get(key)}, "
                                    f"{run.name} has {b.get(key)}")


def _recompute_bn(model: torch.nn.Module, runs: Sequence[Run], bench: Bench) -> None:
    """Averaged weights need their own BatchNorm statistics, unless every run kept the pre-trained ones."""
    if not all(run.config.freeze_bn for run in runs):
        bench.recompute_bn(model, runs[0].config.bn_steps, runs[0].config.seed)


def uniform_soup(runs: Sequence[Run], split: Split) -> tuple[dict, dict[str, torch.Tensor]]:
    """The mean of all runs' selected weights; returns its scores and its weights."""
    soup = WeightAverage()
    for run in runs:
        soup.add(load_file(str(run.weights)))
    model = split.model(runs[0], soup.mean)
    bench = split.bench(runs[0])
    _recompute_bn(model, runs, bench)
    return {**bench.score(model), "members": [run.name for run in runs]}, model.state_dict()


def greedy_soup(runs: Sequence[Run], split: Split) -> tuple[dict, dict[str, torch.Tensor]]:
    """Runs by decreasing i.i.d. accuracy; each joins the soup only if the soup's i.i.d. accuracy does not drop.

    Runs are ordered by the i.i.d. accuracy they recorded and accepted by the soup's, measured on the same
    held-out images (the runs' shared protocol, augmented or not). Every choice looks at the training
    domains' held-out images alone, never at the test domain.
    """
    ordered = sorted(runs, key=lambda run: -run.results.iid)
    soup = WeightAverage()
    soup.add(load_file(str(ordered[0].weights)))
    model = split.model(ordered[0], soup.mean)
    bench = split.bench(ordered[0])

    def soup_iid() -> float:
        _recompute_bn(model, ordered, bench)
        return bench.iid(model)

    best = soup_iid()
    steps = [{"run": ordered[0].name, "iid": best, "added": True}]
    for run in ordered[1:]:
        state = load_file(str(run.weights))
        soup.load_into(model, extra=state)
        iid = soup_iid()
        added = iid >= best
        if added:
            soup.add(state)
            best = iid
        steps.append({"run": run.name, "iid": iid, "added": added})
    soup.load_into(model)
    _recompute_bn(model, ordered, bench)
    members = [step["run"] for step in steps if step["added"]]
    return {**bench.score(model), "members": members, "greedy": steps}, model.state_dict()
