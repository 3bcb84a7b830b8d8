"""How linear is fine-tuning? The run's network against its first-order Taylor model around the pre-trained weights.

Three models share the run's fine-tuned head: the pre-trained backbone (θ₀), the fine-tuned
network (θ) and the first-order model φ(θ₀) + J(θ₀)(θ − θ₀) (LinearizedClassifier). If fine-tuning
stays in the linear regime, the last two agree on almost every image and the relative weight change
‖θ − θ₀‖ / ‖θ₀‖ is small in every layer. For a run trained with `linearized: true`, the roles flip:
its trained model is the first-order one, and the network at the same weights shows what the
linearization leaves out.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from droptune.analysis.subject import Subject
from droptune.errors import DroptuneError
from droptune.models.linearized import LinearizedClassifier
from droptune.models.loading import load_strict
from droptune.plotting import save


def weight_changes(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]) -> dict[str, float]:
    """‖end − start‖ / ‖start‖ per trainable backbone tensor, and over all of them ("all")."""
    names = [n for n in start if start[n].is_floating_point()]
    change = {n: float((end[n].float() - start[n].float()).norm() / start[n].float().norm().clamp_min(1e-12))
              for n in names}
    total = sum(float((end[n].float() - start[n].float()).norm() ** 2) for n in names)
    change["all"] = (total / sum(float(start[n].float().norm() ** 2) for n in names)) ** 0.5
    return change


def check(subject: Subject) -> None:
    """Refuse a run whose first-order model would not mean what it says; `analyze` checks every run before any work."""
    if not subject.config.freeze_bn:
        raise DroptuneError(f"cannot analyze the linearity of run {subject.run.name}: it trained with --no-freeze-bn, "
                            "and its first-order model needs frozen BatchNorm statistics")
    if subject.config.linear_blocks is not None:
        raise DroptuneError(f"cannot analyze the linearity of run {subject.run.name}: it trained the linear "
                            "fine-tuning model (linear_blocks), whose backbone stays at its pre-trained weights")


@torch.no_grad()
def linearity(subject: Subject) -> dict:
    check(subject)
    pretrained = subject.pretrained()
    start = {f"backbone.{n}": p.detach().cpu().clone() for n, p in pretrained.backbone.named_parameters()}
    linear = LinearizedClassifier(subject.pretrained())
    load_strict(linear, subject.weights(), str(subject.run.weights))
    linear.eval()
    network = subject.network()
    head = network.head.fc
    features = {name: subject.outputs(model.features) for name, model in
                (("pretrained", pretrained), ("network", network), ("first_order", linear))}
    labels = features["network"].labels
    logits = {name: head(found.values) for name, found in features.items()}
    result = {**subject.describe()}
    for name, values in logits.items():
        scores = subject.scores(values, labels)
        result[name] = {"iid": scores["iid"], "ood": scores["ood"]}
    agree = logits["network"].argmax(1) == logits["first_order"].argmax(1)
    moved = features["network"].values - features["pretrained"].values
    error = features["first_order"].values - features["network"].values
    for which in ("iid", "ood"):
        rows = subject.rows(which)
        result["agreement_" + which] = float(agree[rows].float().mean())
        result["feature_error_" + which] = float(error[rows].norm() / moved[rows].norm().clamp_min(1e-12))
    end = {n: p.detach().cpu() for n, p in network.state_dict().items() if n in start}
    result["relative_change"] = weight_changes(start, end)
    return result


def plot(results: list[dict], stem: Path) -> list[Path]:
    """Per run: relative weight change by layer (left); accuracy of the three models (right)."""
    figure = Figure(figsize=(11, 4.2))
    layers, bars = figure.subplots(1, 2)
    width = 0.8 / max(1, len(results))
    for i, result in enumerate(results):
        change = [(n, v) for n, v in result["relative_change"].items() if n != "all"]
        label = f"{result['run'][:28]} (p={result['dropout']:g}{', linearized' if result['linearized'] else ''})"
        for kind, plural, marker in (("weight", "weights", "."), ("bias", "biases", "x")):
            points = [(j, v) for j, (n, v) in enumerate(change) if n.endswith(kind)]
            layers.plot([j for j, _ in points], [v for _, v in points], marker, color=f"C{i}", ms=4, ls="",
                        label=f"{label}: {plural}" + (f" (all: {result['relative_change']['all']:.4f})"
                                                      if kind == "weight" else ""))
        for j, name in enumerate(("pretrained", "first_order", "network")):
            for k, which in enumerate(("iid", "ood")):
                x = 3 * k + j + i * width
                bars.bar(x, 100 * result[name][which], width, color=f"C{i}", alpha=0.45 + 0.25 * j,
                         label=label if j == 0 and k == 0 else None)
    layers.set(yscale="log", xlabel="parameter tensor (input → output; BatchNorm's affine ones included)", ylabel="‖θ − θ₀‖ / ‖θ₀‖",
               title="relative change of each weight tensor")
    layers.legend(fontsize=7)
    bars.set_xticks([3 * k + j + 0.4 - width / 2 for k in range(2) for j in range(3)],
                    [f"{n}\n{w}" for w in ("i.i.d.", "o.o.d.") for n in ("θ₀", "1st order", "network")], fontsize=8)
    bars.set(ylabel="accuracy (%)", title="pre-trained backbone, first-order model, network (run's head)")
    bars.legend(fontsize=7)
    return save(figure, stem)
