"""Launchers: run each job of a list once, wherever the jobs go, and say when each starts and ends.

Every launcher runs the same `jobs.execute` on the same Job objects and reports to the same
`Events`; retries, skipping finished jobs and progress live in `runner.run_sweep`, not here.
A job's result is read from its run folder, so a cluster needs a filesystem shared with the driver.
"""

from __future__ import annotations

import functools
import importlib
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from droptune.errors import DroptuneError, one_line
from droptune.experiments.jobs import RECORDED, Job, RequeuedExecute, execute_task
from droptune.training.interrupt import INTERRUPTED_EXIT, Interrupted, StopRequest, signal_name


class Events(Protocol):
    def started(self, job: Job) -> None: ...

    def ended(self, job: Job, crash: str | None) -> None:
        """`crash`: why the worker died before it could record the job's own outcome."""


class Launcher(Protocol):
    def run(self, jobs: Sequence[Job], events: Events) -> None: ...


def visible_gpus() -> list[str]:
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def require(module: str, launcher: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DroptuneError(f"--launcher {launcher} needs the {module} package: "
                            "pip install 'droptune[cluster]'") from None


def crash_summary(error: BaseException) -> str:
    """Why a worker died, as recorded in the sweep's events: the error's type and its first 500 characters."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:500]}"


@dataclass
class LocalLauncher:
    """Worker processes on this machine: one job per GPU, or by default one job at a time on CPU
    (one training already uses every core); with N CPU workers each gets cores/N threads."""

    workers: int | None = None

    def run(self, jobs: Sequence[Job], events: Events) -> None:
        gpus = visible_gpus()
        workers = self.workers or max(1, len(gpus))
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        slots: queue.Queue[int] = queue.Queue()
        for slot in range(workers):
            slots.put(slot)

        running: dict[int, subprocess.Popen] = {}
        lock = threading.Lock()

        def forward(signum: int) -> None:
            with lock:
                for process in running.values():
                    process.send_signal(signum)

        def run_one(job: Job) -> None:
            slot = slots.get()
            if stop.received is not None:
                slots.put(slot)
                return
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            elif workers > 1:
                env["OMP_NUM_THREADS"] = str(threads)
                # Spinning OpenMP threads of processes sharing cores starve each other: two 2-thread
                # trainings on 2 cores ran at 250 img/s each when spinning, 550 each when passive.
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            try:
                events.started(job)
                log = job.run.log
                with log.open("a") as out, lock:
                    process = subprocess.Popen([sys.executable, "-m", "droptune.experiments.jobs", str(job.run.path)],
                                               stdout=out, stderr=subprocess.STDOUT, env=env)
                    running[process.pid] = process
                    if stop.received is not None:  # the signal came while this job was starting
                        process.send_signal(stop.received)
                code = process.wait()
                with lock:
                    del running[process.pid]
                # once stopped, a worker still starting ends by the forwarded signal, not by a crash: it resumes
                events.ended(job, None if code in (0, RECORDED, INTERRUPTED_EXIT) or stop.received is not None
                             else f"worker exited with status {code}; see {log}")
            finally:
                slots.put(slot)

        # A stop signal goes on to the running workers, which save their runs; no further job starts.
        with StopRequest(then=forward) as stop, ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(run_one, job) for job in jobs]:
                future.result()
        if stop.received is not None:
            raise Interrupted(f"sweep stopped by {signal_name(stop.received)}: its running jobs saved their state; "
                              "run the same command again to continue", stop.received)


class TaskLauncher:
    """A launcher whose jobs are a scheduler's tasks (Slurm's, Ray's), which this process follows until they end.

    A stop signal to this process cancels the tasks not ended: a running task's job saves its run, as on a stop
    signal of its own, and resumes at the next `droptune sweep`.
    """

    poll_s: float

    def _submit(self, jobs: Sequence[Job]) -> list: ...

    def _ended(self, tasks: list) -> list: ...

    def _outcome(self, task: Any) -> Callable[[], Any]: ...

    def _cancel(self, tasks: list) -> None: ...

    def run(self, jobs: Sequence[Job], events: Events) -> None:
        wake = threading.Event()
        with StopRequest(then=lambda signum: wake.set()) as stop:
            submitted = dict(zip(self._submit(jobs), jobs))
            for job in jobs:
                events.started(job)
            while submitted:
                if wake.is_set():  # the stop signal, once
                    wake.clear()
                    self._cancel(list(submitted))
                for task in self._ended(list(submitted)):
                    # once stopped, a task ends by its cancellation, not by a crash to record: its job resumes
                    crash = None if stop.received is not None else _crash(self._outcome(task))
                    events.ended(submitted.pop(task), crash)
                if submitted:
                    wake.wait(self.poll_s)
        if stop.received is not None:
            raise Interrupted(f"sweep stopped by {signal_name(stop.received)}: its tasks were cancelled, running "
                              "ones after saving their runs; run the same command again to continue", stop.received)


@dataclass
class SlurmLauncher(TaskLauncher):
    """One Slurm job array through submitit: one task per job, with its GPUs, time limit and partition."""

    folder: Path
    partition: str | None = None
    account: str | None = None
    time_min: int = 24 * 60
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    mem_gb: int | None = None
    array_parallelism: int = 256
    # Time to finish a step and write last.pt between Slurm's USR2 and the time limit; a ResNet-50 checkpoint
    # on a shared filesystem can take a minute.
    signal_delay_s: int = 120
    cluster: str = "slurm"  # submitit's "local" or "debug" run the same code without Slurm (tests)
    poll_s: float = 10.0

    def __post_init__(self) -> None:
        require("submitit", "slurm")
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise DroptuneError("--launcher slurm needs Slurm's sbatch on this machine (run it on a login node)")

    def executor(self) -> Any:
        """A submitit executor for one task per job, with this launcher's resources."""
        submitit = require("submitit", "slurm")
        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        optional = {"slurm_partition": self.partition, "slurm_account": self.account, "mem_gb": self.mem_gb}
        executor.update_parameters(name="droptune", timeout_min=self.time_min, gpus_per_node=self.gpus_per_job,
                                   cpus_per_task=self.cpus_per_job, tasks_per_node=1, nodes=1,
                                   slurm_array_parallelism=self.array_parallelism,
                                   slurm_signal_delay_s=self.signal_delay_s,
                                   **{k: v for k, v in optional.items() if v is not None})
        return executor

    def _submit(self, jobs: Sequence[Job]) -> list:
        return self.executor().map_array(RequeuedExecute(), jobs)

    def _ended(self, tasks: list) -> list:
        return [task for task in tasks if task.done()]

    def _outcome(self, task: Any) -> Callable[[], Any]:
        return task.result

    def _cancel(self, tasks: list) -> None:
        if self.cluster == "slurm":  # one scancel for the array, not one per task
            subprocess.call(["scancel", *(task.job_id for task in tasks)])
        else:
            for task in tasks:
                task.cancel(check=False)


@dataclass
class RayLauncher(TaskLauncher):
    """Tasks on a Ray cluster (`address`; none: this machine's own), one GPU per task when it has GPUs."""

    address: str | None = None
    cpus_per_job: float = 1
    gpus_per_job: float | None = None
    poll_s: float = 1.0
    connect_s: float = 10.0

    def __post_init__(self) -> None:
        require("ray", "ray")
        ray_host_port(self.address)

    def _submit(self, jobs: Sequence[Job]) -> list:
        ray = require("ray", "ray")
        if not ray.is_initialized():
            self.connect(ray)
        gpus = self.gpus_per_job
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
        # Ray's own retries are off: run_sweep retries every launcher's failures the same way.
        task = ray.remote(execute_task).options(num_cpus=self.cpus_per_job, num_gpus=gpus, max_retries=0)
        return [task.remote(job) for job in jobs]

    def connect(self, ray: Any) -> None:
        """ray.init, in one line when it cannot: an address that does not answer is refused after `connect_s`
        (Ray itself retries a cluster's GCS address for minutes), one with no cluster in Ray's own words."""
        host, port = ray_host_port(self.address)
        if host is not None:
            try:
                socket.create_connection((host, port), timeout=self.connect_s).close()
            except OSError as error:
                why = f"no answer within {self.connect_s:g} s" if isinstance(error, TimeoutError) else \
                    error.strerror or str(error)
                raise DroptuneError(f"cannot reach the Ray cluster at {self.address} (--ray-address): {why}; is its "
                                    "head running (`ray start --head`) and its port open?") from None
        try:
            ray.init(address=self.address)
        except ConnectionError as error:
            raise DroptuneError(f"cannot connect to a Ray cluster at {self.address or 'this machine'} "
                                f"(--ray-address): {one_line(error)}") from None

    def _ended(self, tasks: list) -> list:
        return require("ray", "ray").wait(tasks, num_returns=len(tasks), timeout=0)[0]

    def _outcome(self, task: Any) -> Callable[[], Any]:
        return functools.partial(require("ray", "ray").get, task)

    def _cancel(self, tasks: list) -> None:
        ray = require("ray", "ray")
        for task in tasks:
            ray.cancel(task)  # a KeyboardInterrupt in the task's main thread, where training takes it as a stop signal


def ray_host_port(address: str | None) -> tuple[str | None, int | None]:
    """(host, port) of a `host:port` or `ray://host:port` address; (None, None) for none, `auto` or `local`, which
    Ray resolves on this machine."""
    if address is None or ":" not in address:
        return None, None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit() or not host:
        raise DroptuneError(f"--ray-address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _crash(result: Any) -> str | None:
    """None when the worker returned (its job recorded its own outcome), else why it died."""
    try:
        result()
    except Exception as error:  # noqa: BLE001 - a lost worker, a pre-empted node, an unpicklable job
        return crash_summary(error)
    return None


# Each launcher by name, built from its sweep folder and its options (cli/sweep.py's LAUNCHER_FLAGS name its flags).
LAUNCHERS: dict[str, Callable[..., Launcher]] = {
    "local": lambda sweep_dir, **options: LocalLauncher(**options),
    "slurm": lambda sweep_dir, **options: SlurmLauncher(folder=Path(sweep_dir) / "slurm", **options),
    "ray": lambda sweep_dir, **options: RayLauncher(**options),
}


def make_launcher(name: str, sweep_dir: Path, **options: Any) -> Launcher:
    """A launcher by name; `options` unset (None) keep each launcher's defaults."""
    if name not in LAUNCHERS:
        raise DroptuneError(f"unknown launcher {name!r}: expected one of {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name](sweep_dir, **{k: v for k, v in options.items() if v is not None})
