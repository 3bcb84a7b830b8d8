"""Where a run's evaluation records go: metrics.jsonl always; TensorBoard event files (the same scalars) and a
plain line per evaluation when asked. The trainer hands each record here once."""

from __future__ import annotations

from numbers import Real

from droptune.errors import DroptuneError
from droptune.console import line
from droptune.runs.folder import RunDir


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Every number of a metrics record by its path (`acc/sketch/in`), less the step it is logged at."""
    found = {}
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(scalars(value, f"{tag}/"))
        elif isinstance(value, Real) and not isinstance(value, bool) and tag != "step":
            found[tag] = float(value)
    return found


def require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise DroptuneError("--tensorboard needs the Python package tensorboard: pip install tensorboard "
                            "(or droptune[tensorboard])") from None


class MetricsLog:
    def __init__(self, run: RunDir, steps: int, tensorboard: bool = False, lines: bool = False):
        if tensorboard:
            require_tensorboard()
        self.run, self.steps, self.tensorboard, self.lines = run, steps, tensorboard, lines
        self.writer = None

    def append(self, record: dict) -> None:
        self.run.append_metrics(record)
        if self.tensorboard:
            self._write_events(record)
        if self.lines:
            line(f"{self.run.path.name}: step {record['step']}/{self.steps}, loss {record['loss']:.3f}, "
                 f"i.i.d. {100 * record['iid']:.1f}%, o.o.d. {100 * record['ood']:.1f}%, "
                 f"{record['images_per_s']:.0f} img/s")

    def _write_events(self, record: dict) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # metrics.jsonl lost the records of the interrupted run after its checkpoint; so do the events.
            kept = [r["step"] for r in self.run.read_metrics() if r["step"] < record["step"]]
            self.writer = SummaryWriter(str(self.run.tensorboard), purge_step=max(kept, default=0) + 1)
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()
