"""`droptune sweep` (many runs, on this machine, Slurm or Ray) and `droptune report` (their tables and figures)."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from droptune.cli.arguments import amount, count
from droptune.errors import DroptuneError
from droptune.console import add_progress_flag
from droptune.experiments import preset_names
from droptune.training.interrupt import Interrupted
from droptune.training.selection import SELECTIONS

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from droptune.experiments.jobs import Job
    from droptune.experiments.launchers import Launcher
    from droptune.experiments.sweep import SweepSpec

PREVIEW = 20  # run folders listed on the console per kind of problem; skipped.csv lists them all
# Each launcher's flags, as argparse names them, and the launcher's fields they set
LAUNCHER_FLAGS = {
    "local": {"workers": "workers"},
    "slurm": {"slurm_partition": "partition", "slurm_account": "account", "slurm_time": "time_min",
              "slurm_gpus": "gpus_per_job", "slurm_cpus": "cpus_per_job", "slurm_mem_gb": "mem_gb",
              "slurm_array_parallelism": "array_parallelism", "slurm_signal_delay": "signal_delay_s",
              "slurm_cluster": "cluster"},
    "ray": {"ray_address": "address", "ray_cpus": "cpus_per_job", "ray_gpus": "gpus_per_job"},
}


def _value(text: str) -> Any:
    """A flag value typed as YAML would, except that 1e-3 is a number (YAML 1.1 reads it as a string)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _assignments(pairs: list[str], flag: str) -> dict[str, Any]:
    """NAME=VALUE pairs with YAML-typed values; VALUE may be a comma-separated list when `flag` is --grid."""
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise DroptuneError(f"{flag} {pair!r}: expected NAME=VALUE")
        if flag == "--grid":
            values[name] = [_value(v) for v in value.split(",")]
        else:
            values[name] = _value(value)
    return values


def spec_overrides(args: argparse.Namespace) -> dict[str, Any]:
    domains = "all" if args.test_domains == ["all"] else args.test_domains
    overrides = {"datasets": args.datasets, "data_dir": args.data_dir, "test_domains": domains,
                 "seeds": args.seeds, "trial_seeds": args.trial_seeds}
    if args.dropouts:
        overrides["methods"] = [{"name": f"dropout {p:g}", "dropout": p} for p in args.dropouts]
    # --grid and --set values are checked here, before they join the sweep file's, so that their errors name the flag
    if args.grid:
        from droptune.experiments.sweep import check_not_job_fields
        from droptune.training.config import coerce_value

        grid = _assignments(args.grid, "--grid")
        check_not_job_fields(grid, "--grid")
        overrides["grid"] = {name: [coerce_value(name, value, "--grid") for value in values]
                             for name, values in grid.items()}
    if args.set:
        from droptune.experiments.sweep import config_overrides

        overrides["base"] = config_overrides(_assignments(args.set, "--set"), "--set")
    return {k: v for k, v in overrides.items() if v is not None}


