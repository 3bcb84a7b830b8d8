"""Feature usage: which pre-trained features a run's head relies on, and what is left when only the top k are kept.

The paper's claim: very large dropout makes the head spread its weight over many features, where
plain fine-tuning leans on few, and a richer representation degrades more gracefully out of
distribution. A feature's contribution to the decision is Σ_c |w_cj| · std(φ_j), with the spread
measured on the i.i.d. images (the distribution the head was trained on). The effective number of
features is the participation ratio (Σ_j c_j)² / Σ_j c_j² (D when every feature contributes
equally, 1 when one does) and, as a second reading, exp(entropy) of the normalized contributions.
A feature is removed by replacing it with its i.i.d. mean, so removing all of them leaves one
constant prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from droptune.analysis.subject import Subject
from droptune.plotting import save


def k_grid(num_features: int) -> list[int]:
    """0, then powers of two up to the number of features, then all of them."""
    powers = [2 ** i for i in range(int(np.log2(num_features)) + 1)]
    return sorted({0, *powers, num_features})


def effective_numbers(contribution: torch.Tensor) -> dict[str, float]:
    share = contribution / contribution.sum()
    positive = share[share > 0]
    return {"participation_ratio": float(1.0 / (share ** 2).sum()),
            "exp_entropy": float(torch.exp(-(positive * positive.log()).sum()))}


@torch.no_grad()
def feature_usage(subject: Subject) -> dict:
    """Contributions, effective numbers of features and the top-k accuracy curve of the run's head."""
    model = subject.model()
    found = subject.outputs(model.features)
    features, labels = found.values, found.labels
    iid = subject.rows("iid")
    mean, spread = features[iid].mean(0), features[iid].std(0)
    weight, bias = model.head.fc.weight.float(), model.head.fc.bias.float()
    contribution = (weight.abs() * spread).sum(0)
    order = torch.argsort(contribution, descending=True)
    curve = []
    for k in k_grid(len(contribution)):
        keep = torch.zeros_like(contribution, dtype=torch.bool)
        keep[order[:k]] = True
        kept = torch.where(keep, features, mean)
        scores = subject.scores(kept @ weight.T + bias, labels)
        curve.append({"k": k, "iid": scores["iid"], "ood": scores["ood"]})
    full = subject.scores(model.head.fc(features), labels)
    ranked = contribution[order]
    return {**subject.describe(), "num_features": len(contribution), **effective_numbers(contribution),
            "iid": full["iid"], "ood": full["ood"], "top_k": curve,
            "contribution_sorted": [float(c) for c in ranked / ranked.sum()]}


def plot(usages: list[dict], stem: Path) -> list[Path]:
    """Accuracy against the number of top features kept (o.o.d. solid, i.i.d. dashed), and the share of the
    total contribution held by the top k, one colour per run."""
    figure = Figure(figsize=(11, 4.2))
    curves, shares = figure.subplots(1, 2)
    for i, usage in enumerate(usages):
        color = f"C{i}"
        label = f"{usage['run'][:28]} (p={usage['dropout']:g}, PR={usage['participation_ratio']:.0f})"
        ks = [max(point["k"], 0.5) for point in usage["top_k"]]
        curves.plot(ks, [100 * p["ood"] for p in usage["top_k"]], "-o", color=color, ms=3, label=label)
        curves.plot(ks, [100 * p["iid"] for p in usage["top_k"]], "--", color=color, alpha=0.6)
        cumulative = np.cumsum(usage["contribution_sorted"])
        shares.plot(np.arange(1, len(cumulative) + 1), cumulative, color=color, label=label)
    curves.set(xscale="log", xlabel="features kept (top k by contribution; 0 plotted at 0.5)",
               ylabel="accuracy (%)", title="o.o.d. (solid) and i.i.d. (dashed)")
    shares.set(xscale="log", xlabel="top k features", ylabel="share of total contribution",
               title="how concentrated the head's contributions are")
    curves.legend(fontsize=7)
    shares.legend(fontsize=7)
    return save(figure, stem)
