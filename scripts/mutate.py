"""Mutation testing of the protocol's core: break the code on purpose, one change at a time, and check that a test fails.

Two kinds of mutants:
- named (`--named`): broken copies a reviewer found or feared, each written as (file, original text, broken
  text) with the tests that must catch it; every one of them must be killed.
- generated (the default): every small change (comparison, arithmetic, constant, boolean operator, min/max,
  a dropped call) in the functions that compute the protocol's numbers: the splits, model selection, the
  i.i.d./o.o.d. summary, report aggregation, soups and weight averages; and in the model, the along-run
  baselines (ensemble, SWA, EMA, SWAD), the linear probe and the batch augmentation.

A mutant is written into a private copy of src/ (the working tree is never touched) and runs only the tests
listed for its module, in stages (fast tests first, the training runs only if those pass), each stage with
a time limit. It is killed when a test fails or the time runs out, and survives when every test passes.

    python scripts/mutate.py --named                       # the named mutants
    python scripts/mutate.py                               # every generated mutant of every core module
    python scripts/mutate.py --module selection --list     # the mutants of one module, without running them
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import importlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTEST = ("-x", "-q", "-p", "no:cacheprovider", "-m", "not integration")
# Imported once here, before any droptune module, so that each forked test run starts warm.
HEAVY = ("numpy", "pandas", "torch", "torchvision", "timm", "PIL.Image", "sklearn.datasets", "matplotlib.pyplot",
         "safetensors.torch", "yaml", "pytest")


@dataclass(frozen=True)
class Target:
    """A core module: the functions to mutate ("Class.method" or "function") and the test stages that guard them."""

    path: str
    functions: tuple[str, ...]
    stages: tuple[tuple[str, ...], ...]


PROTOCOL_RUNS = ("tests/test_protocol.py",)
TARGETS = {
    "splits": Target("src/droptune/data/splits.py", ("stable_seed", "split_domain"),
                     (("tests/test_scoring.py", "tests/test_data.py", "-k", "split"), PROTOCOL_RUNS)),
    "selection": Target("src/droptune/training/selection.py", ("select", "selections", "is_better",
                                                               "variant_records"),
                        (("tests/test_scoring.py",), PROTOCOL_RUNS)),
    "evaluate": Target("src/droptune/training/evaluate.py", ("evaluate", "accuracy_of", "_by_split"),
                       (("tests/test_scoring.py",), PROTOCOL_RUNS)),
    "protocol": Target("src/droptune/training/protocol.py", ("LeaveOneDomainOut.__init__",
                                                             "LeaveOneDomainOut.train_parts",
                                                             "LeaveOneDomainOut.eval_splits",
                                                             "LeaveOneDomainOut.summarize", "LeaveOneDomainOut.iid",
                                                             "LeaveOneDomainOut.majority_rate"),
                       (("tests/test_scoring.py",), PROTOCOL_RUNS)),
    "bench": Target("src/droptune/training/bench.py", ("Bench.__init__", "Bench.iid", "Bench.recompute_bn"),
                    (("tests/test_scoring.py",), PROTOCOL_RUNS)),
    "trainer": Target("src/droptune/training/trainer.py", ("Trainer.__init__", "Trainer._evaluate",
                                                           "Trainer._finish"),
                      (("tests/test_training.py", "-k", "mean_training_loss or timings or workers or collapsed"),
                       PROTOCOL_RUNS, ("tests/test_training.py",), ("tests/test_precision.py", "-k", "channels_last"),
                       ("tests/test_combining.py", "-k", "along_run"))),
    "run_inputs": Target("src/droptune/training/run_inputs.py", ("run_dataset", "initial_model"),
                         (("tests/test_run_inputs.py", "tests/test_cache_training.py"), PROTOCOL_RUNS)),
    "tables": Target("src/droptune/experiments/tables.py", ("choose", "mean_se", "cell_means", "_averages",
                                                           "domain_average"),
                     (("tests/test_report.py", "tests/test_summary.py"),)),
    "differences": Target("src/droptune/experiments/differences.py", ("Estimate.p_value", "Estimate.established",
                                                                     "paired_difference", "_estimate",
                                                                     "average_over_domains", "plain_baselines",
                                                                     "best_baseline_difference"),
                          (("tests/test_summary.py",),)),
    "collect": Target("src/droptune/experiments/collect.py", ("rows_of_run", "read_combination", "_selected"),
                      (("tests/test_report.py",),)),
    "soups": Target("src/droptune/combining/soups.py", ("_recompute_bn", "uniform_soup", "greedy_soup"),
                    (("tests/test_combining.py", "-k", "soup"), ("tests/test_protocol.py", "-k", "soups"))),
    "averaging": Target("src/droptune/models/averaging.py", ("WeightAverage.add", "WeightAverage.merge",
                                                               "WeightAverage.load_into", "recompute_bn"),
                        (("tests/test_combining.py", "-k", "averag or ema or batchnorm or soup"),
                         ("tests/test_protocol.py", "-k", "batchnorm"))),
    "model": Target("src/droptune/models/model.py", ("DropoutClassifier.__init__", "DropoutClassifier.normalize",
                                                     "DropoutClassifier.forward", "DropoutClassifier.train"),
                    (("tests/test_models.py", "-k",
                      "dropout or batchnorm or normalized or classifies or num_classes or half_precision"),
                     ("tests/test_training.py", "-k", "run_folder or same_seed"))),
    "along_run": Target("src/droptune/training/along_run.py", ("CheckpointEnsemble.at_evaluation",
                                                               "AveragedWeights.score", "RunningAverage.after_step",
                                                               "RunningAverage.at_evaluation", "Swad.at_evaluation",
                                                               "along_run_baselines", "baseline_results"),
                        (("tests/test_combining.py", "-k", "along_run or baselines or average_of_one_step"),
                         ("tests/test_protocol.py", "-k", "batchnorm"))),
    "swad": Target("src/droptune/training/swad.py", ("LossValley.add", "LossValley.close", "LossValley._judge",
                                                     "LossValley.result"),
                   (("tests/test_combining.py", "-k", "swad"),)),
    "ensemble": Target("src/droptune/models/ensemble.py", ("OutputEnsemble.add",),
                       (("tests/test_combining.py", "-k", "ensemble or along_run"),
                        ("tests/test_protocol.py", "-k", "logits"))),
    "head_start": Target("src/droptune/training/head_start.py", ("init_head", "_features", "linear_probe"),
                         (("tests/test_combining.py", "-k", "head_seed or probe"),)),
    "optim": Target("src/droptune/training/optim.py", ("param_groups", "make_optimizer", "make_scheduler"),
                    (("tests/test_models.py", "-k", "head_lr"),
                     ("tests/test_training.py", "-k", "lr_and_the_throughput or same_seed"))),
    "batch_augment": Target("src/droptune/data/batch_augment.py", ("_crop_box", "sample_params", "resized_crops",
                                                                   "_blend", "_gray", "_brightness", "_contrast",
                                                                   "_saturation", "_hue", "augment_batch"),
                            (("tests/test_batch_augment.py",),)),
}


@dataclass(frozen=True)
class Named:
    """A hand-written mutant: `old` (which must occur exactly once in `path`) replaced by `new`."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


