"""What runs show where users look: TensorBoard event files with metrics.jsonl's scalars, and progress bars only
at a terminal (a log gets one plain line per evaluation, per finished sweep job)."""

from __future__ import annotations

import json
import shutil
import sys
from types import SimpleNamespace

import pytest

from droptune.cli.main import main
from droptune.experiments.runner import Progress
from droptune.training.config import TrainConfig
from droptune.training.metrics_log import MetricsLog, scalars
from droptune.runs.folder import RunDir
from droptune.training.trainer import train

TOY = dict(test_domain="c", backbone="resnet10t", weights="none", image_size=16, batch_size=3, steps=8,
           eval_every=4, lr=0.05, dropout=0.5, workers=0)


@pytest.fixture
def log_file(monkeypatch):
    """stderr is not a terminal, as in a sweep's or CI's log."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: {e.step: e.value for e in accumulator.Scalars(tag)} for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_holds_the_scalars_of_metrics_jsonl_across_a_resume(image_folder, tmp_path):
    config = TrainConfig(dataset=str(image_folder), **TOY, tensorboard=True, progress=False,
                         output_dir=str(tmp_path / "run"))
    assert config.identity() == config.replace(tensorboard=False).identity()  # a runtime field: same job id
    assert train(config, until=4) is None
    run = RunDir(tmp_path / "run")
    # An evaluation logged after the checkpoint by the interrupted run, then dropped by the resume:
    MetricsLog(run, 8, tensorboard=True).append({**run.read_metrics()[-1], "step": 6, "loss": 99.0})
    train(config, resume=True)
    records = run.read_metrics()
    assert [r["step"] for r in records] == [4, 8]
    expected = {}
    for r in records:
        for tag, value in scalars(r).items():
            expected.setdefault(tag, {})[r["step"]] = pytest.approx(value, rel=1e-6)
    assert {"loss", "lr", "iid", "ood", "acc/c/in", "acc/a/out", "images_per_s"} <= set(expected)
    assert events(run.tensorboard) == expected


def test_tensorboard_missing_gets_one_line(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    output = tmp_path / "run"
    assert main(["train", "--dataset", str(image_folder), "--test-domain", "c", "--tensorboard",
                 "--output-dir", str(output)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "droptune: error: --tensorboard needs the Python package tensorboard: pip install tensorboard "
        "(or droptune[tensorboard])"]
    assert not output.exists()


def test_training_in_a_log_writes_one_line_per_evaluation(image_folder, tmp_path, log_file, capsys):
    train(TrainConfig(dataset=str(image_folder), **TOY, output_dir=str(tmp_path / "run")))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("run: step")]
    assert len(lines) == 2 and lines[1].startswith("run: step 8/8, loss ") and "o.o.d." in lines[1]
    train(TrainConfig(dataset=str(image_folder), **TOY, progress=True, output_dir=str(tmp_path / "forced")))
    err = capsys.readouterr().err
    assert "\r" in err and "8/8" in err and "forced: step" not in err


def test_image_cache_build_in_a_log_is_one_line(image_folder, tmp_path, log_file, capsys):
    from droptune.data.cache import CachedDomains
    from droptune.data.registry import open_dataset

    CachedDomains(open_dataset(str(image_folder)), 8, tmp_path / "cache")
    assert capsys.readouterr().err == "caching toy at 8px: 36 images\n"
    CachedDomains(open_dataset(str(image_folder)), 12, tmp_path / "cache", progress=True)
    assert "\r" in capsys.readouterr().err


def test_predict_and_evaluate_bars_only_when_asked(image_folder, tmp_path, log_file, capsys):
    run = tmp_path / "run"
    train(TrainConfig(dataset=str(image_folder), **TOY, progress=False, output_dir=str(run)))
    capsys.readouterr()
    evaluation = ["evaluate", str(run), "--dataset", str(image_folder), "--output", str(tmp_path / "e.json")]
    prediction = ["predict", str(run), str(image_folder / "a"), "--output", str(tmp_path / "p.csv")]
    for argv in (evaluation, prediction):
        assert main(argv) == 0
        assert capsys.readouterr().err == ""
        assert main([*argv, "--progress"]) == 0
        assert "\r" in capsys.readouterr().err


def test_sweep_in_a_log_writes_one_line_per_finished_job(tmp_path, log_file, capsys):
    done = RunDir(tmp_path / "done")
    done.path.mkdir()
    jobs = [SimpleNamespace(id="a", run=done), SimpleNamespace(id="b", run=RunDir(tmp_path / "pending"))]
    progress = Progress(jobs)
    progress.started(jobs[0])
    done.results.write_text(json.dumps({"status": "completed", "dataset": "x", "test_domain": "a", "seed": 0,
                                        "trial_seed": 0, "selections": {}}))
    progress.ended(jobs[0], None)
    progress.close()
    assert capsys.readouterr().err == "sweep: a done; 1/2 jobs done, running 0, failed 0\n"
    shutil.rmtree(done.path)


def test_run_summary_columns_align_and_the_collapse_warning_quotes_both_rates(capsys):
    """Mutants: the split column narrower than "train/out" (`:<8`), shifting those rows' accuracy right; a collapse
    warning saying i.i.d. accuracy stayed "near" the majority-class rate when it is far below it."""
    from droptune.cli.run_summary import print_run

    print_run({"status": "completed", "run": "r", "step": 4, "selection": "training_domain", "test_domain": "c",
               "acc": {"a": {"out": 0.1}, "c": {"in": 0.25, "out": 0.5}}, "iid": 0.1, "ood": 0.25,
               "train_images_per_s": 10.0, "wall_time_s": 3.0, "collapsed": True, "majority_rate": 0.6})
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("domain"))):][:4]
    assert [line.split()[1] for line in table] == ["split", "train/out", "test/in", "test/out"]
    assert len({len(line) for line in table}) == 1, table
    assert lines[-1] == ("WARNING: collapsed: i.i.d. accuracy (10.0%) is no better than always predicting the "
                         "majority class (60.0%), and the loss stayed near ln(classes)")
