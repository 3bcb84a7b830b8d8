"""Preemption: a stop signal saves the run mid-interval, and resuming gives the uninterrupted run's numbers."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from droptune.cli.main import main
from droptune.experiments.jobs import DONE, INTERRUPTED, Job, RequeuedExecute, prepare, state
from droptune.experiments.runner import run_sweep
from droptune.experiments.sweep import load_spec
from droptune.training.interrupt import INTERRUPTED_EXIT, Interrupted
from droptune.runs.folder import RunDir
from droptune.training.trainer import Trainer, train

from conftest import make_image_folder
from test_sweep import InProcess
from test_training import numbers, toy_config

VARIANTS = dict(ensemble_start=4, average_start=4, ema_decay=0.9, swad=True)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def signal_during_step(monkeypatch, step: int, signum: int, again_while_saving: bool = False) -> None:
    """Deliver `signum` to this process while the trainer computes step `step` (and, optionally, once more
    while it writes the checkpoint that follows)."""
    original_step, original_save = Trainer._train_step, Trainer._save_checkpoint

    def train_step(self, x, y):
        if self.step == step - 1:
            signal.raise_signal(signum)
        return original_step(self, x, y)

    def save_checkpoint(self):
        if again_while_saving and self.step == step:
            signal.raise_signal(signum)
        return original_save(self)

    monkeypatch.setattr(Trainer, "_train_step", train_step)
    monkeypatch.setattr(Trainer, "_save_checkpoint", save_checkpoint)


def assert_same_run(done: RunDir, reference: RunDir) -> None:
    assert numbers(done.read_metrics()) == numbers(reference.read_metrics())
    ours, theirs = done.read_results(), reference.read_results()
    for key in ("status", "step", "iid", "ood", "acc", "selections", "variants", "steps_done"):
        assert getattr(ours, key) == getattr(theirs, key), key
    for path in sorted(reference.path.glob("*.safetensors")):
        a, b = load_file(str(done.path / path.name)), load_file(str(path))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), path.name


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("preemption") / "toy")


@pytest.fixture(scope="module")
def uninterrupted(toy) -> RunDir:
    config = toy_config(toy, toy.parent, output_dir=str(toy.parent / "full"), **VARIANTS)
    train(config)
    return RunDir(config.run_dir())


# Steps drawn once at random between evaluations (eval_every 4 of 12) and on one: 4 ends with an evaluation.
@pytest.mark.parametrize("step, signum, again", [(3, signal.SIGTERM, False), (4, signal.SIGINT, False),
                                                 (7, signal.SIGTERM, True), (10, signal.SIGUSR2, False)])
def test_a_signal_saves_the_run_and_resuming_gives_the_uninterrupted_numbers(
        toy, tmp_path, monkeypatch, uninterrupted, step, signum, again, capsys):
    """Mutant guarded: break out of the loop without saving last.pt (the run restarts from the last evaluation
    and its dropout masks and along-run averages drift), or save before the step has finished."""
    config = toy_config(toy, tmp_path, output_dir=str(tmp_path / "part"), **VARIANTS)
    run = RunDir(config.run_dir())
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal_during_step(monkeypatch, step, signum, again_while_saving=again)

    with pytest.raises(Interrupted, match=rf"stopped by {signal.Signals(signum).name} at step {step} of 12"):
        train(config)

    assert capsys.readouterr().err.count("received: saving") == 1, "a second signal changes nothing"
    assert torch.load(run.last, weights_only=True)["step"] == step
    assert run.read_interrupted()["step"] == step and run.read_interrupted()["signal"] == signal.Signals(signum).name
    assert not run.results.exists()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before, "the handlers are put back"

    monkeypatch.undo()
    train(config, resume=True)
    assert not run.interrupted.exists()
    assert_same_run(run, uninterrupted)


def tiny_train_args(image_folder, output, steps=60):
    return ["train", "--dataset", str(image_folder), "--test-domain", "c", "--backbone", "resnet10t",
            "--weights", "none", "--image-size", "16", "--batch-size", "3", "--steps", str(steps),
            "--eval-every", "10", "--lr", "0.05", "--dropout", "0.5", "--workers", "1", "--no-progress",
            "--output-dir", str(output)]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the process ended ({process.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)


def test_sigint_to_every_process_of_droptune_train_exits_75_and_resumes_exactly(image_folder, tmp_path, capsys):
    """Ctrl-C signals the whole process group, loader workers included.
    Mutant guarded: loader workers that die of the signal (the step in flight fails instead of saving)."""
    run = RunDir(tmp_path / "part")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "droptune.cli.main", *tiny_train_args(image_folder, run.path)],
                               stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    wait_for(run.metrics, process)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)

    assert process.returncode == INTERRUPTED_EXIT, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("droptune: run ") and f"droptune train --resume {run.path}" in last, err
    stopped = run.read_interrupted()
    assert stopped["signal"] == "SIGINT" and 10 <= stopped["step"] < 60
    assert torch.load(run.last, weights_only=True)["step"] == stopped["step"]

    assert main(["train", "--resume", str(run.path)]) == 0
    assert main(tiny_train_args(image_folder, tmp_path / "full")) == 0
    capsys.readouterr()
    assert_same_run(run, RunDir(tmp_path / "full"))


def sweep_file(image_folder, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "datasets": [str(image_folder)], "test_domains": ["c"], "seeds": [0],
        "base": {"backbone": "resnet10t", "weights": "none", "image_size": 16, "batch_size": 3, "steps": 40,
                 "eval_every": 10, "lr": 0.05, "workers": 0},
        "methods": [{"name": "dropout 0", "dropout": 0.0}, {"name": "dropout 0.5", "dropout": 0.5}]}))
    return path


def test_a_local_sweep_stopped_by_sigterm_and_run_again_gives_the_uninterrupted_tables(image_folder, tmp_path):
    """SIGTERM to the sweep process alone (as `kill PID` or a scheduler does): it passes the signal on to its
    running worker, which saves its run; no other job starts; the rerun trains nothing twice, and the stopped
    job ends with the numbers of an uninterrupted one (so every table built from the runs is the same).
    Mutant guarded: a launcher that does not forward the signal (the worker trains on, or dies with the sweep)."""
    spec = sweep_file(image_folder, tmp_path / "sweep.yaml")
    stopped_dir, reference_dir = tmp_path / "stopped", tmp_path / "reference"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "droptune.cli.main", "sweep", str(spec), "--output",
                                str(stopped_dir), "--workers", "1"], stderr=subprocess.PIPE, text=True, env=env)
    wait_for(stopped_dir / "runs", process)
    deadline = time.monotonic() + 120
    while not list(stopped_dir.glob("runs/*/metrics.jsonl")):
        assert process.poll() is None and time.monotonic() < deadline, "no job started"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)

    assert process.returncode == INTERRUPTED_EXIT, err
    assert "sweep stopped by SIGTERM" in err.strip().splitlines()[-1]
    runs = [RunDir(p) for p in sorted((stopped_dir / "runs").iterdir())]
    states = sorted(state(r) for r in runs)
    assert states.count(INTERRUPTED) == 1 and DONE not in states, states
    interrupted = next(r for r in runs if state(r) == INTERRUPTED)
    assert interrupted.read_interrupted()["signal"] == "SIGTERM"
    started = [r for r in runs if r.metrics.exists()]
    assert started == [interrupted], "no job starts after the signal"

    assert main(["sweep", str(spec), "--output", str(stopped_dir), "--workers", "1"]) == 0
    finished = {r.path.name: r.results.stat().st_mtime_ns for r in runs}
    assert main(["sweep", str(spec), "--output", str(stopped_dir), "--workers", "1"]) == 0
    assert {r.path.name: r.results.stat().st_mtime_ns for r in runs} == finished, "nothing is trained twice"
    assert all(state(r) == DONE for r in runs)
    run_sweep(load_spec(str(spec)).jobs(reference_dir), InProcess(), progress=False)
    assert_same_run(interrupted, RunDir(reference_dir / "runs" / interrupted.path.name))
    for folder in (stopped_dir, reference_dir):
        assert main(["report", str(folder), "--output", str(folder / "report")]) == 0
    assert (stopped_dir / "report" / "tables.md").read_text() == (reference_dir / "report" / "tables.md").read_text()


def test_ctrl_c_of_a_ray_sweep_saves_its_running_task_and_exits_as_interrupted(image_folder, tmp_path, monkeypatch,
                                                                              capsys):
    """SIGINT to the sweep process: the Ray launcher cancels its tasks, a running one saves its run as on a signal
    of its own, and the sweep exits 75 advising to run it again.
    Mutant guarded: a launcher that waits on Ray without taking the stop signals (a KeyboardInterrupt: exit 130,
    the `droptune train --resume RUN_DIR` advice, and the task's steps since its last evaluation lost)."""
    import ray
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr("ray._private.ray_constants.ENABLE_RAY_CLUSTER", False, raising=False)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({
        "datasets": [str(image_folder)], "test_domains": ["c"], "seeds": [0],
        "base": {"backbone": "resnet10t", "weights": "none", "image_size": 16, "batch_size": 3, "steps": 2000,
                 "eval_every": 10, "lr": 0.05, "workers": 0},
        "methods": [{"name": "dropout 0", "dropout": 0.0}]}))
    ended = threading.Event()

    def ctrl_c_once_training() -> None:  # only while the launcher, which takes the signal, follows the task
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("sweep/runs/*/metrics.jsonl")):
            if ended.wait(0.05) or time.monotonic() > deadline:
                return
        os.kill(os.getpid(), signal.SIGINT)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    threading.Thread(target=ctrl_c_once_training, daemon=True).start()
    try:
        status = main(["sweep", str(spec), "--output", str(tmp_path / "sweep"), "--launcher", "ray"])
    finally:
        ended.set()
        ray.shutdown()
    err = capsys.readouterr().err.strip().splitlines()
    assert status == INTERRUPTED_EXIT and "run the same command again to continue" in err[-1], err
    run = RunDir(next((tmp_path / "sweep" / "runs").iterdir()))
    assert state(run) == INTERRUPTED and not run.error.exists()
    stopped = run.read_interrupted()
    assert stopped["signal"] == "SIGINT" and torch.load(run.last, weights_only=True)["step"] == stopped["step"]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the submitit task through Linux's /proc")
