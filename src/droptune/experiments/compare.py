"""The main job: the same fine-tuning with and without very large dropout, for each held-out domain."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from droptune.training.config import TrainConfig
from droptune.runs.folder import RunDir

# A budget at which p = 0.9 has plateaued (by i.i.d. accuracy) on RotatedDigits on 2 CPU cores;
# see README "The main job" for the measurements behind it.
COMPARE_BUDGET = {
    "image_size": 32,
    "batch_size": 16,
    "steps": 600,
    "eval_every": 50,
    "head_lr_mult": 10.0,
}
# Both extreme rotations and one between them: all six would take about 12 minutes.
DEFAULT_TEST_DOMAINS = {"RotatedDigits": ("0", "30", "75")}


def run_comparison(base: TrainConfig, test_domains: Sequence[str], dropouts: Sequence[float],
                   output_dir: Path) -> list[dict]:
    """Train (or reuse finished) runs for every (test domain, dropout) pair; their results in order."""
    from droptune.training.trainer import train  # here, so that every command's parser reads the budget without torch
    results = []
    for domain in test_domains:
        for p in dropouts:
            name = f"{domain}-p{p:g}"
            config = base.replace(test_domain=str(domain), dropout=float(p), output_dir=str(output_dir / name))
            done = RunDir(config.run_dir()).read_results()
            resume = done is not None or RunDir(config.run_dir()).last.exists()
            results.append(train(config, resume=resume))
    return results


def comparison_table(results: Sequence[dict], dropouts: Sequence[float]) -> str:
    """Markdown: one row per test domain and their average; i.i.d. and o.o.d. accuracy per dropout rate."""
    from droptune.experiments.tables import markdown  # here: every command's parser reads the budget, without pandas

    by_key = {(r["test_domain"], r["dropout"]): r for r in results}
    domains = list(dict.fromkeys(r["test_domain"] for r in results))
    header = ["test domain"] + [f"p={p:g} {kind}" for p in dropouts for kind in ("i.i.d.", "o.o.d.")]
    rows = []
    for domain in domains:
        cells = [domain]
        for p in dropouts:
            r = by_key[(domain, p)]
            flag = " (collapsed)" if r["collapsed"] else ""
            cells += [f"{100 * r['iid']:.1f}{flag}", f"{100 * r['ood']:.1f}"]
        rows.append(cells)
    average = ["average"]
    for p in dropouts:
        average += [f"{100 * np.mean([by_key[(d, p)][k] for d in domains]):.1f}" for k in ("iid", "ood")]
    rows.append(average)
    return markdown(header, rows)
