import argparse
import dataclasses

import pytest
import yaml

from droptune.cli.config_flags import add_config_flags, config_from_args, resumed_config
from droptune.errors import DroptuneError
from droptune.training.config import TrainConfig


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return parser.parse_args(argv)


def test_defaults_are_the_papers_recipe():
    c = TrainConfig()
    assert (c.lr, c.momentum, c.weight_decay, c.steps, c.batch_size) == (1e-3, 0.9, 1e-4, 10_000, 32)
    assert c.milestones == [5000] and c.lr_gamma == 0.1
    assert (c.dropout, c.freeze_bn, c.eval_every, c.image_size, c.holdout_fraction) == (0.9, True, 300, 224, 0.2)
    assert c.selection == "training_domain" and c.head_lr_mult == 1.0
    assert TrainConfig(steps=300).milestones == [150]


def test_layers_defaults_then_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"lr": 5e-4, "steps": 400, "dropout": 0}))
    config = config_from_args(parse(["--config", str(path), "--steps", "200", "--no-freeze-bn",
                                     "--lr-milestones", "50", "150"]))
    assert config.lr == 5e-4 and config.steps == 200 and config.dropout == 0.0
    assert config.freeze_bn is False and config.milestones == [50, 150]
    preset = config_from_args(parse(["--steps", "20"]), base={"image_size": 32, "steps": 300})
    assert preset.image_size == 32 and preset.steps == 20


