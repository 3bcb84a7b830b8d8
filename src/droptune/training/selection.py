"""Model selection as pure functions over evaluation records (DomainBed's selection methods).

A record holds `iid` (mean accuracy on the training domains' held-out 20%), `ood` (accuracy on
the test domain's 80% part) and `ood_out` (its 20% part, used only by the oracle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Selection(NamedTuple):
    validation: str  # the record's score it maximizes
    label: str  # its name in tables and model cards


# What a run or a report may select by; results.json also records `last`.
SELECTIONS = {"training_domain": Selection("iid", "training-domain validation"),
              "oracle": Selection("ood_out", "oracle (test-domain validation)")}
METHODS = (*SELECTIONS, "last")


def select(records: Sequence[dict], method: str = "training_domain") -> dict | None:
    """The chosen evaluation record; ties go to the earliest step. None for no records.

    training_domain: best i.i.d. validation accuracy, nothing from the test domain.
    oracle: best accuracy on the test domain's held-out 20% (an upper bound, not a method).
    last: the final evaluation.
    """
    if not records:
        return None
    if method == "last":
        return records[-1]
    key = SELECTIONS[method].validation
    return max(records, key=lambda r: (r[key], -r["step"]))


def selections(records: Sequence[dict]) -> dict[str, dict | None]:
    """The step and scores each selection method picks, for results.json."""
    return {m: None if (r := select(records, m)) is None else {k: r[k] for k in ("step", "iid", "ood", "ood_out")}
            for m in METHODS}


def is_better(record: dict, best: dict | None, method: str) -> bool:
    return best is None or select([best, record], method) is record


def variant_records(records: Sequence[dict], name: str) -> list[dict]:
    """The evaluations of one along-run baseline (e.g. "swa"), as records `select` understands."""
    return [{"step": r["step"], **r["variants"][name]} for r in records if name in r.get("variants", {})]