def launcher_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of `--launcher`'s launcher; another launcher's flag is an error, not a flag silently ignored (a
    Slurm sweep run on the login node)."""
    for launcher, flags in LAUNCHER_FLAGS.items():
        for name in flags:
            if launcher != args.launcher and getattr(args, name) is not None:
                raise DroptuneError(f"--{name.replace('_', '-')} needs --launcher {launcher} "
                                    f"(this sweep's launcher is {args.launcher})")
    return {field: getattr(args, name) for name, field in LAUNCHER_FLAGS[args.launcher].items()}


def _hparams(job: Job) -> str:
    return ", ".join(f"{k}={v}" for k, v in job.hparams.items())


def _sweep(args: argparse.Namespace) -> int:
    from droptune.experiments.jobs import DIVERGED, DONE, state
    from droptune.experiments.launchers import make_launcher
    from droptune.experiments.sweep import load_spec, unbuildable_models, unreadable_data
    from droptune.runs.folder import exclusive, holder

    options = launcher_options(args)
    spec = load_spec(args.spec, spec_overrides(args))
    output = args.output or Path("sweeps") / spec.name
    jobs = spec.jobs(output)
    if args.dry_run:
        rows = [("job", "state", "dataset", "test domain", "method", "seeds", "hparams")]
        for job in jobs:
            c = job.config
            shown = state(job.run)
            # a finished run's lock is a resume that changes nothing, or an old lock file's stale pid
            if shown not in (DONE, DIVERGED) and holder(job.run.path):
                shown = "running"
            rows.append((job.id, shown, c.dataset, c.test_domain, job.method, f"{c.trial_seed},{c.seed}",
                         _hparams(job) or "default"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]  # the last column: as long
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)), row[-1])
        print(f"\n{len(jobs)} jobs in {output}/runs; nothing was run (--dry-run)")
        return 0
    if args.max_retries < 0:
        raise DroptuneError(f"invalid --max-retries {args.max_retries}: expected 0 or more")
    launcher = make_launcher(args.launcher, output, **options)  # no sbatch, no ray: an error that leaves no folder
    for problem in unbuildable_models(jobs):
        raise DroptuneError(f"sweep {spec.name!r}: {problem}; nothing was run")
    for problem in unreadable_data(jobs):
        if args.launcher == "local":
            raise DroptuneError(f"sweep {spec.name!r}: {problem}; nothing was run")
        # the cluster's nodes may see data this host does not
        log.warning("%s on this host; the jobs fail on the %s nodes unless it is there", problem, args.launcher)
    try:
        with exclusive(output, "sweep folder"):
            return _run(args, spec, output, jobs, launcher)
    except KeyboardInterrupt:  # outside the launchers, which take a stop signal themselves
        raise Interrupted("sweep stopped by SIGINT; run the same command again to continue", signal.SIGINT) from None


def _run(args: argparse.Namespace, spec: SweepSpec, output: Path, jobs: list[Job], launcher: Launcher) -> int:
    """The sweep's jobs, then its combinations, while this process holds the sweep folder."""
    from droptune.experiments.jobs import DIVERGED, FAILED, read_error, state
    from droptune.experiments.runner import run_sweep
    from droptune.runs.folder import RunDir, spec_file

    spec_file(output, spec.name).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    summary = run_sweep(jobs, launcher, args.max_retries, args.progress)
    failed_combinations = []
    if spec.combine:
        from droptune.experiments.combos import combine_sweep

        runtime = {k: v for k, v in spec.base.items() if k in ("device", "workers")}  # as the sweep sets its runs'
        failed_combinations = combine_sweep(jobs, output, spec.combine, sweep=spec.name, **runtime)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.states.items()))
    print(f"\n{len(jobs)} jobs ({counts}); {summary.executions} run(s) started now. Tables and figures: "
          f"droptune report {output}")
    for job in [job for job in jobs if state(job.run) == DIVERGED][:PREVIEW]:
        setting = ", ".join(filter(None, [job.method, _hparams(job)]))
        print(f"  diverged: {job.run.path} ({setting}): the training loss was not finite by step "
              f"{job.run.read_results().steps_done}")
    failed = [job.run for job in jobs if state(job.run) == FAILED] + [RunDir(p) for p in failed_combinations]
    for run in failed[:PREVIEW]:
        error = read_error(run) or {}
        print(f"  failed: {run.path}: {error.get('message', '?')}")
    return 0 if summary.complete and not failed_combinations else 1


def _report(args: argparse.Namespace) -> int:
    from droptune.experiments.report import write_report

    if args.sweep_dir.is_file():
        raise DroptuneError(f"{args.sweep_dir} is a file: expected a sweep folder (or a folder of run folders)")
    if not args.sweep_dir.is_dir():
        raise DroptuneError(f"sweep folder not found: {args.sweep_dir}")
    if args.notes is not None and not args.notes.is_file():
        raise DroptuneError(f"notes file not found: {args.notes}")
    default = args.selection if args.hparams == "best" else f"{args.selection}-hparams-{args.hparams}"
    output = args.output or args.sweep_dir / "report" / default
    collection, text, notes = write_report(args.sweep_dir, output, args.selection, args.document, args.notes,
                                           args.hparams, args.title)
    print(text)
    skipped = collection.skipped
    if not skipped.empty:
        print(f"{len(skipped)} run(s) not in the tables (all in {output / 'skipped.csv'}):")
        for reason_kind, group in skipped.groupby(skipped["reason"].str.split(":").str[0].str.split(" ").str[0]):
            for row in group.head(PREVIEW).itertuples():
                print(f"  {row.path}: {row.reason}")
            if len(group) > PREVIEW:
                print(f"  ... and {len(group) - PREVIEW} more {reason_kind}")
    for note in notes:
        print(note)
    print(f"{len(collection.runs)} rows from finished runs; report in {output}")
    return 0


