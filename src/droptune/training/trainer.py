"""The training loop: DomainBed's leave-one-domain-out protocol around one DropoutClassifier.

Read `Trainer.fit` top to bottom: draw one batch per training domain, take an SGD step,
evaluate every `eval_every` steps, keep the model chosen by training-domain validation,
checkpoint so that `--resume` continues to the same final numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from droptune import console
from droptune.data.batch_augment import augment_batch
from droptune.data.images import UnreadableImage
from droptune.data.loaders import BatchAugmentImages, DomainBalancedBatches, make_loader
from droptune.errors import DroptuneError, one_line
from droptune.models.linearized import LinearizedClassifier
from droptune.runs.files import NoSpace
from droptune.runs.folder import RunDir
from droptune.runs.results import RunResults
from droptune.training.along_run import along_run_baselines, baseline_results
from droptune.training.bench import Bench
from droptune.training.checkpoint import rng_state, save_torch, save_weights, set_rng_state
from droptune.training.config import RUNTIME_FIELDS, TrainConfig
from droptune.training.device import default_workers, place, resolve_device, uses_device_augment
from droptune.training.evaluate import autocast
from droptune.training.head_start import init_head
from droptune.training.interrupt import Interrupted, StopRequest, signal_name
from droptune.training.metrics_log import MetricsLog
from droptune.training.optim import make_optimizer, make_scheduler
from droptune.training.protocol import LeaveOneDomainOut
from droptune.training.run_inputs import initial_model, run_dataset
from droptune.training.selection import is_better, select, selections

log = logging.getLogger(__name__)

CHECK_EVERY = 10  # steps between loss checks (each one synchronizes with the device)
COLLAPSE_MARGIN = 0.02


class TrainingDiverged(DroptuneError):
    """The loss became NaN or infinite."""


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.run = RunDir(config.run_dir())
        self.metrics = MetricsLog(self.run, config.steps, config.tensorboard, not console.shown(config.progress))
        self.device = resolve_device(config.device)
        self.dataset = run_dataset(config, progress=config.progress)
        self.protocol = LeaveOneDomainOut.from_config(config, self.dataset)
        self.model = initial_model(config, len(self.dataset.classes))
        if (config.weights == "none" and config.freeze_bn and config.linear_blocks is None
                and any(isinstance(m, _BatchNorm) for m in self.model.modules())):
            log.warning("%s: weights none with freeze_bn: BatchNorm keeps its initial statistics (mean 0, variance 1) "
                        "all through training; --no-freeze-bn (freeze_bn=False) lets them adapt, as the scratch preset "
                        "does", self.run.path)
        self.channels_last = config.channels_last
        place(self.model, self.device, self.channels_last)
        self.workers = config.workers if config.workers is not None else default_workers(
            self.device, self.dataset.decodes_files)
        self.head_start = init_head(self.model, config, self.protocol, self.device, self.workers, self.run.head_start)
        if config.linearized:
            self.model = LinearizedClassifier(self.model)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.step_lr = self.optimizer.param_groups[0]["lr"]
        self.last_iid: float | None = None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")

        self.bench = Bench.for_run(config, self.protocol, self.device, self.workers)
        self.augment_on_device = self.bench.images.augment and uses_device_augment(config.device_augment, self.device)
        self.train_images = (BatchAugmentImages(self.dataset, config.image_size) if self.augment_on_device
                             else self.bench.images)
        self.baselines = along_run_baselines(config, self.model, self.run)
        self.reads_weights = any(b.reads_weights for b in self.baselines)
        self.majority_rate = self.protocol.majority_rate()

        self.step = 0
        self.records: list[dict] = []  # metrics.jsonl's records, kept in last.pt too: the selection reads these
        self.best: dict | None = None
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        self.elapsed = 0.0

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, until: int | None = None) -> dict | None:
        """Train to `config.steps` and return the results; with `until`, stop (checkpointed) at that step."""
        config = self.config
        end = min(until, config.steps) if until is not None else config.steps
        batches = DomainBalancedBatches(self.protocol.train_parts(), config.batch_size, config.seed, self.step, end)
        loader = make_loader(self.train_images, batches, self.workers, pin_memory=self.device.type == "cuda")
        bar = console.bar(config.progress, total=config.steps, initial=self.step, unit="step", desc=self.run.path.name)
        self.model.train()
        period_start, period_images = time.perf_counter(), 0
        with StopRequest() as stop:
            for x, y in loader:
                loss = self._train_step(x, y)
                self.step += 1
                if self.reads_weights:
                    weights = self.model.state_dict()
                    for baseline in self.baselines:
                        if baseline.reads_weights:
                            baseline.after_step(weights, self.step)
                self.loss_sum += loss.detach().float()
                self.loss_count += 1
                period_images += len(y)
                bar.update(1)
                if self.step % CHECK_EVERY == 0 or self.step == end:
                    self._check_finite()
                    seconds = time.perf_counter() - period_start
                    bar.set_postfix(loss=f"{self.loss_sum.item() / self.loss_count:.3f}",
                                    lr=f"{self.step_lr:.2g}",
                                    img_s=f"{period_images / seconds:.0f}",
                                    **({"iid": f"{100 * self.last_iid:.1f}%"} if self.last_iid is not None else {}))
                if self.step % config.eval_every == 0 or self.step == config.steps:
                    seconds = time.perf_counter() - period_start
                    self.elapsed += seconds
                    self._evaluate(period_images / seconds)
                    self._save_checkpoint()
                    period_start, period_images = time.perf_counter(), 0
                if stop.received is not None:
                    break
            bar.close()
            if self.step == config.steps:
                return self._finish("completed")
            self.elapsed += time.perf_counter() - period_start
            self._save_checkpoint()
            if stop.received is None:
                return None
            self.run.mark_interrupted(signal_name(stop.received), self.step)
        raise Interrupted(f"run {self.run.path} stopped by {signal_name(stop.received)} at step {self.step} of "
                          f"{config.steps}, its state saved: continue it with `droptune train --resume "
                          f"{self.run.path}` (in Python: train(config, resume=True))", stop.received)

    def _train_step(self, x, y: torch.Tensor) -> torch.Tensor:
        if self.augment_on_device:
            images, params = x
            x = augment_batch(images.to(self.device, non_blocking=True), params, self.config.image_size)
        else:
            x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.config.amp):
            loss = F.cross_entropy(self.forward(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step_lr = self.optimizer.param_groups[0]["lr"]  # the step's, for the record: not the next step's
        self.scheduler.step()
        return loss

    def _check_finite(self) -> None:
        if not torch.isfinite(self.loss_sum):
            self._finish("diverged")
            raise TrainingDiverged(
                f"run {self.run.path} diverged by step {self.step}: the training loss is "
                f"{self.loss_sum.item()}; try a lower lr (now {self.config.lr:g}) or amp none"
            )

    def _evaluate(self, images_per_s: float) -> None:
        start = time.perf_counter()
        evaluation = self.bench.evaluate(self.forward, keep_logits=any(b.wants_logits for b in self.baselines))
        seconds = time.perf_counter() - start
        variants = {b.name: r for b in self.baselines
                    if (r := b.at_evaluation(self.step, evaluation, self.bench)) is not None}
        self.elapsed += time.perf_counter() - start
        record = {
            "step": self.step,
            "loss": self.loss_sum.item() / max(1, self.loss_count),
            "lr": self.step_lr,
            "images_per_s": images_per_s,
            "eval_images_per_s": sum(len(s.keys) for s in self.bench.splits) / seconds,
            "elapsed_s": self.elapsed,
            **self.protocol.summarize(evaluation.acc),
        }
        if variants:
            record["variants"] = variants
        self.records.append(record)
        self.metrics.append(record)
        self.last_iid = record["iid"]  # for the progress bar, which shows no evaluation line
        if is_better(record, self.best, self.config.selection):
            self.best = {k: v for k, v in record.items() if k not in ("acc", "variants")}
            save_weights(self.model.state_dict(), self.run.best, {"step": self.step, "config": self.config.to_dict()})
        self.loss_sum.zero_()
        self.loss_count = 0

    # -- state ------------------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        save_torch({
            "config_id": self.config.identity(),
            "images": self.protocol.images,
            "files": self.protocol.files,
            "step": self.step,
            "records": self.records,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "loss_sum": self.loss_sum.cpu(),
            "loss_count": self.loss_count,
            "best": self.best,
            "elapsed": self.elapsed,
            "baselines": {b.name: b.state_dict() for b in self.baselines},
        }, self.run.last)

    def restore(self) -> None:
        """Continue from `last.pt`; metrics written after it (an interrupted evaluation) are dropped."""
        try:
            state = torch.load(self.run.last, map_location=self.device, weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure means the checkpoint is unusable
            why = "an empty file" if self.run.last.stat().st_size == 0 else one_line(error)
            raise DroptuneError(f"cannot read checkpoint {self.run.last} ({why}): the run cannot continue from it; "
                                f"remove it and start the run again from step 0 with `droptune train --config "
                                f"{self.run.config} --output-dir {self.run.path}`") from None
        if state["config_id"] != self.config.identity():
            raise DroptuneError(f"checkpoint {self.run.last} was written by a different config than "
                                f"{self.run.config}; it cannot be resumed with this one")
        changes = self.protocol.changes_since(state["images"], state.get("files")) if "images" in state else None
        if changes:
            raise DroptuneError(f"{self.dataset.name} changed since checkpoint {self.run.last} was written "
                                f"({changes}): its 80/20 splits would change mid-run; put the images back, or start "
                                "a new run")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = state["step"]
        self.loss_sum = state["loss_sum"].to(self.device)
        self.loss_count = state["loss_count"]
        self.best = state["best"]
        self.elapsed = state["elapsed"]
        for baseline in self.baselines:
            baseline.load_state_dict(state["baselines"][baseline.name])
        self.records = state["records"] if "records" in state else self._recorded_before_records_were_kept()
        self.run.rewrite_metrics(self.records)

    def _recorded_before_records_were_kept(self) -> list[dict]:
        """An older checkpoint's records: metrics.jsonl's up to its step, which must hold every evaluation made by
        then (a file that lost some would make the run's selection without them)."""
        records = self.run.read_metrics(up_to_step=self.step)
        every = self.config.eval_every
        expected = [*range(every, self.step + 1, every)] + ([self.step] if self.step == self.config.steps
                                                            and self.step % every else [])
        found = [r["step"] for r in records]
        if found != expected:
            raise DroptuneError(f"{self.run.metrics} holds the evaluations of steps {found or 'none'}, but checkpoint "
                                f"{self.run.last} (step {self.step}) followed those of steps {expected}: the run's "
                                "selection would be made without the missing ones; start the run again")
        return records

    def _finish(self, status: str) -> dict:
        records = self.records
        config = self.config
        selected = select(records, config.selection)
        collapsed = selected is not None and is_collapsed(selected["iid"], records[-1]["loss"],
                                                          self.majority_rate, len(self.dataset.classes))
        results = RunResults(
            status=status,
            run=self.run.path.name,
            config_id=config.identity(),
            **self.protocol.describe(),
            backbone=config.backbone,
            dropout=config.dropout,
            lr=config.lr,
            weight_decay=config.weight_decay,
            seed=config.seed,
            trial_seed=config.trial_seed,
            selection=config.selection,
            step=selected["step"] if selected else None,
            iid=selected["iid"] if selected else None,
            ood=selected["ood"] if selected else None,
            acc=selected["acc"] if selected else None,
            selections=selections(records),
            collapsed=collapsed,
            majority_rate=self.majority_rate,
            steps_done=self.step,
            wall_time_s=self.elapsed,
            train_images_per_s=overall_rate(records, "images_per_s", by_steps=True),
            eval_images_per_s=overall_rate(records, "eval_images_per_s", by_steps=False),
            head_start=self.head_start,
            cost={"trainings": 1, "forward_passes": 1},
            variants=baseline_results(records, [b.name for b in self.baselines], config.selection),
            classes=list(self.dataset.classes),
            images=self.protocol.images,
            files=self.protocol.files,
        )
        self.run.write_results(results)
        return dataclasses.asdict(results)


def is_collapsed(best_iid: float, final_loss: float, majority_rate: float, num_classes: int) -> bool:
    """Stuck at predicting the majority class: validation accuracy never left its rate, loss stayed near ln C.

    Undecidable, hence False, when the majority rate leaves no room above it (held-out images of one class).
    """
    if majority_rate + COLLAPSE_MARGIN >= 1:
        return False
    return best_iid <= majority_rate + COLLAPSE_MARGIN and final_loss >= 0.9 * math.log(num_classes)


def train(config: TrainConfig, resume: bool = False, until: int | None = None) -> dict | None:
    """Run (or with `resume`, continue) one fine-tuning; returns results.json's content.

    `resume`: continue the run in `config.run_dir()` from its last checkpoint, return its results if it finished,
    or start it if it never reached a checkpoint; the folder's run must have been made by this config.
    `until` stops early with a checkpoint, as an interruption would; returns None then.
    Seeds torch's global generators (CPU and CUDA) from the run's seed, and leaves them where training ends.
    """
    if not isinstance(config, TrainConfig):
        raise DroptuneError(f"train takes a TrainConfig (e.g. TrainConfig(**fields) or TrainConfig.load(path)), "
                            f"got {type(config).__name__}")
    run = RunDir(config.run_dir())
    done = _finished(run, resume, config)
    if done is not None:
        return done
    with run.hold():
        done = _finished(run, resume, config)  # again: another process may have finished it before we held the lock
        if done is not None:
            return done
        run.remove_partial_writes()
        trainer = Trainer(config)
        if resume and run.last.exists():
            trainer.restore()
            run.interrupted.unlink(missing_ok=True)
        else:
            config.save(run.config)
            run.metrics.unlink(missing_ok=True)
        try:
            return trainer.fit(until)
        except NoSpace as error:
            if not run.last.exists():
                raise
            raise NoSpace(f"{error}; once there is room, `droptune train --resume {run.path}` continues from its "
                          "last checkpoint") from None
        except UnreadableImage as error:
            resume = f"; once it reads, --resume {run.path} continues from the last evaluation"
            raise UnreadableImage(f"{one_line(error)} (`droptune data verify` lists every unreadable image of a "
                                  f"dataset{resume if run.last.exists() else ''})") from None


def _changes(run: RunDir, config: TrainConfig) -> str:
    """What differs between the run folder's config.yaml and `config`, as `field: theirs → this`."""
    try:
        theirs = TrainConfig.load(run.config).to_dict()
    except DroptuneError:
        return f"its {run.config.name} is unreadable"
    mine = config.to_dict()
    changed = [f"{k}: {theirs[k]} → {mine[k]}" for k in mine if k not in RUNTIME_FIELDS and theirs.get(k) != mine[k]]
    return f"its {run.config.name} differs in " + ", ".join(changed) if changed else f"its {run.config.name}"


def overall_rate(records: list[dict], key: str, by_steps: bool) -> float | None:
    """Images per second over the whole run (all images ÷ all seconds), from each record's rate over its period:
    periods of `by_steps` weigh by their steps (a short last period, a slow first one count for what they are),
    evaluations equally (each scores the same images). Not the mean of the rates, which overstates it."""
    if not records:
        return None
    steps = np.diff([0] + [r["step"] for r in records]) if by_steps else np.ones(len(records))
    return float(steps.sum() / sum(n / r[key] for n, r in zip(steps, records)))


def _finished(run: RunDir, resume: bool, config: TrainConfig) -> dict | None:
    """The results of a completed run to resume; an error when a new run would overwrite one, or when the run to
    resume was made by a different config (its results are not this config's)."""
    if resume:
        done = run.read_results()
        if done is None or done.status != "completed":
            return None
        if done.config_id is not None and done.config_id != config.identity():
            raise DroptuneError(f"run folder {run.path} holds a finished run of a different config "
                                f"({_changes(run, config)}); it cannot be resumed with this one: choose another "
                                "output folder (--output-dir; compare's --output; output_dir in Python)")
        return dataclasses.asdict(done)
    if run.results.exists() or run.last.exists():
        if _recorded_identity(run) not in (None, config.identity()):
            raise DroptuneError(f"run folder {run.path} already holds a run of a different config "
                                f"({_changes(run, config)}): choose another output folder (--output-dir; "
                                "output_dir in Python)")
        raise DroptuneError(f"run folder {run.path} already holds a run: resume it with --resume {run.path} "
                            "(in Python: train(config, resume=True)) or choose another --output-dir")
    return None


def _recorded_identity(run: RunDir) -> str | None:
    """The identity of the config the folder's run was made with, None where it cannot be read."""
    try:
        return TrainConfig.load(run.config).identity()
    except DroptuneError:
        return None
