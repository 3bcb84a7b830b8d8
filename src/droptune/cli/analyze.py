"""`droptune analyze`: why it works — feature usage, the linearized model, interpolation — on finished run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from droptune.cli.arguments import add_device_flag, count


def _subjects(args: argparse.Namespace, paths: list[Path]):
    from droptune.analysis.subject import Subject
    from droptune.combining.runs import read_runs
    from droptune.training.device import resolve_device

    device = resolve_device(args.device)
    subjects = [Subject(run, device, args.workers, args.max_images, args.data_dir)
                for run in read_runs(paths, "analyze")]
    args.output.mkdir(parents=True, exist_ok=True)  # a file in the way is an error before the work, not after
    return subjects


def _features(args: argparse.Namespace) -> int:
    from droptune.analysis import features
    from droptune.analysis.subject import write_json

    usages = []
    subjects = _subjects(args, args.runs)
    print(f"{'run':<44} {'p':>5} {'D':>5} {'PR':>6} {'exp(H)':>7} {'i.i.d.':>7} {'o.o.d.':>7}")
    for subject in subjects:
        usage = features.feature_usage(subject)
        if args.max_images is None:  # the report reads it as the run's own figure: not one of a subset's
            write_json(usage, subject.run.folder.feature_usage)
        usages.append(usage)
        print(f"{usage['run'][:44]:<44} {usage['dropout']:>5g} {usage['num_features']:>5} "
              f"{usage['participation_ratio']:>6.0f} {usage['exp_entropy']:>7.0f} {100 * usage['iid']:>7.1f} "
              f"{100 * usage['ood']:>7.1f}")
    write_json({"runs": usages}, args.output / "features.json")
    files = features.plot(usages, args.output / "features")
    kept = ("each run folder: feature_usage.json" if args.max_images is None else
            f"on at most {args.max_images} images per evaluation set, so not written into the run folders")
    print(f"\nD: features of the backbone; PR: participation ratio of their contributions; exp(H): exponential of "
          f"their entropy.\n{args.output / 'features.json'}, {files[0]}; {kept}")
    return 0


def _linearity(args: argparse.Namespace) -> int:
    from droptune.analysis import linearity
    from droptune.analysis.subject import write_json

    results = []
    subjects = _subjects(args, args.runs)
    for subject in subjects:
        linearity.check(subject)
    print(f"{'run':<40} {'model':<11} {'i.i.d.':>7} {'o.o.d.':>7}  agreement i.i.d./o.o.d.  ‖Δθ‖/‖θ₀‖")
    for subject in subjects:
        result = linearity.linearity(subject)
        results.append(result)
        for name in ("pretrained", "first_order", "network"):
            extra = (f"  {100 * result['agreement_iid']:>6.1f} / {100 * result['agreement_ood']:<6.1f}"
                     f"         {result['relative_change']['all']:.4f}") if name == "network" else ""
            print(f"{result['run'][:40]:<40} {name:<11} {100 * result[name]['iid']:>7.1f} "
                  f"{100 * result[name]['ood']:>7.1f}{extra}")
    write_json({"runs": results}, args.output / "linearity.json")
    files = linearity.plot(results, args.output / "linearity")
    print(f"\n{args.output / 'linearity.json'}, {files[0]}")
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    from droptune.analysis import interpolation
    from droptune.analysis.subject import write_json
    from droptune.combining.runs import SAME_MODEL, require_same

    subjects = _subjects(args, args.runs)
    alphas = interpolation.alpha_grid(args.points)
    if len(subjects) == 2:
        require_same([s.run for s in subjects], {**SAME_MODEL, "pre-trained weights": lambda run: run.config.weights},
                     "interpolate between these runs")
    first = subjects[0]
    lines = []
    for subject in subjects:
        start = interpolation.pretrained_state(subject)
        lines.append({"label": f"θ₀ → {subject.run.name[:24]} (p={subject.config.dropout:g})",
                      "start": "pretrained", "end": subject.run.name,
                      "points": interpolation.line(subject, start, subject.weights(), alphas)})
    if len(subjects) == 2:
        second = subjects[1]
        lines.append({"label": f"p={first.config.dropout:g} → p={second.config.dropout:g}",
                      "start": first.run.name, "end": second.run.name,
                      "points": interpolation.line(first, first.weights(), second.weights(), alphas)})
    for drawn in lines:
        print(f"\n{drawn['label']}\n{'alpha':>6} {'i.i.d.':>7} {'o.o.d.':>7}")
        for point in drawn["points"]:
            print(f"{point['alpha']:>6.2f} {100 * point['iid']:>7.1f} {100 * point['ood']:>7.1f}")
    write_json({"runs": [s.describe() for s in subjects], "lines": lines}, args.output / "interpolation.json")
    files = interpolation.plot(lines, args.output / "interpolation")
    print(f"\n{args.output / 'interpolation.json'}, {files[0]}")
    return 0


def add_analyze_commands(commands) -> None:
    analyze = commands.add_parser(
        "analyze", help="why it works: feature usage, the linearized model, weight interpolation",
        description="The paper's analyses on finished run folders; each writes JSON and a figure (PNG, PDF) "
                    "into --output. docs/results/analysis.md explains them.")
    kinds = analyze.add_subparsers(dest="analysis", required=True)
    helps = {
        "features": ("per-feature contributions of each run's head, the effective number of features, and "
                     "accuracy with only the top k features kept", _features),
        "linearity": ("each run's network against its first-order Taylor model around the pre-trained weights",
                      _linearity),
        "interpolate": ("accuracy along the line from the pre-trained backbone to each run; with two runs, "
                        "also from the first to the second", _interpolate),
    }
    for name, (text, run) in helps.items():
        parser = kinds.add_parser(name, help=text, description=text)
        parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                            help="completed run folders of one split")
        parser.add_argument("--output", type=Path, required=True, help="folder for the JSON and the figure")
        parser.add_argument("--max-images", type=int, help="score at most this many images per evaluation set "
                            "(a seeded subset; default: all)")
        add_device_flag(parser)
        parser.add_argument("--workers", type=count(0), default=0, help="data-loader processes")
        parser.add_argument("--data-dir", help="where the runs' dataset is, if not where they were trained")
        if name == "interpolate":
            parser.add_argument("--points", type=int, default=11,
                                help="how many evenly spaced values of α from 0 to 1 (default: 11)")
        parser.set_defaults(run=run)
