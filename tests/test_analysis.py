"""`droptune analyze` and `train --linearized` on a slice of the real PACS, checked by properties that can fail.

The linearized model equals the network at zero weight change and agrees with it to first order for
small changes; keeping no feature leaves one constant prediction and keeping all of them gives the
run's own accuracy; the ends of an interpolation line are the two models themselves.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from droptune.analysis import interpolation
from droptune.analysis.features import effective_numbers, k_grid
from droptune.analysis.interpolation import between
from droptune.analysis.subject import Subject
from droptune.combining.runs import read_run
from droptune.cli.main import main
from droptune.errors import DroptuneError
from droptune.models.linearized import LinearizedClassifier
from droptune.models.model import build_model
from droptune.training.config import TrainConfig


def small_lite0() -> LinearizedClassifier:
    torch.manual_seed(0)
    return build_model("efficientnet_lite0", 3, dropout=0.0, weights="default")


def test_linearized_model_is_exact_at_the_origin_and_first_order_nearby():
    network = small_lite0().eval()
    linear = LinearizedClassifier(small_lite0()).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        start = network.features(x)
        assert torch.equal(linear.features(x), start)
        torch.manual_seed(1)
        direction = {n: p.abs().mean() * torch.randn_like(p) for n, p in network.backbone.named_parameters()}
        errors, moves = [], []
        for eps in (1e-3, 5e-4, 2.5e-4):
            for model in (network, linear):
                for n, p in model.backbone.named_parameters():
                    p.copy_(linear.origin[n] + eps * direction[n])
            exact = network.features(x)
            errors.append(float((linear.features(x) - exact).norm()))
            moves.append(float((exact - start).norm()))
    assert all(e < 0.25 * m for e, m in zip(errors, moves))  # the first-order term carries most of the change
    assert errors[0] / errors[1] > 3 and errors[1] / errors[2] > 3  # the remainder shrinks like ε², not ε
    assert moves[0] / moves[1] == pytest.approx(2, rel=0.1)


def test_linearized_gradient_at_the_origin_is_the_network_gradient():
    network, linear = small_lite0(), LinearizedClassifier(small_lite0())
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for model in (network, linear):
        model(x).square().sum().backward()
    for (name, a), (_, b) in zip(network.named_parameters(), linear.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


def test_linearized_config_needs_frozen_batchnorm():
    with pytest.raises(DroptuneError, match="linearized"):
        TrainConfig(linearized=True, freeze_bn=False)
    with pytest.raises(DroptuneError, match="frozen BatchNorm"):
        LinearizedClassifier(build_model("resnet18", 2, weights="none", freeze_bn=False))


def test_effective_numbers_count_features_that_contribute():
    assert effective_numbers(torch.ones(64))["participation_ratio"] == pytest.approx(64)
    assert effective_numbers(torch.ones(64))["exp_entropy"] == pytest.approx(64)
    one = torch.zeros(64)
    one[5] = 3.0
    assert effective_numbers(one) == pytest.approx({"participation_ratio": 1.0, "exp_entropy": 1.0})
    assert k_grid(1280)[:3] == [0, 1, 2] and k_grid(1280)[-2:] == [1024, 1280]


def test_interpolation_between_states_keeps_integer_tensors_and_endpoints():
    a = {"w": torch.zeros(3), "n": torch.tensor(1)}
    b = {"w": torch.ones(3), "n": torch.tensor(7)}
    assert torch.equal(between(a, b, 0.0)["w"], a["w"]) and torch.equal(between(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(between(a, b, 0.25)["w"], torch.full((3,), 0.25))
    for alpha in (0.0, 0.25, 1.0):  # a counter (BatchNorm's num_batches_tracked) is taken from the end model
        n = between(a, b, alpha)["n"]
        assert n.dtype == torch.int64 and n.item() == 7
    with pytest.raises(DroptuneError, match="different tensors"):
        between(a, {"w": b["w"]}, 0.5)


@pytest.fixture(scope="module")
def runs(pacs_slice, tmp_path_factory):
    """Two short PACS runs (p = 0 and p = 0.9) from one head seed, and one linearized run."""
    root = tmp_path_factory.mktemp("analysis-runs")
    common = ["--dataset", str(pacs_slice), "--test-domain", "photo", "--backbone", "efficientnet_lite0",
              "--image-size", "32", "--batch-size", "8", "--eval-every", "4", "--workers", "0", "--no-progress",
              "--head-seed", "0", "--lr", "3e-3"]
    folders = {"p0": (["--dropout", "0", "--steps", "8"]), "p0.9": (["--dropout", "0.9", "--steps", "8"]),
               "linear": (["--dropout", "0.5", "--steps", "4", "--linearized"])}
    for name, extra in folders.items():
        assert main(["train", *common, *extra, "--output-dir", str(root / name)]) == 0
    return {name: root / name for name in folders}


def results(folder):
    return json.loads((folder / "results.json").read_text())


@pytest.mark.integration
def test_features_keep_all_gives_the_runs_accuracy_and_none_a_constant(runs, tmp_path):
    out = tmp_path / "features"
    assert main(["analyze", "features", str(runs["p0"]), str(runs["p0.9"]), "--output", str(out)]) == 0
    usages = json.loads((out / "features.json").read_text())["runs"]
    assert (out / "features.png").is_file()
    for usage, folder in zip(usages, (runs["p0"], runs["p0.9"])):
        done = results(folder)
        full = usage["top_k"][-1]
        assert full["k"] == usage["num_features"] == 1280
        assert full["iid"] == pytest.approx(done["iid"]) and full["ood"] == pytest.approx(done["ood"])
        assert usage["iid"] == pytest.approx(done["iid"])
        shares = torch.tensor(usage["contribution_sorted"], dtype=torch.float64)
        assert shares.sum() == pytest.approx(1) and (shares[:-1] >= shares[1:]).all()
        assert usage["participation_ratio"] == pytest.approx(1 / float((shares ** 2).sum()), rel=1e-4)
        positive = shares[shares > 0]
        assert usage["exp_entropy"] == pytest.approx(float(torch.exp(-(positive * positive.log()).sum())), rel=1e-4)
        assert json.loads((folder / "feature_usage.json").read_text())["run"] == folder.name
    # With no feature kept every image gets one prediction: each accuracy is one class's share of its images.
    subject = Subject(read_run(runs["p0"]), torch.device("cpu"))
    labels = subject.outputs(lambda x: x[:, :1, 0, 0]).labels
    none = usages[0]["top_k"][0]
    assert none["k"] == 0
    shares = torch.bincount(labels[subject.rows("ood")]).float() / int(subject.rows("ood").sum())
    assert min(abs(shares - none["ood"])) < 1e-6


@pytest.mark.integration
def test_linearized_run_scores_its_first_order_model(runs, tmp_path):
    out = tmp_path / "linearity"
    assert main(["analyze", "linearity", str(runs["linear"]), "--output", str(out)]) == 0
    result = json.loads((out / "linearity.json").read_text())["runs"][0]
    done = results(runs["linear"])
    assert result["linearized"] is True
    # The run trained and scored the first-order model: the analysis rebuilds it from θ₀ and the run's weights.
    assert result["first_order"]["iid"] == pytest.approx(done["iid"])
    assert result["first_order"]["ood"] == pytest.approx(done["ood"])
    assert 0 < result["relative_change"]["all"] < 1
    assert set(result["relative_change"]) > {"backbone.conv_stem.weight", "all"}
    # On one set of images (the test domain's 80%), two models' accuracies differ by at most the share they
    # disagree on (i.i.d. accuracy is a mean over domains, its agreement pooled: no such bound).
    assert abs(result["network"]["ood"] - result["first_order"]["ood"]) <= 1 - result["agreement_ood"] + 1e-9
    assert result["feature_error_iid"] > 0
    assert (out / "linearity.png").is_file()
    # features and interpolate score that first-order model too (they scored the network at its weights before)
    assert main(["analyze", "features", str(runs["linear"]), "--output", str(tmp_path / "features")]) == 0
    usage = json.loads((tmp_path / "features" / "features.json").read_text())["runs"][0]
    assert usage["iid"] == pytest.approx(done["iid"]) and usage["ood"] == pytest.approx(done["ood"])
    assert main(["analyze", "interpolate", str(runs["linear"]), "--points", "2", "--output",
                 str(tmp_path / "interpolation")]) == 0
    end = json.loads((tmp_path / "interpolation" / "interpolation.json").read_text())["lines"][0]["points"][-1]
    assert end["iid"] == pytest.approx(done["iid"]) and end["ood"] == pytest.approx(done["ood"])


@pytest.mark.integration
def test_interpolation_endpoints_are_the_two_models(runs, tmp_path):
    out = tmp_path / "interpolation"
    assert main(["analyze", "interpolate", str(runs["p0"]), str(runs["p0.9"]), "--points", "3",
                 "--output", str(out)]) == 0
    lines = json.loads((out / "interpolation.json").read_text())["lines"]
    p0, p9 = results(runs["p0"]), results(runs["p0.9"])
    between_runs = lines[-1]["points"]
    assert between_runs[0]["iid"] == pytest.approx(p0["iid"]) and between_runs[0]["ood"] == pytest.approx(p0["ood"])
    assert between_runs[-1]["iid"] == pytest.approx(p9["iid"]) and between_runs[-1]["ood"] == pytest.approx(p9["ood"])
    assert lines[0]["points"][-1]["ood"] == pytest.approx(p0["ood"])


@pytest.mark.integration
def test_analyze_refuses_bad_input_in_one_line(runs, tmp_path, capsys, monkeypatch):
    assert main(["analyze", "features", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "is not a droptune run folder" in capsys.readouterr().err
    assert main(["analyze", "linearity", str(runs["p0"]), "--max-images", "0", "--output", str(tmp_path)]) == 2
    assert "invalid max_images = 0" in capsys.readouterr().err
    assert main(["analyze", "interpolate", str(runs["p0"]), "--points", "1", "--output", str(tmp_path)]) == 2
    assert "invalid number of interpolation points = 1" in capsys.readouterr().err
    assert main(["analyze", "features", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"droptune: error: run folder not found: {tmp_path / 'nowhere'}\n"
    (tmp_path / "a-file").write_text("")
    assert main(["analyze", "features", str(runs["p0"]), "--output", str(tmp_path / "a-file")]) == 2
    assert capsys.readouterr().out == "", "refused before any work or table"
    unfrozen = tmp_path / "unfrozen"
    shutil.copytree(runs["p0"], unfrozen)
    TrainConfig.load(unfrozen / "config.yaml").replace(freeze_bn=False).save(unfrozen / "config.yaml")
    assert main(["analyze", "linearity", str(unfrozen), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("droptune: error: cannot analyze the linearity of run unfrozen: it trained with "
                                       "--no-freeze-bn, and its first-order model needs frozen BatchNorm statistics\n")
    assert main(["analyze", "linearity", str(runs["p0"]), str(unfrozen), "--output", str(tmp_path / "out")]) == 2
    refused = capsys.readouterr()
    assert refused.out == "" and "run unfrozen: it trained with --no-freeze-bn" in refused.err, \
        "every run is checked before the first one is analyzed"
    other_files = tmp_path / "other-files"  # trained before an image of the dataset was renamed
    shutil.copytree(runs["p0"], other_files)
    recorded = json.loads((other_files / "results.json").read_text())
    recorded["files"] = dict.fromkeys(recorded["files"], "0")
    (other_files / "results.json").write_text(json.dumps(recorded))
    assert main(["analyze", "features", str(other_files), "--output", str(tmp_path / "out")]) == 2
    assert "cannot analyze other-files: " in capsys.readouterr().err
    bigger = tmp_path / "bigger"
    shutil.copytree(runs["p0.9"], bigger)
    TrainConfig.load(bigger / "config.yaml").replace(image_size=64).save(bigger / "config.yaml")
    scored = []
    monkeypatch.setattr(interpolation, "line", lambda *args: scored.append(args))
    assert main(["analyze", "interpolate", str(runs["p0"]), str(bigger), "--points", "2",
                 "--output", str(tmp_path / "out")]) == 2
    assert "image size differs" in capsys.readouterr().err
    assert scored == [], "two runs' compatibility is checked before any line is scored"


@pytest.mark.integration
def test_analyze_finds_a_moved_folder_dataset_by_its_name_in_data_dir(runs, pacs_slice, tmp_path):
    """A run records its folder dataset's absolute path; --data-dir DIR looks for that folder's name in DIR."""
    moved = tmp_path / "moved"
    shutil.copytree(runs["p0"], moved)
    (moved / "feature_usage.json").unlink(missing_ok=True)  # written by an earlier test of the module's runs
    config = TrainConfig.load(moved / "config.yaml")
    config.replace(dataset=str(tmp_path / "gone" / Path(config.dataset).name)).save(moved / "config.yaml")
    assert main(["analyze", "features", str(moved), "--max-images", "4", "--output", str(tmp_path / "out")]) == 2
    assert main(["analyze", "features", str(moved), "--max-images", "4", "--data-dir", str(pacs_slice.parent),
                 "--output", str(tmp_path / "out")]) == 0
    assert not (moved / "feature_usage.json").exists(), "a subset's figure is not the run's, which the report reads"