def test_submitit_requeues_a_task_signalled_before_its_time_limit_and_it_resumes(image_folder, tmp_path):
    """Slurm's --signal (USR2 by submitit's default) before the time limit: the run saves, submitit requeues the
    task through RequeuedExecute.checkpoint, and the requeued task resumes from last.pt.
    Mutant guarded: a callable without `checkpoint` (submitit ends the task instead of requeueing it)."""
    import submitit
    config = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "part"), steps=60, eval_every=10,
                        workers=0, **VARIANTS)
    job = Job(config, "dropout 0.5")
    prepare(job)
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm", cluster="local")
    executor.update_parameters(timeout_min=5, gpus_per_node=0, cpus_per_task=1, tasks_per_node=1, nodes=1)
    task = executor.submit(RequeuedExecute(), job)
    controller = int(task.job_id)
    deadline = time.monotonic() + 120
    while not job.run.metrics.exists():
        assert task.get_info()["jobState"] == "RUNNING" and time.monotonic() < deadline, task.stderr()
        time.sleep(0.05)
    pids = children(controller)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGUSR2)

    assert task.result() == DONE, task.stderr()
    submitit_log = task.stdout() + (task.stderr() or "")
    assert "SIGUSR2 received: saving" in job.run.log.read_text() and "Requeued job" in submitit_log, submitit_log
    full = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "full"), steps=60, eval_every=10,
                      workers=0, **VARIANTS)
    train(full)
    assert_same_run(job.run, RunDir(full.run_dir()))
    assert json.loads(job.run.results.read_text())["status"] == "completed"


def test_ctrl_c_outside_a_training_loop_gives_the_resume_hint_only_where_there_is_a_checkpoint(tmp_path, monkeypatch,
                                                                                             capsys):
    """Mutant (chaos audit 8): every Ctrl-C that reached the command line, in `report` or during a new run's
    start-up (no run folder yet), advised `droptune train --resume RUN_DIR`."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("droptune.experiments.report.write_report", interrupted)
    monkeypatch.setattr("droptune.training.trainer.train", interrupted)
    monkeypatch.setattr("droptune.cli.config_flags.resumed_config", lambda run, args: None)
    (tmp_path / "runs").mkdir()
    assert main(["report", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "droptune: interrupted\n"
    assert main(["train", "--dataset", "RotatedDigits", "--output-dir", str(tmp_path / "new")]) == 130
    assert capsys.readouterr().err == "droptune: interrupted; nothing was saved\n"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "last.pt").write_bytes(b"")
    assert main(["train", "--resume", str(tmp_path / "old")]) == 130
    assert capsys.readouterr().err == (f"droptune: interrupted; `droptune train --resume {tmp_path / 'old'}` "
                                       "continues from its last checkpoint\n")
