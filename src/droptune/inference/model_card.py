"""The model card (README.md) of an exported model: what it is, how it was trained, how well, at what cost,
what it is for and where it is not to be trusted; with the Hugging Face Hub's metadata header."""

from __future__ import annotations

from pathlib import Path

from droptune.runs.results import collapse_explanation
from droptune.training.selection import SELECTIONS

PAPER = ("Jianyu Zhang and Léon Bottou, \"Fine-tuning with Very Large Dropout\", "
         "[arXiv:2403.00946](https://arxiv.org/abs/2403.00946)")
BIBTEX = """@article{zhang2024finetuning,
  title={Fine-tuning with Very Large Dropout},
  author={Zhang, Jianyu and Bottou, L{\\'e}on},
  journal={arXiv preprint arXiv:2403.00946},
  year={2024}
}"""


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _origin(d: dict) -> str:
    if d.get("source") == "soup":
        members = d.get("members") or []
        return f"the {d.get('method')} of {len(members)} fine-tuning runs ({', '.join(members)})"
    variant = d.get("variant", "best")
    chosen = "its selected checkpoint" if variant == "best" else f"its along-run {variant.upper()} average"
    return f"run `{d.get('name')}`, {chosen}"


def _rates(d: dict) -> str:
    """The dropout rate, or a soup's members' rates when they differ (its config is its first member's)."""
    rates = d.get("member_dropouts") or [d["dropout"]]
    return f"dropout {rates[0]:g}" if len(rates) == 1 else f"dropout rates {' and '.join(f'{r:g}' for r in rates)}"


def _method(d: dict) -> str:
    if d.get("member_dropouts") or d["dropout"] < 0.8:  # the paper's "very large": 0.9 and above
        return f"fine-tuned with {_rates(d)} on its penultimate features (the method of {PAPER} uses 0.9)"
    return f"fine-tuned with **very large dropout** (rate {d['dropout']:g}) on its penultimate features, following {PAPER}"


def _start(training: dict) -> str:
    """Where the training began: random weights make another model than a fine-tuned one, whatever its accuracy."""
    weights = training.get("weights")
    if weights == "none":
        return " It was trained from random weights (`weights: none`), not from pre-trained ones."
    if weights in (None, "default"):
        return " It started from the backbone's default pre-trained weights."
    return f" It started from the pre-trained weights `{Path(weights).name}`."


def _accuracy_table(d: dict) -> str:
    rows = [f"i.i.d. accuracy (the training domains' held-out 20%): **{_percent(d.get('iid'))}%**; o.o.d. accuracy "
            f"(the unseen domain {d.get('test_domain')}, its 80% part): **{_percent(d.get('ood'))}%**.", "",
            "| domain | role | accuracy, 80% part (%) | accuracy, 20% part (%) |", "|---|---|---:|---:|"]
    for domain, acc in (d.get("acc") or {}).items():
        role = "held out (o.o.d.)" if domain == d.get("test_domain") else "training"
        rows.append(f"| {domain} | {role} | {_percent(acc.get('in'))} | {_percent(acc.get('out'))} |")
    return "\n".join(rows)


def _wall_time(d: dict) -> str:
    seconds = d.get("wall_time_s")
    if d.get("source") != "run" or seconds is None:
        return ""
    return f" ({seconds / 60:.1f} min of training, evaluations included)"


def _checks(checks: dict) -> str:
    lines = [f"- {name}: max abs logit difference {value:.2g}" if isinstance(value, float) else f"- {name}: {value}"
             for name, value in checks.items() if name != "images"]
    return f"Checked against droptune's model on {checks.get('images')}:\n\n" + "\n".join(lines)


def _collapse_warning(d: dict) -> str:
    if not d.get("collapsed"):
        return ""
    return (f"\n\n**Warning: this run collapsed.** Its {collapse_explanation(d['iid'], d['majority_rate'])}: it has "
            "not learnt the task.")


def model_card(config: dict) -> str:
    """README.md for an exported folder, from its config.json."""
    d = config["droptune"]
    training = d["training_config"]
    cfg = config["pretrained_cfg"]
    size = d["image_size"]
    classes = config["label_names"]
    cost = d.get("cost") or {}
    selection = SELECTIONS[d["selection"]].label if d.get("selection") in SELECTIONS else d.get("selection")
    return f"""---
tags:
- image-classification
- timm
- droptune
- domain-generalization
library_name: timm
metrics:
- accuracy
---

# {config['architecture']} fine-tuned on {d.get('dataset')} with {_rates(d)} (held-out domain: \
{d.get('test_domain')})

An image classifier for {len(classes)} classes ({', '.join(classes)}): the `{d['backbone']}` backbone
(timm's `{config['architecture']}`) {_method(d)}.{_start(training)} It was trained with droptune {d['version']}
and exported from {_origin(d)}.{_collapse_warning(d)}

## How it was trained

DomainBed's leave-one-domain-out protocol on {d.get('dataset')}: trained on the domains
{', '.join(d.get('train_domains') or [])}; the domain **{d.get('test_domain')}** was never seen in training.
SGD with momentum {training.get('momentum')}, learning rate {training.get('lr'):g}, weight decay
{training.get('weight_decay'):g}, {training.get('steps')} steps of {training.get('batch_size')} images per training
domain, {size}×{size} pixels, {_rates(d)} before the linear head. The model was selected by
{selection} at step {d.get('step')}. The full training configuration is in `config.json`
(`droptune.training_config`).

## Metrics

{_accuracy_table(d)}

## Cost

Fine-tuning runs: {cost.get('trainings', 1)}{_wall_time(d)}. Forward passes per image at prediction time:
{cost.get('forward_passes', 1)}, as for any single model.

## Use

Input: RGB images resized to {size}×{size} (bilinear, no crop), scaled to [0, 1] and normalized with mean
{tuple(cfg['mean'])} and std {tuple(cfg['std'])}; `timm.data.resolve_data_config` and
`timm.data.create_transform` build this from `config.json`. (droptune's evaluation decoded a JPEG larger
than twice that size at a reduced scale first, PIL's `draft`: pixels differ by a few levels.)

```python
import timm
model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()  # or "hf-hub:OWNER/REPO"
```

With droptune (`model(x)` takes uint8 images, as `loaded.read` gives them, and normalizes them itself):

```python
import droptune
loaded = droptune.load_model("PATH/TO/THIS/FOLDER")
probabilities = loaded.model(loaded.read("image.jpg")[None]).softmax(1)
```

A `model.onnx` or `model.torchscript.pt` file, when present, takes {d['input']}.

{_checks(d.get('checks') or {})}

## Intended use and limits

Intended for classifying images of these {len(classes)} classes, and for research on robustness to
distribution shift. The o.o.d. accuracy above is measured on **one** held-out domain of {d.get('dataset')};
accuracy on any other distribution (other styles, cameras, image sizes, classes outside the list) is unknown
and can be much lower. The model always answers with one of its classes, whatever the input. Check it on data
from the intended use before relying on it. The backbone's pre-trained weights and the training data carry
their own licenses and biases.

## Citation

```bibtex
{BIBTEX}
```
"""
