"""Ensembles, weight averages, SWAD and soups: the math on tiny tensors, and combining tiny runs."""

import copy
import dataclasses
import functools
import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from droptune.cli.main import main
from droptune.data.loaders import DomainImages
from droptune.models.averaging import WeightAverage, recompute_bn
from droptune.combining.combine import combine
from droptune.models.ensemble import OutputEnsemble
from droptune.models.model import build_model
from droptune.training import head_start as probe
from droptune.training.head_start import linear_probe
from droptune.training.bench import Bench
from droptune.training.protocol import LeaveOneDomainOut
from droptune.training.run_inputs import initial_model, run_dataset
from droptune.training.swad import LossValley
from droptune.errors import DroptuneError
from droptune.runs.folder import RunDir
from droptune.training.trainer import Trainer, train
from conftest import make_image_folder
from test_training import numbers, toy_config


def states(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(3, 2, generator=generator), "b": torch.randn(2, generator=generator),
             "steps": torch.tensor(i)} for i in range(n)]


# -- weight averages ------------------------------------------------------------------------

def merged_halves(parts):
    """The average of parts[:2] merged with the average of the rest."""
    first, second = WeightAverage(), WeightAverage()
    for s in parts[:2]:
        first.add(s)
    for s in parts[2:]:
        second.add(s)
    first.merge(second)
    return first


def test_averaging_copies_of_one_model_returns_that_model():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    average = WeightAverage()
    for _ in range(7):
        average.add(model.state_dict())
    other = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    average.load_into(other)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_uniform_average_is_the_mean_and_merges_and_previews_exactly():
    parts = states(5)
    average = WeightAverage()
    for s in parts:
        average.add(s)
    for key in ("w", "b"):
        torch.testing.assert_close(average.mean[key], torch.stack([s[key] for s in parts]).mean(0))
    assert average.mean["steps"] == 4, "integer tensors keep their latest value"

    first = merged_halves(parts)
    assert first.count == 5
    torch.testing.assert_close(first.mean["w"], average.mean["w"])

    four = WeightAverage()
    for s in parts[:4]:
        four.add(s)
    target = nn.Module()
    target.register_buffer("w", torch.zeros(3, 2))
    target.register_buffer("b", torch.zeros(2))
    target.register_buffer("steps", torch.tensor(0))
    four.load_into(target, extra=parts[4])
    torch.testing.assert_close(target.w, average.mean["w"])
    assert four.count == 4, "a preview leaves the average alone"


def test_ema_math_and_refusals():
    ema = WeightAverage(decay=0.5)
    for value in (0.0, 2.0, 4.0):
        ema.add({"w": torch.tensor([value])})
    assert ema.mean["w"].item() == pytest.approx(2.5)  # 0 → 1 → 2.5
    with pytest.raises(DroptuneError, match="only uniform averages can be merged"):
        WeightAverage().merge(ema)
    with pytest.raises(DroptuneError, match="decay must satisfy"):
        WeightAverage(decay=1.0)
    with pytest.raises(DroptuneError, match="different tensors: missing"):
        ema.add({"v": torch.tensor([1.0])})


def test_batchnorm_statistics_are_recomputed_for_averaged_weights():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5))
    batches = [(torch.randn(64, 2) * 3 + 1, None) for _ in range(4)]
    rng = torch.get_rng_state()
    recompute_bn(model, batches, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng), "the training RNG stream is left alone"
    with torch.no_grad():
        features = model[0](torch.cat([x for x, _ in batches]))
    torch.testing.assert_close(model[1].running_mean, features.mean(0), rtol=1e-4, atol=1e-5)
    assert model[1].momentum == 0.1


def test_average_merges_and_previews_keep_the_latest_integers_and_refuse_other_tensors():
    """Mutants: merge or load_into(extra=) dropping the integer tensors' latest value (BatchNorm's step counters);
    merge or load_into without their key check (an average of other tensors merged in, or loaded into a model that
    lacks some of its tensors)."""
    parts = states(5)
    first = merged_halves(parts)
    assert first.mean["steps"] == 4
    four = WeightAverage()
    for s in parts[:4]:
        four.add(s)
    target = nn.Module()
    for key, value in parts[0].items():
        target.register_buffer(key, torch.zeros_like(value))
    four.load_into(target, extra=parts[4])
    assert target.steps == 4, "the candidate's integers are the added state's"
    extra = WeightAverage()
    extra.add({**parts[0], "x": torch.zeros(1)})
    with pytest.raises(DroptuneError, match="different tensors: missing \\[\\], unexpected \\['x'\\]"):
        first.merge(extra)
    smaller = nn.Module()
    smaller.register_buffer("w", torch.zeros(3, 2))
    smaller.register_buffer("b", torch.zeros(2))
    with pytest.raises(DroptuneError, match="different tensors: missing \\['steps'\\]"):
        first.load_into(smaller)


