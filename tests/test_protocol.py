"""The leave-one-domain-out protocol, checked from the outside: run folders against numbers computed here.

Each test names in its docstring the broken copy of the code ("mutant") it is there to catch.
Runs are tiny (a generated 3-domain, 3-class dataset of 16 px images, 12 steps) and shared per module.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from droptune.combining.combine import combine
from droptune.data.registry import open_dataset
from droptune.data.splits import split_domain
from droptune.errors import DroptuneError
from droptune.models.model import build_model
from droptune.training.config import TrainConfig
from droptune.runs.folder import RunDir
from droptune.training.trainer import train
from test_training import numbers

BN_STATISTICS = ("running_mean", "running_var")


def make_overlapping_folder(root: Path, seed: int = 0) -> Path:
    """Domains a, b, c; classes differ in mean brightness by less than images vary, so a tiny run learns
    some of it and no split is at 0% or 100%: a number computed from the wrong images shows."""
    rng = np.random.default_rng(seed)
    for d, domain in enumerate("abc"):
        for c in range(3):
            folder = root / domain / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(10):
                base = 60 + 60 * c + 15 * d + rng.normal(0, 25)
                pixels = np.clip(rng.normal(base, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def config_for(folder: Path, output: Path, **changes) -> TrainConfig:
    base = dict(dataset=str(folder), test_domain="c", backbone="resnet10t", weights="none", image_size=16,
                batch_size=4, steps=12, eval_every=4, lr=0.05, dropout=0.5, seed=2, workers=0, progress=False,
                device="cpu", output_dir=str(output))
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("protocol")


@pytest.fixture(scope="module")
def folder(root) -> Path:
    return make_overlapping_folder(root / "data")


def run_of(folder: Path, root: Path, name: str, **changes) -> Path:
    config = config_for(folder, root / name, **changes)
    train(config)
    return config.run_dir()


@pytest.fixture(scope="module")
def base_run(folder, root) -> Path:
    return run_of(folder, root, "base")


def metrics(run: Path) -> list[dict]:
    return numbers(RunDir(run).read_metrics())


def results_of(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def flat(acc: dict) -> dict[tuple[str, str], float]:
    return {(domain, part): value for domain, parts in acc.items() for part, value in parts.items()}


def weights_equal(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def outputs_here(state: dict, config: TrainConfig, folder: Path) -> dict[str, tuple[torch.Tensor, np.ndarray, object]]:
    """Per domain: the logits of every image under the weights `state`, computed here (image by image, no loader),
    the labels, and the split drawn by the documented recipe (trial seed, domain name)."""
    dataset = open_dataset(str(folder))
    model = build_model(config.backbone, len(dataset.classes), config.dropout, "none", config.freeze_bn)
    model.load_state_dict(state)
    model.eval()
    outputs = {}
    for d, name in enumerate(dataset.domains):
        labels = dataset.labels(d)
        images = torch.stack([torch.from_numpy(np.asarray(dataset.read(d, i).convert("RGB")).copy()).permute(2, 0, 1)
                              for i in range(len(labels))])
        with torch.no_grad():
            logits = model(images)
        split = split_domain(len(labels), name, config.trial_seed, config.holdout_fraction)
        assert len(split.holdout) == 6 and not set(split.train) & set(split.holdout)
        outputs[name] = (logits, labels, split)
    return outputs


def accuracy_here(outputs: dict[str, tuple[torch.Tensor, np.ndarray, object]]) -> dict[str, dict[str, float]]:
    scores = {}
    for name, (logits, labels, split) in outputs.items():
        hits = logits.argmax(1).numpy() == labels
        scores[name] = {"in": float(hits[split.train].mean()), "out": float(hits[split.holdout].mean())}
    return scores


def scores_here(run: Path, folder: Path) -> dict[str, dict[str, float]]:
    """Accuracy of the run's best.safetensors on each domain's 80% ("in") and 20% ("out") part, computed here."""
    return accuracy_here(outputs_here(load_file(str(run / "best.safetensors")), TrainConfig.load(run / "config.yaml"),
                                      folder))


def test_training_never_reads_the_test_domain(folder, root, base_run):
    """Mutant: training batches also draw the test domain (its 20% part, or all of it).

    A dataset whose test domain holds other images must train to the same weights and losses,
    and score the same on the training domains; only the test domain's scores may move.
    """
    poisoned = root / "poisoned"
    shutil.copytree(folder, poisoned)
    for image in sorted((poisoned / "c").rglob("*.png")):
        pixels = np.asarray(Image.open(image))
        Image.fromarray(255 - pixels).save(image)
    run = run_of(poisoned, root, "poisoned-run")
    base, other = metrics(base_run), metrics(run)
    assert [r["loss"] for r in other] == [r["loss"] for r in base]
    assert [(r["iid"], r["acc"]["a"], r["acc"]["b"]) for r in other] == [
        (r["iid"], r["acc"]["a"], r["acc"]["b"]) for r in base]
    assert weights_equal(base_run / "best.safetensors", run / "best.safetensors")
    assert [r["acc"]["c"] for r in other] != [r["acc"]["c"] for r in base], "the test domain is evaluated"
    assert results_of(run)["train_domains"] == ["a", "b"]


def test_iid_is_the_training_domains_holdout_and_ood_the_test_domains_80_percent(folder, base_run):
    """Mutants: i.i.d. averages in the test domain, or uses the training domains' 80% part; o.o.d. reads the
    test domain's 20% part (or all of it); the split is not the documented (trial seed, domain) one."""
    results = results_of(base_run)
    here = scores_here(base_run, folder)
    assert flat(results["acc"]) == pytest.approx(
        {("a", "out"): here["a"]["out"], ("b", "out"): here["b"]["out"], ("c", "in"): here["c"]["in"],
         ("c", "out"): here["c"]["out"]})
    assert results["iid"] == pytest.approx((here["a"]["out"] + here["b"]["out"]) / 2)
    assert results["ood"] == pytest.approx(here["c"]["in"])
    assert results["selections"]["training_domain"]["ood_out"] == pytest.approx(here["c"]["out"])
    assert len({here["c"]["in"], here["c"]["out"], here["a"]["out"], here["b"]["out"]}) > 2, \
        "the fixture must tell the splits apart"


