import json
import logging
import math
import os
import shutil
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from droptune.cli.main import main
from droptune.data.registry import dataset_reference, open_dataset
from droptune.data.loaders import DomainBalancedBatches, DomainImages
from droptune.models.model import build_model
from droptune.errors import DroptuneError
from droptune.training.config import TrainConfig
from droptune.training.protocol import LeaveOneDomainOut
from droptune.runs.folder import RunDir
from droptune.training.device import default_workers
from droptune.training.trainer import Trainer, TrainingDiverged, is_collapsed, train

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


def test_a_record_gives_the_lr_and_the_throughput_its_steps_had(image_folder, tmp_path):
    """Mutants: the lr recorded after the scheduler stepped (the next step's: the decayed lr at the milestone's own
    step); the run's images/s the mean of the periods' rates (a fast short period counted as much as a long one)."""
    from droptune.training.trainer import overall_rate

    config = toy_config(image_folder, tmp_path, steps=4, eval_every=2, lr=0.01)
    train(config)
    records = RunDir(config.run_dir()).read_metrics()
    assert [r["lr"] for r in records] == pytest.approx([0.01, 0.001]), "steps 1-2 at 0.01, 3-4 after the decay"
    periods = [{"step": 3, "images_per_s": 1.0}, {"step": 4, "images_per_s": 100.0}]
    assert overall_rate(periods, "images_per_s", by_steps=True) == pytest.approx(4 / (3 + 0.01))


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
    with pytest.raises(DroptuneError, match=r"holds a finished run of a different config \(its config.yaml differs in "
                                            r"dropout: 0.5 → 0.1\); .*choose another output folder \(--output-dir"):
        train(part.replace(dropout=0.1), resume=True)


def test_a_resume_takes_its_evaluations_from_the_checkpoint_not_from_a_damaged_metrics_file(image_folder, tmp_path):
    """Mutant (a chaos audit's finding): metrics.jsonl emptied or cut after the checkpoint (a crash while it was
    rewritten, an append never flushed): the resumed run chose its step among the later evaluations alone, and
    results.json named a step that best.safetensors does not hold. The records now live in last.pt too; an older
    checkpoint without them is checked against metrics.jsonl."""
    full = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "full"))
    part = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "part"))
    expected = train(full)
    assert train(part, until=8) is None
    run = RunDir(part.run_dir())
    run.metrics.write_text("")
    resumed = train(part, resume=True)
    assert numbers(run.read_metrics()) == numbers(RunDir(full.run_dir()).read_metrics())
    assert [resumed[k] for k in ("step", "iid", "ood", "selections")] == [
        expected[k] for k in ("step", "iid", "ood", "selections")]

    older = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "older"))
    assert train(older, until=8) is None
    run = RunDir(older.run_dir())
    state = torch.load(run.last, weights_only=True)
    del state["records"]
    torch.save(state, run.last)
    run.metrics.write_text(run.metrics.read_text().splitlines(keepends=True)[1])  # step 8's record alone
    with pytest.raises(DroptuneError, match=r"metrics.jsonl holds the evaluations of steps \[8\], but checkpoint "
                                            r".*last.pt \(step 8\) followed those of steps \[4, 8\]: .*start the run"):
        train(older, resume=True)


def test_a_run_that_takes_its_folder_removes_what_a_killed_write_left(image_folder, tmp_path):
    """Mutant (chaos audit 3): a half-written `.last.pt.<hex>` of a kill -9 during a checkpoint stayed for good (the
    size of a checkpoint per kill, hidden in a sweep's folders); `droptune analyze`'s own, written without the lock,
    is left to it."""
    config = toy_config(image_folder, tmp_path, steps=4, eval_every=2)
    assert train(config, until=2) is None
    run = RunDir(config.run_dir())
    stale, theirs = run.path / ".last.pt.0123456789abcdef", run.path / ".feature_usage.json.fedcba9876543210"
    stale.write_bytes(b"\0" * 1000)
    theirs.write_text("{")
    assert train(config, resume=True)["status"] == "completed"
    assert not stale.exists() and theirs.exists()


