"""`droptune` command line: one sub-command per job."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from PIL.Image import DecompressionBombWarning

from droptune.cli.analyze import add_analyze_commands
from droptune.cli.combine import add_combine_commands
from droptune.cli.data import add_data_commands
from droptune.cli.models import add_models_commands
from droptune.cli.summary import add_summary_commands
from droptune.cli.sweep import add_sweep_commands
from droptune.cli.use import add_use_commands
from droptune.errors import DroptuneError, one_line
from droptune.training.interrupt import INTERRUPTED_EXIT, Interrupted


def _train(args: argparse.Namespace) -> int:
    from droptune.cli.config_flags import config_from_args, resumed_config
    from droptune.cli.run_summary import print_run
    from droptune.runs.folder import RunDir
    from droptune.training.trainer import train

    config = resumed_config(args.resume, args) if args.resume else config_from_args(args)
    finished = args.resume is not None and RunDir(args.resume).results.is_file()
    results = train(config, resume=args.resume is not None)
    if finished:
        print(f"{args.resume}: already finished at step {results['steps_done']}; nothing trained")
    print_run(results)
    return 0 if results["status"] == "completed" else 1


def _compare(args: argparse.Namespace) -> int:
    from droptune.cli.config_flags import config_from_args
    from droptune.data.registry import open_dataset
    from droptune.experiments.compare import COMPARE_BUDGET, DEFAULT_TEST_DOMAINS, comparison_table, run_comparison

    base = config_from_args(args, base=COMPARE_BUDGET)
    dataset = open_dataset(base.dataset, base.data_dir)
    domains = args.test_domains or DEFAULT_TEST_DOMAINS.get(dataset.name, dataset.domains)
    output = Path(args.output or Path("runs") / f"compare-{Path(base.dataset).name}")
    results = run_comparison(base, domains, args.dropouts, output)
    table = comparison_table(results, args.dropouts)
    (output / "table.md").write_text(table + "\n")
    print(f"\n{base.dataset}, {base.backbone}, {base.image_size} px, {base.steps} steps; "
          f"accuracy (%) at the step chosen by training-domain validation:\n")
    print(table)
    print(f"\nRun folders and table.md: {output}")
    return 0


def add_training_commands(commands) -> None:
    from droptune.cli.config_flags import add_config_flags
    from droptune.experiments.compare import COMPARE_BUDGET

    train = commands.add_parser("train", help="fine-tune one model, leaving one domain out")
    add_config_flags(train)
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    train.set_defaults(run=_train)

    compare = commands.add_parser(
        "compare", help="the main job: p=0 vs p=0.9 for every held-out domain, as a table",
        description="Fine-tune with each dropout rate for each held-out domain and print i.i.d./o.o.d. "
                    "accuracy. Defaults are a 2-core CPU budget on the built-in RotatedDigits.")
    add_config_flags(compare, skip=("output_dir", "test_domain", "dropout"), defaults=COMPARE_BUDGET)
    compare.add_argument("--test-domains", nargs="+",
                         help="held-out domains (default: all; 0 30 75 for RotatedDigits)")
    compare.add_argument("--dropouts", nargs="+", type=float, default=[0.0, 0.9], help="dropout rates (default: 0 0.9)")
    compare.add_argument("--output", type=Path, help="folder for the runs (default: runs/compare-<dataset>)")
    compare.set_defaults(run=_compare)


# Each module adds its sub-commands to the parser; a new job is a new module listed here.
COMMAND_MODULES = (add_training_commands, add_data_commands, add_models_commands, add_combine_commands,
                   add_sweep_commands, add_summary_commands, add_analyze_commands, add_use_commands)


def versions() -> str:
    """droptune's version and those of the libraries a bug report needs, read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    from droptune import __version__

    found = []
    for name in ("torch", "torchvision", "timm"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return f"droptune {__version__} ({', '.join(found)}; Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="droptune", description=__doc__)
    parser.add_argument("--version", action="version", version=versions())
    commands = parser.add_subparsers(dest="command", required=True)
    for add_commands in COMMAND_MODULES:
        add_commands(commands)
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record (tests replace it), like logging's last-resort handler."""

    def __init__(self):
        logging.Handler.__init__(self, logging.WARNING)

    @property
    def stream(self):
        return sys.stderr


def log_to_stderr() -> None:
    """droptune's own warnings as `droptune: ...` lines; other libraries' records (the Hub's) are left to them.

    Not the root logger's handler: libraries that print their own records would show each twice.
    """
    log = logging.getLogger("droptune")
    if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("droptune: %(message)s"))
        log.addHandler(handler)


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue a `train --resume` stopped before its loop; nothing to say for other commands."""
    from droptune.runs.folder import RunDir

    if getattr(args, "resume", None) is not None and RunDir(args.resume).last.exists():
        return f"; `droptune train --resume {args.resume}` continues from its last checkpoint"
    return "; nothing was saved" if args.command == "train" else ""


def main(argv: list[str] | None = None) -> int:
    log_to_stderr()
    # droptune refuses an image beyond PIL's limit in one line naming it (data/images.py); PIL's warning would be
    # another. Set here, for this process and its loader workers, not by the library in its users' programs.
    warnings.filterwarnings("ignore", category=DecompressionBombWarning)
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
        sys.stdout.flush()  # here, where a reader that has gone (`| head`) is the BrokenPipeError below
        return status
    except BrokenPipeError:
        # Python's recipe: what stdout still buffers goes to /dev/null, not into a second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # as a process that SIGPIPE ended
    except Interrupted as error:
        print(f"droptune: {error}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except DroptuneError as error:
        print(f"droptune: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # a path given on the command line: a folder where a file goes, a file that exists
        if error.filename is None:
            raise
        paths = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        print(f"droptune: error: {paths}: {error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a training loop, which saves and says how to resume (Interrupted above)
        print(f"droptune: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
