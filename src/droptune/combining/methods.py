"""The table of ways to combine finished runs: name, label in reports, --method help, cost, and the function.

Torch-free, so that the command line and `droptune report` can read it without loading the models; the
function is imported only when a combination runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Combination:
    """One way to combine runs. A weight average is one model (one forward pass per image) and needs
    averageable runs; an output ensemble runs every member it keeps and averages what `outputs` names.

    Its function returns (scores, weights): scores hold iid, ood, ood_out, acc (the protocol's summary) and
    members (the runs it kept); any other key is kept in results.json (`greedy` as its own field, the rest under
    `details`); weights are the averaged state dict (saved as soup.safetensors), None for an output ensemble.
    """

    name: str
    label: str  # its name in report tables
    description: str  # its --method help
    function: str  # "module:function", called as function(runs, split[, outputs]) -> (scores, weights or None)
    averages_weights: bool

    def forward_passes(self, members: int) -> int:
        """Forward passes per image of a combination of `members` runs."""
        return 1 if self.averages_weights else members

    def run(self, runs, split, outputs: str) -> tuple[dict, dict | None]:
        module, name = self.function.split(":")
        function: Callable = getattr(importlib.import_module(module), name)
        return function(runs, split) if self.averages_weights else function(runs, split, outputs)


COMBINATIONS: dict[str, Combination] = {c.name: c for c in (
    Combination("ensemble", "ensemble of runs", "mean of the models' outputs",
                "droptune.combining.ensemble:output_ensemble", averages_weights=False),
    Combination("uniform_soup", "uniform soup", "mean of their weights (DiWA)",
                "droptune.combining.soups:uniform_soup", averages_weights=True),
    Combination("greedy_soup", "greedy soup", "runs by i.i.d. accuracy, each kept only if the soup's i.i.d. "
                "accuracy does not drop", "droptune.combining.soups:greedy_soup", averages_weights=True),
)}
