"""The paper's figures from collected runs: the (i.i.d., o.o.d.) cloud and the dropout-rate curve, PNG and PDF.

The cloud (the paper's main figure): for every choice of one hyper-parameter setting per test
domain, the i.i.d. and o.o.d. accuracies averaged over the test domains (each setting's accuracy
itself averaged over replicates). A grid of 6 settings over 4 domains gives 6⁴ = 1,296 points per
method; beyond `max_points` combinations a seeded uniform sample is drawn, and the title says so.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from droptune.console import counted
from droptune.experiments.collect import CELL_FIELDS, config_value
from droptune.experiments.tables import AVERAGE
from droptune.plotting import save
from droptune.training.config import RUNTIME_FIELDS

MAX_POINTS = 10_000
MARKERS = "os^Dv<>PX*ph"


def cloud(runs: pd.DataFrame, selection: str, domains: list[str], max_points: int = MAX_POINTS,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """(points, mean, combinations, domains used) for one method's runs of one dataset; points are (k, 2)."""
    per = runs.groupby(["test_domain", "hparams"])[[f"{selection}.iid", f"{selection}.ood"]].mean()
    used = [d for d in domains if d in per.index.get_level_values(0)]
    settings = [per.loc[d].to_numpy() for d in used]
    sizes = [len(s) for s in settings]
    total = math.prod(sizes)
    if total <= max_points:
        choice = np.array(list(itertools.product(*(range(n) for n in sizes))))
    else:
        rng = np.random.default_rng(seed)
        choice = np.stack([rng.integers(n, size=max_points) for n in sizes], axis=1)
    points = np.mean([s[choice[:, d]] for d, s in enumerate(settings)], axis=0)
    mean = np.mean([s.mean(axis=0) for s in settings], axis=0)
    return points, mean, total, used


