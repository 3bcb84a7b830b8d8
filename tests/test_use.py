"""Using a trained run: load_model and `droptune evaluate`, end to end on a tiny run."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import make_image_folder
import droptune
from droptune.cli.main import build_parser, main
from droptune.data.loaders import DomainImages
from droptune.data.registry import open_dataset
from droptune.errors import DroptuneError
from droptune.training.config import TrainConfig
from droptune.training.trainer import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (toy folder, resnet10t without pre-trained weights), shared by this module's tests."""
    root = tmp_path_factory.mktemp("use")
    data = make_image_folder(root / "toy")
    config = TrainConfig(dataset=str(data), test_domain="c", backbone="resnet10t", weights="none", image_size=16,
                         batch_size=3, steps=8, eval_every=4, lr=0.05, dropout=0.5, workers=0, progress=False,
                         output_dir=str(root / "run"))
    train(config)
    return config.run_dir(), data


def predicted(loaded, path) -> int:
    """The model's class index for one image file, read as evaluation reads it."""
    with torch.no_grad():
        return int(loaded.model(loaded.read(path)[None]).argmax(1).item())


def domain_c_hits(trained) -> int:
    """Images of the test domain c that the run's selected step got right, from its results.json (10 in, 2 out)."""
    run, _ = trained
    accuracy = json.loads((run / "results.json").read_text())["acc"]["c"]
    return round(10 * accuracy["in"] + 2 * accuracy["out"])


def test_load_model_predicts_like_the_run(trained):
    run, data = trained
    loaded = droptune.load_model(run)
    assert loaded.classes == ["cat", "dog"] and not loaded.model.training
    hits = 0
    for label, name in enumerate(loaded.classes):
        for path in sorted((data / "c" / name).glob("*.png")):
            x = loaded.read(path)
            assert x.dtype == torch.uint8 and x.shape == (3, 16, 16)
            hits += int(predicted(loaded, path) == label)
    assert hits == domain_c_hits(trained)


def test_evaluate_writes_metrics_per_domain(trained, tmp_path, capsys):
    run, data = trained
    output = tmp_path / "evaluation.json"
    assert main(["evaluate", str(run), "--dataset", str(data), "--domains", "a", "c", "--output", str(output)]) == 0
    report = json.loads(output.read_text())["domains"]
    assert set(report) == {"a", "c"}
    for metrics in report.values():
        matrix = torch.tensor(metrics["confusion"]["matrix"])
        assert matrix.sum() == metrics["images"] == 12
        assert metrics["accuracy"] == pytest.approx(matrix.diag().sum().item() / 12)
        assert 0 <= metrics["ece"] <= 1 and metrics["nll"] > 0
        assert set(metrics["per_class_accuracy"]) == {"cat", "dog"}
    assert report["c"]["accuracy"] * 12 == pytest.approx(domain_c_hits(trained))
    assert "| c | 12 |" in capsys.readouterr().out


def test_registered_dataset_found_under_the_environments_data_dir(trained, tmp_path, monkeypatch, capsys):
    run, _ = trained
    data_dir = tmp_path / "datasets"
    make_image_folder(data_dir / "OfficeCaltech10", domains=("amazon", "caltech", "dslr", "webcam"), per_class=2)
    monkeypatch.setenv("DROPTUNE_DATA_DIR", str(data_dir))
    output = tmp_path / "e.json"
    command = ["evaluate", str(run), "--dataset", "OfficeCaltech10", "--output", str(output)]
    assert main([*command, "--domains", "dslr"]) == 0
    assert json.loads(output.read_text())["domains"]["dslr"]["images"] == 4
    monkeypatch.delenv("DROPTUNE_DATA_DIR")
    assert main(command) == 2
    assert "needs a data directory" in capsys.readouterr().err


