"""The protocol's pure functions against hand-computed numbers: the split, model selection, the scores of a split.

Each test names in its docstring the broken copy of the code ("mutant") it is there to catch;
`python scripts/mutate.py --module splits selection evaluate` generates many more.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from droptune.data.loaders import DomainImages, EvalSplit
from droptune.data.splits import split_domain, stable_seed
from droptune.data.registry import open_dataset
from droptune.training.bench import Bench
from droptune.training.config import TrainConfig
from droptune.training.evaluate import accuracy_of, evaluate
from droptune.training.protocol import LeaveOneDomainOut
from droptune.training.selection import is_better, select, selections, variant_records
from conftest import make_image_folder


def test_the_split_is_the_documented_one_and_never_changes():
    """Mutants: another seed recipe (e.g. seeded without the domain, or other bits of the hash); another cut;
    the 80% and 20% parts swapped. Finished runs are combined and reported with runs of later versions,
    so the split of a (trial seed, domain) must never move."""
    assert stable_seed("split", 0, "a") == 301275878254538882
    split = split_domain(10, "a", trial_seed=0)
    assert (split.train.tolist(), split.holdout.tolist()) == ([0, 1, 2, 3, 4, 5, 7, 8], [6, 9])
    assert split_domain(7, "a", trial_seed=1).holdout.tolist() == [1], "20% of 7 rounds to 1"
    assert split_domain(12, "b", trial_seed=0, holdout_fraction=0.25).holdout.tolist() == [3, 6, 8]


RECORDS = [
    {"step": 10, "iid": 0.50, "ood": 0.40, "ood_out": 0.30},
    {"step": 20, "iid": 0.70, "ood": 0.35, "ood_out": 0.20},
    {"step": 30, "iid": 0.60, "ood": 0.60, "ood_out": 0.90},
    {"step": 40, "iid": 0.70, "ood": 0.50, "ood_out": 0.90},
    {"step": 50, "iid": 0.65, "ood": 0.70, "ood_out": 0.10},
]


def test_selection_methods_pick_their_own_checkpoint_and_ties_go_to_the_earliest():
    """Mutants: training-domain selection by o.o.d. or the lowest i.i.d.; the oracle by i.i.d. or the test domain's
    80%; ties to the latest step; `last` not the final record; is_better (the run's running choice) disagreeing."""
    assert select(RECORDS)["step"] == 20
    assert select(RECORDS, "training_domain")["step"] == 20
    assert select(RECORDS, "oracle")["step"] == 30
    assert select(RECORDS, "last")["step"] == 50
    assert select([], "oracle") is None
    assert selections(RECORDS) == {
        "training_domain": {"step": 20, "iid": 0.70, "ood": 0.35, "ood_out": 0.20},
        "oracle": {"step": 30, "iid": 0.60, "ood": 0.60, "ood_out": 0.90},
        "last": {"step": 50, "iid": 0.65, "ood": 0.70, "ood_out": 0.10},
    }
    assert selections([]) == {"training_domain": None, "oracle": None, "last": None}
    for method, step in (("training_domain", 20), ("oracle", 30)):
        best = None
        for record in RECORDS:
            if is_better(record, best, method):
                best = record
        assert best["step"] == step, method


def test_variant_records_are_the_steps_that_scored_the_variant():
    """Mutant: a variant's records taken from the evaluations that lack it, or without their step."""
    records = [{"step": 4, "iid": 0.1}, {"step": 8, "iid": 0.2, "variants": {"swa": {"iid": 0.5, "ood": 0.4}}},
               {"step": 12, "iid": 0.3, "variants": {"ensemble": {"iid": 0.6}, "swa": {"iid": 0.7, "ood": 0.1}}}]
    assert variant_records(records, "swa") == [{"step": 8, "iid": 0.5, "ood": 0.4}, {"step": 12, "iid": 0.7, "ood": 0.1}]
    assert variant_records(records, "swad") == []


ACC = {"a": {"out": 0.9}, "b": {"out": 0.6}, "c": {"in": 0.4, "out": 0.7}}


def test_summary_is_domainbeds(tmp_path):
    """Mutants: i.i.d. over every domain or one; o.o.d. the test domain's 20%; the oracle's number its 80%."""
    protocol = LeaveOneDomainOut(open_dataset(str(make_image_folder(tmp_path))), "c")
    assert protocol.summarize(ACC) == {"iid": pytest.approx(0.75), "ood": 0.4, "ood_out": 0.7, "acc": ACC}


def test_protocol_evaluation_sets(tmp_path):
    """Mutants: a training domain's 80% scored as i.i.d.; the test domain's parts swapped or left out; augmented
    held-out images when clean ones were asked for (or the reverse); the test domain among the training parts."""
    dataset = open_dataset(str(make_image_folder(tmp_path, per_class=10)))
    clean = LeaveOneDomainOut(dataset, "b", trial_seed=3)
    splits = {d: split_domain(20, name, 3) for d, name in enumerate(["a", "b", "c"])}
    assert [(s.domain, s.split) for s in clean.eval_splits] == [("a", "out"), ("c", "out"), ("b", "in"), ("b", "out")]
    assert clean.eval_splits[0].keys == [(0, int(i), None) for i in splits[0].holdout]
    assert clean.eval_splits[2].keys == [(1, int(i), None) for i in splits[1].train]
    assert clean.eval_splits[3].keys == [(1, int(i), None) for i in splits[1].holdout]
    assert [(d, list(i)) for d, i in clean.train_parts()] == [(0, list(splits[0].train)), (2, list(splits[2].train))]
    augmented = LeaveOneDomainOut(dataset, "b", trial_seed=3, clean_holdout=False)
    assert all(seed is not None for _, _, seed in augmented.eval_splits[0].keys)
    assert all(seed is None for split in augmented.eval_splits[2:] for _, _, seed in split.keys)


def test_augmented_held_out_images_are_drawn_by_the_documented_recipe(tmp_path):
    """Mutant: the augmentation seed of a held-out image drawn under another tag ("holdout" -> "train" in eval_splits).

    A `--no-clean-holdout` run is combined and compared with runs of later versions: a held-out image must keep
    its augmentation, (trial seed, domain, index) hashed under "holdout", as the split keeps its images."""
    dataset = open_dataset(str(make_image_folder(tmp_path, per_class=10)))
    augmented = LeaveOneDomainOut(dataset, "b", trial_seed=3, clean_holdout=False)
    assert augmented.eval_splits[0].keys[0] == (0, 4, 7846325623458062641)
    assert augmented.eval_splits[1].keys == [(2, int(i), stable_seed("holdout", 3, 2, int(i)))
                                             for i in split_domain(20, "c", 3).holdout]


def test_protocol_defaults_are_the_run_configs(tmp_path):
    """Mutants: LeaveOneDomainOut's default trial seed, held-out fraction or clean held-out images not TrainConfig's
    (trial_seed=0 -> 1, 0.2 -> 0.4, True -> False): a protocol built without them would score other images."""
    folder = make_image_folder(tmp_path, per_class=10)
    dataset = open_dataset(str(folder))
    built = LeaveOneDomainOut(dataset, "c")
    configured = LeaveOneDomainOut.from_config(TrainConfig(dataset=str(folder), test_domain="c"), dataset)
    assert [s.domain for s in built.eval_splits] == [s.domain for s in configured.eval_splits]
    assert [s.keys for s in built.eval_splits] == [s.keys for s in configured.eval_splits]
    assert [(list(s.train), list(s.holdout)) for s in built.splits] == [
        (list(s.train), list(s.holdout)) for s in configured.splits]
    assert (built.trial_seed, built.holdout_fraction, built.clean_holdout) == (0, 0.2, True)


def test_two_domains_are_enough(tmp_path):
    """Mutants: a dataset of two domains refused as if it held one (`< 2` -> `<= 2`, or 2 -> 3)."""
    dataset = open_dataset(str(make_image_folder(tmp_path, domains=("a", "b"))))
    protocol = LeaveOneDomainOut(dataset, "b")
    assert protocol.train_domain_names == ["a"]
    assert [(s.domain, s.split) for s in protocol.eval_splits] == [("a", "out"), ("b", "in"), ("b", "out")]


def test_majority_rate_is_the_most_frequent_held_out_class_share(tmp_path):
    """Mutants: the majority rate (the collapse detector's floor) as the rarest class's share, or multiplied by the
    number of images instead of divided.

    Training domains a and b hold 10 cats and 4 dogs each; of their 20% held-out parts (3 images each) the test
    counts the classes itself."""
    folder = make_image_folder(tmp_path, per_class=10)
    for domain in "abc":
        for i in range(4, 10):
            (folder / domain / "dog" / f"{i}.png").unlink()
    dataset = open_dataset(str(folder))
    protocol = LeaveOneDomainOut(dataset, "c", trial_seed=1)
    held_out = [int(label) for d in (0, 1) for label in dataset.labels(d)[split_domain(14, "ab"[d], 1).holdout]]
    counts = [held_out.count(0), held_out.count(1)]
    assert len(held_out) == 6 and counts[0] != counts[1], "the fixture must hold out an unequal number of each class"
    assert protocol.majority_rate() == pytest.approx(max(counts) / 6)


SPLITS = [EvalSplit("a", "out", [(0, i, None) for i in range(3)]),
          EvalSplit("c", "in", [(2, i, None) for i in range(2)]),
          EvalSplit("c", "out", [(2, i, None) for i in range(4)])]


def test_accuracy_of_whole_set_outputs_counts_each_split_on_its_own_rows():
    """Mutants: rows shifted between splits; accuracy by the lowest logit; divided by the wrong size."""
    outputs = torch.tensor([[1.0, 0], [0, 1], [1, 0],  # a/out: labels 0 1 1 -> 2 of 3
                            [0, 1], [0, 1],  # c/in: labels 1 0 -> 1 of 2
                            [1, 0], [1, 0], [0, 1], [0, 1]])  # c/out: labels 0 0 0 0 -> 2 of 4
    labels = torch.tensor([0, 1, 1, 1, 0, 0, 0, 0, 0])
    assert accuracy_of(outputs, labels, SPLITS) == {"a": {"out": pytest.approx(2 / 3)},
                                                    "c": {"in": 0.5, "out": 0.5}}


class Logits(nn.Module):
    """A 'model' whose input is its output, that remembers whether it was called in eval mode."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x


def test_evaluate_scores_every_split_in_one_pass_and_keeps_the_outputs_in_order():
    """Mutants: batches counted for the wrong split; accuracy or loss divided by the wrong size; the model left in
    training mode (dropout on) while scoring, or not put back; kept outputs out of order."""
    outputs = torch.tensor([[2.0, 0], [0, 3], [1, 0], [0, 1], [0, 2], [4, 0], [0, 1], [3, 0], [1, 2]])
    labels = torch.tensor([0, 1, 1, 1, 0, 0, 0, 0, 0])
    # batches of 2 that never mix splits, as eval_batches makes them: a/out 2+1, c/in 2, c/out 2+2
    cuts, owners = [(0, 2), (2, 3), (3, 5), (5, 7), (7, 9)], [0, 0, 1, 2, 2]
    loader = [(outputs[i:j], labels[i:j]) for i, j in cuts]
    model = Logits().train()

    evaluation = evaluate(model, loader, owners, SPLITS, torch.device("cpu"), keep_logits=True)

    assert evaluation.acc == {"a": {"out": pytest.approx(2 / 3)}, "c": {"in": 0.5, "out": 0.5}}
    losses = F.cross_entropy(outputs, labels, reduction="none").tolist()
    assert evaluation.loss == {"a": {"out": pytest.approx(sum(losses[:3]) / 3)},
                               "c": {"in": pytest.approx(sum(losses[3:5]) / 2),
                                     "out": pytest.approx(sum(losses[5:]) / 4)}}
    assert model.modes == [False] * 5 and model.training
    assert torch.equal(evaluation.logits, outputs) and torch.equal(evaluation.labels, labels)


def test_a_one_image_split_scores_zero_or_one():
    """Mutant: accuracy divided by max(2, size) (or another floor), halving a one-image split's score.

    A domain of 5 images holds out 1 (20%), so one-image splits occur in real datasets' small domains."""
    splits = [EvalSplit("a", "out", [(0, 0, None)]), EvalSplit("c", "in", [(2, 0, None)])]
    outputs, labels = torch.tensor([[1.0, 0], [1.0, 0]]), torch.tensor([0, 1])
    assert accuracy_of(outputs, labels, splits) == {"a": {"out": 1.0}, "c": {"in": 0.0}}
    evaluation = evaluate(Logits(), [(outputs[:1], labels[:1]), (outputs[1:], labels[1:])], [0, 1], splits,
                          torch.device("cpu"))
    assert evaluation.acc == {"a": {"out": 1.0}, "c": {"in": 0.0}}


class Counting(nn.Module):
    """A 'model' that predicts class 0 for every image and counts the images it was shown."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], 1)


def test_a_choice_between_models_reads_the_training_domains_held_out_images_alone(tmp_path):
    """Mutant: Bench.iid scores every evaluation set, the test domain's too (`iid_only=True` -> False), and keeps
    the training domains' mean: the same number, but a choice between models (greedy soups, SWAD's bar) would look
    at the test domain."""
    dataset = open_dataset(str(make_image_folder(tmp_path, per_class=10)))
    protocol = LeaveOneDomainOut(dataset, "b")
    bench = Bench(DomainImages(dataset, 16), protocol, batch_size=3, workers=0, device=torch.device("cpu"))
    model = Counting()
    iid = bench.iid(model)
    assert model.seen == len(protocol.splits[0].holdout) + len(protocol.splits[2].holdout) == 8
    labels = [dataset.labels(d)[protocol.splits[d].holdout] for d in (0, 2)]
    assert iid == pytest.approx(sum((y == 0).mean() for y in labels) / 2)
    model.seen = 0
    assert bench.score(model)["iid"] == iid and model.seen == 8 + 20, "a score also reads the test domain (all 20)"