def test_oracle_selection_inside_a_run(folder, root, base_run):
    """Mutant: `--selection oracle` is ignored by the run (it keeps the training-domain checkpoint).

    Selection changes which checkpoint is kept, never the training: the same metrics, the step with the
    best test-domain 20% accuracy, and best.safetensors scored here gives that accuracy.
    """
    run = run_of(folder, root, "oracle", selection="oracle")
    records = metrics(run)
    assert records == metrics(base_run)
    by_oracle = max(records, key=lambda r: (r["ood_out"], -r["step"]))
    by_iid = max(records, key=lambda r: (r["iid"], -r["step"]))
    assert by_oracle["step"] != by_iid["step"], "the fixture must make the two selections differ"
    results = results_of(run)
    assert (results["step"], results["iid"], results["ood"]) == (by_oracle["step"], by_oracle["iid"],
                                                                  by_oracle["ood"])
    assert results["selections"] == results_of(base_run)["selections"]
    assert not weights_equal(run / "best.safetensors", base_run / "best.safetensors"), "another checkpoint is kept"
    here = scores_here(run, folder)
    assert {key: here[key[0]][key[1]] for key in flat(by_oracle["acc"])} == pytest.approx(flat(by_oracle["acc"])), \
        "best.safetensors is the oracle's checkpoint"


@pytest.fixture(scope="module")
def dirty_run(folder, root) -> Path:
    return run_of(folder, root, "dirty", clean_holdout=False)


def test_augmented_holdout_changes_only_the_training_domains_scores(base_run, dirty_run):
    """Mutants: `--no-clean-holdout` is ignored; it also augments the test domain; it changes training."""
    base, dirty = metrics(base_run), metrics(dirty_run)
    assert [r["loss"] for r in dirty] == [r["loss"] for r in base]
    assert [r["acc"]["c"] for r in dirty] == [r["acc"]["c"] for r in base]
    assert [(r["acc"]["a"], r["acc"]["b"]) for r in dirty] != [(r["acc"]["a"], r["acc"]["b"]) for r in base]


def test_combinations_are_scored_on_their_runs_protocol(root, base_run, dirty_run):
    """Mutants: combinations always scored on clean held-out images (a `--no-clean-holdout` run's ensemble or
    soup of itself then differs from the run); runs with clean and augmented held-out images combined."""
    combined = combine([dirty_run], ["ensemble", "uniform_soup", "greedy_soup"], root / "dirty-combined",
                       device="cpu", workers=0)
    alone = results_of(dirty_run)
    for method, results in combined.items():
        assert flat(results["acc"]) == pytest.approx(flat(alone["acc"])), method
    assert combined["greedy_soup"]["greedy"][0]["iid"] == pytest.approx(alone["iid"])
    with pytest.raises(DroptuneError, match="clean holdout"):
        combine([base_run, dirty_run], ["ensemble"], root / "mixed", device="cpu", workers=0)
    assert not (root / "mixed").exists()


def test_eval_batch_size_and_loader_workers_leave_the_numbers_unchanged(folder, root, base_run):
    """Mutants: evaluation batches that mix splits or drop a split's last partial batch; loader workers that
    draw other batches or augmentations."""
    run = run_of(folder, root, "loaders", eval_batch_size=5, workers=1)
    assert metrics(run) == metrics(base_run)
    assert weights_equal(base_run / "best.safetensors", run / "best.safetensors")


