"""Combinations and analyses rebuild a run from its folder: its evaluation images and its model must be those that
training had, or their scores are not the run's."""

from __future__ import annotations

import torch

from conftest import make_image_folder
from droptune.analysis.subject import Subject
from droptune.combining.runs import Split, read_run
from droptune.models.loading import load_strict, read_state_dict
from droptune.training.config import TrainConfig
from droptune.training.trainer import Trainer, train

CPU = torch.device("cpu")


def trained(tmp_path, **changes) -> TrainConfig:
    settings = dict(dataset=str(make_image_folder(tmp_path / "toy", size=20)), test_domain="c", backbone="resnet10t",
                    weights="none", image_size=16, batch_size=3, steps=2, eval_every=2, lr=0.05, dropout=0.5,
                    workers=0, progress=False, output_dir=str(tmp_path / "run"))
    config = TrainConfig(**{**settings, **changes})
    train(config)
    return config


def losses_as_trained(config: TrainConfig) -> dict:
    """Held-out losses of the run's selected weights, scored by a trainer rebuilt from the config."""
    trainer = Trainer(config)
    load_strict(trainer.model, read_state_dict(config.run_dir() / "best.safetensors"), "best.safetensors")
    return trainer.bench.evaluate(trainer.model.eval()).loss


def test_a_cached_run_is_combined_on_the_images_it_was_scored_on(tmp_path):
    """Mutant: combinations open the dataset without the run's cache. With augmented held-out images the cache
    crops the image already resized to 16 px, the files the 20-px original: other images, other scores."""
    config = trained(tmp_path, cache_dir=str(tmp_path / "cache"), clean_holdout=False)
    run = read_run(config.run_dir())
    split = Split(run.config, CPU, 0)
    assert split.bench(run).evaluate(split.model(run)).loss == losses_as_trained(config)


def test_a_run_from_random_weights_is_rebuilt_at_its_start(tmp_path):
    """Mutant: the initial model is built without the run's seed. A linearized model is a function of its start,
    so a combination or an analysis of a run from random weights must draw the same start."""
    config = trained(tmp_path, linearized=True)
    run = read_run(config.run_dir())
    split = Split(run.config, CPU, 0)
    assert split.bench(run).evaluate(split.model(run)).loss == losses_as_trained(config)
    origin = Trainer(config).model.origin  # the backbone's weights before the first step
    for start in (Subject(run, CPU).pretrained() for _ in range(2)):
        assert all(torch.equal(tensor, origin[name]) for name, tensor in start.backbone.named_parameters())


def test_a_registered_dataset_that_moved_is_read_where_the_caller_says(tmp_path):
    """Mutant: `--data-dir` of combine/analyze ignored, or the run's own data_dir dropped when none is given."""
    make_image_folder(tmp_path / "old" / "OfficeCaltech10", domains=("amazon", "caltech", "dslr", "webcam"))
    config = trained(tmp_path, dataset="OfficeCaltech10", data_dir=str(tmp_path / "old"), test_domain="dslr")
    run = read_run(config.run_dir())
    split = Split(run.config, CPU, 0)
    where_trained = split.bench(run).evaluate(split.model(run)).loss
    (tmp_path / "old").rename(tmp_path / "new")
    split = Split(run.config, CPU, 0, str(tmp_path / "new"))
    assert split.bench(run).evaluate(split.model(run)).loss == where_trained