def test_merging_averages_of_one_state_and_empty_ones():
    """Mutants: merge skipping an average of one state (`other.count == 0` -> `== 1`), or replacing an average of
    one state as if it were empty (`self.count == 0` -> `== 1`). SWAD merges segments this way."""
    parts = states(2)
    a, b = WeightAverage(), WeightAverage()
    a.add(parts[0])
    b.add(parts[1])
    a.merge(b)
    assert a.count == 2
    torch.testing.assert_close(a.mean["w"], (parts[0]["w"] + parts[1]["w"]) / 2)
    empty = WeightAverage()
    empty.merge(a)
    a.merge(WeightAverage())
    assert empty.count == a.count == 2 and torch.equal(empty.mean["w"], a.mean["w"])


def test_batchnorm_re_estimation_starts_afresh_also_in_a_frozen_batchnorm_model():
    """Mutants: recompute_bn keeping the old statistics in its estimate (no reset_running_stats); leaving a
    frozen-BatchNorm model's statistics alone (its train() keeps BatchNorm in eval mode: BatchNorm not put in training
    mode itself); the model left in training mode afterwards.

    A soup of a frozen-BatchNorm run (first) and an unfrozen one is built as the first run's model."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[1].running_mean.fill_(100.0)
    model[1].num_batches_tracked.fill_(10)
    batches = [(torch.randn(64, 2) * 3 + 1, None) for _ in range(4)]
    recompute_bn(model, batches, torch.device("cpu"))
    with torch.no_grad():
        features = model[0](torch.cat([x for x, _ in batches]))
    torch.testing.assert_close(model[1].running_mean, features.mean(0), rtol=1e-4, atol=1e-5)

    frozen = build_model("resnet10t", 2, 0.5, "none", freeze_bn=True).eval()
    norms = [m for m in frozen.modules() if isinstance(m, nn.BatchNorm2d)]
    recompute_bn(frozen, [(torch.rand(4, 3, 16, 16), None)], torch.device("cpu"))
    assert norms and all(m.running_mean.abs().max() > 0 for m in norms), "statistics were estimated"
    assert not frozen.training and not any(m.training for m in norms), "the model is left in eval mode"


# -- SWAD -----------------------------------------------------------------------------------

def run_valley(losses, per_segment=2, valley=None, step=0):
    """Weights equal to the step number; one evaluation every `per_segment` steps with the given losses."""
    valley = valley or LossValley()
    for loss in losses:
        for _ in range(per_segment):
            step += 1
            valley.add({"w": torch.tensor([float(step)])}, step)
        valley.close(step, loss)
    return valley


def test_swad_defaults_are_the_published_ones():
    valley = LossValley()
    assert (valley.n_converge, valley.n_tolerance, valley.tolerance_ratio) == (3, 6, 0.3)


def test_swad_averages_densely_over_the_valley_and_ends_it_after_n_tolerance_bad_segments():
    # segments 1-2 fall, 3 is the lowest of (3, 4, 5): the valley opens at segment 3 (steps 5-6);
    # tolerance 1.3 × mean(3, 3.1, 3.2) = 4.03; segment 7 (5.0) waits, 8 (3.5) brings it in; 9-14 are dead.
    losses = [5, 4, 3, 3.1, 3.2, 3.5, 5.0, 3.5] + [9] * 6 + [3.0]
    valley = run_valley(losses)
    result = valley.result()
    assert valley.converged and valley.dead and valley.threshold == pytest.approx(1.3 * 3.1)
    assert (result.start, result.end) == (5, 16)
    assert result.average.count == 12
    assert result.average.mean["w"].item() == pytest.approx(sum(range(5, 17)) / 12)


def test_swad_drops_trailing_segments_above_tolerance_and_falls_back_to_the_last_segment():
    valley = run_valley([5, 4, 3, 3.1, 3.2, 9, 9])
    assert not valley.dead and (valley.result().start, valley.result().end) == (5, 10)
    falling = run_valley([5, 4, 3, 2, 1])
    assert not falling.converged
    assert (falling.result().start, falling.result().end) == (9, 10)


def test_swad_closes_one_step_segments_skips_empty_ones_and_keeps_a_segment_at_the_tolerance():
    """Mutants: an evaluation with no step since the last one closes an empty segment; a segment of one step is
    never closed; a loss exactly at the tolerance counts as above it."""
    valley = LossValley(tolerance_ratio=0.0)
    valley.close(0, 1.0)
    # the window (3, 4, 5) opens the valley at step 1 with tolerance mean = 4.0: steps 2 and 4 are at it
    run_valley([3.0, 4.0, 5.0, 4.0, 6.0], per_segment=1, valley=valley)
    result = valley.result()
    assert valley.threshold == 4.0
    assert (result.start, result.end, result.average.count) == (1, 4, 4)
    assert result.average.mean["w"].item() == pytest.approx(2.5)


def test_swad_state_round_trips():
    losses = [5, 4, 3, 3.1, 3.2, 3.5, 5.0]
    restored = LossValley()
    restored.load_state_dict(run_valley(losses[:5]).state_dict())
    a, b = run_valley(losses[5:], valley=restored, step=10), run_valley(losses)
    assert (a.threshold, a.above, a.open.count) == (b.threshold, b.above, b.open.count) == (1.3 * 3.1, 1, 2)
    assert torch.equal(a.valley.average.mean["w"], b.valley.average.mean["w"]) and a.valley.end == b.valley.end


# -- ensembles ------------------------------------------------------------------------------

def test_output_ensemble_of_one_is_that_model_and_averages_probabilities():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    one = OutputEnsemble()
    one.add(logits)
    torch.testing.assert_close(one.total / one.count, logits.softmax(1))
    confident_wrong = torch.tensor([[-9.0, 9.0], [0.0, 1.0], [3.0, -1.0]])
    by_probs, by_logits = OutputEnsemble(probabilities=True), OutputEnsemble(probabilities=False)
    for member in (logits, logits, confident_wrong):
        by_probs.add(member)
        by_logits.add(member)
    assert by_probs.total.argmax(1)[0] == 0 and by_logits.total.argmax(1)[0] == 1
    with pytest.raises(DroptuneError, match="disagree on the evaluation set"):
        one.add(logits[:2])


# -- along one run --------------------------------------------------------------------------

VARIANTS = dict(ensemble_start=4, average_start=4, ema_decay=0.9, swad=True)


def test_along_run_baselines_are_recorded_selected_and_saved(image_folder, tmp_path):
    config = toy_config(image_folder, tmp_path, **VARIANTS)
    results = train(config)
    records = RunDir(config.run_dir()).read_metrics()
    assert set(records[0]["variants"]) == {"ensemble", "swa", "ema"}
    assert set(records[-1]["variants"]) == {"ensemble", "swa", "ema", "swad"}
    first = records[0]
    assert first["variants"]["ensemble"]["acc"] == first["acc"], "an ensemble of one checkpoint is that checkpoint"
    assert [r["variants"]["ensemble"]["forward_passes"] for r in records] == [1, 2, 3]
    assert [r["variants"]["swa"]["averaged_steps"] for r in records] == [1, 5, 9]
    for name in ("ensemble", "swa", "ema", "swad"):
        scored = [(r["step"], r["variants"][name]) for r in records if name in r["variants"]]
        step, chosen = max(scored, key=lambda pair: (pair[1]["iid"], -pair[0]))
        assert (results["variants"][name]["step"], results["variants"][name]["iid"]) == (step, chosen["iid"])
        assert results["variants"][name]["ood"] == chosen["ood"] and results["variants"][name]["acc"] == chosen["acc"]
        oracle_step, oracle = max(scored, key=lambda pair: (pair[1]["ood_out"], -pair[0]))
        assert results["variants"][name]["selections"]["oracle"]["step"] == oracle_step
        assert results["variants"][name]["selections"]["last"]["step"] == 12
    chosen = results["variants"]["ensemble"]["step"]
    members = next(r["variants"]["ensemble"]["forward_passes"] for r in records if r["step"] == chosen)
    assert results["variants"]["ensemble"]["cost"] == {"trainings": 1, "forward_passes": members}
    swad = results["variants"]["swad"]
    assert swad["step"] == 12 and 1 <= swad["start"] <= swad["end"] <= 12
    for name in ("swa", "ema", "swad"):
        saved = load_file(str(config.run_dir() / f"{name}.safetensors"))
        assert set(saved) == set(load_file(str(RunDir(config.run_dir()).best)))
        assert results["variants"][name]["cost"] == {"trainings": 1, "forward_passes": 1}, name
    assert results["cost"] == {"trainings": 1, "forward_passes": 1} and results["head_start"] == "run seed 0"


def test_an_average_of_one_step_is_scored_and_saved_as_that_steps_model(image_folder, tmp_path):
    """Mutants: the averaged weights are never loaded into the model that scores and saves them; an EMA alone
    (no SWA or SWAD) has no model to be scored through."""
    config = toy_config(image_folder, tmp_path, average_start=4)
    assert train(config, until=4) is None
    run = RunDir(config.run_dir())
    live = torch.load(run.last, weights_only=False)["model"]
    saved = load_file(str(run.baseline("swa")))
    assert saved.keys() == live.keys()
    for key, value in live.items():
        torch.testing.assert_close(saved[key], value, msg=key)
    record = run.read_metrics()[0]
    assert record["variants"]["swa"]["averaged_steps"] == 1 and record["variants"]["swa"]["acc"] == record["acc"]
    ema = toy_config(image_folder, tmp_path, ema_decay=0.5, output_dir=str(tmp_path / "ema"))
    assert train(ema, until=4) is None
    assert list(RunDir(ema.run_dir()).read_metrics()[0]["variants"]) == ["ema"]


def test_baselines_leave_the_plain_model_unchanged_and_resume_exactly(image_folder, tmp_path):
    plain = train(toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "plain")))
    full = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "full"), **VARIANTS)
    part = toy_config(image_folder, tmp_path, output_dir=str(tmp_path / "part"), **VARIANTS)
    expected = train(full)
    for key in ("step", "iid", "ood", "acc", "selections"):
        assert expected[key] == plain[key]
    assert train(part, until=6) is None
    resumed = train(part, resume=True)
    assert numbers(RunDir(part.run_dir()).read_metrics()) == numbers(RunDir(full.run_dir()).read_metrics())
    assert resumed["variants"] == expected["variants"]


# -- shared head starts ---------------------------------------------------------------------

def test_head_seed_is_separate_from_the_run_seed(image_folder, tmp_path):
    def head(**changes):
        return Trainer(toy_config(image_folder, tmp_path, **changes)).model.head.fc.weight.detach().cpu()

    assert torch.equal(head(seed=0, head_seed=5), head(seed=1, head_seed=5))
    assert not torch.equal(head(seed=0), head(seed=1))
    assert not torch.equal(head(seed=0, head_seed=5), head(seed=0))
    with pytest.raises(DroptuneError, match="invalid head_init"):
        toy_config(image_folder, tmp_path, head_seed=1, head_init="x.safetensors")


def test_linear_probe_is_saved_once_and_started_from(image_folder, tmp_path):
    config = toy_config(image_folder, tmp_path)
    path = tmp_path / "head.safetensors"
    assert main(["probe", "--dataset", str(image_folder), "--test-domain", "c", "--backbone", "resnet10t",
                 "--weights", "none", "--image-size", "16", "--workers", "0", "--probe-steps", "30",
                 "--output", str(path)]) == 0
    head = load_file(str(path))
    assert set(head) == {"fc.weight", "fc.bias"}
    trainer = Trainer(config.replace(head_init=str(path)))
    assert torch.equal(trainer.model.head.fc.weight.detach().cpu(), head["fc.weight"])
    assert trainer.head_start.startswith("probe ")
    with pytest.raises(DroptuneError, match="was probed with test_domain 'c', this run has 'b'"):
        Trainer(config.replace(head_init=str(path), test_domain="b"))
    _, metadata = linear_probe(config, torch.device("cpu"), 0, steps=5)
    assert metadata["test_domain"] == "c" and 0 <= metadata["iid"] <= 1


def test_a_probes_recorded_iid_is_its_heads_held_out_accuracy_as_a_run_scores_it(image_folder, tmp_path):
    """Mutant: its feature batches skip an image."""
    config = toy_config(image_folder, tmp_path, freeze_bn=False, dropout=0.9)
    device = torch.device("cpu")
    state, metadata = linear_probe(config, device, 0, steps=20)
    protocol = LeaveOneDomainOut.from_config(config, run_dataset(config))
    model = initial_model(config, len(protocol.dataset.classes))
    model.head.load_state_dict(state)
    assert Bench.for_run(config, protocol, device, 0).iid(model.eval()) == pytest.approx(metadata["iid"])


def test_a_probe_reads_its_features_in_eval_mode_and_scores_its_head_in_eval_mode(image_folder, tmp_path,
                                                                                   monkeypatch):
    """Mutants: the probe reads features with the model in training mode (BatchNorm's batch statistics, with
    freeze_bn off); it scores its head with dropout on (the head is left in training mode)."""
    modes = []
    features = probe._features

    def spy(model, *args):
        modes.append(any(module.training for module in model.modules()))
        return features(model, *args)

    monkeypatch.setattr(probe, "_features", spy)
    config = toy_config(image_folder, tmp_path, freeze_bn=False)
    model = initial_model(config, 2)
    assert model.training, "built in training mode: the probe must switch it"
    linear_probe(config, torch.device("cpu"), 0, steps=5, model=model)
    assert modes and not any(modes) and not model.head.training


def test_a_probe_fits_its_features_and_is_the_same_whatever_the_global_generator(image_folder, tmp_path):
    """Mutants: the probe's loss never back-propagated (its head stays at its start); its dropout masks drawn from
    wherever the global generator stands (two probes of one split differ); its recorded training accuracy."""
    config = toy_config(image_folder, tmp_path)
    device = torch.device("cpu")
    model = initial_model(config, 2)
    heads, metadata = [], []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        head, about = linear_probe(config, device, 0, steps=30, model=copy.deepcopy(model))
        heads.append(head)
        metadata.append(about)
    assert heads[0].keys() == heads[1].keys() and all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    protocol = LeaveOneDomainOut.from_config(config, run_dataset(config))
    keys = [(d, int(i), None) for d, indices in protocol.train_parts() for i in indices]
    x, y = probe._features(model.eval(), DomainImages(protocol.dataset, config.image_size), keys, config, device, 0)
    with torch.inference_mode():
        before = torch.nn.functional.cross_entropy(model.head(x), y)
        model.head.load_state_dict(heads[0])
        assert torch.nn.functional.cross_entropy(model.head(x), y) < before
        assert metadata[0]["train_acc"] == pytest.approx((model.head(x).argmax(1) == y).float().mean().item())


def test_probe_head_start_is_shared_by_seeds_and_kept_for_a_resumed_run(image_folder, pretrained_file, tmp_path):
    def trainer(name, **changes):
        return Trainer(toy_config(image_folder, tmp_path, weights=str(pretrained_file), head_init="probe",
                                  output_dir=str(tmp_path / name), **changes))

    first, second = trainer("a", seed=0), trainer("b", seed=1)
    assert first.head_start == second.head_start and first.head_start.startswith("probe ")
    assert torch.equal(first.model.head.fc.weight, second.model.head.fc.weight)
    random_head = Trainer(toy_config(image_folder, tmp_path, weights=str(pretrained_file), output_dir=str(tmp_path / "c")))
    assert not torch.equal(first.model.head.fc.weight, random_head.model.head.fc.weight)
    saved = load_file(str(tmp_path / "a" / "head_start.safetensors"))
    assert torch.equal(saved["fc.weight"], first.model.head.fc.weight.detach().cpu())
    assert trainer("d", dropout=0.9).head_start != first.head_start, "the probe is trained with the run's dropout"
    save_file({k: torch.zeros_like(v) for k, v in saved.items()}, str(tmp_path / "a" / "head_start.safetensors"))
    assert not trainer("a", seed=0).model.head.fc.weight.any(), "a resumed run reads its saved probe, not a new one"


# -- across runs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished run, the model other runs are derived from."""
    root = tmp_path_factory.mktemp("runs")
    folder = make_image_folder(root / "toy")
    config = toy_config(folder, root, output_dir=str(root / "a"), head_seed=0)
    train(config)
    return folder, root / "a"


