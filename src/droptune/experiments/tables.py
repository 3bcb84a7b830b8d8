"""DomainBed-style tables from collected runs: selection and statistics as pure functions.

Selection, as DomainBed does it: for each (dataset, method, test domain, replicate) the
hyper-parameter setting with the best validation accuracy under the selection method is chosen
(training-domain validation: mean accuracy on the training domains' held-out 20%; oracle: the
test domain's 20%), then each cell is the mean ± standard error over replicates (trial seed, seed)
of the chosen runs' accuracy at the checkpoint the same selection chose within each run. The paper's
tables average over the settings instead (HPARAMS "mean": each replicate's accuracy is the mean over
its settings, each run still at its own selected checkpoint). The standard error uses the sample standard deviation (ddof=1);
DomainBed's uses ddof=0, smaller by sqrt((n-1)/n). The average column is the mean of the domain
means, with the domains' standard errors combined as independent: sqrt(Σ se²) / domains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from droptune.data.registry import get_spec
from droptune.experiments.collect import Collection
from droptune.training.selection import SELECTIONS

METRICS = {"ood": "o.o.d. accuracy (%), test domain's 80% part",
           "iid": "i.i.d. accuracy (%), training domains' held-out 20%"}
REPLICATE = ["trial_seed", "seed"]
CELL = ["dataset", "method", "test_domain"]
AVERAGE = "average"
HPARAMS = {"best": "the best setting by validation, per replicate (DomainBed)",
           "mean": "the mean over the settings, per replicate (the paper's tables)"}
MISSING = "–"


def choose(runs: pd.DataFrame, selection: str, hparams: str = "best") -> pd.DataFrame:
    """One row per (dataset, method, test domain, replicate): the setting its validation accuracy picks, or
    (hparams "mean") the mean over its settings."""
    columns = CELL + REPLICATE + ["hparams", "iid", "ood"]
    runs = runs.dropna(subset=[f"{selection}.val"]).sort_values(["hparams", "run"]) if not runs.empty else runs
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs = runs.rename(columns={f"{selection}.iid": "iid", f"{selection}.ood": "ood"})
    # dropna=False: an across-run combination has a trial seed but no run seed.
    replicates = runs.groupby(CELL + REPLICATE, dropna=False)
    if hparams == "mean":
        means = replicates.agg(iid=("iid", "mean"), ood=("ood", "mean"), settings=("hparams", "nunique"))
        means["hparams"] = "mean of " + means.pop("settings").astype(str)
        return means.reset_index()[columns]
    best = runs.loc[replicates[f"{selection}.val"].idxmax()]
    return best[columns].reset_index(drop=True)


def mean_se(values: pd.Series) -> pd.Series:
    n = values.count()  # as pandas' mean and std, which skip NaN
    se = values.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
    return pd.Series({"mean": values.mean(), "se": se, "n": n})


def cell_means(chosen: pd.DataFrame, domains: dict[str, list[str]]) -> pd.DataFrame:
    """Long table: dataset, method, metric, test_domain (or "average"), mean, se, n (fractions, not %)."""
    columns = ["dataset", "method", "metric", "test_domain", "mean", "se", "n"]
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    parts = []
    for metric in METRICS:
        cells = chosen.groupby(CELL)[metric].apply(mean_se).unstack().reset_index()
        parts += [cells.assign(metric=metric), _averages(cells, domains).assign(metric=metric)]
    return pd.concat(parts, ignore_index=True)[columns]


def _averages(cells: pd.DataFrame, domains: dict[str, list[str]]) -> pd.DataFrame:
    """A method's average over its dataset's test domains; only where it has every one of them."""
    rows = []
    for (dataset, method), group in cells.groupby(["dataset", "method"]):
        if set(group["test_domain"]) != set(domains[dataset]):
            continue
        mean, se, n = domain_average(group["mean"], group["se"], group["n"])
        rows.append({"dataset": dataset, "method": method, "test_domain": AVERAGE, "mean": mean, "se": se, "n": n})
    return pd.DataFrame(rows, columns=["dataset", "method", "test_domain", "mean", "se", "n"])


def domain_average(means: Sequence[float], ses: Sequence[float], ns: Sequence[int]) -> tuple[float, float, int]:
    """The mean over test domains, its standard error with the domains independent (sqrt(Σ se²) / domains; NaN
    if a domain has none: NaN propagates) and the fewest replicates of any domain."""
    se = math.sqrt(sum(float(s) ** 2 for s in ses)) / len(ses)
    return float(np.mean(means)), se, int(min(ns))


def layout(collection: Collection) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per dataset, the table's columns (test domains) and rows (methods), unfinished runs included,
    so that a missing cell shows as missing rather than vanishing."""
    runs, skipped = collection.runs, collection.skipped.dropna(subset=["dataset", "method", "test_domain"])
    seen = pd.concat([runs[CELL + ["dropout", "variant"]] if not runs.empty else None,
                      skipped[CELL].assign(dropout=np.nan, variant=None)], ignore_index=True)
    domains, methods = {}, {}
    for dataset, group in seen.groupby("dataset", sort=True):
        spec = get_spec(dataset)
        known = [d for d in (spec.domains if spec else ()) if d in set(group["test_domain"])]
        domains[dataset] = known + sorted(set(group["test_domain"]) - set(known))
        order = group.assign(is_variant=group["variant"].notna()).sort_values(["is_variant", "dropout", "method"])
        methods[dataset] = list(dict.fromkeys(order["method"]))
    return domains, methods


