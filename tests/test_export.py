"""`droptune export` end to end on a short RotatedDigits run of EfficientNet-Lite0 (offline ImageNet weights):
the folder loads back with identical logits, loads into timm as tf_efficientnet_lite0 with the same logits, and
its TorchScript and ONNX files give droptune's logits on real images."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import droptune
from droptune.cli.main import main
from droptune.data.registry import open_dataset
from droptune.data.transforms import eval_transform
from droptune.errors import DroptuneError
from droptune.inference.export import TOLERANCE, export
from droptune.inference.model_card import model_card
from droptune.training.config import TrainConfig
from droptune.training.trainer import train

LAYOUT = {"README.md", "config.json", "model.safetensors"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "run"
    train(TrainConfig(dataset="RotatedDigits", test_domain="30", backbone="efficientnet_lite0", image_size=32,
                      batch_size=4, steps=2, eval_every=2, lr=3e-3, dropout=0.9, workers=0, progress=False,
                      output_dir=str(folder)))
    return folder


@pytest.fixture(scope="module")
def images():
    """Real held-out images (the 30° domain), as the run's evaluation transform gives them."""
    dataset = open_dataset("RotatedDigits")
    domain = dataset.domain_index("30")
    return torch.stack([eval_transform(32)(dataset.read(domain, i)) for i in range(0, 300, 30)])


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported") / "lite0-digits"
    assert main(["export", str(run), "--output", str(folder)]) == 0
    return folder