def derive(source, target, iid, change=None, **config_changes):
    """A copy of a run folder with other weights, claimed i.i.d. accuracy or config."""
    shutil.copytree(source, target)
    weights = load_file(str(target / "best.safetensors"))
    if change:
        change(weights)
    save_file(weights, str(target / "best.safetensors"))
    results = json.loads((target / "results.json").read_text())
    results["iid"] = iid
    (target / "results.json").write_text(json.dumps(results))
    if config_changes:
        config = yaml.safe_load((target / "config.yaml").read_text())
        (target / "config.yaml").write_text(yaml.safe_dump({**config, **config_changes}))
    return target


def test_ensemble_of_one_run_is_that_run(trained, tmp_path):
    _, run = trained
    results = combine([run], ["ensemble"], tmp_path / "out", device="cpu", workers=0)["ensemble"]
    alone = json.loads((run / "results.json").read_text())
    assert (results["iid"], results["ood"], results["acc"]) == (alone["iid"], alone["ood"], alone["acc"])
    assert results["cost"] == {"trainings": 1, "forward_passes": 1}
    assert json.loads((tmp_path / "out" / "ensemble" / "results.json").read_text()) == results


def first_member_alone(runs, split, outputs):
    """A new output combiner, as a contributor would add one: the first run's scores, and a key of its own."""
    from droptune.combining.ensemble import output_ensemble

    scores, _ = output_ensemble(runs[:1], split, outputs)
    return {**scores, "temperature": 2.0}, None


