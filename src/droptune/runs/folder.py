"""The run folder: everything needed to rebuild a table, resume a run or reuse its model.

    config.yaml       the full TrainConfig
    metrics.jsonl     one JSON record per evaluation (append-only)
    results.json      the selected evaluations and run status; written last, so it marks a finished run
    best.safetensors  weights at the selected step
    swa.safetensors   (and ema, swad) selected weights of the along-run averages, when configured
    head_start.safetensors  the head probed before training (head_init: probe)
    feature_usage.json  which features the head uses (`droptune analyze features`), read by `droptune report`
    last.pt           resumable state (model, optimizer, scheduler, step, RNG), replaced atomically
    .lock             locked by the process that trains the run, for as long as it runs; holds its pid and host
    interrupted.json  the run stopped on a signal after saving last.pt (signal, step); gone once it resumes
    job.json          a sweep's job (method, hyper-parameters, config), written before it first runs
    error.json        a sweep job's last failure: message, traceback, attempts
    log.txt           a sweep job's output (every launcher's: a local worker's, a Slurm or Ray task's)
    tensorboard/      TensorBoard event files of metrics.jsonl's scalars (`--tensorboard`)

A combination of runs (`droptune combine`) is a folder too: results.json and, for soups, soup.safetensors.
A sweep folder holds runs/<job>/, combined/<group>/<method>/ and the sweeps run into it as they were expanded:
sweep.yaml, and sweep-<name>.yaml for each other sweep that shares the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from droptune.errors import DroptuneError
from droptune.runs.files import atomic_write, partial_writes
from droptune.runs.results import CombinationResults, Results, RunResults, read_results, write_results

LOCK = ".lock"
SPEC_FILE = "sweep.yaml"  # SWEEP_DIR/sweep.yaml: the sweep as `droptune sweep` expanded it
UNSAFE = re.compile(r"[^\w.-]")  # characters a sweep's name may not bring into a file name
COMBINED = "combined"  # a sweep's combinations: SWEEP_DIR/combined/<group>/<method>/ (run folders of their own)
GROUP_FILE = "group.json"  # in SWEEP_DIR/combined/<group>/: the split, method and member jobs of the group
_held: set[int] = set()  # descriptors of the locks this process holds


class FolderBusy(DroptuneError):
    """Another process (or another writer in this one) holds the folder's lock."""


@contextlib.contextmanager
def exclusive(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` while the block runs; a second writer gets FolderBusy.

    flock(2) on `folder`/.lock: the kernel releases it when the process ends, however it ends (kill -9
    included), so a stale lock never blocks a resume. Processes forked while it is held (loader workers)
    close their copy, so the lock goes with the process that took it. A folder this call created is
    removed again if nothing but the lock was written to it (a run that failed to start).
    """
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(f"{what} {folder} is in use by another droptune process ({holder(folder) or 'pid unknown'}"
                         "): wait for it to end, or use another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    _held.add(fd)
    try:
        yield
    finally:
        os.ftruncate(fd, 0)
        if created and os.listdir(folder) == [LOCK]:
            (folder / LOCK).unlink()
            folder.rmdir()
        _held.discard(fd)
        os.close(fd)


def holder(folder: Path) -> str | None:
    """'pid N on HOST' of the process holding `folder`'s lock, or None when no live process holds it.

    Read without taking the lock, so that looking never makes a starting run find its folder busy: the holder
    writes its pid and host into the lock file and empties it on release. A process killed with -9 leaves them
    behind; on this host its pid is checked, on another host it is trusted.
    """
    try:
        fields = (folder / LOCK).read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None
    host = fields[1] if len(fields) > 1 else socket.gethostname()  # older versions wrote the pid alone
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return f"pid {pid} on {host}"


def spec_file(folder: Path, name: str) -> Path:
    """Where the expanded sweep `name` is kept in its output folder: sweep.yaml, unless that file holds another
    sweep that ran into the same folder."""
    first = folder / SPEC_FILE
    try:
        held = yaml.safe_load(first.read_text()).get("name", name)
    except (OSError, yaml.YAMLError, AttributeError):
        return first
    return first if held == name else folder / f"sweep-{UNSAFE.sub('_', name)}.yaml"


def spec_files(folder: Path) -> list[Path]:
    """The expanded sweeps kept in a sweep's output folder, the first one's first."""
    return [path for path in (folder / SPEC_FILE, *sorted(folder.glob("sweep-*.yaml"))) if path.is_file()]


def _forget_locks_in_child() -> None:
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def job(self) -> Path:
        return self.path / "job.json"

    @property
    def error(self) -> Path:
        return self.path / "error.json"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def soup(self) -> Path:
        return self.path / "soup.safetensors"

    @property
    def best(self) -> Path:
        return self.path / "best.safetensors"

    @property
    def head_start(self) -> Path:
        return self.path / "head_start.safetensors"

    @property
    def feature_usage(self) -> Path:
        return self.path / "feature_usage.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """The run folder's lock: one writer at a time, for the writer's whole life."""
        return exclusive(self.path, "run folder")

    def remove_partial_writes(self) -> None:
        """What a writer killed mid-write left (a half-written `.last.pt.<hex>`: up to the checkpoint's size per
        kill); only the holder of the folder's lock may call it. `droptune analyze` writes here without the lock."""
        for path in partial_writes(self.path):
            if not path.name.startswith(f".{self.feature_usage.name}."):
                path.unlink(missing_ok=True)

    @property
    def interrupted(self) -> Path:
        return self.path / "interrupted.json"

    def mark_interrupted(self, signal_name: str, step: int) -> None:
        self.interrupted.write_text(json.dumps({"signal": signal_name, "step": step,
                                                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")

    def read_interrupted(self) -> dict | None:
        """The signal and step of the interruption, None when the run was not stopped by one."""
        try:
            return json.loads(self.interrupted.read_text())
        except (OSError, ValueError):
            return None

    def baseline(self, name: str) -> Path:
        """Selected weights of an along-run weight average ("swa", "ema", "swad")."""
        return self.path / f"{name}.safetensors"

    def append_metrics(self, record: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self, up_to_step: int | None = None) -> list[dict]:
        """The evaluation records, optionally only those at or before a step."""
        if not self.metrics.exists():
            return []
        records = []
        try:
            lines = self.metrics.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DroptuneError(f"{self.metrics} is not a text file: expected one JSON record per line") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DroptuneError(f"{self.metrics} line {number} is not valid JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise DroptuneError(f"{self.metrics} line {number} is not an evaluation record (no step)")
            records.append(record)
        return [r for r in records if up_to_step is None or r["step"] <= up_to_step]

    def rewrite_metrics(self, records: list[dict]) -> None:
        """metrics.jsonl as the checkpoint a run resumes from has it, in one rename (a crash leaves the old file)."""
        atomic_write(self.metrics, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records)))

    def read_results(self, kind: type[Results] = RunResults) -> Results | None:
        """The run's results (or a combination's, with `kind`), None while it has none."""
        return read_results(self.results, kind) if self.results.exists() else None

    def write_results(self, results: RunResults | CombinationResults) -> None:
        write_results(results, self.results)
