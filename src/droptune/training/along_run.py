"""The baselines one run yields on the side: checkpoint ensemble, SWA, EMA and SWAD, as trainer hooks.

Each is scored at every evaluation on the plain model's evaluation set, recorded beside it in
metrics.jsonl (record["variants"][name]) and selected on its own by training-domain validation.
The checkpoint ensemble keeps only the running sum of its members' outputs on that fixed set;
weight averages keep one average each, scored through a single scratch copy of the model.
A new along-run baseline is one more subclass of `AlongRunBaseline`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from droptune.models.averaging import State, WeightAverage
from droptune.models.ensemble import OutputEnsemble
from droptune.training.bench import Bench
from droptune.training.checkpoint import save_weights
from droptune.training.config import TrainConfig
from droptune.training.evaluate import Evaluation, accuracy_of
from droptune.runs.folder import RunDir
from droptune.training.selection import is_better, select, selections, variant_records
from droptune.training.swad import LossValley


class AlongRunBaseline:
    """What the trainer calls: after each step, at each evaluation, and to save or restore its state."""

    name: str
    reads_weights = False  # after_step gets the weights after each step
    wants_logits = False  # at_evaluation gets the live model's logits on the evaluation set

    def after_step(self, weights: State, step: int) -> None:
        """Fold the weights after `step` in (called only when `reads_weights`)."""

    def at_evaluation(self, step: int, live: Evaluation, bench: Bench) -> dict | None:
        """This baseline's record at an evaluation of the live model, or None while it has nothing to score."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


class CheckpointEnsemble(AlongRunBaseline):
    """The mean output of the checkpoints evaluated from `start` on (the paper's ensemble along the run)."""

    name = "ensemble"
    wants_logits = True

    def __init__(self, start: int, outputs: str):
        self.start = start
        self.ensemble = OutputEnsemble(probabilities=outputs == "probs")

    def at_evaluation(self, step: int, live: Evaluation, bench: Bench) -> dict | None:
        if step < self.start:
            return None
        self.ensemble.add(live.logits)
        acc = accuracy_of(self.ensemble.total, live.labels, bench.splits)
        return {**bench.protocol.summarize(acc), "forward_passes": self.ensemble.count}

    def state_dict(self) -> dict:
        return self.ensemble.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ensemble.load_state_dict(state)


class AveragedWeights(AlongRunBaseline):
    """A baseline whose model is an average of weights, scored through a scratch model shared by all of them;
    its weights are saved whenever selection prefers them."""

    reads_weights = True

    def __init__(self, name: str, config: TrainConfig, scratch: nn.Module, run: RunDir):
        self.name = name
        self.config = config
        self.scratch = scratch
        self.run = run
        self.best: dict | None = None

    def score(self, average: WeightAverage, step: int, bench: Bench) -> dict:
        average.load_into(self.scratch)
        if not self.config.freeze_bn:
            bench.recompute_bn(self.scratch, self.config.bn_steps, self.config.seed)
        record = {"step": step, **bench.score(self.scratch)}
        if is_better(record, self.best, self.config.selection):
            self.best = {k: v for k, v in record.items() if k != "acc"}
            save_weights(self.scratch.state_dict(), self.run.baseline(self.name),
                         {"step": step, "baseline": self.name, "config": self.config.to_dict()})
        del record["step"]
        return record


class RunningAverage(AveragedWeights):
    """SWA (the uniform mean of the weights from `start` on) or, with a decay, EMA."""

    def __init__(self, name: str, config: TrainConfig, scratch: nn.Module, run: RunDir, start: int = 0,
                 decay: float | None = None):
        super().__init__(name, config, scratch, run)
        self.start = start
        self.average = WeightAverage(decay)

    def after_step(self, weights: State, step: int) -> None:
        if step >= self.start:
            self.average.add(weights)

    def at_evaluation(self, step: int, live: Evaluation, bench: Bench) -> dict | None:
        if not self.average.count:
            return None
        return {**self.score(self.average, step, bench), "averaged_steps": self.average.count, "forward_passes": 1}

    def state_dict(self) -> dict:
        return {"average": self.average.state_dict(), "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state["average"])
        self.best = state["best"]


class Swad(AveragedWeights):
    """SWAD's average over the valley of the live model's i.i.d. validation loss, scored once training ends."""

    def __init__(self, config: TrainConfig, scratch: nn.Module, run: RunDir):
        super().__init__("swad", config, scratch, run)
        self.valley = LossValley()

    def after_step(self, weights: State, step: int) -> None:
        self.valley.add(weights, step)

    def at_evaluation(self, step: int, live: Evaluation, bench: Bench) -> dict | None:
        self.valley.close(step, bench.protocol.iid(live.loss))
        found = self.valley.result() if step == self.config.steps else None
        if found is None:
            return None
        return {**self.score(found.average, step, bench), "start": found.start, "end": found.end,
                "averaged_steps": found.average.count, "converged": self.valley.converged, "forward_passes": 1}

    def state_dict(self) -> dict:
        return {"valley": self.valley.state_dict(), "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.valley.load_state_dict(state["valley"])
        self.best = state["best"]


def along_run_baselines(config: TrainConfig, model: nn.Module, run: RunDir) -> list[AlongRunBaseline]:
    """The baselines the config asks for, in the order they are recorded."""
    baselines: list[AlongRunBaseline] = []
    if config.ensemble_start is not None:
        baselines.append(CheckpointEnsemble(config.ensemble_start, config.ensemble_outputs))
    averages = config.average_start is not None or config.ema_decay is not None or config.swad
    scratch = copy.deepcopy(model) if averages else None
    if config.average_start is not None:
        baselines.append(RunningAverage("swa", config, scratch, run, start=config.average_start))
    if config.ema_decay is not None:
        baselines.append(RunningAverage("ema", config, scratch, run, decay=config.ema_decay))
    if config.swad:
        baselines.append(Swad(config, scratch, run))
    return baselines


def baseline_results(records: Sequence[dict], names: Sequence[str], selection: str) -> dict[str, dict | None]:
    """Each baseline's selected evaluation, its selections by every method and its cost, for results.json."""
    results = {}
    for name in names:
        evaluations = variant_records(records, name)
        chosen = select(evaluations, selection)
        if chosen is None:
            results[name] = None
            continue
        results[name] = {**{k: v for k, v in chosen.items() if k != "forward_passes"},
                         "selections": selections(evaluations),
                         "cost": {"trainings": 1, "forward_passes": chosen["forward_passes"]}}
    return results