def test_a_new_combination_s_own_keys_are_kept_and_its_outputs_recorded(trained, tmp_path, monkeypatch):
    """Mutants: an extra key of a combination's function a TypeError of CombinationResults; the ensemble's outputs
    recorded only when the function returned them (the sweep then recombines that group on every invocation)."""
    from droptune.combining.methods import COMBINATIONS, Combination

    _, run = trained
    monkeypatch.setitem(COMBINATIONS, "first", Combination("first", "first run", "the first run alone",
                                                           "test_combining:first_member_alone", averages_weights=False))
    results = combine([run], ["first"], tmp_path / "out", device="cpu", workers=0, outputs="logits")["first"]
    assert results["details"] == {"temperature": 2.0} and results["outputs"] == "logits"
    assert results["members"] == [run.name] and results["label"] == "first run"
    monkeypatch.setitem(COMBINATIONS, "first", dataclasses.replace(COMBINATIONS["first"], averages_weights=True,
                                                                  function="test_combining:no_members"))
    with pytest.raises(DroptuneError, match=r"^combination 'first' \(test_combining:no_members\) returned no "
                                            r"'members': expected iid, ood, ood_out, acc, members, and any other"):
        combine([run], ["first"], tmp_path / "again", device="cpu", workers=0)


def no_members(runs, split):
    scores, _ = first_member_alone(runs, split, "probs")
    return {k: v for k, v in scores.items() if k != "members"}, None


