"""The run folder: everything needed to rebuild a table, resume a run or reuse its model.

    config.yaml       the full TrainConfig
    metrics.jsonl     one JSON record per evaluation (append-only)
    results.json      the selected evaluations and run status; written last, so it marks a finished run
    best.safetensors  weights at the selected step
    swa.safetensors   (and ema, swad) selected weights of the along-run averages, when configured
    head_start.safetensors  the head probed before training (head_init: probe)
    feature_usage.json  which features the head uses (`droptune analyze features`), read by `droptune report`
    last.pt           resumable state (model, optimizer, scheduler, step, RNG), replaced atomically
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from droptune.errors import DroptuneError


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def best(self) -> Path:
        return self.path / "best.safetensors"

    @property
    def head_start(self) -> Path:
        return self.path / "head_start.safetensors"

    @property
    def feature_usage(self) -> Path:
        return self.path / "feature_usage.json"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def baseline(self, name: str) -> Path:
        """Selected weights of an along-run weight average ("swa", "ema", "swad")."""
        return self.path / f"{name}.safetensors"

    def append_metrics(self, record: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self, up_to_step: int | None = None) -> list[dict]:
        """The evaluation records, optionally only those at or before a step."""
        if not self.metrics.exists():
            return []
        records = []
        for number, line in enumerate(self.metrics.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise DroptuneError(f"{self.metrics} line {number} is not valid JSON") from None
        return [r for r in records if up_to_step is None or r["step"] <= up_to_step]

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Drop records written after the checkpoint a run resumes from."""
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in records))

    def read_results(self) -> dict | None:
        if not self.results.exists():
            return None
        try:
            return json.loads(self.results.read_text())
        except json.JSONDecodeError:
            raise DroptuneError(f"{self.results} is not valid JSON") from None