def test_checkpoint_ensemble_of_logits_averages_the_logits_of_the_checkpoints(folder, root):
    """Mutant: `--ensemble-outputs logits` ignored in a run (the mean softmax is used), or the ensemble summing
    the outputs of other checkpoints than those evaluated so far.

    The run is stopped after each evaluation (as an interruption would) to read its weights from last.pt;
    the ensemble's accuracy at each evaluation must be that of the mean logits of the checkpoints so far.
    """
    config = config_for(folder, root / "logits", ensemble_start=4, ensemble_outputs="logits", steps=16, lr=0.5)
    states = []
    for until in (4, 8, 12, 16):
        train(config, resume=until > 4, until=until)
        states.append(torch.load(config.run_dir() / "last.pt", weights_only=True)["model"])
    outputs = [outputs_here(state, config, folder) for state in states]
    records = metrics(config.run_dir())
    assert [r["step"] for r in records] == [4, 8, 12, 16]
    told_apart = False
    for k, record in enumerate(records, 1):
        members = outputs[:k]
        mean = {name: (torch.stack([o[name][0] for o in members]).mean(0), *members[0][name][1:]) for name in members[0]}
        probs = {name: (torch.stack([o[name][0].softmax(1) for o in members]).mean(0), *members[0][name][1:])
                 for name in members[0]}
        recorded = record["variants"]["ensemble"]
        assert recorded["forward_passes"] == k
        expected = {key: value for key, value in flat(accuracy_here(mean)).items() if key in flat(recorded["acc"])}
        assert flat(recorded["acc"]) == pytest.approx(expected)
        told_apart |= flat(accuracy_here(probs)) != flat(accuracy_here(mean))
    assert told_apart, "the fixture must make mean logits and mean probabilities disagree somewhere"


def bn_split(path: Path) -> tuple[dict, dict]:
    weights = load_file(str(path))
    statistics = {k: v for k, v in weights.items() if k.endswith(BN_STATISTICS)}
    return statistics, {k: v for k, v in weights.items() if k not in statistics and "num_batches" not in k}


def test_unfrozen_batchnorm_statistics_are_re_estimated_for_averages(image_folder, tmp_path):
    """Mutant: Bench.recompute_bn (BatchNorm re-estimation for weight averages, `--no-freeze-bn`) is a no-op.

    The same SWA weights get other BatchNorm statistics from 1 and from 2 re-estimation batches (`bn_steps`);
    averaged statistics would not depend on it. Reset statistics (mean 0, variance 1) would not be estimates.
    """
    swa = {}
    for bn_steps in (1, 2):
        config = config_for(image_folder, tmp_path / f"bn{bn_steps}", freeze_bn=False, steps=4, eval_every=4,
                            average_start=3, bn_steps=bn_steps)
        train(config)
        swa[bn_steps] = bn_split(config.run_dir() / "swa.safetensors")
    (stats_1, weights_1), (stats_2, weights_2) = swa[1], swa[2]
    assert stats_1 and all(torch.equal(weights_1[k], weights_2[k]) for k in weights_1)
    assert all(not torch.equal(stats_1[k], stats_2[k]) for k in stats_1)
    means = [v for k, v in stats_1.items() if k.endswith("running_mean")]
    assert all(v.abs().max() > 0 for v in means)


def test_unfrozen_batchnorm_statistics_are_re_estimated_for_soups(image_folder, tmp_path):
    """Mutant: soups (uniform, greedy) keep `--no-freeze-bn` runs' averaged BatchNorm statistics (or if any froze)."""
    config = config_for(image_folder, tmp_path / "run", freeze_bn=False, steps=4, eval_every=4, bn_steps=2)
    train(config)
    combine([config.run_dir()], ["uniform_soup", "greedy_soup"], tmp_path / "out", device="cpu", workers=0)
    live_stats, live_weights = bn_split(config.run_dir() / "best.safetensors")
    for method in ("uniform_soup", "greedy_soup"):
        soup_stats, soup_weights = bn_split(tmp_path / "out" / method / "soup.safetensors")
        assert all(torch.equal(live_weights[k], soup_weights[k]) for k in live_weights)
        assert live_stats and all(not torch.equal(live_stats[k], soup_stats[k]) for k in live_stats)
    frozen = config_for(image_folder, tmp_path / "frozen", steps=4, eval_every=4, bn_steps=2)
    train(frozen)
    combine([frozen.run_dir(), config.run_dir()], ["uniform_soup"], tmp_path / "mixed", device="cpu", workers=0)
    frozen_stats, _ = bn_split(frozen.run_dir() / "best.safetensors")
    mixed_stats, _ = bn_split(tmp_path / "mixed" / "uniform_soup" / "soup.safetensors")
    assert all(not torch.allclose(mixed_stats[k], (live_stats[k] + frozen_stats[k]) / 2) for k in live_stats)