def test_uniform_soup_is_the_mean_of_the_weights(trained, tmp_path):
    _, run = trained
    noisy = derive(run, tmp_path / "b", 0.9, lambda w: w.update({k: v + 0.01 for k, v in w.items()
                                                                 if v.is_floating_point()}))
    results = combine([run, noisy], ["uniform_soup"], tmp_path / "out", device="cpu", workers=0)["uniform_soup"]
    soup = load_file(str(tmp_path / "out" / "uniform_soup" / "soup.safetensors"))
    a, b = load_file(str(run / "best.safetensors")), load_file(str(noisy / "best.safetensors"))
    for key, value in soup.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[key] + b[key]) / 2)
    assert results["members"] == ["a", "b"] and results["cost"] == {"trainings": 2, "forward_passes": 1}


def test_greedy_soup_never_adds_a_run_that_lowers_iid_accuracy(trained, tmp_path):
    _, run = trained
    flipped = derive(run, tmp_path / "flipped", 0.99, lambda w: w.update({"head.fc.weight": -w["head.fc.weight"],
                                                                          "head.fc.bias": -w["head.fc.bias"]}))
    close = derive(run, tmp_path / "close", 0.5, lambda w: w.update({"head.fc.bias": w["head.fc.bias"] + 1e-4}))
    results = combine([close, flipped, run], ["greedy_soup"], tmp_path / "out", device="cpu", workers=0)["greedy_soup"]
    steps = results["greedy"]
    assert [s["run"] for s in steps] == ["a", "flipped", "close"], "runs are tried by decreasing i.i.d. accuracy"
    best = steps[0]["iid"]
    for step in steps[1:]:
        assert step["added"] == (step["iid"] >= best)
        best = max(best, step["iid"]) if step["added"] else best
    assert not steps[1]["added"], "averaging with the flipped head cancels it: the soup would get worse"
    assert results["members"] == ["a", "close"] and results["iid"] >= steps[0]["iid"]
    assert "ood" not in steps[0], "choices never look at the test domain"
    assert results["cost"] == {"trainings": 3, "forward_passes": 1}


