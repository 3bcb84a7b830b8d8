"""The ensemble of runs: the mean of their outputs, one model in memory at a time."""

from __future__ import annotations

from collections.abc import Sequence

from droptune.combining.runs import Run, Split
from droptune.models.ensemble import OutputEnsemble
from droptune.training.evaluate import accuracy_of


def output_ensemble(runs: Sequence[Run], split: Split, outputs: str = "probs") -> tuple[dict, None]:
    """The mean of the runs' softmax outputs (or logits), one model in memory at a time."""
    ensemble = OutputEnsemble(probabilities=outputs == "probs")
    for run in runs:
        model = split.model(run)
        bench = split.bench(run)
        evaluation = bench.evaluate(model, keep_logits=True)
        ensemble.add(evaluation.logits)
        del model
    acc = accuracy_of(ensemble.total, evaluation.labels, bench.splits)
    return {**split.protocol.summarize(acc), "members": [run.name for run in runs]}, None
