"""Training and evaluation throughput: droptune's pipeline, the model-only limit, and a DomainBed-style reference.

Prints images/s, peak memory (GPU: torch.cuda.max_memory_allocated) and the ratios full/limit and
full/reference for one backbone, image size, batch and device. Each measurement runs in its own
process so peak memory is its own. `--json FILE` also writes the figures as JSON.

    python benchmarks/throughput.py --data-dir ../shared/data --image-size 112 --batch-size 16
    python benchmarks/throughput.py --backbone resnet50 --weights none --image-size 224 --batch-size 32 \\
        --device cuda --amp bf16

Two measurements of the data path alone, no model:

    python benchmarks/throughput.py --loader-only --loader-workers 0 1 2 --cache-dir /tmp/cache --repeat 3
    python benchmarks/throughput.py --augment-speed --image-size 224 --repeat 3

`--loader-only`: training images/s that the loader delivers, per worker count, reading files and
(with --cache-dir) the decoded cache, with per-image augmentation and with the reading half of batch
augmentation (image resized, parameters drawn). `--augment-speed`: images/s of the augmentation
itself on decoded images, per image (PIL, as training does; uint8 tensors) and as whole batches
(`augment_batch`), on --device.

The reference is written the way the paper's code and DomainBed work: torchvision `ImageFolder`
per domain with PIL transforms per image, one infinite loader per training domain, fp32, NCHW,
`torch.no_grad` evaluation with batches of 64. Both evaluate the training domains' held-out 20%.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

MODES = ("full", "limit", "reference")


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA; on CPU the training process's peak resident memory.

    Loader workers are left out: a forked worker's resident pages are mostly its parent's, shared.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step after `warmup` steps."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def droptune_trainer(args):
    from droptune.training.config import TrainConfig
    from droptune.training.trainer import Trainer

    config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, test_domain=args.test_domain,
                         backbone=args.backbone, weights=args.weights, image_size=args.image_size,
                         batch_size=args.batch_size, device=args.device, amp=args.amp, workers=args.workers,
                         compile=args.compile, channels_last=not args.no_channels_last,
                         steps=args.steps + args.warmup + 1, progress=False, output_dir="/tmp/droptune-bench",
                         cache_dir=args.cache_dir, eval_batch_size=args.eval_batch_size,
                         device_augment=args.device_augment)
    return Trainer(config)


def measure_full(args) -> dict:
    """droptune's own pipeline: its loader (reading, augmentation) feeding its training step."""
    from droptune.data.loaders import DomainBalancedBatches, make_loader

    trainer = droptune_trainer(args)
    batches = DomainBalancedBatches(trainer.protocol.train_parts(), args.batch_size, 0, 0, args.steps + args.warmup)
    loader = iter(make_loader(trainer.train_images, batches, trainer.workers, trainer.device.type == "cuda"))
    trainer.model.train()
    per_step = timed(lambda: trainer._train_step(*next(loader)), args.steps, args.warmup, trainer.device)
    images = args.batch_size * len(trainer.protocol.train_domains)
    start = time.perf_counter()
    trainer.bench.evaluate(trainer.forward, iid_only=True)
    seconds = time.perf_counter() - start
    eval_images = sum(len(split.keys) for split in trainer.bench.iid_splits)
    return {"train_images_per_s": images / per_step, "eval_images_per_s": eval_images / seconds,
            "workers": trainer.workers, "device_augment": trainer.augment_on_device,
            "peak_memory_mb": peak_memory_mb(trainer.device)}


