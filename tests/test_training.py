import json

import pytest
import torch
from safetensors.torch import load_file

from droptune.cli.main import main
from droptune.errors import DroptuneError
from droptune.training.config import TrainConfig
from droptune.runs.folder import RunDir
from droptune.training.trainer import TrainingDiverged, is_collapsed, train

TIMING = ("images_per_s", "eval_images_per_s", "elapsed_s")


def toy_config(image_folder, tmp_path, **changes) -> TrainConfig:
    base = dict(dataset=str(image_folder), test_domain="c", backbone="resnet10t", weights="none", image_size=16,
                batch_size=3, steps=12, eval_every=4, lr=0.05, dropout=0.5, workers=0, progress=False,
                output_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **changes})


def numbers(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_run_folder_holds_everything(image_folder, tmp_path):
    config = toy_config(image_folder, tmp_path)
    results = train(config)
    run = RunDir(config.run_dir())
    assert TrainConfig.load(run.config) == config
    records = run.read_metrics()
    assert [r["step"] for r in records] == [4, 8, 12]
    assert set(records[0]) >= {"step", "loss", "lr", "images_per_s", "iid", "ood", "ood_out", "acc"}
    assert set(records[0]["acc"]) == {"a", "b", "c"} and set(records[0]["acc"]["c"]) == {"in", "out"}
    assert results == json.loads(run.results.read_text())
    assert results["status"] == "completed" and results["test_domain"] == "c"
    assert results["train_domains"] == ["a", "b"]
    best = max(records, key=lambda r: (r["iid"], -r["step"]))
    assert (results["step"], results["iid"], results["ood"]) == (best["step"], best["iid"], best["ood"])
    assert results["selections"]["oracle"]["ood_out"] == max(r["ood_out"] for r in records)
    assert results["selections"]["last"]["step"] == 12
    weights = load_file(str(run.best))
    assert set(weights) >= {"head.fc.weight", "head.fc.bias"}
    assert records[-1]["lr"] == pytest.approx(0.005), "lr decays by 10x half-way"


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_reaches_the_same_numbers(image_folder, tmp_path, workers):
    full = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "full"), workers=workers)
    part = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "part"), workers=workers)
    expected = train(full)
    assert train(part, until=6) is None
    assert not RunDir(part.run_dir()).results.exists()
    resumed = train(part, resume=True)
    assert numbers(RunDir(part.run_dir()).read_metrics()) == numbers(RunDir(full.run_dir()).read_metrics())
    for key in ("step", "iid", "ood", "acc", "selections"):
        assert resumed[key] == expected[key]
    a, b = load_file(str(RunDir(full.run_dir()).best)), load_file(str(RunDir(part.run_dir()).best))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train(part, resume=True) == resumed, "resuming a finished run changes nothing"


def test_same_seed_same_numbers_other_seed_other_numbers(image_folder, tmp_path):
    a = train(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "a")))
    b = train(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "b")))
    c = train(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "c"), seed=1))
    assert numbers(RunDir(tmp_path / "a").read_metrics()) == numbers(RunDir(tmp_path / "b").read_metrics())
    assert a["acc"] == b["acc"]
    assert numbers(RunDir(tmp_path / "a").read_metrics()) != numbers(RunDir(tmp_path / "c").read_metrics())


def test_existing_run_folder_is_not_overwritten(image_folder, tmp_path):
    config = toy_config(image_folder, tmp_path, steps=4)
    train(config)
    with pytest.raises(DroptuneError, match="already holds a run: resume it with --resume"):
        train(config)


def test_divergence_stops_and_is_recorded(image_folder, tmp_path):
    config = toy_config(image_folder, tmp_path, lr=1e12, dropout=0.0, steps=40, eval_every=20)
    with pytest.raises(TrainingDiverged, match="diverged by step .*try a lower --lr"):
        train(config)
    results = RunDir(config.run_dir()).read_results()
    assert results.status == "diverged" and results.steps_done < 40


def test_collapse_detection():
    assert is_collapsed(best_iid=0.15, final_loss=1.93, majority_rate=0.143, num_classes=7)
    assert not is_collapsed(best_iid=0.60, final_loss=1.93, majority_rate=0.143, num_classes=7)
    assert not is_collapsed(best_iid=0.15, final_loss=0.50, majority_rate=0.143, num_classes=7)


def test_cli_errors_are_one_line(image_folder, tmp_path, capsys):
    assert main(["train", "--dataset", "NoSuchSet", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("droptune: error: unknown dataset 'NoSuchSet'") and "\n" not in err
    assert main(["train", "--dataset", str(image_folder), "--test-domain", "zebra",
                 "--output-dir", str(tmp_path / "y")]) == 2
    assert "unknown test domain 'zebra'" in capsys.readouterr().err


def test_corrupt_image_in_a_loader_worker_is_named_in_one_line(image_folder, tmp_path, capsys):
    bad = image_folder / "a" / "dog" / "2.png"
    bad.write_bytes(b"garbage")
    argv = ["train", "--dataset", str(image_folder), "--test-domain", "c", "--backbone", "resnet10t",
            "--weights", "none", "--image-size", "16", "--batch-size", "12", "--steps", "4", "--workers", "1",
            "--no-progress", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"droptune: error: cannot read image {bad}: " + err.split(": ", 3)[-1]
    assert "\n" not in err and str(bad) in err


def test_cli_train_prints_results(image_folder, tmp_path, capsys):
    argv = ["train", "--dataset", str(image_folder), "--test-domain", "b", "--backbone", "resnet10t",
            "--weights", "none", "--image-size", "16", "--batch-size", "2", "--steps", "4", "--eval-every", "2",
            "--workers", "0", "--no-progress", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "chosen by training_domain selection" in out and "o.o.d." in out
