"""`droptune evaluate`, `droptune predict` and `droptune export`: use what you trained."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from droptune.cli.arguments import add_device_flag, count
from droptune.console import add_progress_flag


def _evaluate(args: argparse.Namespace) -> int:
    from droptune.data.registry import open_dataset
    from droptune.errors import DroptuneError
    from droptune.inference.loading import load_model
    from droptune.inference.scoring import metrics_table, score
    from droptune.runs.files import save_json

    loaded = load_model(args.model, args.variant, args.device)
    dataset = open_dataset(args.dataset, args.data_dir, same_classes=False)
    domains = [dataset.domains[dataset.domain_index(d, "domain")] for d in args.domains] if args.domains else None
    output = args.output or Path(args.model) / "evaluation.json"
    if output.is_dir():
        raise DroptuneError(f"--output {output} is a folder: expected a JSON file to write")
    output.parent.mkdir(parents=True, exist_ok=True)  # a file in the way is an error before the scoring, not after
    report = score(loaded, dataset, domains, args.batch_size, args.workers, args.progress)
    what = args.variant if loaded.about.get("source") == "run" else loaded.about.get("method") or "exported model"
    save_json({"model": str(args.model), "variant": what, "dataset": dataset.name, "domains": report}, output)
    print(f"\n{args.model} ({what}) on {dataset.name}:\n")
    print(metrics_table(report))
    if dataset.name == loaded.about.get("dataset"):
        _note_training_domains(loaded, [d for d in report if d in (loaded.about.get("train_domains") or ())])
    print(f"\nPer-class accuracy and confusion matrices: {output}")
    return 0


def _note_training_domains(loaded, domains: list[str]) -> None:
    """A training domain's accuracy counts the images the model trained on: say so, and where its held-out part's is."""
    holdout = loaded.config.holdout_fraction
    record = "results.json" if loaded.results else "config.json"  # an exported folder has no results.json
    for domain in domains:
        print(f"note: {domain} is a training domain: the model trained on {1 - holdout:.0%} of its images, which "
              f"this accuracy includes; its accuracy on the held-out {holdout:.0%} is part of the i.i.d. figure in "
              f"{record}")


def _predict(args: argparse.Namespace) -> int:
    from droptune.errors import DroptuneError
    from droptune.inference.loading import load_model
    from droptune.inference.predict import predict, write_predictions

    if args.output.suffix not in (".csv", ".jsonl"):
        raise DroptuneError(f"--output must end in .csv or .jsonl, got {args.output}")
    loaded = load_model(args.model, args.variant, args.device)
    records, unreadable = predict(loaded, args.images, args.top_k, args.batch_size, args.progress)
    write_predictions(records, args.output)
    for path, why in unreadable:
        print(f"droptune: skipped unreadable image {path}: {why}", file=sys.stderr)
    print(f"wrote predictions for {len(records)} of {len(records) + len(unreadable)} images to "
          f"{args.output.absolute()}")
    return 0 if records else 1


def _export(args: argparse.Namespace) -> int:
    from droptune.inference.export import export, push_to_hub, require_packages
    from droptune.inference.loading import load_model
    from droptune.runs.results import collapse_explanation

    if args.push_to_hub:
        require_packages(["huggingface_hub"], "--push-to-hub", "hub")
    loaded = load_model(args.model, args.variant)
    config = export(loaded, args.output, args.format, args.check_images or ())
    checks = config["droptune"]["checks"]
    print(f"{args.output}: {config['architecture']} for {config['num_classes']} classes, checked on {checks['images']}")
    about = config["droptune"]
    if about.get("collapsed"):
        print(f"WARNING: this model collapsed: its {collapse_explanation(about['iid'], about['majority_rate'])} "
              "(said in its model card too)")
    for name, value in checks.items():
        if name != "images":
            print(f"  {name}: " + (f"max abs logit difference {value:.2g}" if isinstance(value, float) else value))
    if args.push_to_hub:
        print(f"uploaded to {push_to_hub(args.output, args.push_to_hub)}")
    return 0


MODEL_HELP = "a run folder, a soup folder of `droptune combine` or an exported folder"


def add_use_commands(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="score a trained model on any dataset, per domain",
        description="Score a run, a soup or an exported model on every image of a dataset's domains (its own or "
                    "another), with its evaluation transform: accuracy per domain, printed and written to "
                    "evaluation.json.")
    evaluate.add_argument("model", type=Path, help=MODEL_HELP)
    evaluate.add_argument("--variant", default="best", choices=("best", "swa", "ema", "swad"),
                          help="which of the run's models (default: the selected one)")
    evaluate.add_argument("--dataset", required=True, help="registered dataset name or folder of domains")
    evaluate.add_argument("--data-dir", type=Path, default=os.environ.get("DROPTUNE_DATA_DIR"),
                          help="folder holding registered datasets (default: $DROPTUNE_DATA_DIR)")
    evaluate.add_argument("--domains", nargs="+", help="domains to score (default: all)")
    evaluate.add_argument("--output", type=Path, help="evaluation.json path (default: in the run folder)")
    evaluate.add_argument("--batch-size", type=count(1), default=64, help="images per forward pass (default: 64)")
    evaluate.add_argument("--workers", type=count(0), default=0,
                          help="data-loader processes (default: 0, images read in this process)")
    add_device_flag(evaluate)
    add_progress_flag(evaluate)
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser(
        "predict", help="class names and probabilities for images",
        description="Classify image files with a run, a soup or an exported model (its evaluation transform) "
                    "and write each image's most probable classes with their probabilities.")
    predict.add_argument("model", type=Path, help=MODEL_HELP)
    predict.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    predict.add_argument("--variant", default="best", choices=("best", "swa", "ema", "swad"),
                         help="which of the run's models (default: the selected one)")
    predict.add_argument("--top-k", type=int, default=1,
                         help="classes per image, most probable first (default: 1, the prediction alone)")
    predict.add_argument("--output", type=Path, default=Path("predictions.csv"),
                         help="the .csv or .jsonl file to write (default: predictions.csv in the current folder)")
    predict.add_argument("--batch-size", type=count(1), default=32, help="images per forward pass (default: 32)")
    add_device_flag(predict)
    add_progress_flag(predict)
    predict.set_defaults(run=_predict)

    export = commands.add_parser(
        "export", help="a self-contained model folder (Hugging Face Hub layout, loads in timm)",
        description="Write model.safetensors (timm's key names), config.json (timm's fields and droptune's: "
                    "classes, dropout, data, selection, accuracy) and a model card README.md; with --format, also "
                    "a TorchScript or ONNX file. Each is checked against droptune's model on real images.")
    export.add_argument("model", type=Path, help=MODEL_HELP)
    export.add_argument("--output", type=Path, required=True, metavar="DIR", help="the folder to write")
    export.add_argument("--format", default="safetensors", metavar="{safetensors,torchscript,onnx}",
                        help="also write model.torchscript.pt or model.onnx (default: safetensors only)")
    export.add_argument("--variant", default="best", choices=("best", "swa", "ema", "swad"),
                        help="which of the run's models (default: the selected one)")
    export.add_argument("--check-images", nargs="+", type=Path, metavar="IMAGE",
                        help="images to check the exports on (default: some of the held-out domain's)")
    export.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hugging Face Hub "
                        "model repository (needs huggingface_hub and a login)")
    export.set_defaults(run=_export)
