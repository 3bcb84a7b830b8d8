"""Sweeps: stable job ids, idempotent and resumable runs, recorded retries, and every launcher on tiny jobs."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import yaml

from conftest import make_image_folder
from droptune.cli.main import main
from droptune.errors import DroptuneError
from droptune.experiments.jobs import DONE, FAILED, INTERRUPTED, PENDING, execute, read_error, state
from droptune.experiments.launchers import LocalLauncher, RayLauncher, SlurmLauncher
from droptune.experiments.runner import run_sweep
from droptune.experiments.sweep import load_spec, parse_spec
from droptune.training.config import TrainConfig
from droptune.runs.folder import RunDir, exclusive
from droptune.training.trainer import train

TINY_BASE = {"backbone": "resnet10t", "weights": "none", "image_size": 16, "batch_size": 3, "steps": 4,
             "eval_every": 2, "lr": 0.05, "workers": 0}


def tiny_spec(image_folder, **changes):
    data = {"name": "tiny", "datasets": [str(image_folder)], "test_domains": ["c"], "base": TINY_BASE,
            "seeds": [0], "methods": [{"name": "dropout 0", "dropout": 0.0}, {"name": "dropout 0.5", "dropout": 0.5}]}
    return parse_spec({**data, **changes}, "test.yaml")


class InProcess:
    """A launcher that runs each job here, in order, and remembers which it ran."""

    def __init__(self):
        self.ran = []

    def run(self, jobs, events):
        for job in jobs:
            events.started(job)
            self.ran.append(job.id)
            execute(job)
            events.ended(job, None)


def test_job_ids_are_config_hashes_and_stable(image_folder, tmp_path):
    spec = tiny_spec(image_folder, test_domains="all", grid={"lr": [0.05, 0.01]}, seeds=[0, 1])
    jobs = spec.jobs(tmp_path / "sweep")
    assert len(jobs) == 3 * 2 * 2 * 2
    assert len({j.id for j in jobs}) == len(jobs)
    again = {j.id for j in tiny_spec(image_folder, test_domains="all", grid={"lr": [0.05, 0.01]},
                                     seeds=[0, 1]).jobs(tmp_path / "elsewhere")}
    assert again == {j.id for j in jobs}, "the same spec gives the same ids, wherever the sweep folder is"
    first = jobs[0]
    expected = TrainConfig(**{**TINY_BASE, "progress": False, "dataset": str(image_folder), "test_domain": "a",
                              "lr": 0.05, "dropout": 0.0, "seed": 0, "trial_seed": 0})
    assert first.id == expected.identity()
    assert first.run.path == (tmp_path / "sweep" / "runs" / first.id).resolve()
    more = tiny_spec(image_folder, test_domains="all", grid={"lr": [0.05, 0.01]}, seeds=[0, 1],
                     methods=[{"name": "dropout 0", "dropout": 0.0}, {"name": "dropout 0.5", "dropout": 0.5},
                              {"name": "dropout 0.9", "dropout": 0.9}])
    assert {j.id for j in jobs} < {j.id for j in more.jobs(tmp_path / "sweep")}, "adding a method keeps the others"


def test_a_sweeps_dataset_folder_is_one_dataset_however_it_is_typed(image_folder, monkeypatch):
    """Mutant: a sweep file's folder kept as typed (`toy`, `./toy` and the absolute path: three sets of job ids for
    one dataset, so a sweep rerun from another spelling trained everything again); a test_domains mapping keyed
    by the folder as typed then matching no dataset."""
    monkeypatch.chdir(image_folder.parent)
    ids = [{job.id for job in tiny_spec(image_folder, datasets=[typed], test_domains={typed: ["b"]}).jobs("sweep")}
           for typed in (image_folder.name, f"./{image_folder.name}", str(image_folder))]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 2
    job = tiny_spec(image_folder, datasets=[image_folder.name], test_domains={image_folder.name: ["b"]}).jobs("s")[0]
    assert (job.config.dataset, job.config.test_domain) == (str(image_folder.resolve()), "b")
    assert tiny_spec(image_folder, datasets=["PACS"]).datasets == ["PACS"]
    absolute = str(image_folder.resolve())
    with pytest.raises(DroptuneError, match=f"'datasets' repeats {absolute}: each value once"):
        tiny_spec(image_folder, datasets=[image_folder.name, f"./{image_folder.name}"])
    with pytest.raises(DroptuneError, match=f"'test_domains' repeats {absolute}: each value once"):
        tiny_spec(image_folder, test_domains={image_folder.name: ["a"], f"./{image_folder.name}": ["b"]})


def test_random_search_is_keyed_by_name(image_folder):
    space = {"lr": {"log_uniform": [1e-4, 1e-1]}, "batch_size": {"choice": [2, 3]}}
    one = tiny_spec(image_folder, random={"settings": 4, "seed": 1, "space": space}).hparam_settings()
    two = tiny_spec(image_folder, random={"settings": 4, "seed": 1,
                                          "space": {**space, "weight_decay": {"uniform": [0, 1e-3]}}}).hparam_settings()
    assert [s["lr"] for s in one] == [s["lr"] for s in two], "a new hyper-parameter leaves the others' draws"
    assert [s["batch_size"] for s in one] == [s["batch_size"] for s in two]
    assert all(1e-4 <= s["lr"] <= 1e-1 and s["batch_size"] in (2, 3) for s in one)
    assert len({s["lr"] for s in one}) == 4
    assert all(0 <= s["weight_decay"] <= 1e-3 for s in two)
    written = {"settings": 4, "seed": 1,
               "space": {"lr": {"log_uniform": ["1e-4", "1e-1"]}, "batch_size": space["batch_size"]}}
    assert tiny_spec(image_folder, random=written).hparam_settings() == one  # YAML 1.1 reads 1e-4 as a string


@pytest.mark.parametrize("changes, message", [
    ({"gird": {"lr": [1.0]}}, "unknown sweep key 'gird' in test.yaml"),
    ({"grid": {"lr": [0.1]}, "methods": [{"name": "x", "lr": 0.2}]}, "method 'x' sets 'lr', which the grid"),
    ({"base": {**TINY_BASE, "seed": 3}}, "test.yaml base sets 'seed', which the sweep sets"),
    ({"grid": {"learning_rate": [0.1]}}, "unknown config field 'learning_rate' in test.yaml grid"),
    ({"grid": {"dropout": [1.5]}, "methods": [{"name": "m"}]}, "invalid dropout = 1.5"),
    ({"methods": [{"name": "a", "dropout": 0.1}, {"name": "b", "dropout": 0.1}]}, "have the same config"),
    ({"test_domains": ["z"]}, "has no test domain 'z': expected one of a, b, c"),
    ({"test_domains": ["3"]}, "has no test domain '3': expected one of a, b, c .or an index 0-2"),
    ({"test_domains": ["b", 1]}, "test domain '1' of .* is 'b', already listed"),
    ({"methods": []}, "'methods' must be a non-empty list"),
    ({"seeds": [0, 1], "combine": ["ensemble"]}, "sweep 'tiny': nothing to combine: each test domain, split and "
                                                 "method has one run .without trial_seeds"),
    ({"random": {"settings": 2, "space": {"lr": {"log_uniform": [-1, 0.1]}}}},
     "test.yaml: random.space.lr: log_uniform bounds .-1, 0.1.: expected 0 < low <= high"),
    ({"random": {"settings": 2, "space": {"lr": {"uniform": [0.1, "-0.5"]}}}},
     "test.yaml: random.space.lr: uniform bounds .0.1, -0.5.: expected low <= high"),
    ({"random": {"settings": 2, "seed": "abc", "space": {"lr": {"uniform": [0, 1]}}}},
     "test.yaml: random.seed must be an integer, got 'abc'"),
    ({"random": {"settings": 2, "sead": 3, "space": {"lr": {"uniform": [0, 1]}}}},
     "test.yaml: unknown key 'sead' in 'random': expected settings, space, seed"),
    ({"random": {"settings": 2, "space": {"batch_size": {"uniform": [4, 8]}}}},
     "test.yaml: random.space.batch_size: uniform draws real numbers and batch_size is not one: use {choice: "),
    ({"seeds": [0, 1, 0]}, "test.yaml: 'seeds' repeats 0: each value once"),
    ({"trial_seeds": [2, 2]}, "test.yaml: 'trial_seeds' repeats 2: each value once"),
    ({"test_domains": ["b", "b"]}, "test.yaml: 'test_domains' repeats b: each value once"),
])
def test_spec_errors_name_the_key_and_what_was_expected(image_folder, tmp_path, changes, message):
    with pytest.raises(DroptuneError, match=message.replace("(", r"\(")):
        tiny_spec(image_folder, **changes).jobs(tmp_path)


def test_two_datasets_of_one_name_are_refused(image_folder, tmp_path):
    """Mutant: two folders named alike were one dataset in the report (the best run chosen across both) and wrote
    their combinations into one folder, the second overwriting the first."""
    other = make_image_folder(tmp_path / "other" / image_folder.name)
    expected = (f"test.yaml: datasets {image_folder} and {other} are both named '{image_folder.name}' in results "
                "and tables: rename one folder")
    with pytest.raises(DroptuneError, match=re.escape(expected)):
        tiny_spec(image_folder, datasets=[str(image_folder), str(other)], test_domains="all")


def test_test_domains_are_taken_by_index_as_train_takes_them(image_folder, tmp_path):
    """Mutant: a sweep refused the domain indices that `droptune train --test-domain` accepts."""
    by_index = tiny_spec(image_folder, test_domains=[2, "0"]).jobs(tmp_path)
    by_name = tiny_spec(image_folder, test_domains=["c", "a"]).jobs(tmp_path)
    assert [j.config for j in by_index] == [j.config for j in by_name]
    assert list(dict.fromkeys(j.config.test_domain for j in by_index)) == ["c", "a"]


def test_a_relative_data_dir_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    """Mutant: recorded as typed: every run folder of a sweep given `--data-dir data` named a folder relative to
    wherever a later `evaluate`, `combine` or `--resume` happens to run (the job ids do not depend on it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    jobs = load_spec("cpu", {"data_dir": "data"}).jobs(tmp_path)
    assert {j.config.data_dir for j in jobs} == {str(tmp_path.resolve() / "data")}
    assert [j.id for j in jobs] == [j.id for j in load_spec("cpu", {"data_dir": "/elsewhere"}).jobs(tmp_path)]


def test_presets_expand(tmp_path, monkeypatch):
    monkeypatch.delenv("DROPTUNE_DATA_DIR", raising=False)
    with pytest.raises(DroptuneError, match="PACS needs a data directory: set data_dir in the sweep file, pass"):
        load_spec("cpu").jobs(tmp_path)
    monkeypatch.setenv("DROPTUNE_DATA_DIR", "/env/data")
    paper = load_spec("paper").jobs(tmp_path)
    assert {j.config.data_dir for j in paper} == {"/env/data"}
    assert len(paper) == 4 * 4 * 6 * 3 * 5
    assert {j.config.backbone for j in paper} == {"resnet50"} and {j.config.weights for j in paper} == {"IMAGENET1K_V2"}
    assert {(j.config.lr, j.config.weight_decay) for j in paper} == {
        (lr, wd) for lr in (1e-3, 5e-4) for wd in (1e-4, 5e-5, 1e-5)}
    # the official script's protocol: one split for the 3 seeds, fp32, the random head of the run's seed,
    # validation images augmented as in DomainBed, and
    # along every run the logit ensemble and the weight average from step 300
    assert {j.config.trial_seed for j in paper} == {0} and {j.config.seed for j in paper} == {0, 1, 2}
    assert {(j.config.amp, j.config.head_init, j.config.head_seed, j.config.clean_holdout) for j in paper} == {
        ("none", None, None, False)}
    assert {(j.config.ensemble_start, j.config.ensemble_outputs, j.config.average_start) for j in paper} == {
        (300, "logits", 300)}
    assert {(j.config.steps, j.config.milestones[0], j.config.eval_every, j.config.batch_size) for j in paper} == {
        (10000, 5000, 300, 32)}
    assert {(j.method, j.config.dropout, j.config.head_lr_mult) for j in paper} == {
        ("dropout 0", 0.0, 1.0), ("dropout 0.5", 0.5, 1.0), ("dropout 0.9", 0.9, 1.0), ("dropout 0.95", 0.95, 1.0),
        ("dropout 0.9 head 10x", 0.9, 10.0)}
    assert load_spec("paper").combine == ["ensemble"]
    soups = load_spec("paper-soups").jobs(tmp_path)
    assert len(soups) == 4 * 4 * 6 * 3 * 2 and {j.config.head_init for j in soups} == {"probe"}
    assert {j.id for j in soups} <= {j.id for j in load_spec("paper", {"base": {"head_init": "probe"}}).jobs(tmp_path)}
    assert load_spec("paper-soups").combine == ["ensemble", "uniform_soup", "greedy_soup"]
    cpu = load_spec("cpu", {"data_dir": "/data"}).jobs(tmp_path)
    assert {j.config.dataset for j in cpu} == {"PACS"} and {j.config.data_dir for j in cpu} == {"/data"}
    assert {j.config.test_domain for j in cpu} == {"art_painting", "cartoon", "photo", "sketch"}
    assert all(j.config.backbone == "efficientnet_lite0" and j.config.image_size <= 112 for j in cpu)
    assert {j.config.dropout for j in cpu} == {0.0, 0.5, 0.9, 0.95} and len(cpu) == 4 * 2 * 4
    assert {j.config.head_init for j in cpu} == {"probe"} and {j.config.trial_seed for j in cpu} == {0}
    assert load_spec("cpu").combine == ["ensemble", "uniform_soup", "greedy_soup"]
    scratch = load_spec("scratch").jobs(tmp_path)
    assert {(j.config.weights, j.config.dropout) for j in scratch} == {
        (w, p) for w in ("none", "default") for p in (0.0, 0.9)}
    assert len(scratch) == 8 and not any(j.config.freeze_bn for j in scratch)


def test_finished_sweep_runs_nothing_again(image_folder, tmp_path):
    jobs = tiny_spec(image_folder).jobs(tmp_path)
    launcher = InProcess()
    summary = run_sweep(jobs, launcher, progress=False)
    assert summary.states == {DONE: 2} and summary.executions == 2 and summary.complete
    again = InProcess()
    summary = run_sweep(jobs, again, progress=False)
    assert again.ran == [] and summary.executions == 0 and summary.states == {DONE: 2}
    assert json.loads((jobs[0].run.path / "job.json").read_text())["method"] == "dropout 0"


def test_killed_sweep_resumes_where_it_stopped(image_folder, tmp_path):
    spec = tiny_spec(image_folder, base={**TINY_BASE, "steps": 6})
    killed, finished = spec.jobs(tmp_path)
    train(finished.config)
    train(killed.config, until=2)
    assert state(killed.run) == INTERRUPTED
    first_record = killed.run.metrics.read_text().splitlines()[0]
    finished_results = finished.run.results.read_text()
    launcher = InProcess()
    summary = run_sweep([killed, finished], launcher, progress=False)
    assert launcher.ran == [killed.id] and summary.states == {DONE: 2}
    assert killed.run.metrics.read_text().splitlines()[0] == first_record, "resumed, not restarted"
    assert [r["step"] for r in killed.run.read_metrics()] == [2, 4, 6]
    assert finished.run.results.read_text() == finished_results


def test_killing_the_sweep_stops_its_workers_and_a_rerun_resumes(image_folder, tmp_path):
    spec_file = tmp_path / "long.yaml"
    spec_file.write_text(yaml.safe_dump({"datasets": [str(image_folder)], "test_domains": ["c"],
                                         "base": {**TINY_BASE, "steps": 100, "eval_every": 5},
                                         "methods": [{"name": "dropout 0", "dropout": 0.0}]}))
    args = ["sweep", str(spec_file), "--output", str(tmp_path / "sweep")]
    driver = subprocess.Popen([sys.executable, "-m", "droptune.cli.main", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "sweep" / "runs").glob("*/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.02)
    driver.kill()
    driver.wait()
    run = RunDir(next((tmp_path / "sweep" / "runs").iterdir()))
    time.sleep(2)
    records = run.metrics.read_text()
    time.sleep(1)
    assert run.metrics.read_text() == records, "the worker died with the sweep"
    assert state(run) == INTERRUPTED
    assert main(args) == 0
    assert run.metrics.read_text().startswith(records), "resumed, not restarted"
    assert [r["step"] for r in run.read_metrics()] == list(range(5, 101, 5))


def test_failures_are_recorded_and_retried_without_stopping_the_others(image_folder, tmp_path, monkeypatch):
    """Mutant: a retry that finishes keeps the failed attempt's error.json beside its results.json."""
    from droptune.training import trainer

    spec = tiny_spec(image_folder, methods=[{"name": "ok", "dropout": 0.0}, {"name": "flaky", "dropout": 0.5},
                                            {"name": "broken", "dropout": 0.9, "weights": str(tmp_path / "no.pt")}])
    ok, flaky, broken = spec.jobs(tmp_path / "sweep")
    calls = []

    def flaky_train(config, **kwargs):
        calls.append(config.identity())
        if config.identity() == flaky.id and calls.count(flaky.id) == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        return train(config, **kwargs)

    monkeypatch.setattr(trainer, "train", flaky_train)
    summary = run_sweep([broken, flaky, ok], InProcess(), max_retries=2, progress=False)
    assert summary.states == {DONE: 2, FAILED: 1} and not summary.complete
    assert calls.count(broken.id) == 3 and calls.count(flaky.id) == 2 and calls.count(ok.id) == 1
    error = read_error(broken.run)
    assert error["attempts"] == 3 and "no.pt" in error["message"] and "Traceback" in error["traceback"]
    assert state(flaky.run) == DONE and read_error(flaky.run) is None, "its retry finished: no error.json left"
    run_sweep([broken], InProcess(), max_retries=0, progress=False)
    assert read_error(broken.run)["attempts"] == 4, "a later invocation retries it and counts on"


def test_a_dead_worker_is_recorded(image_folder, tmp_path):
    class Crashing:
        def run(self, jobs, events):
            for job in jobs:
                events.started(job)
                events.ended(job, "worker exited with status -9")

    job, = tiny_spec(image_folder, methods=[{"name": "m"}]).jobs(tmp_path)
    summary = run_sweep([job], Crashing(), max_retries=1, progress=False)
    assert summary.states == {FAILED: 1} and summary.executions == 2
    assert read_error(job.run) == {"message": "worker exited with status -9", "traceback": "", "attempts": 2}


def test_a_worker_dying_after_its_job_finished_leaves_a_finished_run(image_folder, tmp_path):
    """Killed while exiting, after results.json was written: the run is done, with no error.json saying it failed."""
    class DyingAfterwards:
        def run(self, jobs, events):
            for job in jobs:
                events.started(job)
                execute(job)
                events.ended(job, "worker exited with status -9")

    job, = tiny_spec(image_folder, methods=[{"name": "m"}]).jobs(tmp_path)
    summary = run_sweep([job], DyingAfterwards(), max_retries=1, progress=False)
    assert summary.states == {DONE: 1} and summary.executions == 1
    assert not job.run.error.exists()


def test_cli_sweep_local_launcher_then_report(image_folder, tmp_path, capsys):
    """Worker processes, the dry run, a second run that starts nothing, and the report."""
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump({"datasets": [str(image_folder)], "test_domains": ["c"], "base": TINY_BASE,
                                         "methods": [{"name": "dropout 0", "dropout": 0.0}]}))
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", str(spec_file), "--output", str(sweep_dir), "--dropouts", "0", "0.5", "--workers", "2"]
    assert main(args + ["--dry-run"]) == 0
    assert "2 jobs" in capsys.readouterr().out and not (sweep_dir / "runs").exists()
    assert main(args) == 0
    assert "2 done); 2 run(s) started" in capsys.readouterr().out
    runs = sorted((sweep_dir / "runs").iterdir())
    assert [state(RunDir(r)) for r in runs] == [DONE] * 2
    assert all((r / "log.txt").exists() for r in runs)
    results = (runs[0] / "results.json").rename(tmp_path / "results.json")  # as if it were still training
    with exclusive(runs[0], "run folder"):
        assert main(args + ["--dry-run"]) == 0
    results.rename(runs[0] / "results.json")
    with exclusive(runs[1], "run folder"):  # a `droptune train --resume` of a finished run: it stays done
        assert main(args + ["--dry-run"]) == 0
    out = capsys.readouterr().out.split("nothing was run (--dry-run)")
    states = [{line.split()[0]: line.split()[1] for line in part.strip().splitlines()[1:3]} for part in out[:2]]
    assert states == [{runs[0].name: "running", runs[1].name: "done"}, {runs[0].name: "done", runs[1].name: "done"}]
    more_file = tmp_path / "more.yaml"  # another sweep into the same folder: its file beside the first one's
    more_file.write_text(spec_file.read_text())
    assert main(["sweep", str(more_file), "--output", str(sweep_dir), "--dropouts", "0"]) == 0
    assert main(args) == 0
    assert "0 run(s) started" in capsys.readouterr().out
    expanded = {p.name: yaml.safe_load(p.read_text()) for p in sweep_dir.glob("sweep*.yaml")}
    assert {name: (data["name"], len(data["methods"])) for name, data in expanded.items()} == {
        "sweep.yaml": ("tiny", 2), "sweep-more.yaml": ("more", 1)}
    assert main(["report", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "| dropout 0 |" in out and "| dropout 0.5 |" in out
    report = sweep_dir / "report" / "training_domain"
    assert {"tables.md", "tables.tex", "tables.csv", "runs.csv"} <= {p.name for p in report.iterdir()}
    page = (report / "report.md").read_text()
    assert page.index("## Sweep files") < page.index("`sweep/sweep.yaml`") < page.index("`sweep/sweep-more.yaml`")


def test_sweep_records_a_weights_file_by_its_absolute_path(image_folder, tmp_path, monkeypatch):
    """A job runs where its launcher puts it (a Slurm node's or a Ray worker's directory): a weights file named
    relative to where the sweep was started is recorded by its absolute path, in base, grid and methods alike,
    and one file named from two directories gives one job."""
    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    absolute = str((tmp_path / "w.safetensors").resolve())
    for changes in ({"base": {**TINY_BASE, "weights": "w.safetensors"}},
                    {"grid": {"weights": ["w.safetensors", "none"]}},
                    {"methods": [{"name": "dropout 0.5", "dropout": 0.5, "weights": "w.safetensors"}]}):
        weights = {job.config.weights for job in tiny_spec(image_folder, **changes).jobs(tmp_path / "sweep")}
        assert absolute in weights and "w.safetensors" not in weights, changes
    here = [job.id for job in tiny_spec(image_folder, base={**TINY_BASE, "weights": "w.safetensors"}).jobs("sweep")]
    monkeypatch.chdir(tmp_path / "sub")
    there = [job.id for job in tiny_spec(image_folder, base={**TINY_BASE, "weights": "../w.safetensors"}).jobs("s")]
    assert here == there


def test_sweep_combines_runs_across_seeds_once_and_reports_them(image_folder, pretrained_file, tmp_path, capsys):
    """Mutants: a combination recomputed although its runs are unchanged, or kept though its group gained a run."""
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump({
        "datasets": [str(image_folder)], "test_domains": ["c"],
        "base": {**TINY_BASE, "weights": str(pretrained_file), "head_init": "probe"},
        "seeds": [0, 1], "trial_seeds": [0], "methods": [{"name": "dropout 0", "dropout": 0.0}],
        "combine": ["ensemble", "uniform_soup", "greedy_soup"]}))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", str(spec_file), "--output", str(sweep_dir)]) == 0
    assert "combining 2 runs of" in capsys.readouterr().out
    group = next((sweep_dir / "combined").iterdir())
    assert json.loads((group / "group.json").read_text())["method"] == "dropout 0"
    soup = json.loads((group / "uniform_soup" / "results.json").read_text())
    assert sorted(r["run"] for r in soup["runs"]) == sorted(p.name for p in (sweep_dir / "runs").iterdir())
    assert len({r["head_start"] for r in soup["runs"]}) == 1
    assert sorted(r["hparams"]["seed"] for r in soup["runs"]) == [0, 1] and {len(r["hparams"]) for r in soup["runs"]} \
        == {1}, "what tells the members apart, whatever field it is; not the fields they share"
    assert main(["sweep", str(spec_file), "--output", str(sweep_dir)]) == 0
    assert "combining" not in capsys.readouterr().out, "combinations of unchanged runs are not redone"
    assert main(["sweep", str(spec_file), "--output", str(sweep_dir), "--seeds", "0", "1", "2"]) == 0
    assert "combining 3 runs of" in capsys.readouterr().out
    for method in ("ensemble", "uniform_soup", "greedy_soup"):
        members = json.loads((group / method / "results.json").read_text())["runs"]
        assert sorted(r["run"] for r in members) == sorted(p.name for p in (sweep_dir / "runs").iterdir())
    assert len(json.loads((group / "group.json").read_text())["combined"]) == 3
    assert main(["report", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    for method in ("dropout 0", "dropout 0 + ensemble of runs", "dropout 0 + uniform soup", "dropout 0 + greedy soup"):
        assert f"| {method} |" in out
    with pytest.raises(DroptuneError, match="'combine' must be a list of ensemble, uniform_soup, greedy_soup"):
        tiny_spec(image_folder, combine=["soup"])


def test_an_ensemble_of_runs_averages_what_the_runs_ensembles_average(image_folder, tmp_path, capsys):
    """Mutants: the sweep's (or `droptune combine`'s, by default) ensemble of runs always averaging softmax outputs
    (the `paper` preset sets `ensemble_outputs: logits`), or an ensemble combined with the other outputs kept as
    done."""
    from droptune.combining.combine import combine

    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump({
        "datasets": [str(image_folder)], "test_domains": ["c"], "base": {**TINY_BASE, "ensemble_outputs": "logits"},
        "seeds": [0, 1], "trial_seeds": [0], "methods": [{"name": "dropout 0.9", "dropout": 0.9}],
        "combine": ["ensemble"]}))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", str(spec_file), "--output", str(sweep_dir)]) == 0
    result = next((sweep_dir / "combined").iterdir()) / "ensemble" / "results.json"
    ensemble = json.loads(result.read_text())
    runs = sorted((sweep_dir / "runs").iterdir())
    by_hand = {outputs: combine(runs, ["ensemble"], tmp_path / outputs, device="cpu", workers=0,
                                outputs=outputs)["ensemble"] for outputs in ("logits", "probs")}
    assert ensemble["outputs"] == "logits" and ensemble["acc"] == by_hand["logits"]["acc"]
    assert main(["combine", *map(str, runs), "--method", "ensemble", "--output", str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "ensemble" / "results.json").read_text())["acc"] == ensemble["acc"], \
        "droptune combine, by default, averages what the runs' ensembles average, as the sweep does"
    result.write_text(json.dumps({**ensemble, **{k: by_hand["probs"][k] for k in ("outputs", "acc", "iid", "ood")}}))
    capsys.readouterr()
    assert main(["sweep", str(spec_file), "--output", str(sweep_dir)]) == 0
    assert "combining 2 runs of" in capsys.readouterr().out, "an ensemble of the other outputs is redone"
    assert json.loads(result.read_text())["outputs"] == "logits"


def test_local_launcher_gives_each_worker_one_gpu(monkeypatch, image_folder, tmp_path):
    seen = []

    class FakeWorker:
        def __init__(self, command, env, **kwargs):
            seen.append(env["CUDA_VISIBLE_DEVICES"])
            self.pid = len(seen)

        def wait(self):
            return 0

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    monkeypatch.setattr("droptune.experiments.launchers.subprocess.Popen", FakeWorker)
    jobs = tiny_spec(image_folder, seeds=[0, 1]).jobs(tmp_path)
    for job in jobs:
        job.run.path.mkdir(parents=True)
    ended = []
    events = type("E", (), {"started": lambda self, job: None,
                            "ended": lambda self, job, crash: ended.append(crash)})()
    LocalLauncher().run(jobs, events)
    assert sorted(set(seen)) == ["2", "5"] and len(seen) == 4 and ended == [None] * 4


def test_submitit_launcher_with_its_local_executor(image_folder, tmp_path):
    jobs = tiny_spec(image_folder).jobs(tmp_path / "sweep")
    launcher = SlurmLauncher(folder=tmp_path / "sweep" / "slurm", cluster="local", time_min=5, gpus_per_job=0,
                             cpus_per_job=1, partition="gpu", poll_s=0.5)
    summary = run_sweep(jobs, launcher, max_retries=0, progress=False)
    assert summary.states == {DONE: 2}
    assert all(j.run.read_results().status == "completed" for j in jobs)
    assert all("o.o.d." in j.run.log.read_text() for j in jobs), "each task's output in its run's log.txt"


def test_slurm_options_reach_the_job_array(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "srun"):  # stand-ins: the executor is only configured here, nothing is submitted
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    launcher = SlurmLauncher(folder=tmp_path / "slurm", partition="gpu", account="lab", time_min=720,
                             gpus_per_job=2, cpus_per_job=10, mem_gb=64, array_parallelism=32, signal_delay_s=300)
    parameters = launcher.executor()._executor.parameters
    assert {k: parameters[k] for k in ("partition", "account", "time", "gpus_per_node", "cpus_per_task",
                                       "array_parallelism", "mem", "signal_delay_s")} == {
        "partition": "gpu", "account": "lab", "time": 720, "gpus_per_node": 2, "cpus_per_task": 10,
        "array_parallelism": 32, "mem": "64GB", "signal_delay_s": 300}


def test_ray_launcher_on_a_local_ray_instance(image_folder, tmp_path, monkeypatch):
    import ray
    # Keep the instance on the loopback address (Ray otherwise binds to the machine's network address).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr("ray._private.ray_constants.ENABLE_RAY_CLUSTER", False, raising=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        jobs = tiny_spec(image_folder).jobs(tmp_path / "sweep")
        assert [state(j.run) for j in jobs] == [PENDING] * 2
        summary = run_sweep(jobs, RayLauncher(), max_retries=0, progress=False)
        assert summary.states == {DONE: 2}
        assert all("o.o.d." in j.run.log.read_text() for j in jobs), "each task's output in its run's log.txt"
    finally:
        ray.shutdown()


def test_a_ray_address_that_does_not_answer_is_one_line_not_minutes_of_ray_s_retries(monkeypatch):
    """Mutants: a wrong --ray-address left to ray.init (minutes of retries on a GCS address, then a traceback);
    no cluster at `auto` a ConnectionError traceback."""
    from types import SimpleNamespace

    from droptune.experiments.launchers import ray_host_port

    assert [ray_host_port(a) for a in (None, "auto", "h:6379", "ray://head.example:10001", "[::1]:6379")] == [
        (None, None), (None, None), ("h", 6379), ("head.example", 10001), ("::1", 6379)]
    with pytest.raises(DroptuneError, match=r"^--ray-address head:x: expected auto, HOST:PORT or ray://HOST:PORT$"):
        RayLauncher(address="head:x")
    never = SimpleNamespace(init=lambda **_: pytest.fail("ray.init called for an address that does not answer"))
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed below: nothing listens there
    with pytest.raises(DroptuneError, match=rf"cannot reach the Ray cluster at ray://127.0.0.1:{port} "
                                            r"\(--ray-address\): Connection refused; is its head running"):
        RayLauncher(address=f"ray://127.0.0.1:{port}").connect(never)

    def silent(address, timeout):
        assert timeout == 0.5
        raise TimeoutError("timed out")
    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(DroptuneError, match="at 10.0.0.9:6379 .*: no answer within 0.5 s;"):
        RayLauncher(address="10.0.0.9:6379", connect_s=0.5).connect(never)

    def no_cluster(address):
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify the one to connect to.")
    with pytest.raises(DroptuneError) as error:
        RayLauncher(address="auto").connect(SimpleNamespace(init=no_cluster))
    assert str(error.value) == ("cannot connect to a Ray cluster at auto (--ray-address): Could not find any running "
                                "Ray instance. Please specify the one to connect to.")


def test_the_evidence_presets_expand_to_what_their_pages_report(tmp_path):
    sizes = {"officecaltech10-cpu": 4 * 4 * 2, "office31-cpu": 3 * 4 * 2, "pacs-long-cpu": 2 * 2 * 3,
             "pacs-head-cpu": 2 * 5 * 2, "pacs-cpu-head": 4 * 2}
    jobs = {name: load_spec(name, {"data_dir": "/data"}).jobs(tmp_path) for name in sizes}
    assert {name: len(found) for name, found in jobs.items()} == sizes
    assert {j.config.dataset for j in jobs["officecaltech10-cpu"] + jobs["office31-cpu"]} == {
        "OfficeCaltech10", "Office31"}
    shared = {j.id for j in jobs["pacs-long-cpu"]} & {j.id for j in jobs["pacs-head-cpu"]}
    assert {(j.config.test_domain, j.config.dropout, j.config.seed, j.config.head_init)
            for j in jobs["pacs-head-cpu"] if j.id in shared} == {("art_painting", 0.9, s, "probe") for s in (0, 1)}
    random_head = [j for j in jobs["pacs-head-cpu"] if "random head" in j.method]
    assert len(random_head) == 12 and {j.config.head_init for j in random_head} == {None}
    assert {j.config.head_lr_mult for j in random_head} == {1.0, 10.0}
    plain = {(j.config.test_domain, j.config.seed): j.config
             for j in load_spec("cpu", {"data_dir": "/data"}).jobs(tmp_path) if j.config.dropout == 0}
    for job in jobs["pacs-cpu-head"]:  # the `cpu` study's plain runs but for their head start
        control = plain[(job.config.test_domain, job.config.seed)]
        assert job.config.head_init is None and job.config.replace(head_init="probe", output_dir=control.output_dir) \
            == control
