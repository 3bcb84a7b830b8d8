"""A head start that runs share, so their weights can be averaged: a head seed, or a linear probe.

The linear probe is DiWA's and Model Ratatouille's recipe: train the head alone on frozen
features of the training domains, save it once, and start every run of a sweep from it.
`head_init: probe` makes each run probe its own split on the fly: the probe is a deterministic
function of `probe_metadata` and PROBE_SETTINGS, so every run of a split starts from the same
head without a file to share between the machines of a cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from droptune.data.domains import MultiDomainDataset
from droptune.data.loaders import DomainImages, make_loader
from droptune.data.splits import stable_seed
from droptune.errors import DroptuneError
from droptune.models.loading import load_strict
from droptune.models.model import DropoutClassifier
from droptune.training.checkpoint import save_weights
from droptune.training.config import (PROBE_BATCH, PROBE_LR, PROBE_SEED, PROBE_STEPS, PROBE_WEIGHT_DECAY,
                                      TrainConfig)
from droptune.training.device import eval_batch_size, place
from droptune.training.evaluate import autocast
from droptune.training.protocol import LeaveOneDomainOut
from droptune.training.run_inputs import initial_model, run_dataset

PROBE = "probe"  # head_init value: probe the run's own split before training
# The run settings a probe depends on. Not lr, weight_decay or the run seed: the runs of a sweep's grid
# differ in those and must share their start to be averaged.
PROBE_SETTINGS = ("image_size", "dropout", "freeze_bn")


def init_head(model: DropoutClassifier, config: TrainConfig, protocol: LeaveOneDomainOut, device: torch.device,
              workers: int, saved: Path) -> str:
    """Initialize the model's head as the config says, and name that start for results.json.

    Runs whose heads start the same way, on the same backbone, can be weight-averaged. An on-the-fly
    probe is kept in `saved`, so that a resumed or retried run does not probe again.
    """
    dataset = protocol.dataset
    if config.head_init == PROBE:
        if saved.is_file():
            state = load_file(str(saved))
        else:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(stable_seed("head", PROBE_SEED))
                model.head.fc.reset_parameters()
                state, metadata = linear_probe(config.replace(seed=PROBE_SEED), device, workers, model=model,
                                               protocol=protocol)
            save_weights(state, saved, metadata)
        load_strict(model.head, state, str(saved))
        return f"probe {probe_key(config, dataset)}"
    if config.head_init is not None:
        state = read_head(config.head_init, probe_metadata(config, dataset))
        load_strict(model.head, state, config.head_init)
        return f"probe {file_digest(config.head_init)}"
    if config.head_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_seed("head", config.head_seed))
            model.head.fc.reset_parameters()
        return f"head seed {config.head_seed}"
    return f"run seed {config.seed}"


def probe_metadata(config: TrainConfig, dataset: MultiDomainDataset) -> dict:
    """What a probe must share with the runs that start from it (the last two keep its images out of their
    held-out sets); a probe's file records it, and a run checks every key."""
    return {
        "dataset": dataset.name,
        "test_domain": dataset.domains[dataset.domain_index(config.test_domain)],
        "classes": list(dataset.classes),
        "backbone": config.backbone,
        "weights": config.weights,
        "trial_seed": config.trial_seed,
        "holdout_fraction": config.holdout_fraction,
        # only where set, so that probes made before the field keep their metadata and their key
        **({"linear_blocks": config.linear_blocks} if config.linear_blocks is not None else {}),
    }