def test_a_full_disk_is_one_line_that_says_so_and_how_to_continue(image_folder, tmp_path, monkeypatch, capsys):
    """Mutant (chaos audit 2): a checkpoint write on a full disk ended in a 25-line traceback whose last line,
    torch's `RuntimeError: ... unexpected pos`, never named the disk; other write errors are still theirs."""
    import shutil
    from collections import namedtuple

    from droptune.runs import files
    from droptune.runs.files import NoSpace, atomic_write

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**12, 10**12, 5 * 2**20))

    def torch_on_a_full_disk(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 29471872 vs 29471760")
    target = tmp_path / "a.pt"
    target.write_text("old")
    with pytest.raises(NoSpace, match=rf"^cannot write {target}: no space left on its file system \(5 MiB free\); "
                                      "the file it would replace is unchanged$"):
        atomic_write(target, torch_on_a_full_disk)
    assert target.read_text() == "old" and files.partial_writes(tmp_path) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**12, 0, 10**11))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        atomic_write(target, torch_on_a_full_disk)

    config = toy_config(image_folder, tmp_path, steps=8, eval_every=4, freeze_bn=False)
    saves, save = [], torch.save

    def second_checkpoint_fails(obj, path):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        save(obj, path)
    monkeypatch.setattr(torch, "save", second_checkpoint_fails)
    run = config.run_dir()
    argv = ["train", "--dataset", str(image_folder), "--test-domain", "c", "--backbone", "resnet10t", "--weights",
            "none", "--image-size", "16", "--batch-size", "3", "--steps", "8", "--eval-every", "4", "--lr", "0.05",
            "--dropout", "0.5", "--workers", "0", "--no-progress", "--no-freeze-bn", "--output-dir", str(run)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("droptune: error: ")
    assert f"cannot write {run / 'last.pt'}: no space left" in err.splitlines()[-1]
    assert err.strip().endswith(f"once there is room, `droptune train --resume {run}` continues from its last "
                                "checkpoint")
    monkeypatch.undo()
    assert train(config, resume=True)["status"] == "completed"


def test_a_run_does_not_resume_on_a_dataset_whose_images_changed(image_folder, tmp_path, capsys):
    """Mutants: resuming with the images of a domain added, removed or renamed (its 80/20 split silently redrawn
    mid-run: the first evaluations scored one split, the rest another), or results.json not recording them."""
    config = toy_config(image_folder, tmp_path, freeze_bn=False)  # no frozen-BatchNorm warning beside the error
    assert train(config, until=6) is None
    removed = sorted((image_folder / "b" / "dog").iterdir())[0]
    kept = removed.read_bytes()
    removed.unlink()
    with pytest.raises(DroptuneError, match=r"changed since checkpoint .*last\.pt was written \(b: 12 images then, "
                                            r"11 now\): its 80/20 splits would change mid-run"):
        train(config, resume=True)
    capsys.readouterr()
    assert main(["train", "--resume", str(config.run_dir())]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("droptune: error: ")
    renamed = removed.with_name("z" + removed.name)  # the same counts, but the split indexes other files
    renamed.write_bytes(kept)
    with pytest.raises(DroptuneError, match=r"\(b: the same image counts from other files \(an image renamed or "
                                            r"replaced\)\): its 80/20 splits would change mid-run"):
        train(config, resume=True)
    renamed.rename(removed)
    results = train(config, resume=True)
    assert results["images"] == {"a": [6, 6], "b": [6, 6], "c": [6, 6]}
    assert set(results["files"]) == {"a", "b", "c"} and len(set(results["files"].values())) == 3


def test_same_seed_same_numbers_other_seed_other_numbers(image_folder, tmp_path):
    a = train(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "a")))
    b = train(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "b")))
    train(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "c"), seed=1))
    assert numbers(RunDir(tmp_path / "a").read_metrics()) == numbers(RunDir(tmp_path / "b").read_metrics())
    assert a["acc"] == b["acc"]
    assert numbers(RunDir(tmp_path / "a").read_metrics()) != numbers(RunDir(tmp_path / "c").read_metrics())