NAMED = (
    Named("training batches also draw the test domain's 20%", "src/droptune/training/protocol.py",
          "return [(d, self.splits[d].train) for d in self.train_domains]",
          "return [(d, self.splits[d].train) for d in self.train_domains]"
          " + [(self.test, self.splits[self.test].holdout)]",
          ("tests/test_protocol.py::test_training_never_reads_the_test_domain",)),
    Named("i.i.d. averages in the test domain's 20%", "src/droptune/training/protocol.py",
          'return float(np.mean([scores[name]["out"] for name in self.train_domain_names]))',
          'return float(np.mean([scores[name]["out"] for name in scores]))',
          ("tests/test_protocol.py::test_iid_is_the_training_domains_holdout_and_ood_the_test_domains_80_percent",)),
    Named("o.o.d. is the test domain's 20%", "src/droptune/training/protocol.py",
          '"ood": acc[self.test_domain]["in"]', '"ood": acc[self.test_domain]["out"]',
          ("tests/test_protocol.py::test_iid_is_the_training_domains_holdout_and_ood_the_test_domains_80_percent",)),
    Named("--selection oracle is ignored inside a run", "src/droptune/training/trainer.py",
          "if is_better(record, self.best, self.config.selection):",
          'if is_better(record, self.best, "training_domain"):',
          ("tests/test_protocol.py::test_oracle_selection_inside_a_run",)),
    Named("--no-clean-holdout is ignored", "src/droptune/training/protocol.py",
          "None if self.clean_holdout else stable_seed(", "None if True else stable_seed(",
          ("tests/test_protocol.py::test_augmented_holdout_changes_only_the_training_domains_scores",)),
    Named("evaluation drops each split's last partial batch", "src/droptune/data/loaders.py",
          "for start in range(0, len(split.keys), batch_size):",
          "for start in range(0, len(split.keys) - batch_size + 1, batch_size):",
          ("tests/test_protocol.py::test_eval_batch_size_and_loader_workers_leave_the_numbers_unchanged",)),
    Named("Bench.recompute_bn is a no-op", "src/droptune/training/bench.py",
          "        recompute_bn(model, loader, self.device, self.channels_last)",
          "        pass",
          ("tests/test_protocol.py::test_unfrozen_batchnorm_statistics_are_re_estimated_for_averages",
           "tests/test_protocol.py::test_unfrozen_batchnorm_statistics_are_re_estimated_for_soups")),
    Named("soups keep the averaged BatchNorm statistics", "src/droptune/combining/soups.py",
          "    if not all(run.config.freeze_bn for run in runs):", "    if False:",
          ("tests/test_protocol.py::test_unfrozen_batchnorm_statistics_are_re_estimated_for_soups",)),
    Named("the report's oracle rows scored at the training-domain checkpoint", "src/droptune/experiments/collect.py",
          'row[f"{selection}.{column}"] = _accuracy(chosen.get(key), f"selections.{selection}.{key}")',
          'row[f"{selection}.{column}"] = _accuracy((selections["training_domain"] if column == "ood" else chosen)'
          '.get(key), f"selections.{selection}.{key}")',
          ("tests/test_report.py",)),
    Named("the average column's standard error is the mean of the domains' errors",
          "src/droptune/experiments/tables.py",
          "se = math.sqrt(sum(float(s) ** 2 for s in ses)) / len(ses)", "se = sum(ses) / len(ses)",
          ("tests/test_report.py", "tests/test_summary.py")),
    Named("the cache fingerprint ignores modification times", "src/droptune/data/cache.py",
          r"{stat.st_size}\t{stat.st_mtime_ns}\n", r"{stat.st_size}\n",
          ("tests/test_data_cache.py",)),
    Named("the cache fingerprint ignores file sizes", "src/droptune/data/cache.py",
          r"{stat.st_size}\t{stat.st_mtime_ns}\n", r"{stat.st_mtime_ns}\n",
          ("tests/test_data_cache.py",)),
    Named("the cache fingerprint covers the first image only", "src/droptune/data/cache.py",
          "        for domain, index in self._keys:\n            path = self.dataset.path(domain, index)",
          "        for domain, index in self._keys[:1]:\n            path = self.dataset.path(domain, index)",
          ("tests/test_data_cache.py",)),
    Named("the cache reads an image without its domain's offset", "src/droptune/data/cache.py",
          "self._array[self._offsets[domain] + index]", "self._array[index]",
          ("tests/test_cache_training.py",)),
    Named("the split is seeded without the domain", "src/droptune/data/splits.py",
          'stable_seed("split", trial_seed, domain)', 'stable_seed("split", trial_seed)',
          ("tests/test_scoring.py",)),
    Named("selection ties go to the latest step", "src/droptune/training/selection.py",
          '(r[key], -r["step"])', '(r[key], r["step"])',
          ("tests/test_scoring.py",)),
    Named("evaluation scores the model in training mode (dropout on)", "src/droptune/training/evaluate.py",
          "    model.eval()\n", "",
          ("tests/test_scoring.py",)),
    Named("frozen BatchNorm's train() also turns dropout off", "src/droptune/models/model.py",
          "                if isinstance(module, _BatchNorm):\n                    module.eval()",
          "                if True:\n                    module.eval()",
          ("tests/test_models.py::test_training_drops_the_pooled_features_at_rate_p_and_scoring_keeps_them_all",)),
    Named("the head's dropout rate is not p", "src/droptune/models/model.py",
          "dropout=nn.Dropout(dropout),", "dropout=nn.Dropout(dropout / 2),",
          ("tests/test_models.py::test_training_drops_the_pooled_features_at_rate_p_and_scoring_keeps_them_all",)),
    Named("--amp bf16 is ignored", "src/droptune/training/evaluate.py",
          'if amp == "none":', "if True:",
          ("tests/test_precision.py::test_bf16_evaluation_gives_the_fp32_logits_within_bf16_rounding",
           "tests/test_precision.py::test_bf16_training_follows_the_fp32_path_within_a_stated_tolerance")),
    Named("bf16 training keeps its weights in bf16", "src/droptune/training/trainer.py",
          "        self.scaler.step(self.optimizer)\n",
          "        self.scaler.step(self.optimizer)\n"
          "        [p.data.copy_(p.data.bfloat16()) for p in self.model.parameters() if self.config.amp == 'bf16']\n",
          ("tests/test_precision.py::test_bf16_training_follows_the_fp32_path_within_a_stated_tolerance",)),
    Named("channels_last is ignored", "src/droptune/training/trainer.py",
          "place(self.model, self.device, self.channels_last)", "place(self.model, self.device, False)",
          ("tests/test_precision.py::test_channels_last_gives_the_numbers_of_the_default_layout",)),
    Named("a greedy-soup candidate that improves the soup is listed but not averaged in",
          "src/droptune/combining/soups.py", "        if added:\n            soup.add(state)\n",
          "        if added:\n", ("tests/test_combining.py", "-k", "greedy")),
    Named("the greedy soup's bar stays at the first run's accuracy", "src/droptune/combining/soups.py",
          "            soup.add(state)\n            best = iid\n", "            soup.add(state)\n",
          ("tests/test_combining.py", "-k", "greedy")),
    Named("greedy's BatchNorm re-estimation before each i.i.d. choice dropped", "src/droptune/combining/soups.py",
          "        _recompute_bn(model, ordered, bench)\n        return bench.iid(model)\n",
          "        return bench.iid(model)\n",
          ("tests/test_combining.py::test_greedy_soup_re_estimates_batchnorm_before_each_choice",)),
    Named("droptune compare swaps its i.i.d. and o.o.d. columns", "src/droptune/experiments/compare.py",
          """cells += [f"{100 * r['iid']:.1f}{flag}", f"{100 * r['ood']:.1f}"]""",
          """cells += [f"{100 * r['ood']:.1f}{flag}", f"{100 * r['iid']:.1f}"]""",
          ("tests/test_compare.py",)),
    Named("droptune compare's average row averages i.i.d. twice", "src/droptune/experiments/compare.py",
          'for d in domains]):.1f}" for k in ("iid", "ood")]', 'for d in domains]):.1f}" for k in ("iid", "iid")]',
          ("tests/test_compare.py",)),
    Named("sweep --set is ignored", "src/droptune/cli/sweep.py", "    if args.set:", "    if False:",
          ("tests/test_sweep_cli.py::test_flags_override_the_sweep_file",)),
    Named("sweep --trial-seeds is ignored", "src/droptune/cli/sweep.py",
          '"trial_seeds": args.trial_seeds}', '"trial_seeds": None}',
          ("tests/test_sweep_cli.py::test_flags_override_the_sweep_file",)),
    Named("sweep --max-retries is ignored", "src/droptune/cli/sweep.py",
          "run_sweep(jobs, launcher, args.max_retries, args.progress)", "run_sweep(jobs, launcher, 1, args.progress)",
          ("tests/test_sweep_cli.py::test_max_retries_bounds_the_attempts_of_a_failing_job",)),
    Named("--slurm-gpus and --slurm-cpus crossed", "src/droptune/cli/sweep.py",
          '"slurm_gpus": "gpus_per_job", "slurm_cpus": "cpus_per_job",',
          '"slurm_gpus": "cpus_per_job", "slurm_cpus": "gpus_per_job",',
          ("tests/test_sweep_cli.py::test_slurm_options_reach_the_launcher_through_the_command_line",)),
    Named("--ray-gpus is dropped", "src/droptune/cli/sweep.py",
          ', "ray_gpus": "gpus_per_job"}', "}",
          ("tests/test_sweep_cli.py::test_ray_options_reach_the_launcher_through_the_command_line",)),
    Named("a local worker's exit status is never a crash", "src/droptune/experiments/launchers.py",
          "None if code in (0, RECORDED, INTERRUPTED_EXIT)", "None if True",
          ("tests/test_sweep_cli.py::test_a_local_worker_that_dies_is_recorded_with_its_status",)),
    Named("a lost Slurm task is never a crash", "src/droptune/experiments/launchers.py",
          "crash = None if stop.received is not None else _crash(self._outcome(task))", "crash = None",
          ("tests/test_sweep_cli.py::test_a_lost_slurm_task_is_recorded_with_its_error",)),
    Named("a run's checkpoint ensemble ignores --ensemble-outputs logits", "src/droptune/training/along_run.py",
          'OutputEnsemble(probabilities=outputs == "probs")', "OutputEnsemble()",
          ("tests/test_protocol.py::test_checkpoint_ensemble_of_logits_averages_the_logits_of_the_checkpoints",)),
    Named("a sweep combination is not recomputed when its group gains a run", "src/droptune/experiments/combos.py",
          '_outcome(RunDir(folder / m)) != (members, None', '_outcome(RunDir(folder / m)) is None != (members, None',
          ("tests/test_sweep.py::test_sweep_combines_runs_across_seeds_once_and_reports_them",)),
    Named("a sweep's ensemble of runs averages softmax outputs whatever its runs' ensemble_outputs",
          "src/droptune/experiments/combos.py", "combine(paths, [method], folder, device, workers, outputs=outputs)",
          "combine(paths, [method], folder, device, workers)",
          ("tests/test_sweep.py::test_an_ensemble_of_runs_averages_what_the_runs_ensembles_average",)),
    Named("a run resumes on a dataset whose images changed", "src/droptune/training/trainer.py",
          'changes = self.protocol.changes_since(state["images"], state.get("files")) if "images" in state else None',
          "changes = None",
          ("tests/test_training.py::test_a_run_does_not_resume_on_a_dataset_whose_images_changed",)),
    Named("DomainBed's colour jitter weakened to 0.2", "src/droptune/data/transforms.py", "JITTER = 0.3",
          "JITTER = 0.2", ("tests/test_batch_augment.py::test_the_augmentation_is_domainbeds",)),
    Named("DomainBed's crop widened to 50-100% of the area", "src/droptune/data/transforms.py",
          "CROP_SCALE = (0.7, 1.0)", "CROP_SCALE = (0.5, 1.0)",
          ("tests/test_batch_augment.py::test_the_augmentation_is_domainbeds",)),
    Named("linear fine-tuning starts from the first block's features", "src/droptune/models/block_features.py",
          "start[-1] = 1.0", "start[0] = 1.0",
          ("tests/test_block_features.py::test_it_starts_at_the_networks_features",)),
    Named("the linear fine-tuning model trains its backbone", "src/droptune/models/block_features.py",
          "        self.backbone.requires_grad_(False)\n", "",
          ("tests/test_block_features.py::test_the_backbone_is_frozen_and_copies_carry_no_hooks",)),
    Named("the linear fine-tuning model counts blocks without a shortcut", "src/droptune/models/block_features.py",
          ' or getattr(module, "has_skip", False) is True', ' or hasattr(module, "has_skip")',
          ("tests/test_block_features.py::test_residual_blocks_are_those_with_a_shortcut",)),
    Named("a probe of the linear fine-tuning model starts a network run", "src/droptune/training/head_start.py",
          'if metadata.get("linear_blocks") != expected.get("linear_blocks"):', "if False:",
          ("tests/test_block_features.py::test_a_probe_of_one_model_does_not_start_the_other",)),
    Named("a local sweep starts on data this host cannot read", "src/droptune/cli/sweep.py",
          "for problem in unreadable_data(jobs):", "for problem in []:",
          ("tests/test_sweep_cli.py::test_unreadable_data_stops_a_local_sweep_and_warns_a_cluster_one",)),
    Named("a sweep starts every job of a linear model that cannot be built", "src/droptune/cli/sweep.py",
          "for problem in unbuildable_models(jobs):", "for problem in []:",
          ("tests/test_sweep_cli.py::test_a_linear_model_that_cannot_be_built_stops_the_sweep_before_any_job",)),
    Named("combine scores runs on a dataset whose images changed since", "src/droptune/combining/combine.py",
          '    split.require_unchanged(runs, "combine")\n', "",
          ("tests/test_combining.py::test_incompatible_runs_are_refused_with_the_reason",)),
    Named("a run resumes on a dataset where an image was renamed", "src/droptune/training/protocol.py",
          "            elif files is not None and self.files is not None and files.get(name) != self.files.get(name):",
          "            elif False:",
          ("tests/test_training.py::test_a_run_does_not_resume_on_a_dataset_whose_images_changed",)),
    Named("a linearized run's weights are averaged with an ordinary run's", "src/droptune/combining/runs.py",
          '    "linearized": lambda run: run.config.linearized,\n', "",
          ("tests/test_combining.py::test_incompatible_runs_are_refused_with_the_reason",)),
    Named("an empty domain is accepted where domains may lack classes", "src/droptune/data/domains.py",
          "            if not paths:", "            if False:",
          ("tests/test_data_verify.py::test_archive_metadata_is_not_a_domain_and_an_empty_domain_is_refused",)),
    Named("a sweep's weights file is recorded as named, relative to where it started",
          "src/droptune/experiments/sweep.py",
          '    return {name: recorded_value(name, value) for name, value in coerce(values, source).items()}',
          "    return coerce(values, source)",
          ("tests/test_sweep.py::test_sweep_records_a_weights_file_by_its_absolute_path",)),
    Named("a class folder that is a broken link is skipped", "src/droptune/data/domains.py",
          "    broken = sorted(p for p in entries if p.is_symlink() and not p.exists())",
          "    broken = []", ("tests/test_bad_input.py::test_a_class_folder_that_is_a_broken_link_is_named",)),
    Named("a summary row of two sweeps reads only the first", "src/droptune/experiments/summary.py",
          "    if len(parts) <= 1:", "    if True:",
          ("tests/test_summary.py::test_a_row_pairs_a_method_with_a_control_swept_later_into_another_folder",)),
)


