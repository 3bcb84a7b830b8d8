"""DomainBed's leave-one-domain-out protocol on one dataset, in one object.

Training, the linear probe, combinations of runs, analyses and the benchmark all take their
training images, their evaluation sets and their i.i.d./o.o.d. summary from here, so that a model
is always scored the way the runs it is compared with were scored.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np

from droptune.data.domains import MultiDomainDataset, single_domain
from droptune.data.loaders import EvalSplit
from droptune.data.splits import DomainSplit, split_domain, stable_seed
from droptune.errors import DroptuneError
from droptune.training.config import TrainConfig

Scores = dict[str, dict[str, float]]  # {domain: {split: value}}
# The config fields a protocol is built from besides its dataset, as messages name them: runs that agree on
# them and on the dataset were trained and scored on the same images.
PROTOCOL_FIELDS = {"test_domain": "test domain", "trial_seed": "trial seed", "holdout_fraction": "holdout fraction",
                   "clean_holdout": "clean holdout (--clean-holdout)"}


class LeaveOneDomainOut:
    """One held-out test domain; every domain split 80/20 by the trial seed.

    Training reads the training domains' 80%. The i.i.d. score is the mean accuracy on the training
    domains' 20% (training-domain validation, all a choice between models may look at); the o.o.d. score
    is the test domain's 80%, its 20% serving the oracle selection. With `clean_holdout` off, held-out
    images get the training augmentation (DomainBed augments them), drawn from the trial seed: every run
    of a trial is validated on the same images, so their i.i.d. accuracies compare, and combinations of
    them are scored on those images too.
    """

    def __init__(self, dataset: MultiDomainDataset, test_domain: str | int, trial_seed: int = 0,
                 holdout_fraction: float = 0.2, clean_holdout: bool = True):
        where = getattr(dataset, "root", dataset.name)  # a folder's path; a built-in dataset's name
        if len(dataset.domains) < 2:
            raise DroptuneError(single_domain(where, dataset.domains[0]))
        self.dataset = dataset
        self.test = dataset.domain_index(test_domain)
        self.train_domains = [d for d in range(len(dataset.domains)) if d != self.test]
        self.trial_seed = trial_seed
        self.holdout_fraction = holdout_fraction
        self.clean_holdout = clean_holdout
        self.splits: list[DomainSplit] = [split_domain(len(dataset.labels(d)), name, trial_seed, holdout_fraction)
                                          for d, name in enumerate(dataset.domains)]
        for name, split in zip(dataset.domains, self.splits):
            if not (len(split.train) and len(split.holdout)):
                raise DroptuneError(
                    f"domain {name!r} of {where} has {len(split.train) + len(split.holdout)} images: a holdout_fraction "
                    f"of {holdout_fraction:g} splits them {len(split.train)}/{len(split.holdout)}, an empty part would "
                    "be scored as 0%: expected a larger domain or another --holdout-fraction")

    @classmethod
    def from_config(cls, config: TrainConfig, dataset: MultiDomainDataset) -> LeaveOneDomainOut:
        return cls(dataset, **{name: getattr(config, name) for name in PROTOCOL_FIELDS})

    @property
    def test_domain(self) -> str:
        return self.dataset.domains[self.test]

    @property
    def train_domain_names(self) -> list[str]:
        return [self.dataset.domains[d] for d in self.train_domains]

    def train_parts(self) -> list[tuple[int, np.ndarray]]:
        """(domain, image indices) of the images training may read: the training domains' 80%."""
        return [(d, self.splits[d].train) for d in self.train_domains]

    @cached_property
    def eval_splits(self) -> list[EvalSplit]:
        """The training domains' 20% (i.i.d.), then the test domain's 80% ("in") and 20% ("out")."""
        result = []
        for d in self.train_domains:
            keys = [(d, int(i), None if self.clean_holdout else stable_seed("holdout", self.trial_seed, d, int(i)))
                    for i in self.splits[d].holdout]
            result.append(EvalSplit(self.dataset.domains[d], "out", keys))
        for part, indices in (("in", self.splits[self.test].train), ("out", self.splits[self.test].holdout)):
            result.append(EvalSplit(self.test_domain, part, [(self.test, int(i), None) for i in indices]))
        return result

    def summarize(self, acc: Scores) -> dict:
        """DomainBed's summary of per-split scores: iid, ood (the test domain's 80%), ood_out and acc."""
        return {"iid": self.iid(acc), "ood": acc[self.test_domain]["in"], "ood_out": acc[self.test_domain]["out"],
                "acc": acc}

    def iid(self, scores: Scores) -> float:
        """Mean over the training domains' held-out parts (of accuracies, or of losses)."""
        return float(np.mean([scores[name]["out"] for name in self.train_domain_names]))

    def majority_rate(self) -> float:
        """Accuracy of always predicting the most frequent class of the i.i.d. held-out images."""
        labels = np.concatenate([self.dataset.labels(d)[self.splits[d].holdout] for d in self.train_domains])
        return float(np.bincount(labels).max() / len(labels))

    @cached_property
    def images(self) -> dict[str, list[int]]:
        """Each domain's image count per class: what the 80/20 splits are drawn from, so a run resumed (or a
        run compared) on other counts would have trained or been scored on other images."""
        classes = len(self.dataset.classes)
        return {name: np.bincount(self.dataset.labels(d), minlength=classes).tolist()
                for d, name in enumerate(self.dataset.domains)}

    @cached_property
    def files(self) -> dict[str, str] | None:
        """A digest of each domain's image names in the order the splits index them: the same counts from other
        files (an image renamed or replaced by another name) would put other images in the held-out 20%. None for a
        dataset whose images are not files."""
        names = [self.dataset.image_names(d) for d in range(len(self.dataset.domains))]
        if any(found is None for found in names):
            return None
        return {name: hashlib.sha256("\n".join(found).encode()).hexdigest()[:16]
                for name, found in zip(self.dataset.domains, names)}

    def changes_since(self, images: dict[str, list[int]], files: dict[str, str] | None = None) -> str | None:
        """What differs from an earlier run's `images` and `files` ("sketch: 8 images then, 7 now"), or None;
        `files` is not compared where either run lacks it (an older run, a dataset of generated images)."""
        changed = []
        for name in sorted(set(images) | set(self.images)):
            then, now = sum(images.get(name, [])), sum(self.images.get(name, []))
            if images.get(name) != self.images.get(name):
                changed.append(f"{name}: {then} images then, {now} now" if then != now else
                               f"{name}: {now} images, in other classes")
            elif files is not None and self.files is not None and files.get(name) != self.files.get(name):
                changed.append(f"{name}: the same image counts from other files (an image renamed or replaced)")
        return "; ".join(changed) or None

    def describe(self) -> dict:
        return {"dataset": self.dataset.name, "test_domain": self.test_domain,
                "train_domains": self.train_domain_names}