def test_greedy_soup_keeps_a_candidate_that_improves_it_and_judges_the_next_against_the_improved_soup(trained,
                                                                                                        tmp_path):
    """Mutants: an improving candidate is listed but not averaged in; the bar a candidate must clear stays at the
    first run's accuracy after the soup improved.

    Two copies of the run with opposite large noise on the head: each alone is poor, their mean is the run itself.
    A third copy with the second's noise lifts the first alone but lowers the soup of the two.
    """
    _, run = trained
    weights = load_file(str(run / "best.safetensors"))["head.fc.weight"]
    noise = 30 * weights.std() * torch.randn(weights.shape, generator=torch.Generator().manual_seed(0))

    def shifted(sign):
        return lambda w: w.update({"head.fc.weight": w["head.fc.weight"] + sign * noise})

    plus = derive(run, tmp_path / "plus", 0.99, shifted(1))
    minus = derive(run, tmp_path / "minus", 0.98, shifted(-1))
    again = derive(run, tmp_path / "again", 0.97, shifted(-1))
    results = combine([again, minus, plus], ["greedy_soup"], tmp_path / "out", device="cpu", workers=0)["greedy_soup"]
    first, second, third = results["greedy"]
    assert [first["run"], second["run"], third["run"]] == ["plus", "minus", "again"]
    assert second["added"] and second["iid"] > first["iid"], "the mean of the two is better than either"
    assert first["iid"] <= third["iid"] < second["iid"], "the fixture must put the third between the two bars"
    assert not third["added"] and results["members"] == ["plus", "minus"]
    assert results["iid"] == second["iid"]
    soup = load_file(str(tmp_path / "out" / "greedy_soup" / "soup.safetensors"))
    torch.testing.assert_close(soup["head.fc.weight"], weights)