def test_a_records_loss_is_the_mean_training_loss_since_the_last_evaluation(image_folder, tmp_path):
    """Mutants: the trainer starting at step 1 (skipping the first batch), its loss count starting at 1, the loss sum
    not reset after an evaluation, or divided by another count (`max(1, count)` -> `max(2, count)`: the last period
    is one step long); the recorded lr the head's (param group 1) instead of the backbone's.

    With a learning rate of 1e-12 the weights stay those of best.safetensors; this test draws the documented training
    batches (DomainBalancedBatches over the training domains' 80%, the run seed) and computes their losses itself."""
    config = toy_config(image_folder, tmp_path, lr=1e-12, dropout=0.0, steps=5, eval_every=4, batch_size=2,
                        head_lr_mult=10)
    train(config)
    records = RunDir(config.run_dir()).read_metrics()
    dataset = open_dataset(str(image_folder))
    protocol = LeaveOneDomainOut.from_config(config, dataset)
    images = DomainImages(dataset, config.image_size, config.augment)
    model = build_model(config.backbone, len(dataset.classes), config.dropout, "none", config.freeze_bn)
    model.load_state_dict(load_file(str(RunDir(config.run_dir()).best)))
    batches = DomainBalancedBatches(protocol.train_parts(), config.batch_size, config.seed, 0, config.steps)
    losses = []
    with torch.no_grad():
        for step in range(config.steps):
            x, y = zip(*(images[key] for key in batches.batch(step)))
            losses.append(F.cross_entropy(model(torch.stack(x)), torch.tensor(y)).item())
    assert [r["step"] for r in records] == [4, 5]
    assert [r["lr"] for r in records] == pytest.approx([1e-13, 1e-13], rel=1e-6, abs=0), \
        "the backbone's, decayed half-way"
    assert [r["loss"] for r in records] == pytest.approx([sum(losses[:4]) / 4, losses[4]], rel=1e-4)
    assert len({round(v, 4) for v in losses}) == 5, "the fixture's batches must differ in loss"


def test_timings_are_durations_within_the_runs_own(image_folder, tmp_path):
    """Mutants: the run's elapsed time decreasing (`+=` -> `-=`), starting at 1 s, or adding the clock's reading
    instead of a duration; the evaluation speed from the clock's reading, or images times the evaluation's duration.

    Each evaluation adds to the elapsed time the training period and the evaluation it timed: images / speed for
    both (24 training images, 16 evaluated). A scheduler pause between two clock readings is far below 0.25 s."""
    config = toy_config(image_folder, tmp_path)
    start = time.perf_counter()
    results = train(config)
    wall = time.perf_counter() - start
    records = RunDir(config.run_dir()).read_metrics()
    elapsed = [r["elapsed_s"] for r in records]
    assert 0 < elapsed[0] < elapsed[1] < elapsed[2] <= wall and results["wall_time_s"] == elapsed[-1]
    trained, evaluated = 4 * 2 * 3, 2 * 2 + 12  # 4 steps of 3 images from a and b; their 20% (2 each), all of c
    previous = 0.0
    for record in records:
        timed = trained / record["images_per_s"] + evaluated / record["eval_images_per_s"]
        assert record["elapsed_s"] - previous == pytest.approx(timed, abs=0.25)
        previous = record["elapsed_s"]


def test_workers_are_the_configs_or_else_the_devices_default(image_folder, tmp_path):
    """Mutant: `--workers` ignored when given (`config.workers is not None` -> `is None`): the device's default instead.

    The numbers do not depend on it (tests/test_protocol.py), the memory and processes a run takes do."""
    assert Trainer(toy_config(image_folder, tmp_path, workers=0)).bench.workers == 0
    assert Trainer(toy_config(image_folder, tmp_path, workers=3)).workers == 3
    default = Trainer(toy_config(image_folder, tmp_path, workers=None)).workers
    assert default == default_workers(torch.device("cpu"), decodes_files=True) >= 1


