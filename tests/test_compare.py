"""`droptune compare`, the main job, on a tiny run per (test domain, dropout rate): its table is its runs' numbers."""

import argparse
import json

import numpy as np

from droptune.cli.main import build_parser, main
from droptune.experiments.compare import COMPARE_BUDGET

TINY = ["--backbone", "resnet10t", "--weights", "none", "--image-size", "16", "--batch-size", "3", "--steps", "4",
        "--eval-every", "2", "--workers", "0", "--no-progress"]


def test_compare_tables_each_runs_selected_numbers_and_reuses_finished_runs(image_folder, tmp_path, capsys):
    """Mutants: i.i.d. and o.o.d. columns swapped; a cell from another run (domain or rate); the average row not the
    mean of the domains; `--test-domains`/`--dropouts` ignored; finished runs trained again."""
    output = tmp_path / "compare"
    argv = ["compare", "--dataset", str(image_folder), *TINY, "--test-domains", "c", "a", "--dropouts", "0", "0.5",
            "--output", str(output)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    runs = {(domain, p): json.loads((output / f"{domain}-p{p}" / "results.json").read_text())
            for domain in ("c", "a") for p in ("0", "0.5")}
    assert sorted(path.name for path in output.iterdir()) == ["a-p0", "a-p0.5", "c-p0", "c-p0.5", "table.md"]
    for (domain, p), results in runs.items():
        assert (results["test_domain"], results["dropout"], results["status"]) == (domain, float(p), "completed")
    lines = (output / "table.md").read_text().splitlines()
    assert lines[0] == "| test domain | p=0 i.i.d. | p=0 o.o.d. | p=0.5 i.i.d. | p=0.5 o.o.d. |"

    def cells(domain):
        return [f"{100 * runs[(domain, p)][k]:.1f}" for p in ("0", "0.5") for k in ("iid", "ood")]

    assert lines[2:4] == [f"| c | {' | '.join(cells('c'))} |", f"| a | {' | '.join(cells('a'))} |"]
    average = [f"{100 * np.mean([runs[(d, p)][k] for d in ('c', 'a')]):.1f}" for p in ("0", "0.5") for k in ("iid", "ood")]
    assert lines[4] == f"| average | {' | '.join(average)} |"
    assert "\n".join(lines) in printed
    stamps = {key: (output / f"{key[0]}-p{key[1]}" / "metrics.jsonl").stat().st_mtime_ns for key in runs}

    assert main(argv) == 0
    assert "\n".join(lines) in capsys.readouterr().out
    assert {key: (output / f"{key[0]}-p{key[1]}" / "metrics.jsonl").stat().st_mtime_ns for key in runs} == stamps


def test_compare_help_shows_its_own_budget_not_the_papers():
    """Mutant: `droptune compare --help` prints the paper's defaults (224 px, 10,000 steps) that it does not use."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {action.dest: action.help for action in commands.choices["compare"]._actions}
    for name, value in COMPARE_BUDGET.items():
        assert helps[name].endswith(f"(default for this command: {value})"), name
    assert helps["momentum"].endswith("(default: 0.9)")