# -- generated mutants -------------------------------------------------------------------------

COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
ARITHMETIC = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
              ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.RShift: ast.LShift, ast.LShift: ast.RShift}
BOOLEAN = {ast.And: ast.Or, ast.Or: ast.And}
NAMES = {"min": "max", "max": "min", "any": "all", "all": "any", "argmax": "argmin", "argmin": "argmax",
         "idxmax": "idxmin", "idxmin": "idxmax"}
KEYS = {"in": "out", "out": "in", "iid": "ood", "ood": "iid", "ood_out": "ood", "training_domain": "oracle",
        "oracle": "training_domain", "train": "holdout", "holdout": "train"}
QUIET = {"log", "logging", "print", "warnings"}  # calls whose removal changes no number


@dataclass(frozen=True)
class Mutant:
    module: str
    path: str
    line: int
    function: str
    before: str
    after: str
    source: str  # the whole mutated module

    @property
    def label(self) -> str:
        return f"{self.path}:{self.line} ({self.function}): {self.before}  ->  {self.after}"


def _changes(node: ast.AST) -> Iterator[tuple[str, callable]]:
    """(description, in-place change) for each way of mutating `node`."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE:
                yield f"op{i}", lambda n, i=i: n.ops.__setitem__(i, COMPARE[type(n.ops[i])]())
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITHMETIC:
        yield "op", lambda n: setattr(n, "op", ARITHMETIC[type(n.op)]())
    elif isinstance(node, ast.BoolOp):
        yield "op", lambda n: setattr(n, "op", BOOLEAN[type(n.op)]())
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not", lambda n: setattr(n, "operand", ast.UnaryOp(ast.Not(), n.operand))
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield "bool", lambda n: setattr(n, "value", not n.value)
        elif isinstance(value, int):
            yield "int", lambda n: setattr(n, "value", n.value + 1)
        elif isinstance(value, float):
            yield "float", lambda n: setattr(n, "value", n.value * 2 if n.value else 1.0)
        elif isinstance(value, str) and value in KEYS:
            yield "key", lambda n: setattr(n, "value", KEYS[n.value])
    elif isinstance(node, ast.Name) and node.id in NAMES and isinstance(node.ctx, ast.Load):
        yield "name", lambda n: setattr(n, "id", NAMES[n.id])
    elif isinstance(node, ast.Attribute) and node.attr in NAMES:
        yield "attr", lambda n: setattr(n, "attr", NAMES[n.attr])
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and not _quiet(node.value):
        yield "drop", lambda n: setattr(n, "value", ast.Constant(None))


def _quiet(call: ast.Call) -> bool:
    func = call.func
    while isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id in QUIET


def _skipped(node: ast.AST) -> set[int]:
    """ids of nodes never mutated: error messages, assertions, annotations, docstrings, f-strings."""
    skip: set[int] = set()

    def mark(tree: ast.AST | None) -> None:
        if tree is not None:
            skip.update(id(n) for n in ast.walk(tree))

    for n in ast.walk(node):
        if isinstance(n, (ast.Raise, ast.Assert, ast.JoinedStr)):
            mark(n)
        elif isinstance(n, ast.arg):
            mark(n.annotation)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(n.returns)
            for d in n.decorator_list:
                mark(d)
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant):
                mark(n.body[0])
        elif isinstance(n, ast.AnnAssign):
            mark(n.annotation)
    return skip


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{node.name}.{item.name}", item


def generate(module: str, target: Target, root: Path = REPO) -> list[Mutant]:
    text = (root / target.path).read_text()
    tree = ast.parse(text)
    order = {id(n): i for i, n in enumerate(ast.walk(tree))}
    found = [(name, fn) for name, fn in _functions(tree) if not target.functions or name in target.functions]
    missing = set(target.functions) - {name for name, _ in found}
    if missing:
        raise SystemExit(f"mutate.py: {target.path} has no function {', '.join(sorted(missing))}; update TARGETS")
    mutants = []
    for name, fn in found:
        skip = _skipped(fn)
        for node in ast.walk(fn):
            if id(node) in skip:
                continue
            for _, change in _changes(node):
                clone = copy.deepcopy(tree)
                twin = next(n for i, n in enumerate(ast.walk(clone)) if i == order[id(node)])
                before = ast.unparse(twin)
                change(twin)
                after = ast.unparse(twin)
                mutants.append(Mutant(module, target.path, node.lineno, name, _short(before), _short(after),
                                      ast.unparse(clone) + "\n"))
    return mutants


def _short(code: str, width: int = 90) -> str:
    line = " ".join(code.split())
    return line if len(line) <= width else line[: width - 3] + "..."


# -- running -----------------------------------------------------------------------------------

class Sandbox:
    """A private copy of src/ that one mutant at a time is written into."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="droptune-mutants-"))
        shutil.copytree(REPO / "src", self.root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        os.environ.setdefault("MPLBACKEND", "Agg")
        for name in HEAVY:
            importlib.import_module(name)

    def run(self, path: str, source: str, stages: tuple[tuple[str, ...], ...], timeout: float) -> tuple[str, str]:
        """("killed" | "survived" | "timeout", the stage that decided)."""
        file = self.root / path
        original = file.read_text()
        file.write_text(source)
        try:
            for stage in stages:
                outcome = self._stage(stage, timeout)
                if outcome != "passed":
                    return outcome, " ".join(stage)
            return "survived", ""
        finally:
            file.write_text(original)

    def _stage(self, stage: tuple[str, ...], timeout: float) -> str:
        """Run pytest in a fork of this process, which has imported the heavy dependencies once."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setsid()
                os.environ.update(PYTHONPATH=str(self.root / "src"), PYTHONDONTWRITEBYTECODE="1")
                sys.path.insert(0, str(self.root / "src"))
                os.chdir(REPO)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                import pytest

                code = int(pytest.main([*PYTEST, *stage]))
            finally:
                os._exit(code)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    pid = 0
                    return "passed" if os.waitstatus_to_exitcode(status) == 0 else "killed"
                time.sleep(0.2)
            return "timeout"
        finally:
            if pid:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def stale(chosen: list[Named]) -> list[str]:
    """One line per named mutant that no longer applies: its text is not in its file exactly once, or a test
    it names is gone (the code it breaks was changed or moved: rewrite the mutant)."""
    problems = []
    for mutant in chosen:
        path = REPO / mutant.path
        count = path.read_text().count(mutant.old) if path.exists() else 0
        if count != 1:
            problems.append(f"{mutant.name}: its text occurs {count} times in {mutant.path} (expected once)")
        for test in mutant.tests:
            file, _, function = test.partition("::")
            if not file.startswith("tests/"):
                continue
            if not (REPO / file).exists() or function and f"def {function}(" not in (REPO / file).read_text():
                problems.append(f"{mutant.name}: its test {test} does not exist")
    return problems


def failing_without_a_mutant(sandbox: Sandbox, path: str, stages: tuple[tuple[str, ...], ...],
                             timeout: float) -> str | None:
    """The stage that fails on the unmutated code (an import error, a broken test), else None: every mutant would
    read as killed by it, and prove nothing."""
    outcome, stage = sandbox.run(path, (REPO / path).read_text(), stages, timeout)
    return None if outcome == "survived" else f"{stage} ({outcome} without a mutant)"


def run_named(sandbox: Sandbox, chosen: list[Named], timeout: float) -> int:
    for tests in dict.fromkeys(mutant.tests for mutant in chosen):
        path = next(mutant.path for mutant in chosen if mutant.tests == tests)
        failing = failing_without_a_mutant(sandbox, path, (tests,), timeout)
        if failing:
            print(f"mutate.py: tests {failing}: fix them first; no mutant run", file=sys.stderr)
            return 2
    survived = 0
    for mutant in chosen:
        text = (REPO / mutant.path).read_text()
        start = time.monotonic()
        outcome, _ = sandbox.run(mutant.path, text.replace(mutant.old, mutant.new), (mutant.tests,), timeout)
        survived += outcome == "survived"
        print(f"{outcome.upper():<9} {mutant.name} ({time.monotonic() - start:.0f} s)", flush=True)
    print(f"\n{len(chosen)} named mutants: {len(chosen) - survived} killed, {survived} survived")
    return 1 if survived else 0


def run_generated(sandbox: Sandbox, mutants: list[Mutant], timeout: float, report: Path | None,
                  stages: int | None = None) -> int:
    for module in dict.fromkeys(mutant.module for mutant in mutants):
        failing = failing_without_a_mutant(sandbox, TARGETS[module].path, TARGETS[module].stages[:stages], timeout)
        if failing:
            print(f"mutate.py: {module}'s tests {failing}: fix them first; no mutant run", file=sys.stderr)
            return 2
    rows = []
    for number, mutant in enumerate(mutants, 1):
        start = time.monotonic()
        outcome, stage = sandbox.run(mutant.path, mutant.source, TARGETS[mutant.module].stages[:stages], timeout)
        rows.append({"module": mutant.module, "path": mutant.path, "line": mutant.line, "function": mutant.function,
                     "before": mutant.before, "after": mutant.after, "outcome": outcome, "stage": stage,
                     "seconds": round(time.monotonic() - start, 1)})
        print(f"[{number}/{len(mutants)}] {outcome.upper():<9} {mutant.label}", flush=True)
        if report:
            report.write_text(json.dumps(rows, indent=1))
    survivors = [r for r in rows if r["outcome"] == "survived"]
    print(f"\n{len(rows)} mutants: {len(rows) - len(survivors)} killed "
          f"({sum(r['outcome'] == 'timeout' for r in rows)} by the time limit), {len(survivors)} survived")
    for r in survivors:
        print(f"  survived: {r['path']}:{r['line']} ({r['function']}): {r['before']}  ->  {r['after']}")
    return 1 if survivors else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--named", action="store_true", help="run the named mutants instead of the generated ones")
    parser.add_argument("--module", nargs="+", choices=sorted(TARGETS), help="core modules (default: all)")
    parser.add_argument("--only", nargs="+", type=int, metavar="N", help="run only these generated mutants (1-based)")
    parser.add_argument("--match", nargs="+", help="with --named: only the mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants; run nothing")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per test stage (default: 300)")
    parser.add_argument("--report", type=Path, help="write each generated mutant's outcome to this JSON file")
    parser.add_argument("--stages", type=int, metavar="N",
                        help="run only each module's first N test stages (a survivor may still die in a later one)")
    args = parser.parse_args(argv)

    if args.named:
        chosen = [m for m in NAMED if args.match is None or any(text in m.name for text in args.match)]
        problems = stale(chosen)
        if problems:
            print("mutate.py: STALE named mutants, none run:", *problems, sep="\n  ", file=sys.stderr)
            return 2
        if args.list:
            for mutant in chosen:
                print(f"{mutant.name}: {mutant.path}: {mutant.old.strip()}  ->  {mutant.new.strip()}")
            return 0
        sandbox = Sandbox()
        try:
            return run_named(sandbox, chosen, args.timeout)
        finally:
            sandbox.close()

    mutants = [m for name in (args.module or sorted(TARGETS)) for m in generate(name, TARGETS[name])]
    numbered = list(enumerate(mutants, 1))
    if args.only:
        numbered = [(i, m) for i, m in numbered if i in set(args.only)]
    if args.list:
        for i, mutant in numbered:
            print(f"{i:4} {mutant.label}")
        print(f"\n{len(numbered)} mutants")
        return 0
    sandbox = Sandbox()
    try:
        return run_generated(sandbox, [m for _, m in numbered], args.timeout, args.report, args.stages)
    finally:
        sandbox.close()


if __name__ == "__main__":
    sys.exit(main())