def table(summary: pd.DataFrame, dataset: str, metric: str, domains: list[str],
          methods: list[str], latex: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one table: methods × (test domains, average), cells "mean ± se" in %,
    with "(n=k)" where a cell has fewer replicates than the table's fullest one."""
    part = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)]
    most = part["n"].max() if not part.empty else 0
    cells = {(r.method, r.test_domain): r for r in part.itertuples()}
    rows = [[method] + [_cell(cells.get((method, d)), most, latex) for d in domains + [AVERAGE]] for method in methods]
    return ["method"] + domains + [AVERAGE], rows


def _cell(value: Any, most: int, latex: bool) -> str:
    if value is None:
        return "--" if latex else MISSING
    text = f"{100 * value.mean:.1f}"
    if not math.isnan(value.se):
        plus_minus = "$\\pm$" if latex else "±"
        text += f" {plus_minus} {100 * value.se:.1f}"
    return text + (f" (n={value.n:g})" if value.n < most else "")


def feature_table(runs: pd.DataFrame, dataset: str, domains: list[str],
                  methods: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """Methods × test domains: the mean effective number of features of the runs that have it; None if none has."""
    if runs.empty or "effective_features" not in runs:
        return None
    have = runs[(runs["dataset"] == dataset) & runs["variant"].isna() & runs["effective_features"].notna()]
    if have.empty:
        return None
    means = have.groupby(["method", "test_domain"])["effective_features"].agg(["mean", "size"])
    rows = [[method] + [f"{means.loc[(method, d), 'mean']:.0f} (n={means.loc[(method, d), 'size']})"
                        if (method, d) in means.index else MISSING for d in domains] for method in methods]
    return ["method"] + domains, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def latex(header: list[str], rows: list[list[str]]) -> str:
    def escape(text: str) -> str:
        for char in "&%_#":
            text = text.replace(char, "\\" + char)
        return text

    lines = [f"\\begin{{tabular}}{{l{'c' * (len(header) - 2)}|c}}", "\\toprule",
             " & ".join(escape(h) for h in header) + " \\\\", "\\midrule"]
    lines += [" & ".join([escape(row[0])] + row[1:]) + " \\\\" for row in rows]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"])


def settings_note(chosen: pd.DataFrame) -> str:
    """How many settings the replicates' means cover: a replicate with fewer (unfinished or diverged runs) is
    averaged over the others only, which the reader must know. Across-run combinations (no run seed) are one
    model of every setting, not a mean, and are left out."""
    chosen = chosen[chosen["seed"].notna()]
    counts = chosen["hparams"].str.removeprefix("mean of ").astype(int) if not chosen.empty else pd.Series([0])
    if counts.min() == counts.max():
        return f"\nEach replicate's accuracy is the mean over its {counts.min()} hyper-parameter settings."
    fewer = chosen[counts < counts.max()]
    cells = sorted({f"{row.method} on {row.test_domain}" for row in fewer.itertuples()})
    return (f"\nEach replicate's accuracy is the mean over its hyper-parameter settings: {counts.max()} for most, "
            f"as few as {counts.min()} where runs are missing (in {len(fewer)} replicate(s) of {', '.join(cells)}).")


def write_tables(collection: Collection, selection: str, output: Path,
                 hparams: str = "best") -> tuple[pd.DataFrame, str]:
    """tables.md, tables.tex and tables.csv in `output`; returns the summary and the Markdown text."""
    domains, methods = layout(collection)
    chosen = choose(collection.runs, selection, hparams)
    summary = cell_means(chosen, domains)
    name = SELECTIONS[selection].label
    md, tex = [f"# Accuracy by held-out domain, model selection: {name}"], []
    if hparams != "best":
        md[0] += f"; hyper-parameters: {HPARAMS[hparams]}"
    for dataset in domains:
        md.append(f"\n## {dataset}")
        for metric, title in METRICS.items():
            header, rows = table(summary, dataset, metric, domains[dataset], methods[dataset])
            md += [f"\n### {title}\n", markdown(header, rows)]
            header, rows = table(summary, dataset, metric, domains[dataset], methods[dataset], latex=True)
            tex += [f"% {dataset}: {title}; selection: {name}", latex(header, rows), ""]
        features = feature_table(collection.runs, dataset, domains[dataset], methods[dataset])
        if features:
            md += ["\n### effective number of features (participation ratio, `droptune analyze features`)\n",
                   markdown(*features)]
    if hparams == "mean":
        md.append(settings_note(chosen))
    md.append(f"\nCells: mean ± standard error over replicates (trial seed, seed), in %; {MISSING}: no finished "
              "run; no ±: a single replicate; (n=k): fewer replicates than elsewhere in the table. average: the "
              "mean over test domains, ± √(Σ se²) / domains (their standard errors combined as independent), "
              "shown only when every domain has a finished run; standard errors use the sample standard deviation "
              "(ddof = 1).")
    text = "\n".join(md) + "\n"
    output.mkdir(parents=True, exist_ok=True)
    (output / "tables.md").write_text(text)
    (output / "tables.tex").write_text("\n".join(tex))
    pct = summary.assign(mean=100 * summary["mean"], se=100 * summary["se"], selection=selection, hparams=hparams)
    pct.to_csv(output / "tables.csv", index=False, float_format="%.4f")
    return summary, text