def read_head(path: str | os.PathLike, expected: dict) -> dict[str, torch.Tensor]:
    """A probe's head weights, refused with the reason when it was made for another split or backbone."""
    path = Path(path)
    if not path.is_file():
        raise DroptuneError(f"head file not found: {path} (make one with `droptune probe`)")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        state = load_file(str(path))
    except Exception as error:  # noqa: BLE001 - any decoding failure is the file's fault
        raise DroptuneError(f"cannot read head file {path}: {error}") from None
    if metadata.get("linear_blocks") != expected.get("linear_blocks"):  # unset (None) where either lacks it
        raise DroptuneError(f"head file {path} was probed with linear_blocks {metadata.get('linear_blocks')}, this "
                            f"run has {expected.get('linear_blocks')}; probe again with the run's settings")
    for key in expected:
        if key not in metadata:
            raise DroptuneError(f"head file {path} lacks droptune's probe metadata ({key}): "
                                "make it with `droptune probe`")
        if metadata[key] != expected[key]:
            raise DroptuneError(f"head file {path} was probed with {key} {metadata[key]!r}, this run has "
                                f"{expected[key]!r}; probe again with the run's settings")
    return state


def probe_key(config: TrainConfig, dataset: MultiDomainDataset) -> str:
    """What an on-the-fly probe is a function of, hashed: equal keys, equal head starts."""
    settings = {**probe_metadata(config, dataset), **{k: getattr(config, k) for k in PROBE_SETTINGS},
                "steps": PROBE_STEPS, "lr": PROBE_LR, "weight_decay": PROBE_WEIGHT_DECAY, "seed": PROBE_SEED}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@torch.inference_mode()
def _features(model: DropoutClassifier, images: DomainImages, keys: list, config: TrainConfig,
              device: torch.device, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    size = eval_batch_size(config, device)
    batches = [keys[i:i + size] for i in range(0, len(keys), size)]
    features, labels = [], []
    for x, y in make_loader(images, batches, workers, pin_memory=device.type == "cuda"):
        x = x.to(device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, config.amp):
            features.append(model.features(x).float())
        labels.append(y.to(device))
    return torch.cat(features), torch.cat(labels)


def linear_probe(config: TrainConfig, device: torch.device, workers: int, steps: int = PROBE_STEPS,
                 lr: float = PROBE_LR, model: DropoutClassifier | None = None,
                 protocol: LeaveOneDomainOut | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Train the head (with the config's dropout) on frozen, un-augmented features of the training domains' 80%.

    Adam on mini-batches of cached features, as DiWA's DomainBed does; the test domain is never read.
    `model` (pre-trained, on `device`) has its head trained in place; by default one is built.
    Returns the head's state and the probe's metadata, with its i.i.d. accuracy.
    """
    if protocol is None:
        protocol = LeaveOneDomainOut.from_config(config, run_dataset(config))
    dataset = protocol.dataset
    if model is None:
        model = place(initial_model(config, len(dataset.classes)), device, config.channels_last)
    model.eval()
    images = DomainImages(dataset, config.image_size)
    train_x, train_y = _features(model, images, [(d, int(i), None) for d, indices in protocol.train_parts()
                                                 for i in indices], config, device, workers)
    held_out = [_features(model, images, [(d, int(i), None) for i in protocol.splits[d].holdout], config, device,
                          workers) for d in protocol.train_domains]

    head = model.head.train()
    optimizer = torch.optim.Adam(head.fc.parameters(), lr=lr, weight_decay=PROBE_WEIGHT_DECAY)
    generator = torch.Generator(device=device).manual_seed(stable_seed("probe", config.seed))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(stable_seed("probe-dropout", config.seed))
        for _ in range(steps):
            batch = torch.randint(len(train_y), (min(PROBE_BATCH, len(train_y)),), device=device, generator=generator)
            loss = F.cross_entropy(head(train_x[batch]), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    head.eval()
    with torch.no_grad():
        train_acc = (head(train_x).argmax(1) == train_y).float().mean().item()
        iid = float(np.mean([(head(x).argmax(1) == y).float().mean().item() for x, y in held_out]))
    metadata = {**probe_metadata(config, dataset), "image_size": config.image_size, "dropout": config.dropout,
                "steps": steps, "lr": lr, "train_acc": train_acc, "iid": iid}
    return {k: v.detach().cpu() for k, v in head.state_dict().items()}, metadata
