"""The baselines one run yields on the side: checkpoint ensemble, SWA, EMA and SWAD.

Each is scored at every evaluation on the plain model's evaluation set, recorded beside it in
metrics.jsonl (record["variants"][name]) and selected on its own by training-domain validation.
The checkpoint ensemble keeps only the running sum of its members' outputs on that fixed set;
weight averages keep one average each, scored through a single scratch copy of the model.
"""

from __future__ import annotations

import copy

from torch import nn

from droptune.combining.averaging import WeightAverage
from droptune.combining.ensemble import OutputEnsemble
from droptune.combining.swad import LossValley
from droptune.training.bench import Bench
from droptune.training.checkpoint import save_weights
from droptune.training.config import TrainConfig
from droptune.training.evaluate import Evaluation, accuracy_of
from droptune.training.run_dir import RunDir
from droptune.training.selection import is_better, select, selections, variant_records


class AlongRun:
    def __init__(self, config: TrainConfig, model: nn.Module, run: RunDir):
        self.config = config
        self.run = run
        self.ensemble = OutputEnsemble(config.ensemble_outputs) if config.ensemble_start is not None else None
        self.averages: dict[str, WeightAverage] = {}
        if config.average_start is not None:
            self.averages["swa"] = WeightAverage()
        if config.ema_decay is not None:
            self.averages["ema"] = WeightAverage(config.ema_decay)
        self.swad = LossValley() if config.swad else None
        self.scratch = copy.deepcopy(model) if self.averages or self.swad else None
        self.best: dict[str, dict] = {}

    @property
    def names(self) -> list[str]:
        return (["ensemble"] if self.ensemble else []) + list(self.averages) + (["swad"] if self.swad else [])

    @property
    def wants_logits(self) -> bool:
        return self.ensemble is not None

    def after_step(self, model: nn.Module, step: int) -> None:
        """Fold the weights after `step` into the running averages."""
        if not (self.averages or self.swad):
            return
        state = model.state_dict()
        if "swa" in self.averages and step >= self.config.average_start:
            self.averages["swa"].add(state)
        if "ema" in self.averages:
            self.averages["ema"].add(state)
        if self.swad:
            self.swad.add(state, step)

    def evaluate(self, step: int, live: Evaluation, bench: Bench) -> dict[str, dict]:
        """Each baseline's record at this evaluation; `live` is the plain model's evaluation, kept logits included."""
        records = {}
        if self.ensemble and step >= self.config.ensemble_start:
            self.ensemble.add(live.logits)
            acc = accuracy_of(self.ensemble.total, live.labels, bench.splits)
            records["ensemble"] = {**bench.summarize(acc), "forward_passes": self.ensemble.count}
        for name, average in self.averages.items():
            if average.count:
                records[name] = {**self._score(name, average, step, bench), "averaged_steps": average.count,
                                 "forward_passes": 1}
        if self.swad:
            self.swad.close(step, bench.iid_loss(live))
            valley = self.swad.result() if step == self.config.steps else None
            if valley is not None:
                records["swad"] = {**self._score("swad", valley.average, step, bench), "start": valley.start,
                                   "end": valley.end, "averaged_steps": valley.average.count,
                                   "converged": self.swad.converged, "forward_passes": 1}
        return records

    def results(self, records: list[dict]) -> dict[str, dict | None]:
        """Each baseline's selected evaluation, its selections by every method and its cost, for results.json."""
        results = {}
        for name in self.names:
            evaluations = variant_records(records, name)
            chosen = select(evaluations, self.config.selection)
            if chosen is None:
                results[name] = None
                continue
            results[name] = {**{k: v for k, v in chosen.items() if k != "forward_passes"},
                             "selections": selections(evaluations),
                             "cost": {"trainings": 1, "forward_passes": chosen["forward_passes"]}}
        return results

    def _score(self, name: str, average: WeightAverage, step: int, bench: Bench) -> dict:
        """Score the average through the scratch model; keep its weights when selection prefers them."""
        average.load_into(self.scratch)
        if not self.config.freeze_bn:
            bench.recompute_bn(self.scratch, self.config.bn_steps, self.config.seed)
        record = {"step": step, **bench.score(self.scratch)}
        if is_better(record, self.best.get(name), self.config.selection):
            self.best[name] = {k: v for k, v in record.items() if k != "acc"}
            save_weights(self.scratch.state_dict(), self.run.baseline(name),
                         {"step": step, "baseline": name, "config": self.config.to_dict()})
        del record["step"]
        return record

    def state_dict(self) -> dict:
        return {
            "ensemble": self.ensemble.state_dict() if self.ensemble else None,
            "averages": {name: average.state_dict() for name, average in self.averages.items()},
            "swad": self.swad.state_dict() if self.swad else None,
            "best": self.best,
        }

    def load_state_dict(self, state: dict) -> None:
        if self.ensemble:
            self.ensemble.load_state_dict(state["ensemble"])
        for name, average in self.averages.items():
            average.load_state_dict(state["averages"][name])
        if self.swad:
            self.swad.load_state_dict(state["swad"])
        self.best = state["best"]
