"""Differences between two methods of one sweep, from the runs `tables.choose` picked: paired, and against a baseline.

Paired (treatment − control): runs are paired by (test domain, trial seed, seed), the same split and the same
seed, so that the two runs of a pair differ only in the method. Per test domain: the mean and standard error
(sample standard deviation, as the tables) of the pairs' differences; over the domains: the mean of the
domain means with SE = sqrt(Σ se²) / domains, the domains independent, as the tables' average column.
A paired difference is *established* when a two-sided t-test of "no difference" rejects at 5%, with at least 2
pairs in every domain: t = mean / SE, with n − 1 degrees of freedom in one domain and, over the domains,
Welch–Satterthwaite's (Σ se²)² / Σ (se⁴ / (n − 1)). With 2 seeds a domain's SE has a single degree of freedom;
the t-test, unlike a fixed "2 SE", charges for it.

Against the best plain baseline: of the control and its along-run and across-run combinations ("<control> +
ensemble", "<control> + uniform soup", ...), the one with the best average o.o.d. accuracy; the difference of
two table cells, their standard errors combined as independent (unpaired: the combinations have no seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from droptune.experiments.tables import AVERAGE, METRICS, REPLICATE, cell_means, domain_average, mean_se

PAIR = ["test_domain", *REPLICATE]
ESTABLISHED_P = 0.05  # a two-sided t-test's level ...
ESTABLISHED_N = 2  # ... with at least this many pairs in every domain


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error (NaN when undefined), as fractions; n: replicates (for an average over
    domains, the fewest of any domain); df: the standard error's degrees of freedom (NaN where no test is drawn)."""

    mean: float
    se: float
    n: int
    df: float = math.nan

    @property
    def t(self) -> float:
        """|mean| / SE, the t statistic of a zero mean."""
        return abs(self.mean) / self.se

    @property
    def p_value(self) -> float:
        """Two-sided t-test of a zero mean; NaN with fewer than 2 replicates or no SE. An SE of 0 (every pair
        differs by the same amount) gives 0 for a nonzero mean."""
        if self.n < ESTABLISHED_N or math.isnan(self.se):
            return math.nan
        if self.se == 0:
            return 0.0 if self.mean != 0 else 1.0
        return float(2 * stats.t.sf(self.t, self.df))

    @property
    def established(self) -> bool:
        return self.p_value < ESTABLISHED_P


@dataclass(frozen=True)
class PairedDifference:
    """treatment − control, per test domain and metric ("ood", "iid"), and over the domains."""

    domains: dict[str, dict[str, Estimate]]  # the domains with at least one pair
    average: dict[str, Estimate] | None  # None unless every domain asked for has a pair
    missing: list[str]  # domains asked for without a pair
    unpaired: int  # runs of either method without a partner in the other


@dataclass(frozen=True)
class BaselineDifference:
    """treatment − the best plain baseline (by average o.o.d. accuracy), unpaired."""

    baseline: str
    difference: Estimate


def paired_difference(chosen: pd.DataFrame, treatment: str, control: str, domains: list[str]) -> PairedDifference:
    """treatment − control over the runs of `chosen` (one dataset) held out on `domains`, paired run by run."""
    mine = chosen[chosen["test_domain"].isin(domains)]
    sides = [mine[mine["method"] == method][PAIR + list(METRICS)] for method in (treatment, control)]
    pairs = sides[0].merge(sides[1], on=PAIR, suffixes=(".t", ".c"))
    per_domain = {}
    for domain in domains:
        mine = pairs[pairs["test_domain"] == domain]
        if len(mine):
            per_domain[domain] = {metric: _estimate(mean_se(mine[f"{metric}.t"] - mine[f"{metric}.c"]))
                                  for metric in METRICS}
    missing = [d for d in domains if d not in per_domain]
    average = None
    if per_domain and not missing:
        average = {metric: average_over_domains([e[metric] for e in per_domain.values()]) for metric in METRICS}
    return PairedDifference(per_domain, average, missing, len(sides[0]) + len(sides[1]) - 2 * len(pairs))


def plain_baselines(methods: list[str], control: str) -> list[str]:
    """The control and its combinations among `methods`: "<control> + <along-run or across-run baseline>"."""
    return [control] + sorted(m for m in methods if m.startswith(f"{control} + "))


def best_baseline_difference(chosen: pd.DataFrame, treatment: str, control: str,
                             domains: list[str]) -> BaselineDifference | None:
    """treatment − the plain baseline with the best average o.o.d. accuracy over `domains`; None when the
    treatment or every baseline lacks a domain."""
    candidates = plain_baselines(sorted(set(chosen["method"])), control)
    mine = chosen[chosen["method"].isin([treatment, *candidates]) & chosen["test_domain"].isin(domains)]
    cells = cell_means(mine, {dataset: domains for dataset in set(mine["dataset"])})
    averages = cells[(cells["metric"] == "ood") & (cells["test_domain"] == AVERAGE)].set_index("method")
    baselines = averages.loc[averages.index.isin(candidates)]
    if treatment not in averages.index or baselines.empty:
        return None
    best = baselines["mean"].idxmax()
    ours, theirs = averages.loc[treatment], baselines.loc[best]
    return BaselineDifference(best, Estimate(ours["mean"] - theirs["mean"], math.hypot(ours["se"], theirs["se"]),
                                             int(min(ours["n"], theirs["n"]))))


def _estimate(values: pd.Series) -> Estimate:
    return Estimate(float(values["mean"]), float(values["se"]), int(values["n"]), float(values["n"]) - 1)


def average_over_domains(domains: list[Estimate]) -> Estimate:
    """The mean over the domains (as the tables' average) with Welch–Satterthwaite's degrees of freedom."""
    mean, se, n = domain_average([e.mean for e in domains], [e.se for e in domains], [e.n for e in domains])
    spread = sum(e.se**4 / e.df for e in domains if e.df > 0)
    return Estimate(mean, se, n, sum(e.se**2 for e in domains) ** 2 / spread if spread > 0 else math.nan)