def plot_cloud(runs: pd.DataFrame, dataset: str, domains: list[str], methods: list[str], selection: str,
               stem: Path, max_points: int = MAX_POINTS) -> tuple[list[Path], str]:
    """One marker per method, its mean as a large marker; returns the files and a one-line note."""
    figure = Figure(figsize=(6.5, 5))
    axes = figure.subplots()
    totals = []
    shown = [m for m in methods if m in set(runs["method"])]
    for method, (color, marker) in zip(shown, method_styles(runs, shown)):
        points, mean, total, used = cloud(runs[runs["method"] == method], selection, domains, max_points)
        totals.append(total)
        label = method if len(used) == len(domains) else f"{method} ({len(used)}/{len(domains)} domains)"
        axes.scatter(100 * points[:, 0], 100 * points[:, 1], s=8, alpha=0.35, color=color, marker=marker,
                     linewidths=0)
        axes.scatter(100 * mean[0], 100 * mean[1], s=160, color=color, marker=marker, edgecolors="black",
                     linewidths=1.2, zorder=3, label=label)  # the legend shows the marker readers look for
    shown = max(totals, default=0)
    sampled = f", {max_points:,} sampled of {shown:,}" if shown > max_points else ""
    combinations = f"{counted(shown, 'combination')} per method{sampled}"
    note = f"{dataset}: up to {combinations}"
    axes.set(xlabel="i.i.d. accuracy (%)", ylabel="o.o.d. accuracy (%)",
             title=f"{dataset}: one hyper-parameter setting per test domain\n({combinations}; large markers: means)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, markerscale=0.5, loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the points
    return save(figure, stem), note


def method_styles(runs: pd.DataFrame, methods: list[str]) -> list[tuple[tuple, str]]:
    """(colour, marker) per method: the colour by its dropout rate, darker for lower rates, so that a rate reads
    alike on every page; methods of one rate (its combinations, its head variants) told apart by the marker."""
    rates = [float(runs.loc[runs["method"] == m, "dropout"].iloc[0]) for m in methods]
    ranks = {rate: i for i, rate in enumerate(sorted(set(rates)))}
    styles, seen = [], {}
    for rate in rates:
        colour = colormaps["viridis"](0.85 * ranks[rate] / max(1, len(ranks) - 1))  # its yellow end is unreadable
        styles.append((colour, MARKERS[seen.get(rate, 0) % len(MARKERS)]))
        seen[rate] = seen.get(rate, 0) + 1
    return styles


def dropout_families(runs: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """Groups of methods (of one dataset) whose configs differ in the dropout rate alone, with a label."""
    base = runs[runs["variant"].isna()]
    varied = {f for fields in base["hparam_fields"] for f in fields.split(",") if f}
    excluded = set(CELL_FIELDS) | set(RUNTIME_FIELDS) | varied | {"dropout"}
    columns = [c for c in base.columns if c.startswith("config.") and c.removeprefix("config.") not in excluded]
    shown = base[columns].apply(
        lambda column: column.map(lambda v: str(config_value(column.name.removeprefix("config."), v))))
    keys = shown.agg("|".join, axis=1)
    families = []
    for key, group in base.groupby(keys, sort=False):
        if group["dropout"].nunique() >= 2:
            families.append((key, list(dict.fromkeys(group.sort_values("dropout")["method"]))))
    if len(families) < 2:
        return [("", methods) for _, methods in families]
    # Name each family by the config fields that tell the families apart.
    values = [dict(zip(columns, key.split("|"))) for key, _ in families]
    differ = [c for c in columns if len({v[c] for v in values}) > 1]
    return [(", ".join(f"{c.removeprefix('config.')}={v[c]}" for c in differ), methods)
            for v, (_, methods) in zip(values, families)]


def plot_dropout_curve(runs: pd.DataFrame, summary: pd.DataFrame, dataset: str, stem: Path) -> list[Path]:
    """i.i.d. and o.o.d. accuracy (the tables' cells, ± their standard error) against p: one line per test
    domain where every rate of a family has finished, and the average over domains once all have.
    [] without two dropout rates of otherwise equal methods."""
    cells = summary[summary["dataset"] == dataset]
    rates = runs[runs["variant"].isna()].groupby("method")["dropout"].first()
    lines = []
    for label, methods in dropout_families(runs):
        family = cells[cells["method"].isin(methods)]
        family = family.assign(p=family["method"].map(rates))
        columns = [c for c in dict.fromkeys(family["test_domain"]) if c != AVERAGE] + [AVERAGE]
        for column in columns:
            curve = family[family["test_domain"] == column]
            if curve["p"].nunique() == len(methods) >= 2:
                lines.append((", ".join(filter(None, [label, column])), column == AVERAGE, curve.sort_values("p")))
    if not lines:
        return []
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2, sharex=True)
    for metric, ax, title in (("iid", axes[0], "i.i.d."), ("ood", axes[1], "o.o.d.")):
        for i, (label, average, curve) in enumerate(lines):
            part = curve[curve["metric"] == metric]
            ax.errorbar(part["p"], 100 * part["mean"], yerr=100 * part["se"], marker="o", capsize=3,
                        color="black" if average else f"C{i % 10}", linewidth=2.5 if average else 1.2,
                        label=label)
        ax.set(xlabel="dropout rate p", ylabel=f"{title} accuracy (%)",
               title=f"{dataset}: {title} (bars: ± standard error over replicates)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    return save(figure, stem)


def plot_curves(curves: pd.DataFrame, dataset: str, methods: list[str], stem: Path) -> list[Path]:
    """The convergence check: training-domain validation (i.i.d.) accuracy and training loss against the
    step, averaged over each method's runs (all test domains and seeds), so a budget can be judged
    without looking at the test domain. [] without curves."""
    mine = curves[curves["dataset"] == dataset]
    if mine.empty:
        return []
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2, sharex=True)
    for i, method in enumerate(m for m in methods if m in set(mine["method"])):
        runs = mine[mine["method"] == method]
        mean = runs.groupby("step")[["iid", "loss"]].mean()
        domains = runs["test_domain"].nunique()  # methods at hand on fewer domains than others are not comparable
        label = f"{method} ({counted(runs['run'].nunique(), 'run')}, {counted(domains, 'held-out domain')})"
        axes[0].plot(mean.index, 100 * mean["iid"], marker="o", markersize=3, color=f"C{i % 10}", label=label)
        axes[1].plot(mean.index, mean["loss"], marker="o", markersize=3, color=f"C{i % 10}", label=label)
    axes[0].set(xlabel="step", ylabel="i.i.d. accuracy (%)", title=f"{dataset}: training-domain validation")
    axes[1].set(xlabel="step", ylabel="training loss", title=f"{dataset}: training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return save(figure, stem)
