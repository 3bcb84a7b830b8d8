"""`droptune summary`: one page across sweeps, a row per comparison of a summary file."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from droptune.errors import DroptuneError


def _summary(args: argparse.Namespace) -> int:
    from droptune.experiments.summary import load_summary_spec, render, summarize, unlink_unwritten_pages
    from droptune.runs.files import read_text

    if args.notes is not None and not args.notes.is_file():
        raise DroptuneError(f"notes file not found: {args.notes}")
    for given, what in ((args.spec, "the summary file"), (args.notes, "the notes file")):
        if given is not None and args.output.resolve() == given.resolve():
            raise DroptuneError(f"--output {args.output} is {what}: writing the page would replace it")
    spec = load_summary_spec(args.spec)
    results = summarize(spec, args.sweeps, args.spec)
    unlink_unwritten_pages(results, args.output.parent)
    command = ["droptune summary", str(args.spec), "--sweeps", str(args.sweeps), "--output", str(args.output)]
    if args.notes is not None:
        command += ["--notes", str(args.notes)]
    page = render(spec, results, " ".join(shlex.quote(c) if i else c for i, c in enumerate(command)),
                  read_text(args.notes, "notes file") if args.notes is not None else None)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page)
    print(page.split("\n## Per held-out domain")[0].rstrip())
    problems = [f"  {result.row.name}: {problem}" for result in results for problem in result.problems]
    print(f"\n{len(results)} rows, {len(problems)} problem line(s) (section 'Missing or incomplete'); page: "
          f"{args.output}", *problems, sep="\n")
    return 0


def add_summary_commands(commands) -> None:
    summary = commands.add_parser(
        "summary", help="one page across sweeps: each comparison's paired difference, its baselines, the paper's",
        description="For each row of a summary file (YAML: name, sweep, dataset, method, control, and optionally "
                    "report, domains, page, paper, note), the paired o.o.d. and i.i.d. difference method − control "
                    "with its standard error and whether it is established, the difference from the best plain "
                    "baseline (the control and its ensembles, averages and soups) and the paper's figures, under "
                    "training-domain validation. A missing sweep or unfinished runs are listed with the reason.")
    summary.add_argument("spec", type=Path, metavar="SUMMARY_FILE", help="e.g. docs/results/summary.yaml")
    summary.add_argument("--output", type=Path, required=True, help="the Markdown page to write")
    summary.add_argument("--sweeps", type=Path, default=Path("sweeps"),
                         help="folder of the rows' sweep folders (default: sweeps)")
    summary.add_argument("--notes", type=Path, help="Markdown put at the top of the page: context, discussion")
    summary.set_defaults(run=_summary)
