"""`droptune summary` on hand-written sweep folders: paired differences, best plain baseline, verdict, the page."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from droptune.cli.main import main
from droptune.errors import DroptuneError
from droptune.experiments.collect import collect, read_report_tables
from droptune.experiments.differences import (Estimate, average_over_domains, best_baseline_difference,
                                              paired_difference)
from droptune.experiments.summary import PaperFigures, load_summary_spec, paper_differences, preset_methods, verdict
from droptune.experiments.tables import choose
from droptune.runs.folder import exclusive
from droptune.training.config import TrainConfig
from test_report import checkpoints, fake_run

REPO = Path(__file__).resolve().parents[1]
# o.o.d. accuracy per seed: the seeds differ far more than the methods do, so paired and unpaired SEs disagree.
CONTROL = {"sketch": [0.60, 0.70, 0.80], "art_painting": [0.50, 0.55, 0.60]}
TREATMENT = {"sketch": [0.62, 0.73, 0.81], "art_painting": [0.54, 0.55, 0.62]}  # differences .02 .03 .01 / .04 0 .02
DOMAINS = ["sketch", "art_painting"]


def paired_sweep(root):
    for domain in DOMAINS:
        for seed in range(3):
            fake_run(root, "dropout 0", 0.0, domain, 1e-3, seed, 0.90, CONTROL[domain][seed])
            # i.i.d. difference: -0.01 on every pair
            fake_run(root, "dropout 0.9", 0.9, domain, 1e-3, seed, 0.89, TREATMENT[domain][seed])
    fake_run(root, "dropout 0.9", 0.9, "sketch", 1e-3, 3, 0.89, 0.99)  # no partner: left out


def summary_file(path, rows):
    path.write_text(yaml.safe_dump({"rows": rows}, sort_keys=False))
    return path


def row(name="PACS", sweep="sweep", method="dropout 0.9", control="dropout 0", **extra):
    return {"name": name, "sweep": sweep, "dataset": "PACS", "method": method, "control": control, **extra}


def test_paired_difference_has_the_pairs_mean_and_standard_error_per_domain_and_over_domains(tmp_path):
    """Mutants: the unpaired SE (sqrt(se_t² + se_c²)) used instead of the paired one; runs paired by domain alone
    or by position; the average's SE the mean of the domains' SEs; a run without a partner kept."""
    paired_sweep(tmp_path)
    chosen = choose(collect(tmp_path).runs, "training_domain")
    paired = paired_difference(chosen, "dropout 0.9", "dropout 0", DOMAINS)
    sketch, art = paired.domains["sketch"]["ood"], paired.domains["art_painting"]["ood"]
    assert (sketch.mean, sketch.se, sketch.n) == (pytest.approx(0.02), pytest.approx(0.01 / math.sqrt(3)), 3)
    assert (art.mean, art.se, art.n) == (pytest.approx(0.02), pytest.approx(0.02 / math.sqrt(3)), 3)
    average = paired.average["ood"]
    assert average.mean == pytest.approx(0.02) and average.n == 3
    assert average.se == pytest.approx(math.sqrt(0.01**2 / 3 + 0.02**2 / 3) / 2)
    assert paired.average["iid"].mean == pytest.approx(-0.01) and paired.average["iid"].se == pytest.approx(0)
    assert paired.missing == [] and paired.unpaired == 1
    # Welch–Satterthwaite: (a + b)² / (a² / 2 + b² / 2), a and b the domains' se² / 4; 3.1 SE, yet p = 0.055
    a, b = 0.01**2 / 3 / 4, 0.02**2 / 3 / 4
    assert average.df == pytest.approx((a + b) ** 2 / (a**2 / 2 + b**2 / 2))
    assert average.p_value == pytest.approx(0.0548, abs=1e-4) and not average.established


def test_a_domain_without_pairs_leaves_no_average(tmp_path):
    """Mutant: the average taken over the domains that have pairs, as if the others did not exist."""
    paired_sweep(tmp_path)
    chosen = choose(collect(tmp_path).runs, "training_domain")
    paired = paired_difference(chosen, "dropout 0.9", "dropout 0", ["sketch", "art_painting", "cartoon"])
    assert paired.average is None and paired.missing == ["cartoon"] and set(paired.domains) == set(DOMAINS)


@pytest.mark.parametrize("estimate, expected", [
    (Estimate(0.02, 0.0099, 2, 1.0), "not established (t = 2.0, 1.0 df, p = 0.293)"),
    (Estimate(-0.03, 0.01, 3, 2.0), "not established (t = 3.0, 2.0 df, p = 0.0955)"),
    (Estimate(-0.0431, 0.01, 3, 2.0), "established (t = 4.3, 2.0 df, p = 0.0498)"),
    (Estimate(0.0429, 0.01, 3, 2.0), "not established (t = 4.3, 2.0 df, p = 0.0503)"),
    (Estimate(0.5, 0.01, 20, 19.0), "established (t = 50.0, 19.0 df, p < 0.001)"),
    (Estimate(0.01, 0.0, 2, 1.0), "established (SE 0)"),
    (Estimate(0.0, 0.0, 2, 1.0), "not established (SE 0)"),
    (Estimate(0.05, 0.001, 1, 0.0), "not established (n = 1)"),
    (Estimate(0.05, float("nan"), 2, 1.0), "not established (n = 2)"),
])
def test_established_needs_a_t_test_at_five_percent_and_two_pairs(estimate, expected):
    """Mutants: a fixed 2 SE instead of the t-test (the first two rows); the degrees of freedom ignored (a normal
    quantile); p ≤ 0.05 instead of <; the sign ignored the other way (a loss never established); n = 1 (no SE)
    or an undefined SE counted as established."""
    assert verdict(estimate) == expected


def test_the_average_over_domains_is_welchs_t_test():
    """Over two domains the average's t, degrees of freedom and p are Welch's two-sample test of one domain's
    differences against the other's negated (mean(x) + mean(y) = mean(x) − mean(−y)), computed by scipy.
    Mutants: the degrees of freedom summed (n − 1 + n − 1) or the fewest of any domain."""
    x, y = np.array([0.02, 0.05, 0.03]), np.array([0.01, -0.04])
    domains = [Estimate(float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))), len(v), len(v) - 1.0)
               for v in (x, y)]
    average = average_over_domains(domains)
    welch = stats.ttest_ind(x, -y, equal_var=False)
    assert average.mean / average.se == pytest.approx(welch.statistic)
    assert average.df == pytest.approx(welch.df) and average.p_value == pytest.approx(welch.pvalue)
    one = domains[0]
    assert one.p_value == pytest.approx(stats.ttest_1samp(x, 0).pvalue)
    # every pair differing by the same amount: no spread, so certain unless that amount is 0
    assert (Estimate(0.01, 0.0, 2, 1.0).p_value, Estimate(0.0, 0.0, 2, 1.0).p_value) == (0.0, 1.0)
    assert math.isnan(average_over_domains([Estimate(0.01, 0.0, 2, 1.0), Estimate(0.02, 0.0, 3, 2.0)]).df)


def baseline_sweep(root, greedy=(0.75, 0.83)):
    """Treatment dropout 0.9: sketch .80/.84, art .90/.92 (average .865). Control dropout 0: sketch .70/.72, art
    .80/.80, its along-run ensemble +.04 (average .795, the best plain baseline), its SWA +.02, its greedy soup
    `greedy` (one per domain). Distractors, all better, none a plain baseline of dropout 0: dropout 0.9's own
    ensemble, dropout 0.5 + ensemble, dropout 0 random head."""
    ood = {"dropout 0.9": {"sketch": [0.80, 0.84], "art_painting": [0.90, 0.92]},
           "dropout 0": {"sketch": [0.70, 0.72], "art_painting": [0.80, 0.80]}}
    for domain in DOMAINS:
        for seed in range(2):
            value = ood["dropout 0"][domain][seed]
            fake_run(root, "dropout 0", 0.0, domain, 1e-3, seed, 0.9, value, variants={
                "ensemble": {"selections": checkpoints(0.9, value + 0.04)},
                "swa": {"selections": checkpoints(0.9, value + 0.02)}})
            value = ood["dropout 0.9"][domain][seed]
            fake_run(root, "dropout 0.9", 0.9, domain, 1e-3, seed, 0.9, value,
                     variants={"ensemble": {"selections": checkpoints(0.9, 0.97)}})
            fake_run(root, "dropout 0.5", 0.5, domain, 1e-3, seed, 0.9, 0.5,
                     variants={"ensemble": {"selections": checkpoints(0.9, 0.96)}})
            fake_run(root, "dropout 0 random head", 0.0, domain, 1e-3, seed, 0.9, 0.95)
        group = root / "combined" / f"PACS-{domain}-trial0-dropout_0"
        (group / "greedy_soup").mkdir(parents=True, exist_ok=True)
        (group / "group.json").write_text(json.dumps({"dataset": "PACS", "test_domain": domain, "trial_seed": 0,
                                                      "method": "dropout 0", "dropout": 0.0}))
        (group / "greedy_soup" / "results.json").write_text(json.dumps({
            "status": "completed", "method": "greedy_soup", "dataset": "PACS", "test_domain": domain, "iid": 0.9,
            "ood": greedy[DOMAINS.index(domain)], "ood_out": 0.9, "members": ["a", "b"]}))


def test_best_plain_baseline_is_the_controls_best_combination_with_unpaired_standard_error(tmp_path):
    """Mutants: a baseline found by prefix alone ("dropout 0" matching dropout 0.9's, dropout 0.5's or dropout 0
    random head's rows); the worst baseline or the control alone taken; the paired SE, or no SE, used."""
    baseline_sweep(tmp_path)
    chosen = choose(collect(tmp_path).runs, "training_domain")
    result = best_baseline_difference(chosen, "dropout 0.9", "dropout 0", DOMAINS)
    assert result.baseline == "dropout 0 + ensemble"
    treatment_se, ensemble_se = math.sqrt(0.02**2 + 0.01**2) / 2, math.sqrt(0.01**2 + 0**2) / 2
    assert result.difference.mean == pytest.approx(0.865 - 0.795)
    assert result.difference.se == pytest.approx(math.sqrt(treatment_se**2 + ensemble_se**2))
    assert result.difference.n == 2


def test_an_across_run_combination_can_be_the_best_baseline_and_then_has_no_standard_error(tmp_path):
    """Mutants: across-run combinations (no run seed) left out of the candidates; an SE made up for one replicate."""
    baseline_sweep(tmp_path, greedy=(0.80, 0.85))
    chosen = choose(collect(tmp_path).runs, "training_domain")
    result = best_baseline_difference(chosen, "dropout 0.9", "dropout 0", DOMAINS)
    assert result.baseline == "dropout 0 + greedy soup"
    assert result.difference.mean == pytest.approx(0.865 - 0.825) and math.isnan(result.difference.se)
    assert result.difference.n == 1, "the fewer replicates of the two cells"


def test_no_baseline_difference_when_no_plain_baseline_has_every_domain(tmp_path):
    """Mutant: a treatment with every domain compared with a baseline that lacks one (or an error on none)."""
    paired_sweep(tmp_path)
    for path in (tmp_path / "runs").glob("dropout_0-art_painting-*"):
        (path / "results.json").unlink()
    chosen = choose(collect(tmp_path).runs, "training_domain")
    assert best_baseline_difference(chosen, "dropout 0.9", "dropout 0", DOMAINS) is None


def test_paper_figures_give_the_papers_differences():
    """Mutants: the paper's best baseline chosen without the control, or as the worst; a missing control read as 0."""
    assert paper_differences(PaperFigures(88.4, 86.5, {"ensemble along a run": 86.7})) == \
        ("+1.9", "+1.7 (ensemble along a run)")
    assert paper_differences(PaperFigures(88.4, 87.5)) == ("+0.9", "+0.9 (the control)")
    assert paper_differences(PaperFigures(88.4, 87.5, {"swa": 80.0})) == ("+0.9", "+0.9 (the control)")
    assert paper_differences(PaperFigures()) == ("–", "–")
    assert paper_differences(PaperFigures(88.4, None, {"swa": 87.0})) == ("–", "+1.4 (swa)")


def test_summary_command_writes_every_row_with_missing_sweeps_and_partial_runs_said(tmp_path, capsys):
    """Mutants: a row whose sweep folder is missing dropped from the page; unfinished runs not counted; the page's
    headline not the paired figures; the per-domain table missing."""
    paired_sweep(tmp_path / "sweeps" / "full")
    partial = tmp_path / "sweeps" / "partial"
    fake_run(partial, "dropout 0", 0.0, "sketch", 1e-3, 0, 0.9, 0.6)
    fake_run(partial, "dropout 0.9", 0.9, "sketch", 1e-3, 0, 0.9, 0.7)
    fake_run(partial, "dropout 0.9", 0.9, "sketch", 1e-3, 1, 0.9, 0.7, status="diverged")
    spec = summary_file(tmp_path / "summary.yaml", [
        row("PACS", "full", domains=DOMAINS, page="pacs.md", paper={"method": 88.4, "control": 86.5},
            note="A note."),
        row("PACS partial", "partial", domains=["sketch"], page="partial.md"),
        row("Office31", "absent"), row("Office31 reported", "absent", report="absent")])
    page = tmp_path / "docs" / "README.md"
    page.parent.mkdir()
    (page.parent / "pacs.md").write_text("# PACS\n")
    assert main(["summary", str(spec), "--sweeps", str(tmp_path / "sweeps"), "--output", str(page)]) == 0
    text = page.read_text()
    out = capsys.readouterr().out
    assert text.split("\n## Per held-out domain")[0].rstrip() in out
    assert f"  Office31: sweep folder not found: {tmp_path / 'sweeps' / 'absent'}" in out.splitlines(), \
        "a misspelt sweep is said on the terminal, not only in the page"
    lines = text.splitlines()
    # against the best plain baseline (the control alone here): unpaired, with the partnerless run
    cells = {(method, domain): values for method, runs in (("t", TREATMENT), ("c", CONTROL))
             for domain, values in runs.items()}
    cells["t", "sketch"] = TREATMENT["sketch"] + [0.99]
    means = {key: np.mean(values) for key, values in cells.items()}
    ses = {key: np.std(values, ddof=1) / math.sqrt(len(values)) for key, values in cells.items()}
    mean = (means["t", "sketch"] + means["t", "art_painting"] - means["c", "sketch"] - means["c", "art_painting"]) / 2
    se = math.sqrt(sum(value**2 for value in ses.values())) / 2
    assert ("| [PACS](pacs.md): dropout 0.9 − dropout 0 | +2.00 ± 0.65 | 3 | not established (t = 3.1, 2.9 df, "
            "p = 0.0548) | -1.00 ± 0.00 "
            f"| +1.9 | {100 * mean:+.2f} ± {100 * se:.2f} (dropout 0) | +1.9 (the control) | 7/7, 6/6 |") in lines
    assert "| PACS partial: dropout 0.9 − dropout 0 | +10.00 | 1 | not established (n = 1) | +0.00 | – | " \
           "+10.00 (dropout 0) | – | 1/2, 1/1 |" in lines
    assert "| Office31: dropout 0.9 − dropout 0 | – | – | – | – | – | – | – | – |" in lines
    assert "| PACS: dropout 0.9 − dropout 0 | art_painting | +2.00 ± 1.15 | 3 | -1.00 ± 0.00 |" in lines
    assert "  - dropout 0.9: 1 of 2 run folders finished (1 diverged)" in lines
    assert f"  - its page partial.md is not written yet (not in {page.parent}: not linked)" in lines \
        and "(partial.md)" not in text
    assert f"  - sweep folder not found: {tmp_path / 'sweeps' / 'absent'}" in lines
    assert f"  - sweep folder not found: {tmp_path / 'sweeps' / 'absent'}, nor its report folder " \
           f"{tmp_path / 'absent'}" in lines
    assert "  - 1 finished run(s) without a partner of the other method (same test domain, trial seed and seed), " \
           "left out of the paired difference" in lines
    assert "- PACS: dropout 0.9 − dropout 0: A note." in lines
    assert "rejects at 5% (p < 0.05) with at least 2 pairs in every held-out domain" in text


def test_a_report_folder_stands_for_its_sweep_when_the_run_folders_are_absent(tmp_path, capsys):
    """Mutants: the report's skipped.csv ignored (the diverged run not counted); the across-run combinations (no
    seed) lost on the way (the greedy soup no longer the best baseline); the report read although the sweep folder
    is there; the page not saying which rows come from a report."""
    sweep = tmp_path / "sweeps" / "full"
    baseline_sweep(sweep, greedy=(0.80, 0.85))
    fake_run(sweep, "dropout 0.9", 0.9, "sketch", 1e-3, 2, 0.9, 0.7, status="diverged")
    assert main(["report", str(sweep), "--output", str(tmp_path / "docs" / "full")]) == 0
    spec = summary_file(tmp_path / "docs" / "summary.yaml", [row("PACS", "full", report="full", domains=DOMAINS)])
    page = tmp_path / "docs" / "README.md"
    command = ["summary", str(spec), "--sweeps", str(tmp_path / "sweeps"), "--output", str(page)]
    assert main(command) == 0
    from_runs = page.read_text()
    assert f"- PACS: dropout 0.9 − dropout 0: the run folders of {sweep}" in from_runs.splitlines()
    sweep.rename(tmp_path / "elsewhere")
    assert main(command) == 0
    from_report = page.read_text()
    capsys.readouterr()
    assert f"- PACS: dropout 0.9 − dropout 0: the tables of its report, {tmp_path / 'docs' / 'full' / 'runs.csv'} " \
           f"(no sweep folder {sweep})" in from_report.splitlines()
    assert from_report.split("## Sources")[0] == from_runs.split("## Sources")[0]
    assert "(dropout 0 + greedy soup)" in from_report and "  - dropout 0.9: 4 of 5 run folders finished (1 diverged)" \
        in from_report.splitlines()


def test_a_report_folder_keeps_names_that_look_like_numbers(tmp_path):
    """Mutant: runs.csv read with pandas' guessed types, so that RotatedDigits' held-out domains ("0", "15", ...)
    and an all-digit run id come back as numbers and no longer match the dataset's domain names."""
    sweep = tmp_path / "sweep"
    fake_run(sweep, "dropout 0", 0.0, "15", 1e-3, 0, 0.9, 0.8, name="000123")
    assert main(["report", str(sweep), "--output", str(tmp_path / "report")]) == 0
    runs = read_report_tables(tmp_path / "report").runs
    assert runs["test_domain"].tolist() == ["15"] and runs["run"].tolist() == ["000123"]


def test_a_report_folder_without_its_tables_is_one_line_naming_the_file(tmp_path, capsys):
    """Mutant: a report folder that lacks runs.csv read as a sweep with no runs (a blank row), or a traceback."""
    (tmp_path / "docs" / "full").mkdir(parents=True)
    spec = summary_file(tmp_path / "docs" / "summary.yaml", [row("PACS", "full", report="full")])
    assert main(["summary", str(spec), "--sweeps", str(tmp_path / "sweeps"), "--output", str(tmp_path / "o.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'docs' / 'full' / 'runs.csv'}: not found" in err


@pytest.mark.parametrize("cell, shown", [("", "blank"), ("0.8x", "'0.8x'"), ("74.3", "74.3")])
def test_a_report_table_with_an_unreadable_accuracy_is_one_line_naming_the_run(tmp_path, capsys, cell, shown):
    """Mutant: a blank cell silently dropped (its pair with it), a text cell a traceback in the subtraction, a
    percentage taken for a fraction."""
    sweep = tmp_path / "sweeps" / "full"
    paired_sweep(sweep)
    assert main(["report", str(sweep), "--output", str(tmp_path / "docs" / "full")]) == 0
    table = tmp_path / "docs" / "full" / "runs.csv"
    runs = pd.read_csv(table, dtype=str)
    runs.loc[0, "training_domain.ood"] = cell
    runs.to_csv(table, index=False)
    spec = summary_file(tmp_path / "docs" / "summary.yaml", [row("PACS", "full", report="full")])
    output = tmp_path / "o.md"
    assert main(["summary", str(spec), "--sweeps", str(tmp_path / "elsewhere"), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err == f"droptune: error: {table}: run {runs.loc[0, 'run']}: training_domain.ood is {shown}: expected an " \
                  "accuracy (a fraction from 0 to 1)\n"


def test_the_summary_page_never_replaces_its_inputs_and_unreadable_notes_are_one_line(tmp_path, capsys):
    spec = summary_file(tmp_path / "summary.yaml", [row()])
    notes = tmp_path / "notes.md"
    notes.write_bytes(b"\xff\xfe notes")
    for argv, message in ((["--output", str(spec)], f"--output {spec} is the summary file"),
                          (["--output", str(notes), "--notes", str(notes)], f"--output {notes} is the notes file"),
                          (["--output", str(tmp_path / "o.md"), "--notes", str(notes)],
                           f"cannot read notes file {notes}: not UTF-8 text"),
                          (["--output", str(tmp_path)], f"{tmp_path}: Is a directory")):
        assert main(["summary", str(spec), "--sweeps", str(tmp_path / "sweeps"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert yaml.safe_load(spec.read_text())["rows"] == [row()] and notes.read_bytes() == b"\xff\xfe notes"


@pytest.mark.parametrize("content, message", [
    ("rows: [{name: a, sweep: s, dataset: PACS, method: dropout 0.9}]", "rows[0]: missing field 'control'"),
    ("rows: [{name: a, sweep: s, dataset: PACS, method: x, control: y, colour: red}]",
     "rows[0]: unknown field 'colour'"),
    ("rows: [{name: a, sweep: s, dataset: PACS, method: x, control: y, paper: {method: high}}]",
     "rows[0].paper.method: expected an accuracy in %, got 'high'"),
    ("rows: [{name: a, sweep: s, dataset: PACS, method: x, control: y, domains: [sketchy]}]",
     "rows[0].domains: 'sketchy' is not a domain of PACS"),
    ("rows: [{name: a, sweep: s, dataset: PACS, method: x, control: x}]", "method and control are both 'x'"),
    ("rows: [{name: a, sweep: [s, s], dataset: PACS, method: x, control: y}]", "rows[0].sweep lists a folder twice"),
    ("rows: [{name: a, sweep: [s, t], report: r, dataset: PACS, method: x, control: y}]",
     "rows[0].report: expected a list of 2 report folders, one per sweep of rows[0].sweep, got 'r'"),
    ("rows: [{name: a, sweep: [], dataset: PACS, method: x, control: y}]", "rows[0].sweep: expected a sweep folder"),
    ("rows: [{name: a, sweep: s, dataset: PACS, method: x, control: [y]}]", "rows[0].control: expected text"),
    ("rows: [{name: a, sweep: s, dataset: PACS, method: x, control: y, paper: {control: 86.5}}]",
     "rows[0].paper: no method"),
    ("rows: {name: a}", "expected a mapping with a non-empty list `rows`"),
    ("rows: [a, b", "is not valid YAML"),
])
def test_bad_summary_file_is_one_line_naming_the_file_and_field(tmp_path, capsys, content, message):
    """Mutants: a missing, unknown or mistyped field accepted (or a traceback); malformed YAML not reported as such."""
    spec = tmp_path / "summary.yaml"
    spec.write_text(content)
    with pytest.raises(DroptuneError, match=None) as error:
        load_summary_spec(spec)
    assert message in str(error.value) and str(spec) in str(error.value) and "\n" not in str(error.value)
    assert main(["summary", str(spec), "--output", str(tmp_path / "out.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "out.md").exists()


def test_a_method_name_unknown_to_its_sweep_is_an_error_naming_the_row_and_the_sweeps_methods(tmp_path, capsys):
    """Mutant: a misspelt method read as a method with no runs, so the row quietly shows nothing."""
    paired_sweep(tmp_path / "sweeps" / "full")
    spec = summary_file(tmp_path / "summary.yaml", [row("PACS", "full", method="dropout .9")])
    assert main(["summary", str(spec), "--sweeps", str(tmp_path / "sweeps"), "--output", str(tmp_path / "o.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "rows[0] (PACS): method 'dropout .9' not in" in err
    assert "(its methods for PACS: dropout 0, dropout 0.9)" in err
    spec = summary_file(tmp_path / "summary.yaml", [{**row("VLCS", "full"), "dataset": "VLCS"}])
    assert main(["summary", str(spec), "--sweeps", str(tmp_path / "sweeps"), "--output", str(tmp_path / "o.md")]) == 2
    assert "dataset 'VLCS' has no run in" in capsys.readouterr().err


def test_a_presets_method_whose_sweep_has_not_started_is_a_problem_line_not_an_error(tmp_path):
    """Mutant: a row naming a preset's method not yet run in a shared sweep folder (pacs-head-cpu's "dropout 0.9
    random head" in pacs-long-cpu's folder) stops the whole page like a typo; or is not said on the page."""
    paired_sweep(tmp_path / "sweeps" / "full")
    spec = summary_file(tmp_path / "summary.yaml", [
        row("PACS", "full", domains=DOMAINS), row("head", "full", "dropout 0.9 random head", "dropout 0 random head")])
    assert main(["summary", str(spec), "--sweeps", str(tmp_path / "sweeps"), "--output", str(tmp_path / "o.md")]) == 0
    lines = (tmp_path / "o.md").read_text().splitlines()
    assert f"  - dropout 0.9 random head: no run folder in {tmp_path / 'sweeps' / 'full'} yet (a preset's method: " \
           "its sweep has not started)" in lines
    assert "| head: dropout 0.9 random head − dropout 0 random head | – | – | – | – | – | – | – | 0/0, 0/0 |" in lines
    expected = "| PACS: dropout 0.9 − dropout 0 | +2.00 ± 0.65 | 3 | not established"
    assert any(line.startswith(expected) for line in lines)


def test_a_row_pairs_a_method_with_a_control_swept_later_into_another_folder(tmp_path):
    """A control swept after the method, into its own folder (one of them known only by its report's tables),
    pairs as within one sweep. Mutants: only the first folder read; the sources of one folder said."""
    sweeps = tmp_path / "sweeps"
    paired_sweep(sweeps / "first")
    (sweeps / "later" / "runs").mkdir(parents=True)
    for run in (sweeps / "first" / "runs").glob("dropout_0-*"):
        run.rename(sweeps / "later" / "runs" / run.name)
    assert main(["report", str(sweeps / "later"), "--output", str(tmp_path / "later-report")]) == 0
    shutil.rmtree(sweeps / "later")
    spec = summary_file(tmp_path / "summary.yaml", [row("PACS", ["first", "later"], domains=DOMAINS,
                                                        report=["first-report", "later-report"])])
    assert main(["summary", str(spec), "--sweeps", str(sweeps), "--output", str(tmp_path / "o.md")]) == 0
    lines = (tmp_path / "o.md").read_text().splitlines()
    expected = "| PACS: dropout 0.9 − dropout 0 | +2.00 ± 0.65 | 3 | not established"
    assert any(line.startswith(expected) for line in lines), "the figures of the same runs in one folder"
    assert f"- PACS: dropout 0.9 − dropout 0: the run folders of {sweeps / 'first'}; the tables of its report, " \
           f"{tmp_path / 'later-report' / 'runs.csv'} (no sweep folder {sweeps / 'later'})" in lines


def test_a_run_in_progress_is_counted_as_running(tmp_path):
    """Mutant: a run whose folder a live process holds counted as not started (the summary of a running sweep)."""
    sweep = tmp_path / "sweeps" / "full"
    paired_sweep(sweep)
    live = sweep / "runs" / "live"
    live.mkdir()
    config = TrainConfig(dataset="PACS", data_dir=None, test_domain="sketch", dropout=0.9, seed=4, trial_seed=4)
    (live / "job.json").write_text(json.dumps({"method": "dropout 0.9", "config": config.to_dict()}))
    spec = summary_file(tmp_path / "summary.yaml", [row("PACS", "full", domains=DOMAINS)])
    with exclusive(live, "run folder"):
        assert main(["summary", str(spec), "--sweeps", str(tmp_path / "sweeps"), "--output", str(tmp_path / "o.md")]) == 0
    assert "  - dropout 0.9: 7 of 8 run folders finished (1 running)" in (tmp_path / "o.md").read_text().splitlines()


def test_the_projects_summary_file_names_methods_of_the_presets():
    """Mutant: docs/results/summary.yaml names a method no preset runs (the page would fail on the real sweeps)."""
    spec = load_summary_spec(REPO / "docs" / "results" / "summary.yaml")
    names = preset_methods()
    assert len(spec.rows) == 13
    for entry in spec.rows:
        assert {entry.method, entry.control} <= names, entry.name


def test_the_summary_command_does_not_load_torch(tmp_path):
    """Mutant: `droptune summary` (its parser, spec, differences or the report code it reads) imports torch or the
    training code, e.g. for a constant."""
    paired_sweep(tmp_path / "sweeps" / "full")
    spec = summary_file(tmp_path / "summary.yaml", [row("PACS", "full")])
    code = ("import sys; from droptune.cli.main import main; status = main(sys.argv[1:]); "
            "print(status, sorted(m for m in ('torch', 'droptune.training.trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, "summary", str(spec), "--sweeps", str(tmp_path / "sweeps"),
                          "--output", str(tmp_path / "page.md")], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"
