"""`droptune sweep`'s flags and launcher options through the command line, and the launchers' failure paths."""

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from droptune.cli.main import main
from droptune.errors import DroptuneError
from droptune.experiments.jobs import DIVERGED, FAILED, PENDING, read_error, state
from droptune.experiments.launchers import LocalLauncher, RayLauncher, SlurmLauncher
from droptune.experiments.runner import run_sweep
from droptune.training.config import TrainConfig
from droptune.runs.folder import RunDir
from droptune.training.interrupt import INTERRUPTED_EXIT, Interrupted
from test_sweep import TINY_BASE, tiny_spec


@pytest.fixture
def spec_file(image_folder, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"datasets": [str(image_folder)], "test_domains": ["c"], "base": TINY_BASE,
                                    "seeds": [0], "methods": [{"name": "dropout 0", "dropout": 0.0}]}))
    return path


def listed_ids(out: str) -> set[str]:
    return set(re.findall(r"^([0-9a-f]{12}) ", out, re.MULTILINE))


def test_flags_override_the_sweep_file(image_folder, spec_file, tmp_path, capsys):
    """Mutants: `--grid`, `--set`, `--seeds`, `--test-domains` or `--trial-seeds` ignored, or a --grid/--set value
    kept as a string; the jobs listed by `--dry-run` are exactly the configs asked for (their ids are config hashes)."""
    argv = ["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--dry-run", "--grid", "lr=0.1,1e-2",
            "--set", "steps=3", "weight_decay=0", "--seeds", "1", "2", "--test-domains", "a", "b",
            "--trial-seeds", "7"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected = {TrainConfig(**{**TINY_BASE, "steps": 3, "weight_decay": 0.0, "progress": False,
                               "dataset": str(image_folder), "test_domain": domain, "lr": lr, "dropout": 0.0,
                               "seed": seed, "trial_seed": 7}).identity()
                for domain in ("a", "b") for lr in (0.1, 0.01) for seed in (1, 2)}
    assert listed_ids(out) == expected and "8 jobs" in out
    assert not (tmp_path / "sweep").exists(), "a dry run writes nothing"
    header, *rows = [line for line in out.splitlines() if line.startswith("job ") or listed_ids(line)]
    assert {row.index("dropout 0") for row in rows} == {header.index("method")}, \
        "columns stay aligned after a dataset's long path (mutant: fixed widths)"
    assert main(["sweep", str(spec_file), "--dry-run", "--grid", "lr"]) == 2
    assert "--grid 'lr': expected NAME=VALUE" in capsys.readouterr().err



def test_set_device_augment_off_and_on_reach_every_job(spec_file, tmp_path, monkeypatch, capsys):
    """Catches `coerce_value` (training/config.py) rejecting the booleans YAML reads for unquoted off/on, so that
    `--set device_augment=off` failed ("must be str, got False"), or mapping them the wrong way round."""
    import droptune.experiments.sweep as sweep_module

    load, specs = sweep_module.load_spec, []
    monkeypatch.setattr(sweep_module, "load_spec", lambda *args: specs.append(load(*args)) or specs[-1])
    for value, expected in (("off", "off"), ("on", "on"), ("'off'", "off"), ("auto", "auto")):
        argv = ["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--dry-run",
                "--set", f"device_augment={value}"]
        assert main(argv) == 0, capsys.readouterr().err
        assert {job.config.device_augment for job in specs[-1].jobs(tmp_path / "sweep")} == {expected}, value


def test_a_sweeps_combinations_run_on_the_device_and_loader_workers_it_sets(spec_file, tmp_path, monkeypatch):
    """Mutant: combinations always on device auto with the default loader workers, whatever the sweep sets."""
    import droptune.experiments.combos as combos

    calls = []
    monkeypatch.setattr(combos, "combine_sweep", lambda *args, **kwargs: calls.append(kwargs) or [])
    spec_file.write_text(yaml.safe_dump({**yaml.safe_load(spec_file.read_text()), "seeds": [0, 1], "trial_seeds": [0],
                                         "combine": ["ensemble"]}))
    assert main(["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--set", "device=cpu"]) == 0
    (call,) = calls
    assert (call["device"], call["workers"]) == ("cpu", 0)


@pytest.mark.parametrize("pair,message", [
    ("device_augment=[1]", "config field 'device_augment' in --set must be str, got [1]"),
    ("stepz=3", "unknown config field 'stepz' in --set: expected one of"),
    ("seed=1", "--set sets 'seed', which the sweep sets for each job"),
    ("--grid lr=0.1,fast", "config field 'lr' in --grid must be float, got 'fast'"),
    ("--grid stepz=3,4", "unknown config field 'stepz' in --grid: expected one of"),
    ("--grid seed=1,2", "--grid sets 'seed', which the sweep sets for each job"),
])
def test_set_errors_name_the_flag_not_the_sweep_file(spec_file, tmp_path, capsys, pair, message):
    """Catches `spec_overrides` (cli/sweep.py) merging `--set` (`--grid`) values into the file's base (grid)
    unchecked, so that their errors named "<sweep file> base" ("grid"), a key the user never wrote."""
    flag, pair = pair.split(" ") if pair.startswith("--") else ("--set", pair)
    assert main(["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--dry-run", flag, pair]) == 2
    err = capsys.readouterr().err
    assert message in err and str(spec_file) not in err


def test_max_retries_bounds_the_attempts_of_a_failing_job(tmp_path, image_folder, capsys):
    """Mutants: `--max-retries` ignored (the default 1 used); a negative count accepted; failures not listed."""
    spec = tmp_path / "broken.yaml"
    spec.write_text(yaml.safe_dump({"datasets": [str(image_folder)], "test_domains": ["c"],
                                    "base": {**TINY_BASE, "weights": str(tmp_path / "missing.safetensors")},
                                    "methods": [{"name": "broken"}]}))
    argv = ["sweep", str(spec), "--output", str(tmp_path / "sweep")]
    assert main(argv + ["--max-retries", "-1"]) == 2
    assert "invalid --max-retries -1: expected 0 or more" in capsys.readouterr().err
    assert main(argv + ["--max-retries", "0"]) == 1
    out = capsys.readouterr().out
    run = next((tmp_path / "sweep" / "runs").iterdir())
    error = read_error(RunDir(run))
    assert error["attempts"] == 1 and "missing.safetensors" in error["message"]
    assert f"failed: {run}" in out and "1 failed" in out


class Recorded(Exception):
    """Raised by a stand-in launcher's run, after it has kept the launcher the command line built."""


def capture(monkeypatch, launcher_class) -> list:
    seen = []

    def run(self, jobs, events):
        seen.append(self)
        raise Recorded

    monkeypatch.setattr(launcher_class, "run", run)
    return seen


def test_slurm_options_reach_the_launcher_through_the_command_line(spec_file, tmp_path, monkeypatch, capsys):
    """Mutants: a `--slurm-*` flag dropped or sent to another field between the command line and the launcher;
    Slurm chosen on a machine without sbatch (it must say so in one line, before making the sweep folder)."""
    seen = capture(monkeypatch, SlurmLauncher)
    argv = ["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--launcher", "slurm"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "droptune: error: --launcher slurm needs Slurm's sbatch on this machine (run it on a login node)"
    assert not (tmp_path / "sweep").exists(), "the launcher is checked before the sweep folder is made"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(Recorded):
        main(argv + ["--slurm-partition", "gpu", "--slurm-account", "lab", "--slurm-time", "90", "--slurm-gpus", "2",
                     "--slurm-cpus", "6", "--slurm-mem-gb", "40", "--slurm-array-parallelism", "5",
                     "--slurm-signal-delay", "30"])
    launcher, = seen
    assert {k: v for k, v in asdict(launcher).items() if k != "poll_s"} == {
        "folder": tmp_path / "sweep" / "slurm", "partition": "gpu", "account": "lab", "time_min": 90,
        "gpus_per_job": 2, "cpus_per_job": 6, "mem_gb": 40, "array_parallelism": 5, "signal_delay_s": 30,
        "cluster": "slurm"}


def test_every_launcher_has_its_flags_and_every_flag_a_launcher_field():
    """A launcher added to the registry without its flags (or a flag naming a field it lacks) is caught here."""
    import dataclasses

    from droptune.cli.sweep import LAUNCHER_FLAGS
    from droptune.experiments.launchers import LAUNCHERS, make_launcher

    assert set(LAUNCHER_FLAGS) == set(LAUNCHERS)
    for name, flags in LAUNCHER_FLAGS.items():
        launcher = make_launcher(name, "sweep", **({"cluster": "debug"} if name == "slurm" else {}))  # no sbatch
        assert set(flags.values()) <= {f.name for f in dataclasses.fields(launcher)}, name
    with pytest.raises(DroptuneError, match="^unknown launcher 'k8s': expected one of local, slurm, ray$"):
        make_launcher("k8s", "sweep")


def test_ray_options_reach_the_launcher_through_the_command_line(spec_file, tmp_path, monkeypatch):
    """Mutant: a `--ray-*` flag dropped or sent to another field between the command line and the launcher."""
    seen = capture(monkeypatch, RayLauncher)
    with pytest.raises(Recorded):
        main(["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--launcher", "ray", "--ray-address",
              "ray://head:10001", "--ray-cpus", "3", "--ray-gpus", "0.5"])
    assert asdict(seen[0]) == {"address": "ray://head:10001", "cpus_per_job": 3.0, "gpus_per_job": 0.5, "poll_s": 1.0,
                              "connect_s": 10.0}


@pytest.mark.parametrize("launcher, package", [("slurm", "submitit"), ("ray", "ray")])
def test_a_missing_cluster_package_is_one_line(spec_file, tmp_path, monkeypatch, capsys, launcher, package):
    """Mutants: the cluster launchers import their package unguarded (a traceback instead of the install hint); the
    sweep folder and its sweep.yaml made before the launcher is checked."""
    monkeypatch.setitem(sys.modules, package, None)
    assert main(["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--launcher", launcher]) == 2
    assert capsys.readouterr().err.strip() == (f"droptune: error: --launcher {launcher} needs the {package} package: "
                                               "pip install 'droptune[cluster]'")
    assert not (tmp_path / "sweep").exists(), "the launcher is checked before the sweep folder is made"


def test_a_local_worker_that_dies_is_recorded_with_its_status(image_folder, tmp_path, monkeypatch):
    """Mutant: the local launcher takes any exit status for a recorded outcome, so a killed worker leaves no trace."""
    class Killed:
        def __init__(self, command, **kwargs):
            self.pid = 1

        def wait(self):
            return -9

    monkeypatch.setattr("droptune.experiments.launchers.subprocess.Popen", Killed)
    job, = tiny_spec(image_folder, methods=[{"name": "m"}]).jobs(tmp_path)
    summary = run_sweep([job], LocalLauncher(), max_retries=0, progress=False)
    assert summary.states == {FAILED: 1}
    assert read_error(job.run)["message"] == f"worker exited with status -9; see {job.run.path / 'log.txt'}"


def test_a_worker_still_starting_when_the_sweep_is_stopped_is_not_a_failure(image_folder, tmp_path, monkeypatch):
    """Mutant (chaos audit 7): a worker that the forwarded SIGTERM ended before it could take it (status -15, still
    importing) was recorded as failed, with an error.json and an attempt, and listed as failed by --dry-run."""
    class StartingWhenStopped:
        def __init__(self, command, **kwargs):
            self.pid, self.forwarded = 1, threading.Event()
            os.kill(os.getpid(), signal.SIGTERM)  # the sweep's stop signal, while this worker starts

        def send_signal(self, signum):  # the sweep forwards it once its main thread has taken it
            self.signum = signum
            self.forwarded.set()

        def wait(self):
            assert self.forwarded.wait(30), "the sweep never forwarded its stop signal"
            return -self.signum

    monkeypatch.setattr("droptune.experiments.launchers.subprocess.Popen", StartingWhenStopped)
    job, = tiny_spec(image_folder, methods=[{"name": "m"}]).jobs(tmp_path)
    with pytest.raises(Interrupted, match="sweep stopped by SIGTERM"):
        run_sweep([job], LocalLauncher(), max_retries=0, progress=False)
    assert state(job.run) == PENDING and read_error(job.run) is None


def test_a_lost_slurm_task_is_recorded_with_its_error(image_folder, tmp_path, monkeypatch):
    """Mutant: a Slurm task that died (node failure, time limit) counts as a job that recorded its own outcome."""

    class Lost:
        def done(self):
            return True

        def result(self):
            raise RuntimeError("Job 42 (task: 0) with path /x\n  has not produced any output (state: NODE_FAIL)")

    class Executor:
        def map_array(self, function, jobs):
            return [Lost() for _ in jobs]

    monkeypatch.setattr(SlurmLauncher, "executor", lambda self: Executor())
    job, = tiny_spec(image_folder, methods=[{"name": "m"}]).jobs(tmp_path)
    launcher = SlurmLauncher(folder=tmp_path / "slurm", cluster="local", poll_s=0)
    summary = run_sweep([job], launcher, max_retries=1, progress=False)
    assert summary.states == {FAILED: 1} and summary.executions == 2
    assert read_error(job.run) == {"message": "RuntimeError: Job 42 (task: 0) with path /x has not produced any "
                                              "output (state: NODE_FAIL)", "traceback": "", "attempts": 2}
    assert state(job.run) == FAILED


@pytest.mark.parametrize("flags, message", [
    (["--slurm-partition", "gpu", "--slurm-time", "720"], "--slurm-partition needs --launcher slurm (this sweep's "
                                                          "launcher is local)"),
    (["--launcher", "ray", "--slurm-cluster", "local"], "--slurm-cluster needs --launcher slurm (this sweep's "
                                                        "launcher is ray)"),
    (["--ray-cpus", "8"], "--ray-cpus needs --launcher ray (this sweep's launcher is local)"),
    (["--launcher", "ray", "--workers", "2"], "--workers needs --launcher local (this sweep's launcher is ray)"),
])
def test_another_launchers_flag_is_an_error_not_ignored(spec_file, tmp_path, monkeypatch, capsys, flags, message):
    """Mutant: `_sweep` (cli/sweep.py) keeps the options of `--launcher`'s launcher and drops the others unread, so
    that `--slurm-partition gpu` without `--launcher slurm` trained the whole sweep on the login node."""
    for launcher in (LocalLauncher, RayLauncher):
        capture(monkeypatch, launcher)
    assert main(["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), *flags]) == 2
    assert capsys.readouterr().err.strip() == f"droptune: error: {message}"
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--slurm-time", "0", "an integer of at least 1"), ("--slurm-gpus", "-1", "an integer of at least 0"),
    ("--slurm-cpus", "0", "an integer of at least 1"), ("--slurm-mem-gb", "0", "an integer of at least 1"),
    ("--slurm-array-parallelism", "0", "an integer of at least 1"),
    ("--slurm-signal-delay", "-5", "an integer of at least 0"),
    ("--ray-cpus", "-1", "a number of at least 0"), ("--ray-gpus", "nan", "a number of at least 0"),
])
def test_launcher_option_values_are_checked(spec_file, tmp_path, capsys, flag, value, expected):
    """Mutant: the Slurm and Ray options typed `int`/`float` alone: `--slurm-time 0` ran every job into submitit's
    "has not produced any output", `--slurm-array-parallelism 0` and negative GPUs went to Slurm."""
    launcher = flag.split("-")[2]
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--dry-run", "--launcher", launcher,
              flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: expected {expected}, got {value}" in capsys.readouterr().err


def test_a_diverged_run_is_a_result_named_in_the_summary_not_a_failure(spec_file, tmp_path, capsys):
    """Mutants: a diverged run (final, never retried) counted as failed, so that every later `droptune sweep`
    exited 1 with no line naming it; its divergence recorded in error.json as if it had failed."""
    argv = ["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--set", "lr=1e12", "--no-progress"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    run = RunDir(next((tmp_path / "sweep" / "runs").iterdir()))
    assert state(run) == DIVERGED and read_error(run) is None
    assert f"sweep: {run.path.name} diverged; 1/1 jobs done, running 0, failed 0, diverged 1" in err
    assert f"  diverged: {run.path} (dropout 0): the training loss was not finite by step " in out
    assert main(argv) == 0, "running the sweep again repeats nothing and fails nothing"
    out = capsys.readouterr().out
    assert "1 jobs (1 diverged); 0 run(s) started now" in out and f"  diverged: {run.path} (dropout 0)" in out


class Queued:
    """A Slurm task that stays queued until cancelled; the first look at it stops the sweep as Ctrl-C would."""

    def __init__(self, job_id: str, scancel_log: Path):
        self.job_id, self.scancel_log, self.cancelled = job_id, scancel_log, False

    def done(self) -> bool:
        if not (self.cancelled or self.scancel_log.exists()):
            signal.raise_signal(signal.SIGINT)
        return self.cancelled or self.scancel_log.exists()

    def cancel(self, check: bool) -> None:
        self.cancelled = True

    def result(self):
        raise RuntimeError("Job 42 was cancelled")


@pytest.mark.parametrize("cluster", ["slurm", "local"])
def test_ctrl_c_of_a_slurm_sweep_cancels_its_tasks_and_exits_as_interrupted(
        spec_file, tmp_path, monkeypatch, capsys, cluster):
    """Mutant: the Slurm launcher waits for its tasks without taking the stop signals, so that Ctrl-C was a
    KeyboardInterrupt: exit 130, the advice to `droptune train --resume RUN_DIR`, and the array left running; or,
    once stopped, the cancelled tasks recorded as failed."""
    scancel_log = tmp_path / "scancel.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" > {scancel_log}\n')
    for tool in ("sbatch", "scancel"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    tasks = []

    class Executor:
        def map_array(self, function, jobs):
            tasks.extend(Queued(f"42_{i}", scancel_log) for i in range(len(jobs)))
            return tasks

    monkeypatch.setattr(SlurmLauncher, "executor", lambda self: Executor())
    argv = ["sweep", str(spec_file), "--output", str(tmp_path / "sweep"), "--launcher", "slurm",
            "--slurm-cluster", cluster, "--seeds", "0", "1"]
    assert main(argv) == INTERRUPTED_EXIT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("droptune: sweep stopped by SIGINT: its tasks were cancelled, running ones after saving their "
                       "runs; run the same command again to continue")
    if cluster == "slurm":
        assert scancel_log.read_text().split() == ["42_0", "42_1"], "one scancel for the array's tasks"
    else:
        assert [task.cancelled for task in tasks] == [True, True]
    runs = [RunDir(p) for p in (tmp_path / "sweep" / "runs").iterdir()]
    assert [state(run) for run in runs] == [PENDING] * 2, "a cancelled task is not a failed job"


def test_output_cut_short_by_its_reader_is_not_a_traceback(spec_file, tmp_path):
    """Mutant: `main` (cli/main.py) leaves a reader that has gone (`droptune sweep ... --dry-run | head`) to Python,
    whose BrokenPipeError ended the command in a traceback or an "Exception ignored" message."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    src = str(Path(__file__).resolve().parents[1] / "src")
    process = subprocess.run([sys.executable, "-m", "droptune.cli.main", "sweep", str(spec_file), "--dry-run"],
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")})
    os.close(write_end)
    assert process.stderr == "" and process.returncode == 128 + signal.SIGPIPE


def test_a_linear_model_that_cannot_be_built_stops_the_sweep_before_any_job(image_folder, tmp_path, capsys):
    """Mutant: every job of a linear fine-tuning model whose last blocks differ in width started, failed with the
    width message and was retried (resnet10t has one block a stage)."""
    spec = tmp_path / "linear.yaml"
    spec.write_text(yaml.safe_dump({"datasets": [str(image_folder)], "test_domains": ["c"], "seeds": [0],
                                    "base": {**TINY_BASE, "linear_blocks": 2},
                                    "methods": [{"name": "dropout 0", "dropout": 0.0}]}))
    assert main(["sweep", str(spec), "--output", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("droptune: error: sweep 'linear': resnet10t at 16 px: invalid linear_blocks = 2: the "
                          "backbone's last 2 residual blocks have different widths") and err.count("\n") == 1
    assert err.endswith("; nothing was run\n") and not (tmp_path / "sweep").exists()


def test_unreadable_data_stops_a_local_sweep_and_warns_a_cluster_one(tmp_path, monkeypatch, capsys):
    """A local sweep whose data folder is wrong would start and fail every job; a cluster's nodes may see other
    folders than the login node, so there it is a warning and the jobs go."""
    spec = tmp_path / "pacs.yaml"
    spec.write_text(yaml.safe_dump({"datasets": ["PACS"], "data_dir": str(tmp_path / "nowhere"), "base": TINY_BASE,
                                    "seeds": [0], "methods": [{"name": "dropout 0", "dropout": 0.0}]}))
    argv = ["sweep", str(spec), "--output", str(tmp_path / "sweep")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("droptune: error: sweep 'pacs': ") and err.endswith("; nothing was run")
    assert str(tmp_path / "nowhere") in err and "\n" not in err
    assert not (tmp_path / "sweep").exists()
    seen = capture(monkeypatch, SlurmLauncher)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(Recorded):
        main(argv + ["--launcher", "slurm"])
    assert len(seen) == 1
    warning = capsys.readouterr().err
    assert "on this host; the jobs fail on the slurm nodes unless it is there" in warning
    assert str(tmp_path / "nowhere") in warning