def measure_limit(args) -> dict:
    """The same model, batch and precision on random tensors already on the device: no data pipeline."""
    from droptune.training.device import eval_batch_size

    trainer = droptune_trainer(args)
    trainer.augment_on_device = False
    images = args.batch_size * len(trainer.protocol.train_domains)
    shape = (3, args.image_size, args.image_size)
    x = torch.randint(0, 256, (images, *shape), dtype=torch.uint8, device=trainer.device)  # as loaders give
    y = torch.randint(0, len(trainer.dataset.classes), (images,), device=trainer.device)
    trainer.model.train()
    per_step = timed(lambda: trainer._train_step(x, y), args.steps, args.warmup, trainer.device)
    model = trainer.forward
    model.eval()
    batch = torch.randint(0, 256, (eval_batch_size(trainer.config, trainer.device), *shape), dtype=torch.uint8,
                          device=trainer.device)
    if trainer.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)

    def infer():
        from droptune.training.evaluate import autocast

        with torch.inference_mode(), autocast(trainer.device, args.amp):
            model(batch)

    eval_per_step = timed(infer, max(2, args.steps // 2), 1, trainer.device)
    return {"train_images_per_s": images / per_step, "eval_images_per_s": len(batch) / eval_per_step,
            "peak_memory_mb": peak_memory_mb(trainer.device)}


def measure_reference(args) -> dict:
    """DomainBed's way: ImageFolder + PIL transforms, one infinite loader per domain, fp32 NCHW."""
    from torch.utils.data import DataLoader, RandomSampler
    from torchvision import datasets, transforms

    from droptune.data.registry import open_dataset
    from droptune.data.splits import split_domain
    from droptune.models import build_model

    dataset = open_dataset(args.dataset, args.data_dir)
    test = dataset.domain_index(args.test_domain)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model = build_model(args.backbone, len(dataset.classes), 0.9, args.weights).to(device)
    size = args.image_size
    normalize = transforms.Normalize(model.mean, model.std)
    augment = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.7, 1.0)), transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(0.3, 0.3, 0.3, 0.3), transforms.RandomGrayscale(), transforms.ToTensor(), normalize])
    plain = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), normalize])
    workers = args.workers if args.workers is not None else 1

    def infinite(loader):
        while True:
            yield from loader

    loaders, holdouts = [], []
    for d, name in enumerate(dataset.domains):
        folder = datasets.ImageFolder(str(dataset.root / name), transform=augment)
        split = split_domain(len(folder), name, 0)
        if d == test:
            continue
        subset = torch.utils.data.Subset(folder, split.train.tolist())
        sampler = RandomSampler(subset, replacement=True, num_samples=10**8)
        loaders.append(infinite(DataLoader(subset, batch_size=args.batch_size, sampler=sampler,
                                           num_workers=workers, drop_last=True)))
        holdouts.append(torch.utils.data.Subset(datasets.ImageFolder(str(dataset.root / name), transform=plain),
                                                split.holdout.tolist()))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step():
        batches = [next(loader) for loader in loaders]
        x = torch.cat([b[0] for b in batches]).to(device)
        y = torch.cat([b[1] for b in batches]).to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    per_step = timed(step, args.steps, args.warmup, device)
    model.eval()
    start, count = time.perf_counter(), 0
    with torch.no_grad():
        for holdout in holdouts:
            for x, y in DataLoader(holdout, batch_size=64, num_workers=workers):
                (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
                count += len(y)
    seconds = time.perf_counter() - start
    return {"train_images_per_s": args.batch_size * len(loaders) / per_step, "eval_images_per_s": count / seconds,
            "workers_per_domain": workers, "peak_memory_mb": peak_memory_mb(device)}


def loader_images(args, cache: bool, batch_augment: bool):
    """The training images of `args`' split as the loader reads them, and their batch sampler."""
    from droptune.data.cache import CachedDomains
    from droptune.data.registry import open_dataset
    from droptune.data.loaders import BatchAugmentImages, DomainBalancedBatches, DomainImages
    from droptune.data.splits import split_domain

    dataset = open_dataset(args.dataset, args.data_dir)
    if cache:
        dataset = CachedDomains(dataset, args.image_size, args.cache_dir)
    test = dataset.domain_index(args.test_domain)
    domains = [(d, split_domain(len(dataset.labels(d)), name, 0).train)
               for d, name in enumerate(dataset.domains) if d != test]
    images = BatchAugmentImages(dataset, args.image_size) if batch_augment else DomainImages(
        dataset, args.image_size, True)
    return images, DomainBalancedBatches(domains, args.batch_size, 0, 0, 10**9)


def measure_loader(args, workers: int, cache: bool, batch_augment: bool) -> float:
    """Training images/s of the loader alone: read, decode and augment (or draw parameters), no model."""
    from droptune.data.loaders import make_loader

    images, batches = loader_images(args, cache, batch_augment)
    loader = iter(make_loader(images, batches, workers))
    for _ in range(args.warmup + 2 * workers):  # workers start and fill their prefetch queues
        next(loader)
    start = time.perf_counter()
    count = sum(len(next(loader)[1]) for _ in range(args.steps))
    return count / (time.perf_counter() - start)


def loader_only(args) -> dict:
    """`measure_loader` for each worker count, source and augmentation; rounds interleave them, medians kept."""
    sources = [False, True] if args.cache_dir else [False]
    variants = [(w, c, b) for c in sources for b in (False, True) for w in args.loader_workers]
    if args.cache_dir:
        loader_images(args, True, False)  # builds the cache once, outside the timings
    runs: dict[tuple, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for variant in variants:
            runs[variant].append(measure_loader(args, *variant))
    rows = [{"workers": w, "source": "cache" if c else "files", "augment": "batch" if b else "per-image",
             "images_per_s": statistics.median(runs[(w, c, b)]), "rounds": runs[(w, c, b)]} for w, c, b in variants]
    for row in rows:
        print(f"loader {row['source']:<5} {row['augment']:<9} augmentation, {row['workers']} worker(s): "
              f"{row['images_per_s']:8.1f} img/s  (median of {args.repeat})", flush=True)
    return {"loader": rows}


def augment_speed(args) -> dict:
    """Images/s of the augmentation alone on decoded size×size images: per image (PIL, tensor) and whole batches."""
    from PIL import Image

    from droptune.data.batch_augment import augment_batch, sample_params
    from droptune.data.loaders import seeded
    from droptune.data.transforms import train_transform

    count, size = args.batch_size * 3, args.image_size
    device = torch.device("cpu" if args.device == "auto" else args.device)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8)
    pils = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    transform = train_transform(size)
    params = []
    for seed in range(count):
        with seeded(seed):
            params.append(sample_params(size, size))
    params = torch.stack(params)
    on_device = images.to(device)

    def per_image(inputs):
        def run():
            for seed, image in enumerate(inputs):
                with seeded(seed):
                    transform(image)
        return run

    variants = {"per-image PIL": per_image(pils), "per-image tensor": per_image(list(images)),
                "batch": lambda: augment_batch(on_device, params, size)}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, run in variants.items():
            runs[name].append(count / timed(run, max(1, args.steps // 4), 1, device))
    rows = [{"path": name, "device": str(device) if name == "batch" else "cpu",
             "images_per_s": statistics.median(r), "rounds": r} for name, r in runs.items()]
    for row in rows:
        print(f"augmentation {row['path']:<16} on {row['device']}: {row['images_per_s']:8.1f} img/s "
              f"({count} images of {size} px; median of {args.repeat})", flush=True)
    return {"augment": rows, "threads": torch.get_num_threads()}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="PACS")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--test-domain", default="sketch")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="default")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=16, help="images per training domain")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--workers", type=int, help="loader processes (default: droptune's choice per device)")
    parser.add_argument("--cache-dir", help="droptune's decoded-image cache folder (opt-in)")
    parser.add_argument("--eval-batch-size", type=int, help="droptune's (default: its choice per device; the reference uses 64)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device-augment", default="auto", choices=("auto", "on", "off"),
                        help="droptune's: augment whole batches on the device (auto: on CUDA)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the three measurements; medians are reported")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--loader-only", action="store_true", help="measure the training loader alone (no model)")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 1, 2], help="with --loader-only")
    parser.add_argument("--augment-speed", action="store_true",
                        help="measure the augmentation alone: per image vs whole batches")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="measurements to make")
    parser.add_argument("--only", choices=MODES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    if args.loader_only or args.augment_speed:
        figures = loader_only(args) if args.loader_only else augment_speed(args)
        write_json(args, {**figures, **context(args)})
        return
    if args.only:
        print(json.dumps({"full": measure_full, "limit": measure_limit, "reference": measure_reference}[args.only](args)))
        return
    argv = sys.argv[1:] if argv is None else argv
    modes = [mode for mode in MODES if mode in args.modes]
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    # Rounds interleave the modes, so a machine whose speed drifts (shared cores) biases no mode.
    for round_ in range(args.repeat):
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, *argv, "--only", mode], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{mode} failed:\n{out.stderr}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            runs[mode].append(r)
            print(f"{mode:<10} train {r['train_images_per_s']:8.1f} img/s   eval {r['eval_images_per_s']:8.1f} img/s   "
                  f"peak memory {r['peak_memory_mb']:8.0f} MB   (round {round_ + 1})", flush=True)
    medians = {mode: {key: statistics.median(r[key] for r in runs[mode]) for key in
                      ("train_images_per_s", "eval_images_per_s", "peak_memory_mb")} for mode in modes}
    print(f"\n{args.backbone}, {args.image_size} px, {args.batch_size} images × training domains, "
          f"device {args.device}, amp {args.amp}, compile {args.compile}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; medians of {args.repeat} round(s)")
    for mode, r in medians.items():
        print(f"{mode:<10} train {r['train_images_per_s']:8.1f} img/s   eval {r['eval_images_per_s']:8.1f} img/s   "
              f"peak memory {r['peak_memory_mb']:8.0f} MB")
    ratios = {}
    if "full" in medians:
        for other in ("limit", "reference"):
            if other in medians:
                for key in ("train_images_per_s", "eval_images_per_s", "peak_memory_mb"):
                    ratios[f"{key.split('_')[0]}_full_{other}"] = medians["full"][key] / medians[other][key]
    for name, ratio in ratios.items():
        print(f"{name.replace('_', ' ', 1).replace('_', '/')}: {ratio:.2f}")
    write_json(args, {**context(args), "rounds": args.repeat, **medians, "runs": runs, "ratios": ratios})


def context(args) -> dict:
    """What a figure needs beside it: the setting, the software and the machine."""
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else None
    return {"backbone": args.backbone, "weights": args.weights, "image_size": args.image_size,
            "batch_size": args.batch_size, "device": device, "card": card, "amp": args.amp, "compile": args.compile,
            "channels_last": not args.no_channels_last, "cache": bool(args.cache_dir),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": len(os.sched_getaffinity(0)),
            "load_average": os.getloadavg()[0], "command": " ".join(sys.argv)}


def write_json(args, figures: dict) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
