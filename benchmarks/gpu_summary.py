"""Collects what benchmarks/gpu.sh measured into OUT/summary.json and a Markdown summary, OUT/summary.md.

    python benchmarks/gpu_summary.py WORK OUT --dry-run 0 --data DIR --files N --seconds S
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

THROUGHPUT = ("resnet50", "lite0", "lite0-files", "lite0-compile", "resnet50-compile")
SETTING = {"resnet50": "ResNet-50, random weights", "lite0": "EfficientNet-Lite0, ImageNet weights",
           "lite0-files": "EfficientNet-Lite0, reading files (no cache)", "lite0-compile": "EfficientNet-Lite0, --compile",
           "resnet50-compile": "ResNet-50, --compile"}


def load(work: Path) -> dict:
    figures = {path.stem: json.loads(path.read_text()) for path in sorted(work.glob("*.json"))}
    results = work / "run" / "results.json"
    if results.is_file():
        figures["run"] = {**json.loads(results.read_text()), **figures.pop("run-wall", {})}
    return figures


def number(value, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def throughput_table(figures: dict) -> list[str]:
    lines = ["| setting | measurement | train img/s | eval img/s | peak memory MB |", "|---|---|---:|---:|---:|"]
    ratios = ["", "| setting | train full/limit | eval full/limit | train full/reference | eval full/reference |",
              "|---|---:|---:|---:|---:|"]
    for name in THROUGHPUT:
        entry = figures.get(name)
        if entry is None:
            continue
        if "skipped" in entry:
            lines.append(f"| {SETTING[name]} | skipped: {entry['skipped']} | | | |")
            continue
        for mode in ("full", "limit", "reference"):
            if mode in entry:
                r = entry[mode]
                lines.append(f"| {SETTING[name]} | {mode} | {number(r['train_images_per_s'])} | "
                             f"{number(r['eval_images_per_s'])} | {number(r['peak_memory_mb'])} |")
        q = entry.get("ratios", {})
        if q:
            ratios.append(f"| {SETTING[name]} | " + " | ".join(
                number(q.get(key), 2) for key in ("train_full_limit", "eval_full_limit", "train_full_reference",
                                                  "eval_full_reference")) + " |")
    return lines + ratios


def loader_table(figures: dict) -> list[str]:
    entry = figures.get("loader", {})
    if "loader" not in entry:
        return [f"loader: {entry.get('skipped', 'not measured')}"]
    lines = ["| source | augmentation | workers | img/s |", "|---|---|---:|---:|"]
    lines += [f"| {r['source']} | {r['augment']} | {r['workers']} | {number(r['images_per_s'])} |"
              for r in entry["loader"]]
    return lines


def augment_table(figures: dict) -> list[str]:
    entry = figures.get("augment", {})
    if "augment" not in entry:
        return [f"augmentation: {entry.get('skipped', 'not measured')}"]
    return ["| augmentation path | on | img/s |", "|---|---|---:|"] + [
        f"| {r['path']} | {r['device']} | {number(r['images_per_s'])} |" for r in entry["augment"]]


def run_lines(figures: dict) -> list[str]:
    run = figures.get("run")
    if run is None or "skipped" in run:
        return [f"run: {run['skipped'] if run else 'not made'}"]
    return [f"- {run['steps_done']} steps; wall time {number(run.get('wall_s'), 1)} s for the whole command "
            f"({number(run['wall_time_s'], 1)} s of training and evaluation)",
            f"- train {number(run['train_images_per_s'])} img/s, eval {number(run['eval_images_per_s'])} img/s",
            f"- accuracy (training-domain selection, step {run['step']}): i.i.d. validation {number(run['iid'], 3)}, "
            f"test domain {run['test_domain']} {number(run['ood'], 3)}"]


def gap_line(figures: dict) -> str:
    """The loader's best rate against the fastest model-only training rate measured."""
    rows = figures.get("loader", {}).get("loader", [])
    limits = [figures[n]["limit"]["train_images_per_s"] for n in THROUGHPUT if "limit" in figures.get(n, {})]
    if not rows or not limits:
        return ""
    best = max(rows, key=lambda r: r["images_per_s"])
    return (f"The loader alone peaks at {number(best['images_per_s'])} img/s ({best['source']}, {best['augment']} "
            f"augmentation, {best['workers']} worker(s)): {best['images_per_s'] / max(limits):.2f}× the fastest "
            f"model-only training rate measured ({number(max(limits))} img/s).")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("work", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dry-run", type=int, default=0)
    parser.add_argument("--data", required=True)
    parser.add_argument("--files", type=int, required=True)
    parser.add_argument("--seconds", type=int, required=True)
    args = parser.parse_args(argv)
    figures = load(args.work)
    context = next((f for f in figures.values() if "torch" in f), {})
    summary = {"dry_run": bool(args.dry_run), "data": args.data, "data_files": args.files, "seconds": args.seconds,
               "card": context.get("card"), "torch": context.get("torch"), "cpus": context.get("cpus"),
               "figures": figures}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# droptune GPU check{' (DRY RUN on CPU, tiny sizes: no figure here is a GPU figure)' if args.dry_run else ''}",
             "",
             f"Card: {summary['card']}; torch {summary['torch']}; {summary['cpus']} CPUs; data {args.data} "
             f"({args.files} files; full PACS has 9,991); whole check {args.seconds} s.",
             f"Setting: {context.get('image_size')} px, {context.get('batch_size')} images × 3 training domains, "
             f"amp {context.get('amp')}, channels-last {context.get('channels_last')}; decoded cache unless said.",
             "", "## Throughput", "", *throughput_table(figures), "", "## Data path", "", *loader_table(figures), "",
             *augment_table(figures), "", gap_line(figures), "", "## Short real run (PACS, test domain sketch)", "",
             *run_lines(figures), ""]
    (args.out / "summary.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
