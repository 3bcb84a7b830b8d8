"""`droptune summary`: one page across sweeps, a row per comparison (a method against its control) of a YAML file.

The summary file (docs/results/summary.yaml is the project's):

    title: Very large dropout against its controls      # optional
    rows:
      - name: PACS                        # the row's label
        sweep: cpu                        # sweep folder, relative to --sweeps
        report: pacs-cpu                  # optional: its `droptune report` folder, relative to this file, read
                                          # (runs.csv, skipped.csv) when the sweep folder is not under --sweeps
                                          # (both may be lists, one entry per sweep, when a control was swept
                                          # later into its own folder: runs pair across them as within one)
        dataset: PACS
        method: dropout 0.9               # the method under test ...
        control: dropout 0                # ... and its control, as `droptune report` names them
        domains: [sketch, art_painting]   # optional: the held-out domains (default: all the dataset's)
        page: pacs-cpu.md                 # optional: the sweep's report page, linked from the row
        paper: {method: 88.4, control: 86.5, baselines: {ensemble along a run: 86.7}}   # optional, o.o.d. %
        note: ...                         # optional, printed under the tables

Every figure comes from training-domain validation (`tables.choose`); the statistics are in `differences`.
A row whose sweep folder (and report folder) is missing, or whose runs have not all finished, is on the page with
the reason; the page says which rows come from a report's tables rather than the run folders.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from droptune.data.registry import get_spec
from droptune.errors import DroptuneError
from droptune.experiments import PRESETS
from droptune.experiments.collect import RUNS_TABLE, Collection, collect, read_report_tables
from droptune.experiments.differences import (ESTABLISHED_N, ESTABLISHED_P, BaselineDifference, Estimate,
                                              PairedDifference, best_baseline_difference, paired_difference)
from droptune.experiments.tables import MISSING, choose, markdown
from droptune.training.config import load_yaml_file

SELECTION = "training_domain"
TITLE = "Summary: very large dropout against its controls"


@dataclass(frozen=True)
class PaperFigures:
    """The paper's o.o.d. accuracy (%) for the row's method, its control and its plain baselines, where it has them."""

    method: float | None = None
    control: float | None = None
    baselines: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SummaryRow:
    name: str
    sweep: str | list[str]
    dataset: str
    method: str
    control: str
    report: str | list[str] | None = None
    domains: list[str] | None = None
    page: str | None = None
    paper: PaperFigures = field(default_factory=PaperFigures)
    note: str | None = None

    def folders(self) -> list[tuple[str, str | None]]:
        """(sweep folder, report folder or None) of each sweep whose runs the row reads."""
        if isinstance(self.sweep, str):
            return [(self.sweep, self.report)]
        return list(zip(self.sweep, self.report or [None] * len(self.sweep)))


@dataclass(frozen=True)
class SummarySpec:
    rows: list[SummaryRow]
    title: str = TITLE


@dataclass
class RowResult:
    row: SummaryRow
    domains: list[str]
    source: str | None = None  # where the runs were read: the sweep folder, or the report folder's runs.csv
    paired: PairedDifference | None = None
    baseline: BaselineDifference | None = None
    runs: dict[str, str] = field(default_factory=dict)  # method -> "finished of folders"
    problems: list[str] = field(default_factory=list)  # why cells are empty or rest on fewer runs


def load_summary_spec(path: Path) -> SummarySpec:
    """The summary file; a missing or mistyped field is a one-line error naming the file, the row and the field."""
    data = load_yaml_file(path, "summary file")
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise DroptuneError(f"{path}: expected a mapping with a non-empty list `rows` (and optionally `title`)")
    unknown = set(data) - {"rows", "title"}
    if unknown:
        raise DroptuneError(f"{path}: unknown key {sorted(unknown)[0]!r}: expected rows, title")
    rows = [_row(path, f"rows[{i}]", entry) for i, entry in enumerate(data["rows"])]
    names = Counter(row.name for row in rows)
    if max(names.values()) > 1:
        raise DroptuneError(f"{path}: two rows named {names.most_common(1)[0][0]!r}")
    return SummarySpec(rows, _text(path, "title", data.get("title", TITLE)))


def _row(path: Path, where: str, entry: Any) -> SummaryRow:
    if not isinstance(entry, dict):
        raise DroptuneError(f"{path}: {where}: expected a mapping of name, sweep, dataset, method, control")
    known = [f.name for f in fields(SummaryRow)]
    for key in entry:
        if key not in known:
            raise DroptuneError(f"{path}: {where}: unknown field {key!r}: expected one of {', '.join(known)}")
    for key in ("name", "sweep", "dataset", "method", "control"):
        if key not in entry:
            raise DroptuneError(f"{path}: {where}: missing field {key!r}")
    texts = ("name", "dataset", "method", "control", "page", "note")
    values = {key: _text(path, f"{where}.{key}", entry[key]) for key in texts if key in entry}
    values.update(_folders(path, where, entry))
    if values["method"] == values["control"]:
        raise DroptuneError(f"{path}: {where}: method and control are both {values['method']!r}")
    domains = entry.get("domains")
    if domains is not None:
        if not isinstance(domains, list) or not domains or not all(isinstance(d, str) for d in domains):
            raise DroptuneError(f"{path}: {where}.domains: expected a list of held-out domain names, got {domains!r}")
        spec = get_spec(values["dataset"])
        for domain in domains:
            if spec and domain not in spec.domains:
                raise DroptuneError(f"{path}: {where}.domains: {domain!r} is not a domain of {spec.name}: expected "
                                    f"one of {', '.join(spec.domains)}")
    return SummaryRow(**values, domains=domains, paper=_paper(path, f"{where}.paper", entry.get("paper", {})))


def _folders(path: Path, where: str, entry: dict) -> dict[str, str | list[str]]:
    """`sweep` and `report`: a folder each, or lists of as many different folders."""
    sweep, report = entry["sweep"], entry.get("report")
    if not isinstance(sweep, list):
        folders = {"sweep": _text(path, f"{where}.sweep", sweep)}
        if report is not None:
            folders["report"] = _text(path, f"{where}.report", report)
        return folders
    if not sweep:
        raise DroptuneError(f"{path}: {where}.sweep: expected a sweep folder or a non-empty list of them")
    sweeps = [_text(path, f"{where}.sweep[{i}]", value) for i, value in enumerate(sweep)]
    if len(set(sweeps)) < len(sweeps):
        raise DroptuneError(f"{path}: {where}.sweep lists a folder twice: {sweeps}")
    if report is None:
        return {"sweep": sweeps}
    if not isinstance(report, list) or len(report) != len(sweeps):
        raise DroptuneError(f"{path}: {where}.report: expected a list of {len(sweeps)} report folders, one per "
                            f"sweep of {where}.sweep, got {report!r}")
    return {"sweep": sweeps, "report": [_text(path, f"{where}.report[{i}]", v) for i, v in enumerate(report)]}


def _paper(path: Path, where: str, entry: Any) -> PaperFigures:
    if not isinstance(entry, dict) or set(entry) - {"method", "control", "baselines"}:
        raise DroptuneError(f"{path}: {where}: expected a mapping of method, control, baselines, got {entry!r}")
    baselines = entry.get("baselines", {})
    if not isinstance(baselines, dict):
        raise DroptuneError(f"{path}: {where}.baselines: expected a mapping of name: o.o.d. %, got {baselines!r}")
    figures = {**{k: entry[k] for k in ("method", "control") if k in entry},
               **{f"baselines.{k}": v for k, v in baselines.items()}}
    for key, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DroptuneError(f"{path}: {where}.{key}: expected an accuracy in %, got {value!r}")
    if figures and "method" not in entry:
        raise DroptuneError(f"{path}: {where}: no method: the paper's figures are set against its method's, "
                            f"got {entry!r}")
    return PaperFigures(entry.get("method"), entry.get("control"), {str(k): float(v) for k, v in baselines.items()})


def _text(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DroptuneError(f"{path}: {where}: expected text, got {value!r}")
    return value


def summarize(spec: SummarySpec, sweeps: Path, spec_path: Path) -> list[RowResult]:
    """Each row's differences from its sweep folder under `sweeps`, else from its report folder's tables (each
    folder read once)."""
    collections: dict[Path, Collection] = {}
    results = []
    for i, row in enumerate(spec.rows):
        used, described, missing = [], [], []
        for sweep, report_name in row.folders():
            root, report = sweeps / sweep, spec_path.parent / report_name if report_name else None
            source = root if root.is_dir() else report if report and report.is_dir() else None
            if source is None:
                missing.append(f"sweep folder not found: {root}" + (f", nor its report folder {report}"
                                                                     if report else ""))
                continue
            if source not in collections:
                collections[source] = collect(source) if source == root else read_report_tables(source)
            used.append(source)
            described.append(f"the run folders of {root}" if source == root else
                             f"the tables of its report, {source / RUNS_TABLE} (no sweep folder {root})")
        shown = " and ".join(map(str, used or [sweeps / sweep for sweep, _ in row.folders()]))
        result = summarize_row(row, shown, _merged([collections[source] for source in used]),
                               f"{spec_path}: rows[{i}] ({row.name})")
        result.problems += missing
        result.source = "; ".join(described) or None
        results.append(result)
    return results


def _merged(parts: list[Collection]) -> Collection | None:
    """One collection of the runs of several sweeps (a row whose control was swept into its own folder)."""
    if len(parts) <= 1:
        return parts[0] if parts else None

    def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        filled = [frame for frame in frames if not frame.empty]
        return pd.concat(filled, ignore_index=True) if filled else frames[0]

    return Collection(concat([p.runs for p in parts]), concat([p.skipped for p in parts]),
                      concat([p.curves for p in parts]), [problem for p in parts for problem in p.problems])


def unlink_unwritten_pages(results: list[RowResult], folder: Path) -> None:
    """Rows link their page only once it exists in `folder` (the summary page's): a problem line until then."""
    for result in results:
        if result.row.page and not (folder / result.row.page).is_file():
            result.problems.append(f"its page {result.row.page} is not written yet (not in {folder}: not linked)")
            result.row = replace(result.row, page=None)


def summarize_row(row: SummaryRow, root: Path | str, collection: Collection | None, where: str) -> RowResult:
    registered = get_spec(row.dataset)
    domains = row.domains or (list(registered.domains) if registered else [])
    result = RowResult(row, domains)
    if collection is None:
        return result
    runs, skipped = collection.runs, collection.skipped
    result.problems += collection.problems
    if runs.empty and skipped.empty:
        result.problems.append(f"no run folders in {root}")
        return result
    runs = runs[runs["dataset"] == row.dataset] if not runs.empty else runs
    skipped = skipped[skipped["dataset"] == row.dataset]
    known = set(runs["method"] if not runs.empty else ()) | set(skipped["method"].dropna())
    if not known:
        datasets = sorted(set(collection.runs.get("dataset", pd.Series(dtype=str)).dropna())
                          | set(collection.skipped["dataset"].dropna()))
        raise DroptuneError(f"{where}: dataset {row.dataset!r} has no run in {root} (its datasets: "
                            f"{', '.join(datasets) or 'none'})")
    for method in (row.method, row.control):
        if method not in known:
            if method not in preset_methods():
                raise DroptuneError(f"{where}: method {method!r} not in {root} (its methods for {row.dataset}: "
                                    f"{', '.join(sorted(known))}) nor in a preset")
            result.problems.append(f"{method}: no run folder in {root} yet (a preset's method: its sweep has not "
                                   "started)")
    if not domains:
        domains = result.domains = sorted(set(runs["test_domain"] if not runs.empty else ())
                                          | set(skipped["test_domain"].dropna()))
    for method in (row.method, row.control):
        result.runs[method] = _count_runs(result, method, runs, skipped)
    chosen = choose(runs, SELECTION)
    chosen = chosen[chosen["test_domain"].isin(domains)]
    result.paired = paired_difference(chosen, row.method, row.control, domains)
    if result.paired.missing:
        result.problems.append(f"no pair of finished runs held out on {', '.join(result.paired.missing)}: "
                               "no average over the domains")
    if result.paired.unpaired:
        result.problems.append(f"{result.paired.unpaired} finished run(s) without a partner of the other method "
                               "(same test domain, trial seed and seed), left out of the paired difference")
    result.baseline = best_baseline_difference(chosen, row.method, row.control, domains)
    if result.baseline is None:
        result.problems.append(f"no average o.o.d. accuracy of {row.method} and of a plain baseline over every "
                               "held-out domain: no difference from the best plain baseline")
    return result


def preset_methods() -> set[str]:
    """The method names of droptune's presets: a row may name one whose sweep shares a folder with another and
    has not started yet (pacs-head-cpu runs into pacs-long-cpu's folder)."""
    return {str(method.get("name")) for path in PRESETS.glob("*.yaml")
            for method in (yaml.safe_load(path.read_text()) or {}).get("methods") or [] if isinstance(method, dict)}


def _count_runs(result: RowResult, method: str, runs: pd.DataFrame, skipped: pd.DataFrame) -> str:
    """'finished of folders' for the method's runs on the row's domains; a problem line unless all finished."""
    finished = 0 if runs.empty else int(((runs["method"] == method) & runs["test_domain"].isin(result.domains)).sum())
    left = skipped[(skipped["method"] == method) & skipped["test_domain"].isin(result.domains)]
    if len(left):
        why = Counter(_kind(reason) for reason in left["reason"])
        result.problems.append(f"{method}: {finished} of {finished + len(left)} run folders finished ("
                               + ", ".join(f"{n} {kind}" for kind, n in sorted(why.items())) + ")")
    return f"{finished}/{finished + len(left)}"


def _kind(reason: str) -> str:
    """'not started', 'running', 'interrupted', 'failed', the status of a run that did not complete, or
    'unreadable'."""
    if reason == "not started":
        return reason
    if reason.split()[0] in ("running", "interrupted", "failed"):
        return reason.split()[0]
    return reason.split("'")[1] if reason.startswith("status '") else "unreadable"


def _signed(estimate: Estimate | None, digits: int = 2) -> str:
    if estimate is None or math.isnan(estimate.mean):
        return MISSING
    text = f"{100 * estimate.mean:+.{digits}f}"
    return text + (f" ± {100 * estimate.se:.{digits}f}" if not math.isnan(estimate.se) else "")


def verdict(estimate: Estimate | None) -> str:
    if estimate is None:
        return MISSING
    if estimate.n < ESTABLISHED_N or math.isnan(estimate.se):
        return f"not established (n = {estimate.n})"
    word = "established" if estimate.established else "not established"
    if estimate.se == 0:
        return f"{word} (SE 0)"
    p = estimate.p_value
    return (f"{word} (t = {estimate.t:.1f}, {estimate.df:.1f} df, "
            f"p {'< 0.001' if p < 0.001 else f'= {p:.3g}'})")


def paper_differences(paper: PaperFigures) -> tuple[str, str]:
    """The paper's method − control, and its method − the best of its plain baselines (the control included)."""
    if paper.method is None:
        return MISSING, MISSING
    against_control = f"{paper.method - paper.control:+.1f}" if paper.control is not None else MISSING
    baselines = {**({"the control": paper.control} if paper.control is not None else {}), **paper.baselines}
    if not baselines:
        return against_control, MISSING
    best = max(baselines, key=baselines.get)
    return against_control, f"{paper.method - baselines[best]:+.1f} ({best})"


def render(spec: SummarySpec, results: list[RowResult], command: str, notes: str | None = None) -> str:
    lines = [f"# {spec.title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += [f"_Written by `{command}` from the sweeps' run folders, or their reports' tables where the run "
              "folders are not at hand (section Sources). Model selection: training-domain validation (the "
              "checkpoint and setting with the best accuracy on the training domains' held-out 20%); accuracy "
              "differences in points of %._", ""]
    header = ["comparison", "o.o.d. Δ, paired ± SE", "pairs", "verdict", "i.i.d. Δ, paired ± SE", "paper o.o.d. Δ",
              "o.o.d. Δ vs best plain baseline ± SE", "paper vs best baseline", "runs (method, control)"]
    rows = []
    for result in results:
        row, average = result.row, result.paired.average if result.paired else None
        paper_control, paper_best = paper_differences(row.paper)
        best = MISSING
        if result.baseline:
            best = f"{_signed(result.baseline.difference)} ({result.baseline.baseline})"
        runs = ", ".join(result.runs[m] for m in (row.method, row.control)) if result.runs else MISSING
        rows.append([_label(row), _signed(average and average["ood"]), str(average["ood"].n) if average else MISSING,
                     verdict(average and average["ood"]), _signed(average and average["iid"]), paper_control, best,
                     paper_best, runs])
    lines += [markdown(header, rows), "", "## Per held-out domain", ""]
    per_domain = []
    for result in results:
        for domain in result.domains:
            cell = result.paired.domains.get(domain) if result.paired else None
            per_domain.append([_label(result.row, link=False), domain, _signed(cell and cell["ood"]),
                               str(cell["ood"].n) if cell else "0", _signed(cell and cell["iid"])])
    lines += [markdown(["comparison", "held-out domain", "o.o.d. Δ, paired ± SE", "pairs", "i.i.d. Δ, paired ± SE"],
                       per_domain), ""]
    lines += ["## Missing or incomplete", ""]
    for result in results:
        if result.problems:
            lines += [f"- {_label(result.row, link=False)}", *(f"  - {p}" for p in result.problems)]
    if not any(result.problems for result in results):
        lines += ["Every run of every row finished and has its partner."]
    lines += ["", "## Sources", "", *(f"- {_label(r.row, link=False)}: {r.source}" for r in results if r.source)]
    lines += ["", "## How to read it", "", *_rules()]
    notes_lines = [f"- {_label(r.row, link=False)}: {r.row.note.strip()}" for r in results if r.row.note]
    if notes_lines:
        lines += ["", "## Notes", "", *notes_lines]
    return "\n".join(lines) + "\n"


def _label(row: SummaryRow, link: bool = True) -> str:
    name = f"[{row.name}]({row.page})" if link and row.page else row.name
    return f"{name}: {row.method} − {row.control}"


def _rules() -> list[str]:
    return [
        "- **Paired difference.** The runs of the method and of its control are paired by (held-out domain, trial "
        "seed, seed): the same split and seed, only the method differs. Per held-out domain, the mean and standard "
        "error (sample standard deviation / √n) of the pairs' differences; over the domains, the mean of the "
        "domain means, SE = √(Σ SE²) / D. pairs: the fewest pairs of any domain.",
        f"- **Verdict.** A difference is *established* when a two-sided t-test of no difference rejects at "
        f"{ESTABLISHED_P:.0%} (p < {ESTABLISHED_P:g}) with at least {ESTABLISHED_N} pairs in every held-out "
        "domain; otherwise *not established*, whatever its sign. t = |mean| / SE; its degrees of freedom (df) are "
        "n − 1 in one domain and, over the domains, Welch–Satterthwaite's (Σ SE²)² / Σ (SE⁴ / (n − 1)): with 2 "
        "seeds a domain's SE rests on one degree of freedom, and the test asks for more than 2 SE to make up for it "
        "(t > 4.3 at 2 df, 2.8 at 4 df).",
        "- **Best plain baseline.** Of the control and its along-run (checkpoint ensemble, SWA) and across-run "
        "(ensemble of runs, uniform soup, greedy soup) combinations, the one with the best average o.o.d. accuracy, "
        "named in the cell: chosen on the test domains on purpose, the strongest baseline, so that the difference "
        "is the least favourable to the method (whose own figure is chosen, as everywhere, by training-domain "
        "validation). The difference is unpaired: SE = √(SE₁² + SE₂²) of the two table cells, none where a cell "
        "has a single replicate (an across-run combination of one split).",
        "- **Paper.** The paper's means over its hyper-parameter grid (ResNet-50, 224 px, 10,000 steps; "
        "`../shared/PAPER.md`), read off its figures to about ±0.3 points: a different backbone, resolution and "
        "budget, beside ours for the direction of the effect, not its size. Its best plain baseline is the best of "
        "those it reports for the dataset, the control included.",
        f"- {MISSING}: not computed; the section above says why.",
    ]