def add_sweep_commands(commands) -> None:
    from droptune.experiments.launchers import LAUNCHERS

    sweep = commands.add_parser(
        "sweep", help="run a sweep of fine-tunings (resumable) on this machine, Slurm or Ray",
        description="Expand a sweep file (datasets × test domains × hyper-parameters × seeds × methods) into jobs, "
                    "each in SWEEP_DIR/runs/<job id>, and run those not finished. Running it again skips finished "
                    "jobs and resumes interrupted ones. The same file runs with every launcher.")
    sweep.add_argument("spec", help=f"sweep YAML file, or a preset: {preset_names()} (with --dry-run: its jobs)")
    sweep.add_argument("--output", type=Path, help="sweep folder (default: sweeps/<sweep name>)")
    sweep.add_argument("--launcher", choices=LAUNCHERS, default="local", help="where jobs run (default: local)")
    sweep.add_argument("--max-retries", type=int, default=1, help="re-runs of a failed job (default: 1)")
    sweep.add_argument("--dry-run", action="store_true", help="list the jobs and their states; run nothing")
    add_progress_flag(sweep)
    spec = sweep.add_argument_group("sweep file overrides")
    spec.add_argument("--datasets", nargs="+", help="datasets (names or folders)")
    spec.add_argument("--data-dir", help="folder that holds the datasets")
    spec.add_argument("--test-domains", nargs="+",
                      help="held-out domains, by name or index (default: the file's; 'all')")
    spec.add_argument("--seeds", nargs="+", type=int, help="run seeds")
    spec.add_argument("--trial-seeds", nargs="+", type=int, help="split seeds (default: each run seed's own)")
    spec.add_argument("--dropouts", nargs="+", type=float, help="replace the methods by these dropout rates")
    spec.add_argument("--grid", nargs="+", metavar="FIELD=V1,V2", help="hyper-parameter grid entries")
    spec.add_argument("--set", nargs="+", metavar="FIELD=VALUE", help="config fields for every job")
    local = sweep.add_argument_group("--launcher local")
    local.add_argument("--workers", type=count(1), help="jobs at once (default: one per GPU, else 1)")
    slurm = sweep.add_argument_group("--launcher slurm (through submitit: one job array)")
    slurm.add_argument("--slurm-partition")
    slurm.add_argument("--slurm-account")
    slurm.add_argument("--slurm-time", type=count(1), metavar="MINUTES", help="time limit per job (default: 1440)")
    slurm.add_argument("--slurm-gpus", type=count(0), help="GPUs per job (default: 1)")
    slurm.add_argument("--slurm-cpus", type=count(1), help="CPUs per job (default: 8)")
    slurm.add_argument("--slurm-mem-gb", type=count(1), help="memory per job")
    slurm.add_argument("--slurm-array-parallelism", type=count(1), help="jobs running at once (default: 256)")
    slurm.add_argument("--slurm-signal-delay", type=count(0), metavar="SECONDS",
                       help="Slurm signals a job (USR2) this long before its time limit; the run saves and the "
                            "task is requeued (default: 120)")
    slurm.add_argument("--slurm-cluster", choices=("slurm", "local", "debug"),
                       help="submitit's executor: slurm, or local/debug to try the array without Slurm")
    ray = sweep.add_argument_group("--launcher ray")
    ray.add_argument("--ray-address", help="existing cluster: auto, HOST:PORT (its GCS) or ray://HOST:10001 (Ray "
                     "Client); one that does not answer within 10 s is an error (default: start one here)")
    ray.add_argument("--ray-cpus", type=amount(0), help="CPUs per job (default: 1)")
    ray.add_argument("--ray-gpus", type=amount(0), help="GPUs per job (default: 1 when the cluster has GPUs, else 0)")
    sweep.set_defaults(run=_sweep)

    report = commands.add_parser(
        "report", help="tables and figures of a sweep folder",
        description="Collect every run folder of a sweep into DomainBed-style tables (Markdown, LaTeX, CSV), the "
                    "(i.i.d., o.o.d.) cloud and the dropout-rate curve. Unfinished or unreadable runs are listed "
                    "with the reason.")
    report.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    report.add_argument("--selection", choices=tuple(SELECTIONS), default="training_domain",
                        help="model selection (default: training_domain; oracle is an upper bound)")
    report.add_argument("--hparams", choices=("best", "mean"), default="best",
                        help="per replicate, the best hyper-parameter setting by the selection (default, DomainBed's "
                             "tables) or the mean over the settings (the paper's tables), each run at its own "
                             "selected checkpoint")
    report.add_argument("--output", type=Path, help="report folder (default: SWEEP_DIR/report/<selection>, "
                                                    "<selection>-hparams-mean with --hparams mean)")
    report.add_argument("--document", type=Path, help="the Markdown page of tables, figures, run statistics and "
                                                      "sweep file (default: OUTPUT/report.md)")
    report.add_argument("--notes", type=Path, help="Markdown put at the top of the page: context, discussion")
    report.add_argument("--title", help="the page's title (default: '<SWEEP_DIR's name>: report')")
    report.set_defaults(run=_report)