def test_export_writes_the_hub_layout_and_loads_back_identically(run, exported, images):
    assert {p.name for p in exported.iterdir()} == LAYOUT
    assert len({p.stat().st_mode for p in exported.iterdir()}) == 1  # the weights as readable as the card
    config = json.loads((exported / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0" and config["num_classes"] == 10
    assert config["label_names"] == [str(d) for d in range(10)]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5] and config["pretrained_cfg"]["classifier"] == "classifier"
    about = config["droptune"]
    results = json.loads((run / "results.json").read_text())
    assert (about["dataset"], about["test_domain"], about["dropout"]) == ("RotatedDigits", "30", 0.9)
    assert (about["selection"], about["iid"], about["ood"]) == ("training_domain", results["iid"], results["ood"])
    assert (about["collapsed"], about["majority_rate"]) == (results["collapsed"], results["majority_rate"])
    assert about["checks"]["images"] == "8 images of RotatedDigits/30" and about["checks"]["timm"] < TOLERANCE
    card = (exported / "README.md").read_text()
    assert card.startswith("---\ntags:\n") and "library_name: timm" in card
    for needed in ("arXiv:2403.00946", f"**{100 * results['ood']:.1f}%**", "## Cost", "## Intended use and limits",
                   "held out (o.o.d.)"):
        assert needed in card

    original, reloaded = droptune.load_model(run), droptune.load_model(exported)
    assert reloaded.classes == original.classes and reloaded.config.image_size == 32
    assert torch.equal(reloaded.model(images), original.model(images))
    assert reloaded.about["iid"] == results["iid"] and reloaded.results == {}


def test_the_card_of_a_collapsed_run_says_so(exported):
    """Mutant: a collapsed run exported with a card that reports its accuracy and no word of the collapse."""
    config = json.loads((exported / "config.json").read_text())
    for collapsed in (True, False):
        about = {**config["droptune"], "collapsed": collapsed, "iid": 0.1, "majority_rate": 0.6}
        card = model_card({**config, "droptune": about})
        assert ("**Warning: this run collapsed.** Its i.i.d. accuracy (10.0%) is no better than always predicting "
                "the majority class (60.0%)" in card) == collapsed


def test_the_card_says_where_training_started(exported):
    """Mutant: the card of a run from random weights called it a fine-tuned backbone, no word of its start."""
    config = json.loads((exported / "config.json").read_text())
    starts = {"none": "It was trained from random weights (`weights: none`), not from pre-trained ones.",
              "default": "It started from the backbone's default pre-trained weights.",
              "/home/me/weights/lite0.pth": "It started from the pre-trained weights `lite0.pth`."}
    for weights, sentence in starts.items():
        about = {**config["droptune"]}
        about["training_config"] = {**about["training_config"], "weights": weights}
        card = model_card({**config, "droptune": about})
        assert sentence in card and "/home/me" not in card, weights


def test_timm_loads_the_exported_weights_with_the_same_logits(run, exported, images):
    import timm

    loaded = droptune.load_model(run)
    expected = loaded.model(images)
    x = loaded.model.normalize(images)
    # README's overlay form: the export's pretrained_cfg carries num_classes (else timm takes the file for
    # ImageNet's 1000 classes and drops its head) and droptune's preprocessing (else timm's own)
    cfg = json.loads((exported / "config.json").read_text())
    overlay = timm.create_model(cfg["architecture"], pretrained=True, num_classes=cfg["num_classes"],
                                pretrained_cfg_overlay=dict(file=str(exported / "model.safetensors"),
                                                            **cfg["pretrained_cfg"])).eval()
    assert (overlay(x) - expected).abs().max() < 1e-4
    from_folder = timm.create_model(f"local-dir:{exported}", pretrained=True).eval()
    assert torch.equal(from_folder(x), overlay(x))
    image = open_dataset("RotatedDigits").read(0, 0)
    for model in (from_folder, overlay):
        timm_transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
        assert torch.allclose(timm_transform(image), loaded.model.normalize(loaded.transform(image)[None])[0],
                              atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_torchscript_and_onnx_files_give_the_model_logits(run, images, tmp_path, fmt, capsys):
    output = tmp_path / fmt
    assert main(["export", str(run), "--output", str(output), "--format", fmt]) == 0
    assert f"{fmt}: max abs logit difference" in capsys.readouterr().out
    config = json.loads((output / "config.json").read_text())
    assert config["droptune"]["checks"][fmt] < TOLERANCE
    expected = droptune.load_model(run).model(images)
    if fmt == "torchscript":
        got = torch.jit.load(str(output / "model.torchscript.pt"))(images)
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(output / "model.onnx"), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    assert (got - expected).abs().max() < TOLERANCE


def test_push_to_hub_uploads_the_folder_as_is(run, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo, **kw: calls.append(("create", repo)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: calls.append(("upload", kw["repo_id"], kw["folder_path"])))
    output = tmp_path / "hub"
    assert main(["export", str(run), "--output", str(output), "--push-to-hub", "me/lite0-digits"]) == 0
    assert calls == [("create", "me/lite0-digits"), ("upload", "me/lite0-digits", str(output))]
    assert {p.name for p in output.iterdir()} == LAYOUT
    assert "https://huggingface.co/me/lite0-digits" in capsys.readouterr().out


def test_export_bad_inputs_get_one_line(run, exported, tmp_path, monkeypatch, capsys):
    def refused(argv, message):
        assert main(["export", *argv]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"droptune: error: {message}"]

    refused([str(run), "--output", str(tmp_path / "x"), "--format", "tflite"],
            "unknown export format 'tflite': expected one of safetensors, torchscript, onnx")
    refused([str(tmp_path), "--output", str(tmp_path / "x")],
            f"{tmp_path} is not a droptune run folder, soup folder or exported model "
            "(no config.yaml, soup.safetensors or config.json)")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    refused([str(run), "--output", str(tmp_path / "busy")],
            f"output folder {tmp_path / 'busy'} is not empty and holds no earlier export: choose a new folder")
    refused([str(exported), "--output", str(tmp_path / "x"), "--variant", "swa"],
            f"variant 'swa' is one of a run's models; {exported} is an exported model")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    refused([str(run), "--output", str(tmp_path / "x"), "--push-to-hub", "me/x"],
            "--push-to-hub needs the Python package huggingface_hub: pip install huggingface_hub (or droptune[hub])")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    refused([str(run), "--output", str(tmp_path / "x"), "--format", "onnx"],
            "--format onnx needs the Python package onnxscript: pip install onnxscript (or droptune[export])")
    assert not (tmp_path / "x").exists()


def test_export_refuses_weights_timm_reads_otherwise(run, tmp_path, monkeypatch):
    """A mapping that put the weights under the wrong timm names would be caught by the logit check."""
    from droptune.inference import export as export_module

    loaded = droptune.load_model(run)
    wrong = export_module.hub_layout.to_timm

    def swapped(state, classifier):
        mapped = wrong(state, classifier)
        mapped[f"{classifier}.bias"] = mapped[f"{classifier}.bias"].flip(0)
        return mapped

    monkeypatch.setattr(export_module.hub_layout, "to_timm", swapped)
    with pytest.raises(DroptuneError, match="timm's tf_efficientnet_lite0 gives other logits than droptune's model"):
        export(loaded, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_export_refuses_a_timm_architecture_whose_classifier_droptune_s_head_cannot_fill(run, tmp_path, monkeypatch):
    """LeViT's classifier holds a BatchNorm before its linear layer: timm's strict load names the missing tensors in
    one line, not torch's traceback."""
    from droptune.inference import export as export_module

    mapped = export_module.hub_layout.to_timm
    monkeypatch.setattr(export_module.hub_layout, "to_timm",
                        lambda state, classifier: {k: v for k, v in mapped(state, classifier).items() if k != "bn2.bias"})
    with pytest.raises(DroptuneError) as refused:
        export(droptune.load_model(run), tmp_path / "refused")
    assert str(refused.value).startswith("timm's tf_efficientnet_lite0 cannot hold droptune's model (Error(s) in "
                                         'loading state_dict for EfficientNet: Missing key(s) in state_dict: "bn2.bias"')
    assert not (tmp_path / "refused").exists()


def test_exporting_a_collapsed_run_warns_on_the_terminal(run, tmp_path, capsys):
    """The card says it; the terminal said nothing (train warns, export did not)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for collapsed in (False, True):
        results = json.loads((copy / "results.json").read_text())
        (copy / "results.json").write_text(json.dumps({**results, "collapsed": collapsed, "majority_rate": 0.5}))
        assert main(["export", str(copy), "--output", str(tmp_path / f"out-{collapsed}")]) == 0
        assert ("WARNING: this model collapsed: its i.i.d. accuracy" in capsys.readouterr().out) == collapsed
