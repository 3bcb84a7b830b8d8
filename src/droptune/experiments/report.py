"""`droptune report`: the report folder of a sweep (runs.csv, the tables, the figures and report.md)."""

from __future__ import annotations

import os
from pathlib import Path


from droptune.errors import DroptuneError
from droptune.experiments.collect import RUNS_TABLE, SKIPPED_TABLE, Collection, collect
from droptune.experiments.figures import plot_cloud, plot_curves, plot_dropout_curve
from droptune.experiments.tables import layout, write_tables
from droptune.runs.files import read_text
from droptune.runs.folder import COMBINED, spec_files


def write_report(root: Path, output: Path, selection: str = "training_domain",
                 document: Path | None = None, notes: Path | None = None,
                 hparams: str = "best", title: str | None = None) -> tuple[Collection, str, list[str]]:
    """Collect `root`'s runs; write runs.csv, skipped.csv, the tables, each dataset's figures and report.md
    (or `document`: tables, figures, run statistics, the sweep file, with `notes` on top) into `output`.

    Returns the collection, the Markdown tables and one line per figure written or left out.
    """
    collection = collect(root)
    if collection.runs.empty and collection.skipped.empty:
        raise DroptuneError(f"{root} holds no runs: expected a sweep folder (SWEEP_DIR/runs/<job>/) or a folder of "
                            "run folders (each with config.yaml), as droptune sweep and droptune train write them")
    output.mkdir(parents=True, exist_ok=True)
    collection.runs.to_csv(output / RUNS_TABLE, index=False)
    collection.skipped.to_csv(output / SKIPPED_TABLE, index=False)
    summary, text = write_tables(collection, selection, output, hparams)
    domains, methods = layout(collection)
    runs = collection.runs
    collapsed = runs[runs["variant"].isna() & runs["collapsed"]] if not runs.empty else runs
    messages, figures = [], []
    if len(collapsed):
        messages.append(f"{len(collapsed)} finished run(s) collapsed to the majority class (column collapsed in "
                        f"runs.csv): {', '.join(sorted(set(collapsed['method'])))}")
    for dataset in domains:
        mine = runs[runs["dataset"] == dataset] if not runs.empty else runs
        contents = max((mine[column].dropna().nunique() for column in ("images", "files") if column in mine),
                       default=0)
        if contents > 1:
            messages.append(f"{dataset}: its runs were trained on {contents} different sets of images (columns images "
                            "and files of runs.csv: image counts per domain and class, a digest of the file names), "
                            "so the tables mix their 80/20 splits")
        if mine.empty:
            messages.append(f"{dataset}: no finished run, no figures")
            continue
        files, note = plot_cloud(mine, dataset, domains[dataset], methods[dataset], selection,
                                 output / f"{dataset}_cloud")
        messages.append(f"{note}: {files[0].name}, {files[1].name}")
        figures.append((f"{dataset}: (i.i.d., o.o.d.) accuracy, {note.split(': ', 1)[1]}", files[0]))
        files = plot_dropout_curve(mine, summary, dataset, output / f"{dataset}_dropout")
        messages.append(f"{dataset}: dropout-rate curve: {files[0].name}, {files[1].name}" if files else
                        f"{dataset}: no dropout-rate curve (needs methods that differ only in p)")
        if files:
            figures.append((f"{dataset}: accuracy against the dropout rate", files[0]))
        files = plot_curves(collection.curves, dataset, methods[dataset], output / f"{dataset}_curves")
        messages.append(f"{dataset}: convergence curves: {files[0].name}, {files[1].name}" if files else
                        f"{dataset}: no convergence curves (needs the runs' metrics.jsonl)")
        if files:
            figures.append((f"{dataset}: convergence (training domains only)", files[0]))
    unplanned = unplanned_runs(collection, spec_files(root))
    messages += collection.problems + unplanned
    document = document or output / "report.md"
    write_document(Path(root), document, collection, text, figures, notes, unplanned, title)
    messages.append(f"report: {document}")
    return collection, text, messages