def test_greedy_soup_re_estimates_batchnorm_before_each_choice(trained, tmp_path):
    """Mutant: greedy's BatchNorm re-estimation before each i.i.d. choice dropped (candidates scored on stale
    statistics).

    Two `--no-freeze-bn` copies of one run, the second with stale BatchNorm statistics (running means shifted far
    off): their average holds the first's weights, so with re-estimated statistics the candidate scores exactly as
    the first run and joins the soup; scored on the averaged stale statistics it scores worse and is left out.
    """
    _, run = trained

    def shift(amount):
        return lambda w: w.update({k: v + amount for k, v in w.items() if k.endswith("running_mean")})

    fresh = derive(run, tmp_path / "fresh", 0.99, freeze_bn=False)
    stale = derive(run, tmp_path / "stale", 0.5, shift(50.0), freeze_bn=False)
    half = derive(run, tmp_path / "half", 0.5, shift(25.0), freeze_bn=False)
    as_stored = {path.name: combine([path], ["ensemble"], tmp_path / f"alone-{path.name}", device="cpu",
                                    workers=0)["ensemble"]["iid"] for path in (fresh, half)}
    assert as_stored["half"] < as_stored["fresh"], "the fixture's stale statistics must lower the candidate's accuracy"

    results = combine([stale, fresh], ["greedy_soup"], tmp_path / "out", device="cpu", workers=0)["greedy_soup"]
    first, second = results["greedy"]
    assert (first["run"], second["run"]) == ("fresh", "stale")
    assert second["iid"] == first["iid"] and second["added"], "same weights, re-estimated statistics: same accuracy"
    assert results["members"] == ["fresh", "stale"] and results["iid"] == first["iid"]


def test_incompatible_runs_are_refused_with_the_reason(trained, tmp_path):
    _, run = trained
    other_head = derive(run, tmp_path / "head", 0.5)
    results = json.loads((other_head / "results.json").read_text())
    (other_head / "results.json").write_text(json.dumps({**results, "head_start": "head seed 7"}))
    reason = "head initialization .* differs: a has 'head seed 0', head has 'head seed 7'"
    with pytest.raises(DroptuneError, match=reason):
        combine([run, other_head], ["uniform_soup"], tmp_path / "out", device="cpu", workers=0)
    combine([run, other_head], ["ensemble"], tmp_path / "out", device="cpu", workers=0)  # no shared start needed
    other_backbone = derive(run, tmp_path / "backbone", 0.5, backbone="resnet14t")
    with pytest.raises(DroptuneError, match="cannot average the weights of these runs; backbone differs"):
        combine([run, other_backbone], ["greedy_soup"], tmp_path / "out", device="cpu", workers=0)
    for name, setting, reason in (("linearized", {"linearized": True}, "linearized differs: a has False"),
                                  ("blocks", {"linear_blocks": 1}, "linear blocks differs: a has None")):
        other_model = derive(run, tmp_path / name, 0.5, **setting)  # a linearized run's tensors have the same names
        with pytest.raises(DroptuneError, match=f"cannot average the weights of these runs; {reason}"):
            combine([run, other_model], ["uniform_soup"], tmp_path / "out", device="cpu", workers=0)
    for name, recorded, reason in (("counts", {"images": {"a": [6, 6], "b": [6, 5], "c": [6, 6]}},
                                    "b: 11 images then, 12 now"),
                                   ("files", {"files": {"a": "0", "b": "0", "c": "0"}},
                                    "a: the same image counts from other files")):
        other_images = derive(run, tmp_path / name, 0.5)
        results = json.loads((other_images / "results.json").read_text())
        (other_images / "results.json").write_text(json.dumps({**results, **recorded}))
        with pytest.raises(DroptuneError, match=f"cannot combine {name}: toy changed since it was trained "
                                                f"\\({reason}.*\\), so its 80/20 splits are not the run's"):
            combine([run, other_images], ["ensemble"], tmp_path / "out", device="cpu", workers=0)
    other_split = derive(run, tmp_path / "split", 0.5, trial_seed=3)
    with pytest.raises(DroptuneError, match="not trained and evaluated on the same split; trial seed differs"):
        combine([run, other_split], ["ensemble"], tmp_path / "out", device="cpu", workers=0)
    unfinished = derive(run, tmp_path / "unfinished", 0.5)
    (unfinished / "results.json").unlink()
    with pytest.raises(DroptuneError, match="is unfinished: only completed runs can be combined"):
        combine([run, unfinished], ["ensemble"], tmp_path / "out", device="cpu", workers=0)


