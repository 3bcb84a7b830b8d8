"""results.json: one typed, versioned schema for a run's results and one for a combination of runs.

Written last, so its presence marks a finished run. Each schema is written by `write_results` and read
back by `read_results`, which names the file and the field when one is missing or of the wrong type.
Schema 1 is what droptune wrote before the schema had a number: the same fields, without `schema`
and `classes`; it is read as is.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from droptune.errors import DroptuneError
from droptune.runs.files import save_json

RESULTS_SCHEMA = 2


@dataclass
class RunResults:
    """One fine-tuning run: the evaluation its selection chose, every selection's choice, its baselines.

    The first six fields are what a table needs; droptune writes every field, and reads files (older ones,
    hand-made ones) that lack the others.
    """

    status: str  # completed, or diverged
    dataset: str
    test_domain: str
    seed: int
    trial_seed: int
    selections: dict  # {selection method: {step, iid, ood, ood_out} or None}
    run: str | None = None  # the run folder's name
    config_id: str | None = None
    train_domains: list[str] | None = None
    backbone: str | None = None
    dropout: float | None = None
    lr: float | None = None
    weight_decay: float | None = None
    selection: str | None = None
    step: int | None = None  # the evaluation the config's selection chose (None when none was made)
    iid: float | None = None
    ood: float | None = None
    acc: dict | None = None  # {domain: {"in"|"out": accuracy}} at that step
    collapsed: bool = False
    majority_rate: float | None = None
    steps_done: int | None = None
    wall_time_s: float | None = None
    train_images_per_s: float | None = None
    eval_images_per_s: float | None = None
    head_start: str | None = None  # how the head was initialized: runs to average must share it
    cost: dict | None = None  # {"trainings": 1, "forward_passes": 1}
    variants: dict = field(default_factory=dict)  # {along-run baseline: its selected evaluation, selections, cost}
    classes: list[str] | None = None  # class names in the model's output order (schema 2)
    images: dict | None = None  # {domain: image count per class} the run's splits were drawn from
    files: dict | None = None  # {domain: digest of its image names in split order} (protocol.files)
    schema: int = RESULTS_SCHEMA


def collapse_explanation(iid: float, majority_rate: float) -> str:
    """Why a run counts as collapsed (training/trainer.py's `is_collapsed`), in the words every report uses."""
    return (f"i.i.d. accuracy ({100 * iid:.1f}%) is no better than always predicting the majority class "
            f"({100 * majority_rate:.1f}%), and the loss stayed near ln(classes)")


@dataclass
class CombinationResults:
    """An ensemble or soup of finished runs of one split, scored like a run."""

    status: str
    method: str
    dataset: str
    test_domain: str
    iid: float
    ood: float
    ood_out: float
    members: list[str]  # the runs it combines (a greedy soup's accepted ones)
    run: str | None = None  # <output folder>/<method>
    label: str | None = None  # the method's name in tables (schema 2)
    train_domains: list[str] | None = None
    selection: str | None = None
    acc: dict | None = None
    runs: list | None = None  # every candidate run: what distinguishes it and how it scored alone
    cost: dict | None = None  # {"trainings": runs, "forward_passes": per image}
    wall_time_s: float | None = None
    outputs: str | None = None  # an ensemble's: probs or logits
    greedy: list | None = None  # a greedy soup's candidates in order: i.i.d. accuracy, accepted or not
    classes: list[str] | None = None
    details: dict | None = None  # what else a combination's function returned
    schema: int = RESULTS_SCHEMA


Results = TypeVar("Results", RunResults, CombinationResults)

def write_results(results: RunResults | CombinationResults, path: Path) -> None:
    save_json(dataclasses.asdict(results), path)


def read_results(path: Path, kind: type[Results] = RunResults) -> Results:
    """The results in `path`, checked field by field against the schema; unknown fields are ignored."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DroptuneError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise DroptuneError(f"{path} holds {type(data).__name__}, expected a JSON object")
    schema = data.get("schema", 1)
    if not isinstance(schema, int) or schema > RESULTS_SCHEMA:
        raise DroptuneError(f"{path} has results schema {schema!r}: this droptune reads schemas 1 to "
                            f"{RESULTS_SCHEMA} (a newer droptune wrote it)")
    hints = typing.get_type_hints(kind)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(kind):
        if spec.name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise DroptuneError(f"{path} lacks the field {spec.name!r} of {kind.__name__}")
            continue
        value = data[spec.name]
        if not _matches(value, hints[spec.name]):
            raise DroptuneError(f"{path}: field {spec.name!r} is {value!r}, expected {_name(hints[spec.name])}")
        values[spec.name] = value
    return kind(**{**values, "schema": schema})


def _matches(value: Any, hint: Any) -> bool:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None):
            if value is None:
                return True
            continue
        expected = typing.get_origin(option) or option
        if expected in (int, float) and isinstance(value, bool):
            continue
        allowed = (int, float) if expected is float else expected
        if isinstance(value, allowed):
            if expected is list and typing.get_args(option):
                return all(isinstance(item, typing.get_args(option)[0]) for item in value)
            return True
    return False


def _name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