def test_classes_matched_by_name(trained, tmp_path, capsys):
    """A dataset holding only dogs: its class 0 is the model's class 1."""
    run, _ = trained
    dogs = make_image_folder(tmp_path / "dogs", domains=("x",), classes=("dog",), per_class=4)
    output = tmp_path / "e.json"
    assert main(["evaluate", str(run), "--dataset", str(dogs), "--output", str(output)]) == 0
    metrics = json.loads(output.read_text())["domains"]["x"]
    assert metrics["confusion"]["matrix"][0] == [0, 0] and sum(metrics["confusion"]["matrix"][1]) == 4
    loaded = droptune.load_model(run)
    said_dog = sum(predicted(loaded, path) == 1 for path in sorted((dogs / "x" / "dog").glob("*.png")))
    assert metrics["accuracy"] * 4 == pytest.approx(said_dog)
    wrong = make_image_folder(tmp_path / "wrong", domains=("x",), classes=("cat", "horse"), per_class=2)
    assert main(["evaluate", str(run), "--dataset", str(wrong), "--output", str(tmp_path / "e.json")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["droptune: error: classes of the dataset unknown to the model: horse (the model knows cat, dog)"]


def test_domains_holding_different_classes_are_scored_each_on_its_own(trained, tmp_path):
    """Mutant: evaluate refused a collection whose domains hold different classes (training's check), even with
    --domains naming one of them; or labelled a domain's images by its own class folders, not the model's."""
    run, _ = trained
    data = make_image_folder(tmp_path / "mixed", domains=("x",), classes=("cat", "dog"), per_class=3)
    make_image_folder(tmp_path / "mixed", domains=("y",), classes=("dog",), per_class=4)
    output = tmp_path / "e.json"
    assert main(["evaluate", str(run), "--dataset", str(data), "--output", str(output)]) == 0
    scored = json.loads(output.read_text())["domains"]
    assert {d: m["images"] for d, m in scored.items()} == {"x": 6, "y": 4}
    assert [sum(row) for row in scored["y"]["confusion"]["matrix"]] == [0, 4]
    loaded = droptune.load_model(run)
    said_dog = sum(predicted(loaded, path) == 1 for path in sorted((data / "y" / "dog").glob("*.png")))
    assert scored["y"]["accuracy"] * 4 == pytest.approx(said_dog)
    assert main(["evaluate", str(run), "--dataset", str(data), "--domains", "y", "--output", str(output)]) == 0
    assert list(json.loads(output.read_text())["domains"]) == ["y"]
    with pytest.raises(DroptuneError, match="class folders differ across domains"):
        open_dataset(str(data))  # training's view of the same folder


def test_bad_model_folders_get_one_line(trained, tmp_path, capsys):
    run, data = trained
    with pytest.raises(DroptuneError, match="not a droptune run folder"):
        droptune.load_model(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "best.safetensors").unlink()
    assert main(["evaluate", str(copy), "--dataset", str(data)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"droptune: error: run {copy} has no selected model: best.safetensors is missing"]
    with pytest.raises(DroptuneError, match="no swa model"):
        droptune.load_model(run, variant="swa")
    with pytest.raises(DroptuneError, match="best.safetensors is a file: expected a run folder, a soup folder or"):
        droptune.load_model(run / "best.safetensors")


def test_an_unfinished_run_loads_with_a_warning_and_the_step_of_its_weights(trained, tmp_path, caplog):
    run, _ = trained
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "results.json").unlink()
    with caplog.at_level(logging.WARNING, logger="droptune"):
        loaded = droptune.load_model(unfinished)
    step = json.loads((run / "results.json").read_text())["step"]
    assert f"{unfinished} has not finished (no results.json): its best.safetensors as of step {step}" in caplog.text
    assert loaded.about["step"] == step and loaded.classes == ["cat", "dog"]
    assert (loaded.about["test_domain"], loaded.about["train_domains"]) == ("c", ["a", "b"])


def test_an_unfinished_run_is_evaluated_with_its_notes_and_not_exported(trained, tmp_path, capsys):
    """Mutants: the training-domain note read from results.json alone (an unfinished run's domains went without
    it); an unfinished run exported with a card of None."""
    run, data = trained
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "results.json").unlink()
    assert main(["evaluate", str(unfinished), "--dataset", str(data), "--output", str(tmp_path / "e.json")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert [note.split(" is a ")[0] for note in notes] == ["note: a", "note: b"]
    assert main(["export", str(unfinished), "--output", str(tmp_path / "exported")]) == 2
    assert "run unfinished has not finished (no results.json)" in capsys.readouterr().err
    assert not (tmp_path / "exported").exists()


def test_export_into_the_empty_current_folder(trained, tmp_path, monkeypatch):
    """`.` has no name: the export is staged beside the folder's full path (a ValueError traceback before)."""
    run, _ = trained
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path / "folder")
    assert main(["export", str(run), "--output", "."]) == 0
    assert (tmp_path / "folder" / "config.json").is_file()


def test_bad_arguments_are_one_line(trained, tmp_path, capsys):
    run, data = trained
    evaluation = ["evaluate", str(run), "--dataset", str(data), "--output", str(tmp_path / "e.json")]
    for extra, message in ((["--batch-size", "0"], "argument --batch-size: expected an integer of at least 1, got 0"),
                           (["--workers", "-1"], "argument --workers: expected an integer of at least 0, got -1")):
        with pytest.raises(SystemExit) as exit_:
            main([*evaluation, *extra])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert main([*evaluation, "--device", "cdu"]) == 2
    assert capsys.readouterr().err == "droptune: error: invalid device 'cdu': expected auto, cpu, cuda or cuda:N\n"
    assert main(["evaluate", str(tmp_path / "nowhere"), "--dataset", str(data)]) == 2
    assert capsys.readouterr().err == f"droptune: error: model folder not found: {tmp_path / 'nowhere'}\n"
    assert main([*evaluation[:4], "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"droptune: error: --output {tmp_path} is a folder: expected a JSON file to write\n"
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(run), str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith(f"droptune: error: no image files in {tmp_path / 'empty'} (looked for")
    output = tmp_path / "new" / "folder" / "p.csv"
    assert main(["predict", str(run), str(data / "a" / "cat"), "--output", str(output)]) == 0
    assert len(output.read_text().splitlines()) == 1 + 6


def test_undecodable_image_gets_one_line(trained, tmp_path, capsys):
    run, _ = trained
    broken = make_image_folder(tmp_path / "broken", domains=("x",), per_class=2)
    (broken / "x" / "cat" / "0.png").write_bytes(b"not an image")
    assert main(["evaluate", str(run), "--dataset", str(broken), "--output", str(tmp_path / "e.json")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "cannot read image" in error[0] and "0.png" in error[0]


def test_predict_lists_unreadable_files_and_goes_on(trained, tmp_path, capsys):
    run, data = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    output = tmp_path / "predictions.jsonl"
    assert main(["predict", str(run), str(data / "a"), str(broken), "--top-k", "2", "--output", str(output)]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 12 and all(sorted(r["classes"]) == ["cat", "dog"] for r in records)
    assert all(r["probabilities"][0] >= r["probabilities"][1] for r in records)
    assert sum(records[0]["probabilities"]) == pytest.approx(1, abs=1e-5)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"droptune: skipped unreadable image {broken}")
    csv_output = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(data / "a" / "cat" / "0.png"), "--output", str(csv_output)]) == 0
    header, row = csv_output.read_text().splitlines()
    assert header == "file,class_1,probability_1"
    first = next(r for r in records if r["file"].endswith("cat/0.png"))
    assert row.split(",")[:2] == [first["file"], first["classes"][0]]


def test_predict_reads_images_as_the_runs_evaluation_did(trained, tmp_path):
    """JPEGs decoded at reduced scale as evaluation decodes them, 16-bit grayscale scaled (not clipped to white),
    a mode PIL would guess at refused with its reason."""
    run, _ = trained
    folder = tmp_path / "photos"
    (folder / "x" / "cat").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        smooth = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 64 px
        Image.fromarray(smooth).save(folder / "x" / "cat" / f"{i}.jpg", quality=90)
    gray = np.array([[0, 40, 90, 200]] * 4, np.uint8).repeat(8, 0).repeat(8, 1)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    Image.fromarray(gray, "L").save(tmp_path / "eight.png")
    Image.fromarray(gray.astype(np.float32)).save(tmp_path / "float.tif")
    output = tmp_path / "p.jsonl"
    files = [folder / "x", tmp_path / "sixteen.png", tmp_path / "eight.png", tmp_path / "float.tif"]
    assert main(["predict", str(run), *map(str, files), "--top-k", "2", "--output", str(output)]) == 0
    records = {Path(r["file"]).name: dict(zip(r["classes"], r["probabilities"]))
               for r in map(json.loads, output.read_text().splitlines())}
    assert "float.tif" not in records
    assert records["sixteen.png"] == pytest.approx(records["eight.png"], abs=1e-6)
    loaded = droptune.load_model(run)
    evaluation = DomainImages(open_dataset(str(folder)), 16)
    for i in range(3):
        with torch.no_grad():
            probs = loaded.model(evaluation[(0, i, None)][0][None]).softmax(1)[0]
        assert records[f"{i}.jpg"] == pytest.approx(dict(zip(loaded.classes, probs.tolist())), abs=1e-6)


def test_class_names_come_from_results_json_and_old_runs_fall_back_to_the_dataset(trained, tmp_path):
    run, data = trained
    assert json.loads((run / "results.json").read_text())["classes"] == ["cat", "dog"]
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    config = TrainConfig.load(moved / "config.yaml").replace(dataset=str(tmp_path / "gone"))
    config.save(moved / "config.yaml")
    assert droptune.load_model(moved).classes == ["cat", "dog"]  # no dataset needed
    old = tmp_path / "old"
    shutil.copytree(run, old)
    results = json.loads((old / "results.json").read_text())
    del results["classes"]
    (old / "results.json").write_text(json.dumps(results))
    assert droptune.load_model(old).classes == ["cat", "dog"]  # read from the dataset, still there
    config.save(old / "config.yaml")
    with pytest.raises(DroptuneError, match=f"^{old} does not record its class names .* dataset cannot be opened"):
        droptune.load_model(old)


def test_soup_folders_load_like_runs(trained, tmp_path, capsys):
    run, data = trained
    other = TrainConfig.load(run / "config.yaml").replace(lr=0.02, dropout=0.9, output_dir=str(tmp_path / "other"))
    train(other)
    combined = tmp_path / "combined"
    assert main(["combine", str(run), str(tmp_path / "other"), "--method", "ensemble", "uniform_soup",
                 "--output", str(combined), "--workers", "0", "--device", "cpu"]) == 0
    soup = droptune.load_model(combined / "uniform_soup")
    assert soup.classes == ["cat", "dog"] and soup.about["method"] == "uniform_soup"
    assert soup.about["members"] == ["run", "other"] and soup.config.backbone == "resnet10t"
    members = [droptune.load_model(p).model.state_dict() for p in (run, tmp_path / "other")]
    weight = "head.fc.weight"
    assert torch.allclose(soup.model.state_dict()[weight], (members[0][weight] + members[1][weight]) / 2)
    output = tmp_path / "soup-eval.json"
    assert main(["evaluate", str(combined / "uniform_soup"), "--dataset", str(data), "--output", str(output)]) == 0
    results = json.loads((combined / "uniform_soup" / "results.json").read_text())
    evaluation = json.loads(output.read_text())
    assert evaluation["domains"]["c"]["images"] == 12 and results["classes"] == ["cat", "dog"]
    assert evaluation["variant"] == "uniform_soup" and "(best)" not in capsys.readouterr().out
    exported = tmp_path / "exported-soup"
    assert main(["export", str(combined / "uniform_soup"), "--output", str(exported)]) == 0
    x = soup.transform(Image.open(data / "c" / "dog" / "0.png"))[None]
    assert torch.equal(droptune.load_model(exported).model(x), soup.model(x))
    card = (exported / "README.md").read_text()
    assert "exported from the uniform_soup of 2 fine-tuning runs (run, other)" in card
    assert "with dropout rates 0.5 and 0.9 (held-out domain" in card and "very large dropout" not in card, \
        "a soup's card states its members' rates, not its first member's"
    capsys.readouterr()
    assert main(["predict", str(combined / "ensemble"), str(data / "a")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"droptune: error: {combined / 'ensemble'} has no soup.safetensors: its ensemble of runs is not one model; "
        "load a soup (uniform_soup, greedy_soup) or one of its runs"]


def test_a_soup_of_linearized_runs_is_refused_as_their_runs_are(trained, tmp_path):
    """Mutant: the soup loaded as the plain network at its weights, not the first-order model its scores are of."""
    run, _ = trained
    config = TrainConfig.load(run / "config.yaml").replace(linearized=True)
    save_file(load_file(str(run / "best.safetensors")), str(tmp_path / "soup.safetensors"),
              {"config": json.dumps(config.to_dict())})
    with pytest.raises(DroptuneError, match="soup.safetensors holds a linearized run's weights; load_model reads "
                                            "ordinary runs only"):
        droptune.load_model(tmp_path)


def test_evaluate_notes_that_a_training_domain_includes_the_training_images(trained, tmp_path, capsys):
    """Mutants: no note for a training domain (its accuracy then reads as held-out accuracy), a note for the test
    domain too, or the note changing the JSON's numbers (scoring only the held-out 20%)."""
    run, data = trained
    output = tmp_path / "e.json"
    assert main(["evaluate", str(run), "--dataset", str(data), "--domains", "a", "c", "--output", str(output)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: a is a training domain: the model trained on 80% of its images, which this accuracy "
                     "includes; its accuracy on the held-out 20% is part of the i.i.d. figure in results.json"]
    assert json.loads(output.read_text())["domains"]["a"]["images"] == 12


def test_evaluate_calls_an_unknown_domain_a_domain(trained, tmp_path, capsys):
    """Mutant: evaluate's --domains checked with train's wording ("unknown test domain"), though evaluate scores
    any domain, the training ones included."""
    run, data = trained
    assert main(["evaluate", str(run), "--dataset", str(data), "--domains", "C", "--output",
                 str(tmp_path / "e.json")]) == 2
    assert capsys.readouterr().err == ("droptune: error: unknown domain 'C' for toy: expected one of a, b, c "
                                       "(or an index 0-2)\n")
    assert not (tmp_path / "e.json").exists()


def test_predict_says_where_it_wrote_and_its_help_gives_the_default(trained, tmp_path, monkeypatch, capsys):
    """Mutants: predict writing ./predictions.csv with no line naming the file it wrote, or a --help that does
    not say so."""
    run, data = trained
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(run), str(data / "a" / "cat")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote predictions for 6 of 6 images to {tmp_path / 'predictions.csv'}")
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 1 + 6
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "(default: predictions.csv in the current folder)" in " ".join(capsys.readouterr().out.split())


def test_every_command_that_runs_a_model_picks_its_device_as_training_does():
    """Mutant: `droptune evaluate` and `predict` ran on the CPU of a GPU machine unless told, where train,
    combine and analyze took the GPU."""
    def commands(parser, path=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, path + (name,))
        yield path, parser

    def default(parser):
        given = parser.get_default("device")  # the training commands' flags leave it to TrainConfig
        return TrainConfig().device if given == argparse.SUPPRESS else given

    defaults = {" ".join(path): default(parser) for path, parser in commands(build_parser())
                if any("--device" in a.option_strings for a in parser._actions)}
    assert {"train", "evaluate", "predict", "combine", "analyze features"} <= set(defaults)
    assert set(defaults.values()) == {"auto"}


def test_the_commands_functions_take_what_a_notebook_passes_and_refuse_the_rest_in_one_line(trained, tmp_path):
    """`droptune.score`, `predict`, `export`, `combine` and `collect` from Python: one path or name where a list is
    expected is taken as that one (a string was iterated letter by letter) or refused; bad sizes are one line."""
    run, data = trained
    assert {"score", "predict", "export", "combine", "collect", "load_model"} <= set(dir(droptune))
    loaded = droptune.load_model(run)
    dataset = open_dataset(str(data), same_classes=False)
    assert droptune.score(loaded, dataset, "c") == droptune.score(loaded, dataset, ["c"])
    assert list(droptune.score(loaded, dataset, "c")) == ["c"]
    dogs = sorted(str(p) for p in (data / "c" / "dog").glob("*.png"))
    records, unreadable = droptune.predict(loaded, data / "c" / "dog", top_k=2)
    assert [r["file"] for r in records] == dogs and not unreadable and len(records[0]["classes"]) == 2
    assert [r["file"] for r in droptune.predict(loaded, dogs[0])[0]] == dogs[:1]
    for call in (lambda: droptune.predict(loaded, dogs, batch_size=0), lambda: droptune.score(loaded, dataset,
                                                                                              batch_size=0)):
        with pytest.raises(DroptuneError, match="^batch_size must be at least 1, got 0$"):
            call()
    with pytest.raises(DroptuneError, match="^unknown domain 'zz' for toy"):
        droptune.score(loaded, dataset, "zz")
    with pytest.raises(DroptuneError, match="^combine takes a list of run folders, got one path: "):
        droptune.combine(str(run), ["uniform_soup"], tmp_path / "combined")
    combined = droptune.combine([run], "uniform_soup", tmp_path / "combined", device="cpu", workers=0)
    assert list(combined) == ["uniform_soup"] and combined["uniform_soup"]["members"] == ["run"]
    assert droptune.load_model(tmp_path / "combined" / "uniform_soup").classes == loaded.classes
    config = droptune.export(loaded, str(tmp_path / "exported"))
    assert config["num_classes"] == 2 and (tmp_path / "exported" / "model.safetensors").is_file()
    with pytest.raises(DroptuneError, match="^folder of runs not found: "):
        droptune.collect(tmp_path / "nowhere")
    assert droptune.collect(run.parent).runs["run"].tolist() == ["run"]
