"""Keep a sweep's finished runs in the repository without their weights, and put them back after a machine is lost.

An evidence sweep trains for many sessions in a folder outside the repository (/work/sweeps), which goes with the
machine. A report needs only the text files of its runs (config.yaml, results.json, metrics.jsonl, ...), so `save`
copies those of every finished run and across-run combination (a folder with results.json), the sweep files and the
combinations' group.json, into a records folder laid out as the sweep folder is; `restore` copies them back where that run folder is absent, so that `droptune sweep`
skips those runs and `droptune report` reads them. Weights and checkpoints are never copied: a restored run cannot
be resumed, combined or loaded, only reported.

    python scripts/run_records.py save /work/sweeps/pacs-long-cpu docs/results/run-records/pacs-long-cpu
    python scripts/run_records.py restore docs/results/run-records/pacs-long-cpu /work/sweeps/pacs-long-cpu
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

WEIGHTS = {".pt", ".safetensors"}
LOCKS = {".lock"}


def finished_runs(folder: Path) -> list[Path]:
    return sorted(path.parent for path in folder.rglob("results.json"))


def kept(path: Path) -> bool:
    return path.is_file() and path.suffix not in WEIGHTS and path.name not in LOCKS


def copy_run(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if kept(path):
            shutil.copy2(path, target / path.name)


def sweep_files(folder: Path) -> list[Path]:
    """The sweep files, and each across-run combination group's group.json (a combination is read through it)."""
    return sorted(folder.glob("sweep*.yaml")) + sorted(folder.rglob("group.json"))


def save(sweep: Path, records: Path) -> str:
    """Copy finished runs the records lack; a run already kept is left as it is (its results do not change)."""
    added = 0
    for run in finished_runs(sweep):
        target = records / run.relative_to(sweep)
        if not (target / "results.json").is_file():
            if target.exists():
                shutil.rmtree(target)
            copy_run(run, target)
            added += 1
    for path in sweep_files(sweep):
        (records / path.relative_to(sweep)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, records / path.relative_to(sweep))
    return f"saved {added} finished runs and combinations to {records} ({len(finished_runs(records))} kept in all)"


def restore(records: Path, sweep: Path) -> str:
    """Copy kept runs whose folder the sweep lacks; a folder already there (finished or resuming) wins."""
    added, present = 0, 0
    sweep.mkdir(parents=True, exist_ok=True)
    for run in finished_runs(records):
        target = sweep / run.relative_to(records)
        if target.exists():
            present += 1
            continue
        copy_run(run, target)
        added += 1
    for path in sweep_files(records):
        target = sweep / path.relative_to(records)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return f"restored {added} runs and combinations into {sweep} ({present} already there)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("source", type=Path, help="save: the sweep folder; restore: the records folder")
    parser.add_argument("target", type=Path, help="save: the records folder; restore: the sweep folder")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"run_records.py: {args.source} is not a folder (expected the {args.action} source)", file=sys.stderr)
        return 2
    print(save(args.source, args.target) if args.action == "save" else restore(args.source, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