def test_cli_combine_prints_a_table_and_errors_in_one_line(trained, tmp_path, capsys):
    _, run = trained
    assert main(["combine", str(run), "--method", "ensemble", "uniform_soup", "--output", str(tmp_path / "out"),
                 "--device", "cpu", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "ensemble (1 of 1 runs)" in out and "uniform_soup (1 of 1 runs)" in out
    assert main(["combine", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("droptune: error: ") and "no config.yaml" in err and "\n" not in err


def test_probe_head_start_is_shared_over_the_papers_lr_and_weight_decay_grid(image_folder, pretrained_file, tmp_path,
                                                                            monkeypatch):
    """The probe depends on the split, backbone, weights, dropout and image size, never on lr, weight decay or
    seed: every run of the paper's grid starts from one head, and their weights can be averaged."""
    monkeypatch.setattr(probe, "linear_probe", functools.partial(probe.linear_probe, steps=20))

    def config(lr, wd, seed=0):
        return toy_config(image_folder, tmp_path, weights=str(pretrained_file), head_init="probe", lr=lr,
                          weight_decay=wd, seed=seed, steps=4, eval_every=4,
                          output_dir=str(tmp_path / f"lr{lr}-wd{wd}-s{seed}"))

    trainers = [Trainer(config(lr, wd)) for lr in (1e-3, 5e-4) for wd in (1e-4, 5e-5, 1e-5)]
    first = trainers[0]
    for trainer in trainers:
        assert trainer.head_start == first.head_start
        assert torch.equal(trainer.model.head.fc.weight, first.model.head.fc.weight)
    runs = [config(1e-3, 1e-4, seed=0), config(5e-4, 1e-5, seed=1)]
    for run in runs:
        train(run)
    soup = combine([r.output_dir for r in runs], ["uniform_soup"], tmp_path / "soup", device="cpu", workers=0)
    assert soup["uniform_soup"]["members"] == [r.run_dir().name for r in runs]


def test_a_group_that_cannot_be_combined_is_recorded_and_the_others_go_on(trained, tmp_path):
    from droptune.experiments.collect import collect
    from droptune.experiments.combos import combine_sweep
    from droptune.experiments.jobs import Job

    folder, run = trained
    config = toy_config(folder, tmp_path, head_seed=0)
    jobs = []
    for method in ("shared head", "own heads"):
        for seed in (0, 1):
            copy = derive(run, tmp_path / "runs" / f"{method}-{seed}".replace(" ", "_"), 0.5 + seed / 10)
            if method == "own heads":
                results = json.loads((copy / "results.json").read_text())
                (copy / "results.json").write_text(json.dumps({**results, "head_start": f"run seed {seed}"}))
            jobs.append(Job(config.replace(seed=seed, output_dir=str(copy)), method))
    sweep = tmp_path / "sweep"
    stale = sweep / "combined" / "toy-c-trial0-own_heads" / "uniform_soup"
    stale.mkdir(parents=True)
    (stale / "results.json").write_text(json.dumps({"runs": [{"run": "an earlier member"}]}))
    log = []
    failed = combine_sweep(jobs, sweep, ["ensemble", "uniform_soup"], device="cpu", workers=0, log=log.append)

    assert failed == [stale]
    assert not (stale / "results.json").exists(), "nothing stale or half-written is left as if finished"
    error = json.loads((stale / "error.json").read_text())
    assert "head initialization" in error["message"] and error["attempts"] == 1
    assert any("cannot combine toy-c-trial0-own_heads by uniform_soup" in line for line in log)
    for done in ("toy-c-trial0-own_heads/ensemble", "toy-c-trial0-shared_head/ensemble",
                 "toy-c-trial0-shared_head/uniform_soup"):
        assert (sweep / "combined" / done / "results.json").is_file()
    assert combine_sweep(jobs, sweep, ["ensemble", "uniform_soup"], device="cpu", workers=0, log=log.append) == [stale]
    assert json.loads((stale / "error.json").read_text())["attempts"] == 2, "a failed combination is tried again"
    skipped = collect(sweep).skipped
    assert skipped["reason"].tolist() == [f"failed after 2 attempt(s): {error['message']}"]


def test_two_sweeps_of_one_folder_do_not_overwrite_each_others_combinations(trained, tmp_path):
    """Mutant: two sweep files sharing a folder and a method name took turns overwriting the group's combinations,
    each invocation redoing them with its own runs."""
    from droptune.experiments.combos import combine_sweep
    from droptune.experiments.jobs import Job

    folder, run = trained
    config = toy_config(folder, tmp_path, head_seed=0)
    jobs = [Job(config.replace(seed=seed, output_dir=str(derive(run, tmp_path / "runs" / f"r{seed}", 0.5 + seed / 10))),
                "p") for seed in (0, 1, 2)]
    sweep = tmp_path / "sweep"
    group = sweep / "combined" / "toy-c-trial0-p"
    log = []
    assert combine_sweep(jobs[:2], sweep, ["ensemble"], device="cpu", workers=0, log=log.append, sweep="a") == []
    combined = (group / "ensemble" / "results.json").read_text()
    assert combine_sweep(jobs[::2], sweep, ["ensemble"], device="cpu", workers=0, log=log.append,
                         sweep="b") == [group]
    message = json.loads((group / "error.json").read_text())["message"]
    assert message == (f"{group} holds the combinations of sweep 'a', whose method 'p' runs on the same split: "
                       "rename the method in one of the sweep files")
    assert (group / "ensemble" / "results.json").read_text() == combined
    assert json.loads((group / "group.json").read_text())["sweep"] == "a"
    (group / "ensemble" / "results.json").unlink()
    assert combine_sweep(jobs[:2], sweep, ["ensemble"], device="cpu", workers=0, log=log.append, sweep="a") == []
    assert not (group / "error.json").exists()