def test_yaml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lrr: 0.1\n")
    with pytest.raises(DroptuneError, match=f"unknown config field 'lrr' in {path}"):
        TrainConfig.load(path)
    path.write_text("steps: many\n")
    with pytest.raises(DroptuneError, match=f"config field 'steps' in {path} must be int, got 'many'"):
        TrainConfig.load(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(DroptuneError, match="must hold a mapping"):
        TrainConfig.load(path)
    with pytest.raises(DroptuneError, match="config file not found"):
        TrainConfig.load(tmp_path / "absent.yaml")


@pytest.mark.parametrize("field,value,message", [
    ("lr", 0.0, "invalid lr = 0.0: expected a positive number"),
    ("steps", 0, "invalid steps"),
    ("amp", "fp8", "invalid amp = 'fp8': expected one of none, bf16, fp16"),
    ("selection", "test", "invalid selection"),
    ("lr_milestones", [50], "invalid lr_milestones"),
])
def test_invalid_values_are_one_line_errors(field, value, message):
    with pytest.raises(DroptuneError, match=message):
        TrainConfig(**{"steps": 20, field: value})


def test_save_load_round_trip_and_identity(tmp_path):
    config = TrainConfig(dataset="PACS", lr=5e-4, lr_milestones=[10], steps=20)
    config.save(tmp_path / "config.yaml")
    loaded = TrainConfig.load(tmp_path / "config.yaml")
    assert loaded == config
    assert loaded.identity() == config.identity()
    assert config.replace(device="cpu", workers=3).identity() == config.identity()
    assert config.replace(seed=1).identity() != config.identity()


def test_a_config_built_in_python_is_the_config_its_file_reads_back(tmp_path):
    """dropout=0 is 0.0 and test_domain=1 is "1": else the run's identity (its folder, its job id) differs from
    its config.yaml's, and the run cannot be resumed from its own folder."""
    built = TrainConfig(dropout=0, test_domain=1, lr=1, steps=20, output_dir=tmp_path / "run")
    built.save(tmp_path / "config.yaml")
    assert (built.dropout, built.test_domain, built.lr) == (0.0, "1", 1.0) and isinstance(built.dropout, float)
    assert built.output_dir == str(tmp_path / "run"), "a Path is a path (and config.yaml can hold it)"
    assert TrainConfig.load(tmp_path / "config.yaml").identity() == built.identity()


@pytest.mark.parametrize("field, value", [("augment", "no"), ("freeze_bn", "false"), ("steps", 10.5),
                                          ("dropout", None), ("lr_milestones", 5), ("lr_milestones", [True])])
def test_ill_typed_values_from_python_are_one_line_errors(field, value):
    """Not a TypeError from a comparison, nor a truthy string taken for True."""
    with pytest.raises(DroptuneError, match=f"config field '{field}' in TrainConfig must be") as refused:
        TrainConfig(**{field: value})
    if field == "augment":
        assert "must be bool or None (null in YAML), got 'no'" in str(refused.value), "Python's word, then YAML's"


def test_a_list_field_is_checked_element_by_element_against_its_annotation(monkeypatch):
    """Mutant (contributor audit A10): every list field read as a list of int, and its error saying so, whatever its
    annotation: a `list[float]` field refused 0.5, its --flag parsed as int."""
    import argparse
    from typing import Optional

    from droptune.cli.config_flags import add_config_flags
    from droptune.training import config as config_module

    types = {**config_module.field_types(), "lr_milestones": Optional[list[float]]}
    monkeypatch.setattr(config_module, "field_types", lambda: types)
    assert config_module.coerce_value("lr_milestones", [1, 0.5, "1e-3"], "f.yaml") == [1.0, 0.5, 0.001]
    with pytest.raises(DroptuneError, match=r"'lr_milestones' in f.yaml must be a list of float or None .*, got "
                                            r"\[0.5, 'x'\]"):
        config_module.coerce_value("lr_milestones", [0.5, "x"], "f.yaml")
    monkeypatch.setattr("droptune.cli.config_flags.field_types", lambda: types)
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    assert parser.parse_args(["--lr-milestones", "0.5", "2"]).lr_milestones == [0.5, 2.0]
    monkeypatch.undo()
    with pytest.raises(DroptuneError, match=r"must be a list of int or None \(null in YAML\), got \[1.5\]"):
        TrainConfig(lr_milestones=[1.5])


# config.yaml of run 64dc106f677c of the pacs-long-cpu evidence sweep, written by droptune 1db655b: before the
# `linearized`, `device_augment` and `tensorboard` fields existed. Its folder name is its identity.
OLDER_RUN = """dataset: PACS
data_dir: /work/shared/data
test_domain: cartoon
backbone: efficientnet_lite0
weights: default
dropout: 0.5
freeze_bn: true
lr: 0.001
head_lr_mult: 1.0
weight_decay: 0.0001
momentum: 0.9
steps: 1600
lr_milestones: null
lr_gamma: 0.1
batch_size: 32
image_size: 112
augment: null
clean_holdout: true
holdout_fraction: 0.2
eval_every: 200
eval_batch_size: null
selection: training_domain
seed: 1
trial_seed: 0
head_seed: null
head_init: probe
ensemble_start: null
ensemble_outputs: probs
average_start: null
ema_decay: null
swad: false
bn_steps: 100
output_dir: /work/sweeps/pacs-long-cpu/runs/64dc106f677c
device: auto
amp: none
channels_last: true
compile: false
workers: null
cache_dir: sweeps/.image-cache
progress: false
"""


def test_fields_added_later_keep_older_runs_identities(tmp_path):
    """A field added after run folders existed must leave their identity (job id, resume guard) as it was."""
    path = tmp_path / "config.yaml"
    path.write_text(OLDER_RUN)
    older = TrainConfig.load(path)
    assert older.identity() == "64dc106f677c"
    assert older.replace(linearized=True).identity() != "64dc106f677c"


def test_resume_allows_only_runtime_changes(tmp_path):
    TrainConfig(steps=20).save(tmp_path / "config.yaml")
    with pytest.raises(DroptuneError, match="cannot resume .*: it holds no checkpoint \\(last.pt\\)"):
        resumed_config(tmp_path, parse([]))
    (tmp_path / "last.pt").write_bytes(b"")
    config = resumed_config(tmp_path, parse(["--workers", "2"]))
    assert config.workers == 2 and config.output_dir == str(tmp_path)
    with pytest.raises(DroptuneError, match="cannot change lr when resuming"):
        resumed_config(tmp_path, parse(["--lr", "0.5"]))
    with pytest.raises(DroptuneError, match="no config.yaml"):
        resumed_config(tmp_path / "nothing", parse([]))


def test_yaml_exponent_floats_and_portable_identity(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5e-5\n")
    config = TrainConfig.load(path)
    assert config.lr == 1e-3 and config.weight_decay == 5e-5
    path.write_text("lr: fast\n")
    with pytest.raises(DroptuneError, match="config field 'lr' .* must be float, got 'fast'"):
        TrainConfig.load(path)
    assert config.replace(data_dir="/elsewhere").identity() == config.identity()



def test_unquoted_yaml_off_and_on_set_device_augment(tmp_path):
    """Catches `coerce_value` rejecting `device_augment: off` in a config file: YAML 1.1 reads unquoted off/on
    as false/true, which a str field refused ("must be str, got False")."""
    path = tmp_path / "c.yaml"
    for text, expected in (("off", "off"), ("on", "on"), ("'off'", "off"), ("auto", "auto")):
        path.write_text(f"device_augment: {text}\n")
        assert TrainConfig.load(path).device_augment == expected, text
    path.write_text("device_augment: 1\n")
    with pytest.raises(DroptuneError, match="invalid device_augment = '1': expected one of auto, on, off"):
        TrainConfig.load(path)

def test_every_field_has_flag_help():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    helps = {action.dest: action.help for action in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        explained = "(default:" in f.metadata["help"]  # a help that says its default is not given a second one
        assert f.metadata["help"] and (helps[f.name] == f.metadata["help"] if explained else
                                       helps[f.name].startswith(f.metadata["help"] + " (default: ")), f.name
