"""`droptune combine` and `droptune probe`: baselines across runs, and the shared head start soups need."""

from __future__ import annotations

import argparse
from pathlib import Path

from droptune.cli.arguments import add_device_flag, count


def _combine(args: argparse.Namespace) -> int:
    from droptune.combining.combine import combine

    combined = combine(args.runs, args.method, args.output, args.device, args.workers, args.data_dir,
                       args.ensemble_outputs)
    first = next(iter(combined.values()))
    print(f"\n{first['dataset']}, test domain {first['test_domain']}: accuracy (%) of each run's selected model "
          "and of their combinations\n")
    print(f"{'model':<40} {'i.i.d.':>7} {'o.o.d.':>7} {'trainings':>9} {'forward passes':>14}")
    for run in first["runs"]:
        print(f"{run['run'][:40]:<40} {100 * run['iid']:>7.1f} {100 * run['ood']:>7.1f} {1:>9} {1:>14}")
    for method, results in combined.items():
        name = f"{method} ({len(results['members'])} of {len(results['runs'])} runs)"
        cost = results["cost"]
        print(f"{name:<40} {100 * results['iid']:>7.1f} {100 * results['ood']:>7.1f} "
              f"{cost['trainings']:>9} {cost['forward_passes']:>14}")
    print(f"\nresults.json per method: {args.output}/<method>/")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from droptune.cli.config_flags import config_from_args
    from droptune.training.head_start import linear_probe
    from droptune.training.checkpoint import save_weights
    from droptune.training.device import default_workers, resolve_device

    config = config_from_args(args)
    device = resolve_device(config.device)
    workers = config.workers if config.workers is not None else default_workers(device)
    state, metadata = linear_probe(config, device, workers, args.probe_steps, args.probe_lr)
    save_weights(state, args.output, metadata)
    print(f"{args.output}: head probed on frozen features of {metadata['dataset']} without "
          f"{metadata['test_domain']}: train accuracy {100 * metadata['train_acc']:.1f}%, "
          f"i.i.d. {100 * metadata['iid']:.1f}%")
    print(f"start every run of the sweep from it with --head-init {args.output}")
    return 0


def add_combine_commands(commands) -> None:
    from droptune.cli.config_flags import add_config_flags
    from droptune.combining.methods import COMBINATIONS
    from droptune.training.config import ENSEMBLE_OUTPUTS, PROBE_LR, PROBE_STEPS

    combine = commands.add_parser(
        "combine", help="ensembles and weight averages (model soups) of finished runs of one split",
        description="Combine the selected models of finished runs trained on the same leave-one-domain-out "
                    "split, score the combinations like single runs and write OUTPUT/<method>/results.json "
                    "with their cost. Weight averages need runs that share backbone, pre-trained weights, "
                    "classes and head initialization (train them with one --head-seed or --head-init).")
    combine.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="completed run folders")
    methods = "; ".join(f"{c.name}: {c.description}" for c in COMBINATIONS.values())
    combine.add_argument("--method", nargs="+", choices=list(COMBINATIONS), default=list(COMBINATIONS),
                         help=f"{methods} (default: all)")
    combine.add_argument("--output", type=Path, required=True, metavar="OUT_DIR", help="folder for the results")
    combine.add_argument("--ensemble-outputs", choices=ENSEMBLE_OUTPUTS,
                         help="what the ensemble averages (default: what the runs' own ensembles average, their "
                              "ensemble_outputs, as `droptune sweep` combines them)")
    add_device_flag(combine)
    combine.add_argument("--workers", type=count(0), help="data-loader processes (default: chosen per device)")
    combine.add_argument("--data-dir", help="folder that holds the datasets, if not where the runs found them")
    combine.set_defaults(run=_combine)

    probe = commands.add_parser(
        "probe", help="train a linear head on frozen features: the shared start of runs to be averaged",
        description="Train the head alone on frozen, un-augmented features of the training domains "
                    "(the test domain is never read) and save it; runs started from it with --head-init "
                    "can be weight-averaged (DiWA's and Model Ratatouille's recipe). Pass the runs' flags.")
    add_config_flags(probe, skip=("output_dir", "head_init", "head_seed"))
    probe.add_argument("--output", type=Path, required=True, metavar="FILE", help="the head's .safetensors file")
    probe.add_argument("--probe-steps", type=int, default=PROBE_STEPS,
                       help=f"Adam steps on cached features (default: {PROBE_STEPS})")
    probe.add_argument("--probe-lr", type=float, default=PROBE_LR, help=f"Adam learning rate (default: {PROBE_LR:g})")
    probe.set_defaults(run=_probe)