def test_a_run_is_collapsed_by_its_selected_iid_and_its_final_loss(image_folder, tmp_path):
    """Mutants: results' `collapsed` always true for a selected checkpoint (`and` -> `or`), never computed
    (`selected is not None` -> `is None`), judged on the selected o.o.d. accuracy, or on the last-but-one loss;
    the selected step's i.i.d. and o.o.d. accuracy swapped in results.json, or its cost not one training.

    The trainer's end is fed evaluation records made here: the selected (earliest best) step at the majority rate
    (0.75: 3 of the 4 held-out images are of one class) with a high o.o.d. accuracy and a low loss, the last step with
    about the loss of a uniform guess (ln 2)."""
    def finish(name, iid, ood, losses):
        trainer = Trainer(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / name)))
        assert trainer.majority_rate == 0.75
        trainer.run.path.mkdir(parents=True, exist_ok=True)
        for step, loss in zip((4, 8), losses):
            trainer.records.append({"step": step, "loss": loss, "images_per_s": 1.0, "eval_images_per_s": 1.0,
                                    "iid": iid, "ood": ood, "ood_out": ood, "acc": {}})
        return trainer._finish("completed")

    stuck = finish("stuck", 0.75, 0.95, (0.1, 0.7))
    assert 0.7 >= 0.9 * math.log(2) and stuck["step"] == 4 and stuck["collapsed"] is True
    assert (stuck["iid"], stuck["ood"], stuck["cost"]) == (0.75, 0.95, {"trainings": 1, "forward_passes": 1})
    assert finish("learned", 1.0, 0.5, (0.1, 0.7))["collapsed"] is False
    assert finish("converged", 0.75, 0.5, (0.7, 0.1))["collapsed"] is False


def test_existing_run_folder_is_not_overwritten(image_folder, tmp_path):
    config = toy_config(image_folder, tmp_path, steps=4)
    train(config)
    with pytest.raises(DroptuneError, match="already holds a run: resume it with --resume"):
        train(config)
    with pytest.raises(DroptuneError, match=r"already holds a run of a different config \(its config.yaml differs "
                                            r"in lr: 0.05 → 0.01\): choose another output folder"):
        train(config.replace(lr=0.01))


def test_divergence_stops_and_is_recorded(image_folder, tmp_path):
    config = toy_config(image_folder, tmp_path, lr=1e12, dropout=0.0, steps=40, eval_every=20)
    with pytest.raises(TrainingDiverged, match="diverged by step .*try a lower lr"):
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
            "--weights", "none", "--no-freeze-bn", "--image-size", "16", "--batch-size", "12", "--steps", "4",
            "--workers", "1", "--no-progress", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"droptune: error: cannot read image {bad}: " + err.split(": ", 3)[-1]
    assert "\n" not in err and str(bad) in err
    assert err.endswith("(`droptune data verify` lists every unreadable image of a dataset)"), \
        "no --resume hint: the run stopped before its first checkpoint"


def test_an_image_that_breaks_after_the_first_checkpoint_names_the_resume(image_folder, tmp_path, capsys):
    """Mutant: the error of an image unreadable mid-run not saying that the run resumes from its checkpoint."""
    config = toy_config(image_folder, tmp_path, freeze_bn=False)  # no frozen-BatchNorm warning beside the error
    assert train(config, until=4) is None
    (image_folder / "c" / "cat" / "0.png").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["train", "--resume", str(config.run_dir())]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read image" in err
    assert f"; once it reads, --resume {config.run_dir()} continues from the last evaluation)" in err


def test_a_dataset_folder_is_recorded_by_its_absolute_path_however_it_was_typed(image_folder, tmp_path,
                                                                                monkeypatch):
    """Mutant: the folder recorded as typed: `toy`, `./toy` and its absolute path were three job ids for one
    dataset, and a run folder recorded `dataset: toy`, which other commands could not open from elsewhere."""
    monkeypatch.chdir(image_folder.parent)
    flags = ["--test-domain", "b", "--backbone", "resnet10t", "--weights", "none", "--image-size", "16",
             "--batch-size", "2", "--steps", "2", "--eval-every", "2", "--workers", "0", "--no-progress"]
    for typed, folder in ((image_folder.name, "typed"), (f"./{image_folder.name}", "dotted"),
                          (str(image_folder), "absolute")):
        assert main(["train", "--dataset", typed, *flags, "--output-dir", str(tmp_path / folder)]) == 0
    configs = [TrainConfig.load(tmp_path / folder / "config.yaml") for folder in ("typed", "dotted", "absolute")]
    assert {config.dataset for config in configs} == {str(image_folder.resolve())}
    assert len({config.identity() for config in configs}) == 1
    (image_folder.parent / "PACS").mkdir()
    assert dataset_reference("PACS") == "PACS", "a registered name stays a name, beside a folder of that name too"
    older = tmp_path / "older"  # a run recorded as typed, before folders were recorded by absolute path
    shutil.copytree(tmp_path / "typed", older)
    (older / "config.yaml").write_text((older / "config.yaml").read_text().replace(str(image_folder.resolve()),
                                                                                   image_folder.name))
    results = json.loads((older / "results.json").read_text())  # and its identity as it was then
    results["config_id"] = TrainConfig.load(older / "config.yaml").identity()
    (older / "results.json").write_text(json.dumps(results))
    assert main(["train", "--resume", str(older), "--dataset", image_folder.name, "--no-progress"]) == 0, \
        "resuming with the dataset as the run recorded it is no change"