def unplanned_runs(collection: Collection, specs: list[Path]) -> list[str]:
    """What the tables hold that none of a sweep folder's files asks for: runs left by an earlier version of a file
    (their changed fields taken for hyper-parameter settings, their seeds averaged in) or by a renamed method."""
    from droptune.experiments.sweep import load_spec

    runs = collection.runs
    if not specs or runs.empty:
        return []
    try:
        files = [load_spec(spec) for spec in specs]
    except DroptuneError:  # the collection's problems name the file that cannot be read
        return []
    varied = {name for f in files for name in [*f.grid, *(f.random.space if f.random else {})]}
    methods = {method.name for f in files for method in f.methods}
    seeds = {seed for f in files for seed in f.seeds}
    where = f"no sweep file in {specs[0].parent.name}"
    lines = []
    for (dataset, method), group in runs[runs["variant"].isna()].groupby(["dataset", "run_method"], sort=True):
        fields = sorted(set(filter(None, str(group["hparam_fields"].iloc[0]).split(","))) - varied)
        others = sorted(set(group["seed"].astype(int)) - seeds)
        if method not in methods:
            lines.append(f"{dataset}: {len(group)} run(s) of method {method!r}, which {where} names (renamed or "
                         "removed?), are in the tables")
            continue
        if fields:
            lines.append(f"{dataset}: the runs of {method!r} differ in {', '.join(fields)}, which {where} varies "
                         "(runs of an earlier version of the file?): the tables take them for hyper-parameter settings")
        if others:
            lines.append(f"{dataset}: runs of {method!r} with seeds {', '.join(map(str, others))}, which {where} "
                         "lists (an earlier version of the file?), are averaged into the tables")
    combined = runs[runs["path"].str.contains(f"/{COMBINED}/", regex=False)]
    of_method = combined["run_method"].str.rsplit(" + ", n=1).str[0]  # "p0" of "p0 + ensemble of runs"
    orphans = combined[~of_method.isin(methods)]
    for (dataset, method), group in orphans.groupby(["dataset", of_method[orphans.index]]):
        lines.append(f"{dataset}: combinations of method {method!r} ({', '.join(sorted(set(group['variant'])))}), "
                     f"which {where} names (renamed or removed?), are in the tables")
    return lines


def write_document(root: Path, document: Path, collection: Collection, tables: str,
                   figures: list[tuple[str, Path]], notes: Path | None, unplanned: list[str],
                   title: str | None = None) -> None:
    """One Markdown page under `title` (default: the folder's name): `notes` (the reader's context and discussion),
    the tables, the figures, what the runs cost, the sweep files, and every run folder left out."""
    runs = collection.runs
    base = runs[runs["variant"].isna()] if not runs.empty else runs
    lines = [f"# {title or f'{root.name}: report'}", ""]
    skipped = collection.skipped
    if len(skipped):
        lines += [f"**Partial**: {len(skipped)} run(s) of this folder or its sweep files are not in the tables "
                  "(listed under Runs); averages are shown only for methods with a finished run on every test "
                  "domain.", ""]
    if notes is not None:
        lines += [read_text(notes, "notes file").strip(), ""]
    lines += [line.replace("# ", "## ", 1) if line.startswith("#") else line for line in tables.splitlines()]
    lines += ["", "## Figures", ""]
    for title, path in figures:
        lines += [f"### {title}", "", f"![{title}]({os.path.relpath(path, document.parent)})", ""]
    lines += ["## Runs", ""]
    if not base.empty:
        timed = base.dropna(subset=["wall_time_s", "train_images_per_s"])
        cost = (f"; training and evaluation time {timed['wall_time_s'].sum() / 3600:.2f} h in all, "
                f"{timed['wall_time_s'].mean() / 60:.1f} min per run, {timed['train_images_per_s'].mean():.0f} "
                "training images/s on average (the runs' results.json)") if len(timed) else ""
        lines += [f"{len(base)} finished runs{cost}."]
    combos = runs[runs["path"].str.contains(f"/{COMBINED}/", regex=False)] if not runs.empty else runs
    if not combos.empty:
        lines += ["", f"{len(combos)} across-run combinations in {root.name}/{COMBINED}/."]
    lines += ["", f"{len(skipped)} run(s) not in the tables" + (":" if len(skipped) else "."), ""]
    lines += [f"- `{Path(row.path).name}` ({row.method}, {row.test_domain}): {row.reason}"
              for row in skipped.itertuples()]
    lines += [f"- {problem}" for problem in collection.problems]
    if unplanned:
        lines += ["", "Runs that no sweep file here asks for:", "", *(f"- {line}" for line in unplanned)]
    specs = spec_files(root)
    if specs:
        lines += ["", "## Sweep file" + ("s" if len(specs) > 1 else "")]
    for spec in specs:
        lines += ["", f"`{root.name}/{spec.name}`, as `droptune sweep` expanded it:", "", "```yaml",
                  read_text(spec, "sweep file").strip(), "```"]
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text("\n".join(lines) + "\n")
