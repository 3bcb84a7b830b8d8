"""Score a loaded model on every image of a dataset's domains: what robustness tools report."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from droptune.data.domains import MultiDomainDataset
from droptune.data.loaders import DomainImages, make_loader
from droptune.errors import DroptuneError
from droptune.inference.loading import LoadedModel
from droptune.console import bar

ECE_BINS = 15


def class_map(model_classes: Sequence[str], data_classes: Sequence[str]) -> list[int]:
    """The model's class index of each dataset class, matched by name."""
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        raise DroptuneError(f"classes of the dataset unknown to the model: {', '.join(unknown)} "
                            f"(the model knows {', '.join(model_classes)})")
    return [list(model_classes).index(c) for c in data_classes]


def calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |accuracy - confidence| averaged over equal-width confidence bins."""
    confidence, predicted = probs.max(1)
    hits = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.float().mean().item() * abs(hits[inside].mean().item() - confidence[inside].mean().item())
    return ece


def domain_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict:
    probs = logits.softmax(1)
    predicted = logits.argmax(1)
    k = len(classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = {c: (confusion[i, i] / confusion[i].sum()).item() for i, c in enumerate(classes)
                 if confusion[i].sum() > 0}
    return {
        "images": len(labels),
        "accuracy": (predicted == labels).float().mean().item(),
        "per_class_accuracy": per_class,
        "nll": F.cross_entropy(logits, labels).item(),
        "ece": calibration_error(probs, labels),
        "confusion": {"classes": list(classes), "matrix": confusion.tolist()},
    }


@torch.inference_mode()
def score(loaded: LoadedModel, dataset: MultiDomainDataset, domains: str | Sequence[str] | None = None,
          batch_size: int = 64, workers: int = 0, progress: bool | None = None) -> dict:
    """Per-domain accuracy, per-class accuracy, confusion matrix, NLL and ECE of `loaded` on `dataset` (e.g.
    `droptune.data.registry.open_dataset(name, data_dir, same_classes=False)`), for `domains` (default: all)."""
    if batch_size < 1:
        raise DroptuneError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(domains, str):
        domains = [domains]
    mapping = torch.tensor(class_map(loaded.classes, dataset.classes))
    device = next(loaded.model.parameters()).device
    images = DomainImages(dataset, loaded.config.image_size)  # read and transformed as the run evaluated
    report = {}
    for name in domains or dataset.domains:
        domain = dataset.domain_index(name, "domain")
        keys = [(domain, index, None) for index in range(len(dataset.labels(domain)))]  # no seed: evaluation's
        batches = make_loader(images, [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)], workers)
        all_logits, all_labels = [], []
        for x, y in bar(progress, iterable=batches, unit="batch", desc=dataset.domains[domain]):
            all_logits.append(loaded.model(x.to(device)).float().cpu())
            all_labels.append(mapping[y])
        report[dataset.domains[domain]] = domain_metrics(torch.cat(all_logits), torch.cat(all_labels),
                                                         loaded.classes)
    return report


def metrics_table(report: dict) -> str:
    rows = ["| domain | images | accuracy (%) | NLL | ECE (%) |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {d} | {m['images']} | {100 * m['accuracy']:.1f} | {m['nll']:.3f} | {100 * m['ece']:.1f} |"
             for d, m in report.items()]
    return "\n".join(rows)