def test_a_weights_file_and_data_dir_are_recorded_by_their_absolute_paths(image_folder, tmp_path, monkeypatch):
    """Mutants: recorded as typed: two runs from one weights file, typed relative and absolute, could not be averaged
    (their pre-trained starts differed by the string), and a relative path broke them from any other folder; a
    reserved name resolved as the file of that name in the current folder."""
    monkeypatch.chdir(tmp_path)
    flags = ["--dataset", str(image_folder), "--test-domain", "b", "--backbone", "resnet10t", "--image-size", "16",
             "--batch-size", "2", "--steps", "2", "--eval-every", "2", "--workers", "0", "--no-progress"]
    assert main(["train", *flags, "--weights", "none", "--output-dir", "start"]) == 0
    start = tmp_path.resolve() / "start" / "best.safetensors"
    for typed, folder in (("start/best.safetensors", "relative"), (str(start), "absolute")):
        assert main(["train", *flags, "--weights", typed, "--data-dir", ".", "--output-dir", folder]) == 0
    configs = [TrainConfig.load(tmp_path / folder / "config.yaml") for folder in ("relative", "absolute")]
    assert {(config.weights, config.data_dir) for config in configs} == {(str(start), str(tmp_path.resolve()))}
    assert configs[0].identity() == configs[1].identity()
    (tmp_path / "none").write_text("")
    assert main(["train", *flags, "--weights", "none", "--output-dir", "named"]) == 0
    assert TrainConfig.load(tmp_path / "named" / "config.yaml").weights == "none", "a name stays a name"


def test_cli_train_prints_results(image_folder, tmp_path, capsys):
    argv = ["train", "--dataset", str(image_folder), "--test-domain", "b", "--backbone", "resnet10t",
            "--weights", "none", "--image-size", "16", "--batch-size", "2", "--steps", "4", "--eval-every", "2",
            "--workers", "0", "--no-progress", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    done = json.loads((tmp_path / "run" / "results.json").read_text())
    assert f"step {done['step']} chosen by training_domain selection" in out
    assert f"i.i.d. {100 * done['iid']:.1f}%   o.o.d. {100 * done['ood']:.1f}%" in out
    assert f"{'b':<20} {'test/in':<9} {100 * done['acc']['b']['in']:>7.1f}%" in out


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_run_files_get_the_umasks_permissions(tmp_path, umask):
    """Mutant: weights, checkpoints and results.json were written 0600 (mkstemp's mode), unreadable by the
    rest of a group on a shared cluster file system, while config.yaml beside them followed the umask."""
    from droptune.runs.files import save_json
    from droptune.training.checkpoint import save_torch, save_weights

    old = os.umask(umask)
    try:
        save_json({"a": 1}, tmp_path / "results.json")
        save_torch({"step": 1}, tmp_path / "last.pt")
        save_weights({"w": torch.zeros(2)}, tmp_path / "best.safetensors")
        (tmp_path / "config.yaml").write_text("a: 1\n")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["results.json", "last.pt", "best.safetensors", "config.yaml"], 0o666 & ~umask)


def test_a_run_from_random_weights_with_frozen_batchnorm_is_warned(image_folder, tmp_path, caplog):
    """Mutant: `--weights none` kept the default freeze_bn silently, every BatchNorm layer normalizing with its
    initial statistics (mean 0, variance 1) to the end of training."""
    with caplog.at_level(logging.WARNING, logger="droptune"):
        Trainer(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "frozen")))
        Trainer(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "adapting"), freeze_bn=False))
        Trainer(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "vit"), backbone="vit_tiny_patch16_224",
                           image_size=224))
    warned = [r.getMessage() for r in caplog.records if "BatchNorm" in r.getMessage()]
    assert len(warned) == 1 and str(tmp_path / "frozen") in warned[0] and "--no-freeze-bn" in warned[0], warned
