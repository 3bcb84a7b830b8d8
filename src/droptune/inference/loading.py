"""Load a trained model back for use: a run's selected weights, a soup of runs, or an exported folder; with its
class names, its evaluation transform and what it is (data, selection, scores, cost)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from droptune.data.images import read_rgb
from droptune.errors import DroptuneError
from droptune.inference import hub_layout
from droptune.models.loading import read_state_dict
from droptune.runs.folder import RunDir
from droptune.runs.results import CombinationResults
from droptune.training.config import TrainConfig, coerce
from droptune.training.device import resolve_device
from droptune.training.protocol import LeaveOneDomainOut

log = logging.getLogger(__name__)

VARIANTS = ("best", "swa", "ema", "swad")
# What a model is, as export writes it into config.json and the model card.
ABOUT_FIELDS = ("dataset", "test_domain", "train_domains", "selection", "step", "iid", "ood", "acc", "cost",
                "wall_time_s", "collapsed", "majority_rate")


@dataclass
class LoadedModel:
    """What `load_model` returns: the model and what using it needs (its classes, how it reads images)."""

    model: nn.Module
    classes: list[str]
    transform: object  # PIL image → uint8 CHW tensor, as the run evaluated
    config: TrainConfig  # the run's (a soup's: its first member's)
    results: dict  # the folder's results.json ({} for an exported folder)
    about: dict  # source (run or soup), name, variant or method, and ABOUT_FIELDS

    def read(self, path: str | os.PathLike) -> torch.Tensor:
        """An image file as the run's evaluation read it: the same decoder (16-bit grayscale scaled, a JPEG decoded
        at reduced scale) and transform; an image that cannot be read faithfully raises UnreadableImage."""
        return self.transform(read_rgb(path, self.config.image_size))


def load_model(path: str | os.PathLike, variant: str = "best", device: str = "cpu") -> LoadedModel:
    """The model of a finished run, a soup folder of `droptune combine` or a `droptune export` folder, in eval
    mode; no download (the backbone is built without pre-trained weights, then loaded strictly)."""
    if variant not in VARIANTS:
        raise DroptuneError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    folder = Path(path)
    if not folder.is_dir():
        raise DroptuneError(f"{folder} is a file: expected a run folder, a soup folder or an exported model folder"
                            if folder.exists() else f"model folder not found: {folder}")
    target = resolve_device(device)
    run = RunDir(folder)
    if run.config.is_file():
        loaded = _load_run(run, variant)
    else:
        exported = hub_layout.is_export(folder)
        if not (exported or run.soup.is_file() or run.results.is_file()):
            raise DroptuneError(f"{folder} is not a droptune run folder, soup folder or exported model "
                                f"(no config.yaml, {run.soup.name} or {hub_layout.CONFIG})")
        if variant != "best":
            raise DroptuneError(f"variant {variant!r} is one of a run's models; {folder} is "
                                f"{'an exported model' if exported else 'a combination of runs'}")
        loaded = _load_export(folder) if exported else _load_soup(folder)
    loaded.model.to(target)
    return loaded


def _load_run(run: RunDir, variant: str) -> LoadedModel:
    config = TrainConfig.load(run.config)
    weights = run.best if variant == "best" else run.baseline(variant)
    if not weights.is_file():
        what = "no selected model" if variant == "best" else f"no {variant} model"
        raise DroptuneError(f"run {run.path} has {what}: {weights.name} is missing")
    done = run.read_results()
    results = dataclasses.asdict(done) if done is not None else {}
    chosen = results if variant == "best" else (results.get("variants") or {}).get(variant) or {}
    about = {"source": "run", "name": run.path.name, "variant": variant,
             **{k: results.get(k) for k in ABOUT_FIELDS}, **{k: chosen.get(k) for k in ABOUT_FIELDS if k in chosen}}
    if done is None or done.status != "completed":
        with safe_open(str(weights), "pt") as f:
            step = json.loads((f.metadata() or {}).get("step", "null"))
        about["step"] = step
        log.warning("%s has not finished (%s): its %s%s", run.path,
                    "no results.json" if done is None else f"status {done.status}", weights.name,
                    f" as of step {step}" if step is not None else "")
    if done is None:  # the split and class names results.json would record, from the run's dataset
        dataset = _recorded_dataset(config, run.path, "has not finished (results.json records its split and classes)")
        about.update(LeaveOneDomainOut.from_config(config, dataset).describe())
        classes = list(dataset.classes)
    else:
        classes = _classes(results, config, run.path)
    return _build(config, classes, read_state_dict(weights), str(weights), results, about)


def _load_soup(folder: Path) -> LoadedModel:
    done = RunDir(folder).read_results(CombinationResults)
    results = dataclasses.asdict(done) if done is not None else {}
    weights = RunDir(folder).soup
    if not weights.is_file():
        raise DroptuneError(f"{folder} has no {weights.name}: its {results.get('method', 'combination')} of runs "
                            "is not one model; load a soup (uniform_soup, greedy_soup) or one of its runs")
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata() or {}
    if "config" not in metadata:
        raise DroptuneError(f"{weights} does not record its runs' config (written by an older droptune): "
                            "run `droptune combine` again")
    config = TrainConfig(**coerce(json.loads(metadata["config"]), str(weights)))
    about = {"source": "soup", "name": results.get("run", folder.name), "method": results.get("method"),
             "members": results.get("members"), **{k: results.get(k) for k in ABOUT_FIELDS}}
    return _build(config, _classes(results, config, folder), read_state_dict(weights), str(weights), results, about)


def _load_export(folder: Path) -> LoadedModel:
    exported = hub_layout.read_config(folder)
    about = exported["droptune"]
    config = TrainConfig(**coerce(about["training_config"], str(folder / hub_layout.CONFIG)))
    weights = folder / hub_layout.WEIGHTS
    state = hub_layout.from_timm(read_state_dict(weights), exported["pretrained_cfg"]["classifier"])
    return _build(config, list(exported["label_names"]), state, str(weights), {},
                  {k: v for k, v in about.items() if k != "training_config"})


def _classes(results: dict, config: TrainConfig, folder: Path) -> list[str]:
    """The class names results.json records; those of the dataset for folders written before it did."""
    if results.get("classes"):
        return list(results["classes"])
    return list(_recorded_dataset(config, folder, "does not record its class names (written by an older "
                                                  "droptune)").classes)


def _recorded_dataset(config: TrainConfig, folder: Path, lacks: str):
    """The dataset a run trained on, opened to read what its folder `lacks`."""
    from droptune.data.registry import open_dataset

    try:
        return open_dataset(config.dataset, config.data_dir)
    except DroptuneError as error:
        raise DroptuneError(f"{folder} {lacks} and its dataset cannot be opened to read them: {error}") from None


def _build(config: TrainConfig, classes: list[str], state: dict[str, torch.Tensor], source: str, results: dict,
           about: dict) -> LoadedModel:
    from droptune.data.transforms import eval_transform
    from droptune.training.run_inputs import trained_model

    if config.linearized:  # its first-order model is also a function of the pre-trained weights, not of one file
        raise DroptuneError(f"{source} holds a linearized run's weights; load_model reads ordinary runs only")
    model = trained_model(config, len(classes), state, source).eval()
    return LoadedModel(model, classes, eval_transform(config.image_size), config, results, about)
