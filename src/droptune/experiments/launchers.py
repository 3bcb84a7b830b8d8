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
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from droptune.errors import DroptuneError
from droptune.experiments.jobs import RECORDED, Job, RequeuedExecute, execute
from droptune.training.interrupt import INTERRUPTED_EXIT, Interrupted, StopRequest, signal_name

LAUNCHERS = ("local", "slurm", "ray")


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
                events.ended(job, None if code in (0, RECORDED, INTERRUPTED_EXIT)
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


@dataclass
class SlurmLauncher:
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

    def run(self, jobs: Sequence[Job], events: Events) -> None:
        submitted = dict(zip(self.executor().map_array(RequeuedExecute(), jobs), jobs))
        for job in jobs:
            events.started(job)
        while submitted:
            for task, job in list(submitted.items()):
                if task.done():
                    del submitted[task]
                    events.ended(job, _crash(task.result))
            if submitted:
                time.sleep(self.poll_s)


@dataclass
class RayLauncher:
    """Tasks on a Ray cluster (`address`; none: this machine's own), one GPU per task when it has GPUs."""

    address: str | None = None
    cpus_per_job: float = 1
    gpus_per_job: float | None = None

    def __post_init__(self) -> None:
        require("ray", "ray")

    def run(self, jobs: Sequence[Job], events: Events) -> None:
        ray = require("ray", "ray")
        if not ray.is_initialized():
            ray.init(address=self.address)
        gpus = self.gpus_per_job
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
        # Ray's own retries are off: run_sweep retries every launcher's failures the same way.
        task = ray.remote(execute).options(num_cpus=self.cpus_per_job, num_gpus=gpus, max_retries=0)
        submitted = {task.remote(job): job for job in jobs}
        for job in jobs:
            events.started(job)
        while submitted:
            finished, _ = ray.wait(list(submitted), num_returns=1)
            for ref in finished:
                events.ended(submitted.pop(ref), _crash(functools.partial(ray.get, ref)))


def _crash(result: Any) -> str | None:
    """None when the worker returned (its job recorded its own outcome), else why it died."""
    try:
        result()
    except Exception as error:  # noqa: BLE001 - a lost worker, a pre-empted node, an unpicklable job
        return crash_summary(error)
    return None


def make_launcher(name: str, sweep_dir: Path, **options: Any) -> Launcher:
    """A launcher by name; `options` unset (None) keep each launcher's defaults."""
    options = {k: v for k, v in options.items() if v is not None}
    if name == "local":
        return LocalLauncher(**options)
    if name == "slurm":
        return SlurmLauncher(folder=Path(sweep_dir) / "slurm", **options)
    if name == "ray":
        return RayLauncher(**options)
    raise DroptuneError(f"unknown launcher {name!r}: expected one of {', '.join(LAUNCHERS)}")
