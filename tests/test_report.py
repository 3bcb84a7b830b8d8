"""`droptune report` on hand-written run folders: known means and standard errors, listed skips, figure files."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from droptune.cli.main import main
from droptune.experiments.collect import collect, label_hparams
from droptune.experiments.figures import cloud, dropout_families, method_styles
from droptune.experiments.report import write_report
from droptune.experiments.tables import cell_means, choose, layout, settings_note
from droptune.runs.folder import exclusive
from droptune.training.config import TrainConfig

LRS = (1e-3, 5e-4)
# dropout 0.9 on sketch: (i.i.d., o.o.d.) per lr and seed. Training-domain validation picks lr 5e-4 for
# seed 0 (0.92 > 0.90), lr 1e-3 for seeds 1 and 2; the oracle picks the best o.o.d. (0.70, 0.80, 0.90).
SKETCH = {1e-3: [(0.90, 0.70), (0.91, 0.72), (0.95, 0.60)], 5e-4: [(0.92, 0.50), (0.89, 0.80), (0.93, 0.90)]}


def fake_run(root, method, dropout, domain, lr, seed, iid, ood, status="completed", variants=None, name=None):
    config = TrainConfig(dataset="PACS", data_dir=None, test_domain=domain, dropout=dropout, lr=lr, seed=seed,
                         trial_seed=seed)
    path = root / "runs" / (name or f"{method}-{domain}-{lr:g}-{seed}".replace(" ", "_"))
    path.mkdir(parents=True)
    (path / "job.json").write_text(json.dumps({"id": config.identity(), "method": method, "hparams": {"lr": lr},
                                               "config": config.to_dict()}))
    config.save(path / "config.yaml")
    results = {"status": status, "dataset": "PACS", "test_domain": domain, "seed": seed, "trial_seed": seed,
               "selections": checkpoints(iid, ood), "collapsed": iid < 0.5}
    if variants is not None:
        results["variants"] = variants
    (path / "results.json").write_text(json.dumps(results))
    curve = [{"step": 100, "iid": iid - 0.1, "loss": 1.0}, {"step": 300, "iid": iid, "loss": 0.5}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    return path


def checkpoints(iid, ood):
    """Each selection method's checkpoint of a run: training-domain validation's at step 300 scores (iid, ood);
    the oracle's at step 200 has a better test-domain 20% (ood + 0.06), i.i.d. accuracy iid - 0.02, o.o.d. ood + 0.05."""
    return {"training_domain": {"step": 300, "iid": iid, "ood": ood, "ood_out": min(1, ood + 0.01)},
            "oracle": {"step": 200, "iid": iid - 0.02, "ood": min(1, ood + 0.05), "ood_out": min(1, ood + 0.06)},
            "last": {"step": 400, "iid": iid - 0.01, "ood": ood - 0.01, "ood_out": ood}}


def ensemble(iid, ood):
    record = {"step": 300, "iid": iid + 0.01, "ood": ood + 0.02, "ood_out": ood + 0.03}
    return {"ensemble": {**record, "selections": checkpoints(iid + 0.01, ood + 0.02)}, "swa": None}


def fake_sweep(root, complete=True):
    """dropout 0.9 on art_painting (always 0.9/0.8) and sketch (SKETCH); dropout 0 everywhere 0.85/0.75,
    except that its sketch runs failed unless `complete`."""
    for lr in LRS:
        for seed in range(3):
            fake_run(root, "dropout 0.9", 0.9, "art_painting", lr, seed, 0.90, 0.80, variants=ensemble(0.90, 0.80))
            iid, ood = SKETCH[lr][seed]
            fake_run(root, "dropout 0.9", 0.9, "sketch", lr, seed, iid, ood, variants=ensemble(iid, ood))
            fake_run(root, "dropout 0", 0.0, "art_painting", lr, seed, 0.85, 0.75)
            if complete:
                fake_run(root, "dropout 0", 0.0, "sketch", lr, seed, 0.85, 0.75)
            else:
                path = root / "runs" / f"failed-{lr:g}-{seed}"
                path.mkdir()
                config = TrainConfig(dataset="PACS", data_dir=None, test_domain="sketch", dropout=0.0, lr=lr,
                                     seed=seed, trial_seed=seed)
                (path / "job.json").write_text(json.dumps({"method": "dropout 0", "hparams": {"lr": lr},
                                                           "config": config.to_dict()}))
                (path / "error.json").write_text(json.dumps({"message": "RuntimeError: out of memory",
                                                             "traceback": "", "attempts": 2}))


def se(values):
    return np.std(values, ddof=1) / math.sqrt(len(values))


def cell(summary, method, domain, metric):
    row = summary[(summary["method"] == method) & (summary["test_domain"] == domain) & (summary["metric"] == metric)]
    assert len(row) == 1
    return row["mean"].item(), row["se"].item(), row["n"].item()


def test_training_domain_selection_gives_known_means_and_standard_errors(tmp_path):
    fake_sweep(tmp_path)
    collection = collect(tmp_path)
    assert collection.skipped.empty and len(collection.runs) == 3 * 2 * 4 + 3 * 2 * 2
    assert set(collection.runs["hparams"]) == {"lr=0.001", "lr=0.0005"}
    chosen = choose(collection.runs, "training_domain")
    picks = chosen[(chosen["method"] == "dropout 0.9") & (chosen["test_domain"] == "sketch")].sort_values("seed")
    assert list(picks["hparams"]) == ["lr=0.0005", "lr=0.001", "lr=0.001"]
    domains, methods = layout(collection)
    assert domains == {"PACS": ["art_painting", "sketch"]}
    assert methods == {"PACS": ["dropout 0", "dropout 0.9", "dropout 0.9 + ensemble"]}
    summary = cell_means(chosen, domains)
    ood = [0.50, 0.72, 0.60]
    assert cell(summary, "dropout 0.9", "sketch", "ood") == pytest.approx((np.mean(ood), se(ood), 3))
    assert cell(summary, "dropout 0.9", "sketch", "iid") == pytest.approx((np.mean([.92, .91, .95]),
                                                                           se([.92, .91, .95]), 3))
    assert cell(summary, "dropout 0.9", "art_painting", "ood") == pytest.approx((0.80, 0.0, 3))
    assert cell(summary, "dropout 0.9", "average", "ood") == pytest.approx(((np.mean(ood) + 0.80) / 2,
                                                                            se(ood) / 2, 3))
    assert cell(summary, "dropout 0.9 + ensemble", "sketch", "ood") == pytest.approx((np.mean(ood) + 0.02,
                                                                                      se(ood), 3))


def test_oracle_selection_picks_by_the_test_domain_and_scores_the_oracles_checkpoint(tmp_path):
    """Mutants: the oracle's rows scored at the checkpoint training-domain validation chose within each run;
    the oracle's setting chosen by i.i.d. accuracy."""
    fake_sweep(tmp_path)
    collection = collect(tmp_path)
    summary = cell_means(choose(collection.runs, "oracle"), layout(collection)[0])
    assert cell(summary, "dropout 0.9", "sketch", "ood") == pytest.approx((0.85, se([.7, .8, .9]), 3))
    assert cell(summary, "dropout 0.9", "sketch", "iid") == pytest.approx((np.mean([.88, .87, .91]),
                                                                           se([.90, .89, .93]), 3))
    assert cell(summary, "dropout 0.9 + ensemble", "art_painting", "ood") == pytest.approx((0.87, 0.0, 3))


def test_the_papers_aggregation_averages_each_replicates_settings_at_their_own_checkpoints(tmp_path, capsys):
    """Mutants: --hparams mean ignored (the best setting kept), the mean taken over replicates before the
    settings, or each run scored at another selection's checkpoint."""
    fake_sweep(tmp_path)
    chosen = choose(collect(tmp_path).runs, "training_domain", "mean")
    summary = cell_means(chosen, {"PACS": ["art_painting", "sketch"]})
    ood = [np.mean([SKETCH[lr][seed][1] for lr in LRS]) for seed in range(3)]
    iid = [np.mean([SKETCH[lr][seed][0] for lr in LRS]) for seed in range(3)]
    assert cell(summary, "dropout 0.9", "sketch", "ood") == pytest.approx((np.mean(ood), se(ood), 3))
    assert cell(summary, "dropout 0.9", "sketch", "iid") == pytest.approx((np.mean(iid), se(iid), 3))
    assert set(chosen["hparams"]) == {"mean of 2"}
    oracle = cell_means(choose(collect(tmp_path).runs, "oracle", "mean"), {"PACS": ["art_painting", "sketch"]})
    assert cell(oracle, "dropout 0.9", "sketch", "ood")[0] == pytest.approx(np.mean(ood) + 0.05)
    assert main(["report", str(tmp_path), "--hparams", "mean"]) == 0
    out = capsys.readouterr().out
    assert "hyper-parameters: the mean over the settings, per replicate (the paper's tables)" in out
    assert "Each replicate's accuracy is the mean over its 2 hyper-parameter settings." in out
    combination = pd.DataFrame({"method": ["dropout 0 + ensemble of runs"], "test_domain": ["sketch"],
                                "seed": [float("nan")], "hparams": ["mean of 1"]})
    assert settings_note(pd.concat([chosen, combination])) == settings_note(chosen), \
        "an ensemble of runs is one model of every setting, not a replicate missing some"
    shutil.rmtree(tmp_path / "runs" / "dropout_0-sketch-0.001-0")
    assert main(["report", str(tmp_path), "--hparams", "mean"]) == 0
    assert ("Each replicate's accuracy is the mean over its hyper-parameter settings: 2 for most, as few as 1 where "
            "runs are missing (in 1 replicate(s) of dropout 0 on sketch).") in capsys.readouterr().out
    csv = pd.read_csv(tmp_path / "report" / "training_domain-hparams-mean" / "tables.csv")
    assert set(csv["hparams"]) == {"mean"}
    row = csv[(csv["method"] == "dropout 0.9") & (csv["test_domain"] == "sketch") & (csv["metric"] == "ood")]
    assert row["mean"].item() == pytest.approx(100 * np.mean(ood), abs=1e-4)


def test_the_report_says_when_a_datasets_runs_were_trained_on_different_images(tmp_path, capsys):
    """Mutant: runs whose results.json record other image counts (an image added to the dataset between runs)
    mixed into the tables without a word."""
    fake_sweep(tmp_path)
    paths = sorted((tmp_path / "runs").iterdir())
    for path, counts in zip(paths, ([6, 6], [6, 6], [6, 7])):
        results = json.loads((path / "results.json").read_text())
        (path / "results.json").write_text(json.dumps({**results, "images": {"photo": counts}}))
    warning = "PACS: its runs were trained on 2 different sets of images"
    assert main(["report", str(tmp_path)]) == 0
    assert warning in capsys.readouterr().out
    (paths[2] / "results.json").write_text(json.dumps({**json.loads((paths[2] / "results.json").read_text()),
                                                        "images": {"photo": [6, 6]}}))
    assert main(["report", str(tmp_path)]) == 0
    assert warning not in capsys.readouterr().out
    for path, digest in zip(paths, ("1f", "1f", "2e")):  # the same counts from other files
        results = json.loads((path / "results.json").read_text())
        (path / "results.json").write_text(json.dumps({**results, "files": {"photo": digest}}))
    assert main(["report", str(tmp_path)]) == 0
    assert warning in capsys.readouterr().out


def test_average_column_combines_the_domains_standard_errors_as_independent():
    """Mutant: the average's standard error is the mean of the domains' standard errors (or their root mean square).

    Both domains vary here, by different amounts, so the formulas disagree.
    """
    rows = [("art_painting", seed, ood) for seed, ood in enumerate((0.70, 0.80, 0.90))]
    rows += [("sketch", seed, ood) for seed, ood in enumerate((0.50, 0.52, 0.60))]
    chosen = pd.DataFrame([{"dataset": "PACS", "method": "m", "test_domain": domain, "trial_seed": seed,
                            "seed": seed, "hparams": "default", "iid": 0.9, "ood": ood} for domain, seed, ood in rows])
    summary = cell_means(chosen, {"PACS": ["art_painting", "sketch"]})
    first, second = se([0.70, 0.80, 0.90]), se([0.50, 0.52, 0.60])
    mean, error, n = cell(summary, "m", "average", "ood")
    assert (mean, n) == (pytest.approx((0.80 + 0.54) / 2), 3)
    assert error == pytest.approx(math.sqrt(first**2 + second**2) / 2)
    assert abs(error - (first + second) / 2) > 0.005 and abs(error - math.sqrt((first**2 + second**2) / 2)) > 0.01


def test_average_column_is_as_uncertain_as_its_least_replicated_domain():
    """Mutants: the average's n is its best-replicated domain's; its standard error computed from the domains that
    have one (a domain with one replicate has none, so neither has the average)."""
    rows = [("art_painting", seed, ood) for seed, ood in enumerate((0.70, 0.80, 0.90))] + [("sketch", 0, 0.50)]
    chosen = pd.DataFrame([{"dataset": "PACS", "method": "m", "test_domain": domain, "trial_seed": seed,
                            "seed": seed, "hparams": "default", "iid": 0.9, "ood": ood} for domain, seed, ood in rows])
    summary = cell_means(chosen, {"PACS": ["art_painting", "sketch"]})
    assert math.isnan(cell(summary, "m", "sketch", "ood")[1])
    mean, error, n = cell(summary, "m", "average", "ood")
    assert mean == pytest.approx((0.80 + 0.50) / 2) and math.isnan(error) and n == 1


def test_choose_breaks_ties_by_setting_and_ignores_runs_without_the_selection():
    """Mutants: ties between settings go to the first run found (the folder order) instead of the first setting;
    a run without the selection's checkpoint enters the choice; the chosen table gets another column."""
    def run(name, hparams, seed, val, ood):
        return {"dataset": "PACS", "method": "m", "test_domain": "sketch", "trial_seed": 0, "seed": seed,
                "hparams": hparams, "run": name, "oracle.val": val, "oracle.iid": 0.9, "oracle.ood": ood}

    runs = pd.DataFrame([run("r1", "lr=0.01", 0, 0.8, 0.1), run("r2", "lr=0.001", 0, 0.8, 0.2),
                         run("r3", "lr=0.001", 1, float("nan"), 0.3), run("r4", "lr=0.01", 1, 0.7, 0.4)])
    chosen = choose(runs, "oracle")
    assert list(chosen.columns) == ["dataset", "method", "test_domain", "trial_seed", "seed", "hparams", "iid", "ood"]
    assert chosen[["seed", "hparams", "ood"]].values.tolist() == [[0, "lr=0.001", 0.2], [1, "lr=0.01", 0.4]]


def test_a_run_from_before_the_collapse_check_is_not_reported_collapsed(tmp_path):
    """Mutant: a results.json without the `collapsed` field (older runs) read as collapsed."""
    path = fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, 0, 0.3, 0.2)
    results = json.loads((path / "results.json").read_text())
    del results["collapsed"]
    (path / "results.json").write_text(json.dumps(results))
    assert collect(tmp_path).runs["collapsed"].tolist() == [False]


def test_partial_sweep_marks_missing_cells_and_lists_every_skipped_run(tmp_path):
    fake_sweep(tmp_path, complete=False)
    runs = tmp_path / "runs"
    for lr in LRS:
        shutil.rmtree(runs / f"dropout_0-art_painting-{lr:g}-2")
    (runs / "garbled").mkdir()
    (runs / "garbled" / "job.json").write_text(json.dumps({"method": "dropout 0.9", "config": TrainConfig(
        dataset="PACS", data_dir=None, test_domain="photo", dropout=0.9).to_dict()}))
    (runs / "garbled" / "results.json").write_text("{not json")
    interrupted = runs / "interrupted"
    interrupted.mkdir()
    TrainConfig(dataset="PACS", data_dir=None, test_domain="sketch", dropout=0.5).save(interrupted / "config.yaml")
    (interrupted / "last.pt").write_bytes(b"")
    (interrupted / "metrics.jsonl").write_text(json.dumps({"step": 4}) + "\n")
    fake_run(tmp_path, "dropout 0.9", 0.9, "photo", 1e-3, 0, 0.3, 0.2, status="diverged", name="diverged")
    fake_run(tmp_path, "dropout 0.9", 0.9, "cartoon", 1e-3, 0, 0.3, 0.2, name="collapsed")
    (runs / "empty").mkdir()
    (runs / "binary").mkdir()
    (runs / "binary" / "config.yaml").write_bytes(b"\xff\xfe\x00dataset")

    collection, text, notes = write_report(tmp_path, tmp_path / "out")
    assert notes[0] == "1 finished run(s) collapsed to the majority class (column collapsed in runs.csv): dropout 0.9"
    reasons = dict(zip(collection.skipped["path"].map(lambda p: p.split("/")[-1]), collection.skipped["reason"]))
    assert len(reasons) == 6 + 5
    assert reasons["failed-0.001-0"] == "failed after 2 attempt(s): RuntimeError: out of memory"
    assert reasons["garbled"].startswith("results.json is not valid JSON")
    assert reasons["interrupted"].startswith("interrupted (last evaluation at step 4)")
    assert reasons["diverged"] == "status 'diverged' in results.json"
    assert reasons["empty"] == reasons["binary"] == "no readable job.json or config.yaml"
    lines = text.splitlines()
    assert "| method | art_painting | cartoon | photo | sketch | average |" in lines
    assert "| dropout 0 | 75.0 ± 0.0 (n=2) | – | – | – | – |" in lines, "a seed is missing, and three domains"
    assert "| dropout 0.5 | – | – | – | – | – |" in lines, "a method known only from an interrupted run"
    assert "| dropout 0.9 | 80.0 ± 0.0 | 20.0 (n=1) | – | 60.7 ± 6.4 | – |" in lines
    assert len((tmp_path / "out" / "skipped.csv").read_text().splitlines()) == 1 + 11


def test_a_run_in_progress_is_said_running_by_which_process_until_it_stops(tmp_path):
    """Mutants: a live run called not started or interrupted; a run whose process has let go still called running."""
    fake_sweep(tmp_path)
    live = tmp_path / "runs" / "live"
    live.mkdir()
    TrainConfig(dataset="PACS", data_dir=None, test_domain="sketch", dropout=0.5).save(live / "config.yaml")

    def reason():
        skipped = collect(tmp_path).skipped
        return skipped.loc[skipped["path"].str.endswith("/live"), "reason"].item()

    with exclusive(live, "run folder"):
        process = f"pid {os.getpid()} on {socket.gethostname()}"
        assert reason() == f"running ({process}, no evaluation yet)"
        (live / "last.pt").write_bytes(b"")
        (live / "metrics.jsonl").write_text(json.dumps({"step": 4}) + "\n")
        assert reason() == f"running ({process}, last evaluation at step 4)"
    assert reason().startswith("interrupted (last evaluation at step 4)")


def test_report_command_writes_tables_and_figures(tmp_path, capsys):
    fake_sweep(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| dropout 0.9 | 80.0 ± 0.0 | 60.7 ± 6.4 | 70.3 ± 3.2 |" in out
    report = tmp_path / "report" / "training_domain"
    for name in ("PACS_cloud.png", "PACS_cloud.pdf", "PACS_dropout.png", "PACS_dropout.pdf"):
        assert (report / name).stat().st_size > 1000, name
    assert (report / "PACS_cloud.png").read_bytes()[:4] == b"\x89PNG"
    assert (report / "PACS_dropout.pdf").read_bytes()[:4] == b"%PDF"
    tex = (report / "tables.tex").read_text()
    assert "art\\_painting" in tex and "60.7 $\\pm$ 6.4" in tex
    csv = (report / "tables.csv").read_text().splitlines()
    assert csv[0] == "dataset,method,metric,test_domain,mean,se,n,selection,hparams"
    assert any(line.startswith("PACS,dropout 0.9,ood,sketch,60.6667,6.3") and line.endswith(",best") for line in csv)
    assert main(["report", str(tmp_path), "--selection", "oracle"]) == 0
    out = capsys.readouterr().out
    assert "| dropout 0.9 | 85.0 ± 0.0 | 85.0 ± 5.8 |" in out and "PACS: convergence curves: PACS_curves.png" in out
    for metrics in tmp_path.glob("runs/*/metrics.jsonl"):
        metrics.unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert "PACS: no convergence curves (needs the runs' metrics.jsonl)" in capsys.readouterr().out


def test_report_page_has_notes_tables_figures_combinations_and_the_sweep_file(tmp_path, capsys):
    fake_sweep(tmp_path, complete=False)
    (tmp_path / "sweep.yaml").write_text("datasets: [PACS]\n")
    group = tmp_path / "combined" / "PACS-sketch-trial0-dropout_0.9"
    (group / "uniform_soup").mkdir(parents=True)
    (group / "group.json").write_text(json.dumps({"dataset": "PACS", "test_domain": "sketch", "trial_seed": 0,
                                                  "method": "dropout 0.9", "dropout": 0.9}))
    for method, ood in (("uniform_soup", 0.75), ("ensemble", 0.77)):  # schema 1: no label, the table names them
        (group / method).mkdir(exist_ok=True)
        (group / method / "results.json").write_text(json.dumps({
            "status": "completed", "method": method, "dataset": "PACS", "test_domain": "sketch",
            "iid": 0.93, "ood": ood, "ood_out": 0.76, "members": ["a", "b"]}))
    notes = tmp_path / "notes.md"
    notes.write_text("Why these runs, and what they show.")
    page = tmp_path / "docs" / "result.md"
    assert main(["report", str(tmp_path), "--output", str(tmp_path / "docs" / "result"), "--document", str(page),
                 "--notes", str(notes)]) == 0
    text = page.read_text()
    assert text.index("Why these runs") < text.index("### o.o.d. accuracy") < text.index("## Figures")
    iid_table = text[text.index("### i.i.d. accuracy"):]
    assert "| dropout 0.9 + uniform soup | – | 75.0 (n=1) | – |" in text[:text.index("### i.i.d. accuracy")], \
        "one replicate: no ±, no average"
    assert "| dropout 0.9 + uniform soup | – | 93.0 (n=1) | – |" in iid_table, "a combination's i.i.d. is its own"
    assert "| dropout 0.9 + ensemble of runs | – | 77.0 (n=1) | – |" in text
    for name in ("PACS_cloud.png", "PACS_dropout.png", "PACS_curves.png"):
        assert f"](result/{name})" in text and (tmp_path / "docs" / "result" / name).stat().st_size > 1000
    assert "18 finished runs." in text and "2 across-run combinations" in text
    assert "6 run(s) not in the tables:" in text and "RuntimeError: out of memory" in text
    assert text.startswith(f"# {tmp_path.name}: report\n\n**Partial**: 6 run(s) of this folder or its sweep files")
    assert main(["report", str(tmp_path), "--output", str(tmp_path / "docs" / "result"), "--document", str(page),
                 "--title", "PACS, 2-core CPU: p = 0.9 against p = 0"]) == 0
    assert page.read_text().startswith("# PACS, 2-core CPU: p = 0.9 against p = 0\n\n**Partial**")
    assert "- sweep.yaml: cannot list the runs it plans" in text, "a sweep file it cannot expand is said"
    assert "```yaml\ndatasets: [PACS]\n```" in text
    assert main(["report", str(tmp_path), "--notes", str(tmp_path / "missing.md")]) == 2
    assert "notes file not found" in capsys.readouterr().err
    notes.write_bytes(b"\xff notes")
    for argv, message in ((["--document", str(page), "--notes", str(notes)], f"cannot read notes file {notes}: not "
                           "UTF-8 text"), (["--output", str(notes)], f"{notes}: File exists")):
        assert main(["report", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_cloud_has_one_point_per_combination_of_settings(tmp_path):
    fake_sweep(tmp_path)
    runs = collect(tmp_path).runs
    mine = runs[runs["method"] == "dropout 0.9"]
    points, mean, total, used = cloud(mine, "training_domain", ["art_painting", "sketch"])
    assert total == 4 and used == ["art_painting", "sketch"] and points.shape == (4, 2)
    sketch_means = {lr: np.mean(SKETCH[lr], axis=0) for lr in LRS}
    expected = sorted(tuple((np.array([0.90, 0.80]) + sketch_means[lr]) / 2) for lr in LRS for _ in range(2))
    np.testing.assert_allclose(sorted(map(tuple, points)), expected)
    assert mean == pytest.approx(np.mean(points, axis=0))
    sampled, _, total, _ = cloud(mine, "training_domain", ["art_painting", "sketch"], max_points=3)
    assert total == 4 and sampled.shape == (3, 2)


def test_cloud_colours_follow_the_dropout_rate_and_markers_tell_one_rate_s_methods_apart():
    """Mutant: colours cycled in the legend's order, so that p = 0.9 had another colour on every page."""
    runs = pd.DataFrame({"method": ["d 0.9", "d 0", "d 0.9 + ensemble", "d 0.5", "d 0 + swa"],
                         "dropout": [0.9, 0.0, 0.9, 0.5, 0.0]})
    styles = dict(zip(runs["method"], method_styles(runs, list(runs["method"]))))
    assert styles["d 0.9"][0] == styles["d 0.9 + ensemble"][0] and styles["d 0"][0] == styles["d 0 + swa"][0]
    assert styles["d 0.9"][1] != styles["d 0.9 + ensemble"][1] and styles["d 0"][1] != styles["d 0 + swa"][1]
    darkness = {m: sum(styles[m][0][:3]) for m in ("d 0", "d 0.5", "d 0.9")}  # viridis brightens with the rate
    assert darkness["d 0"] < darkness["d 0.5"] < darkness["d 0.9"]
    reordered = list(reversed(runs["method"]))
    assert dict(zip(reordered, method_styles(runs, reordered)))["d 0.5"][0] == styles["d 0.5"][0]


def test_dropout_curve_groups_methods_that_differ_only_in_p(tmp_path):
    fake_sweep(tmp_path)
    runs = collect(tmp_path).runs
    assert dropout_families(runs) == [("", ["dropout 0", "dropout 0.9"])]


def test_report_shows_the_effective_number_of_features_only_when_runs_have_it(tmp_path, capsys):
    fake_sweep(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    assert "effective number of features" not in capsys.readouterr().out
    for i, path in enumerate(sorted((tmp_path / "runs").glob("dropout_0.9-sketch-*"))):
        (path / "feature_usage.json").write_text(json.dumps({"participation_ratio": 100.0 + 10 * i}))
    (tmp_path / "runs" / "dropout_0-art_painting-0.001-0" / "feature_usage.json").write_text("not json")
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "effective number of features" in out
    assert "| dropout 0.9 | – | 125 (n=6) |" in out and "| dropout 0 | – | – |" in out
    runs = collect(tmp_path).runs
    assert runs["effective_features"].notna().sum() == 6


def test_the_report_command_does_not_load_torch(tmp_path):
    """Mutant: `droptune report` (its parser, collect, tables or figures) imports torch or the training code again,
    e.g. for a constant."""
    fake_sweep(tmp_path)
    code = ("import sys; from droptune.cli.main import main; status = main(sys.argv[1:]); "
            "print(status, sorted(m for m in ('torch', 'droptune.training.trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, "report", str(tmp_path)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_hyper_parameters_are_labelled_in_their_fields_types():
    """Mutant: an integer field varied by the grid was labelled steps=6.0 where combinations' rows (no config)
    made its column float."""
    nan = float("nan")
    rows = pd.DataFrame({"dataset": ["d"] * 5, "run_method": ["p", "p", "p + ensemble of runs", "q", "q"],
                         "config.steps": [4, 6, nan, 4, 4], "config.lr": [0.1, 0.1, nan, 1.0, 2.0]})
    assert list(label_hparams(rows)["hparams"]) == ["steps=4", "steps=6", "default", "lr=1.0", "lr=2.0"]


def test_runs_no_sweep_file_asks_for_are_named(tmp_path):
    """Mutants: after a sweep file was edited (a grid value made fixed, fewer seeds, a method renamed), the report
    took the earlier version's runs for hyper-parameter settings, averaged their seeds in or gave them rows,
    without a word."""
    from droptune.experiments.report import unplanned_runs
    from droptune.runs.folder import spec_files

    fake_sweep(tmp_path)
    spec = {"name": "s", "datasets": ["PACS"], "grid": {"lr": list(LRS)}, "seeds": [0, 1, 2],
            "methods": [{"name": "dropout 0.9", "dropout": 0.9}, {"name": "dropout 0", "dropout": 0.0}]}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    assert unplanned_runs(collect(tmp_path), spec_files(tmp_path)) == []
    fake_run(tmp_path, "dropout 0.5", 0.5, "sketch", 1e-3, 0, 0.9, 0.7)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({**spec, "grid": {}, "seeds": [0, 1]}))
    where = f"no sweep file in {tmp_path.name}"
    assert unplanned_runs(collect(tmp_path), spec_files(tmp_path)) == [
        f"PACS: the runs of 'dropout 0' differ in lr, which {where} varies (runs of an earlier version of the file?): "
        "the tables take them for hyper-parameter settings",
        f"PACS: runs of 'dropout 0' with seeds 2, which {where} lists (an earlier version of the file?), are averaged "
        "into the tables",
        f"PACS: 1 run(s) of method 'dropout 0.5', which {where} names (renamed or removed?), are in the tables",
        f"PACS: the runs of 'dropout 0.9' differ in lr, which {where} varies (runs of an earlier version of the "
        "file?): the tables take them for hyper-parameter settings",
        f"PACS: runs of 'dropout 0.9' with seeds 2, which {where} lists (an earlier version of the file?), are "
        "averaged into the tables"]
    write_report(tmp_path, tmp_path / "report")
    assert "Runs that no sweep file here asks for:" in (tmp_path / "report" / "report.md").read_text()
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({**spec, "seeds": "0"}))  # read as droptune sweep reads it
    collection = collect(tmp_path)
    assert unplanned_runs(collection, spec_files(tmp_path)) == []
    assert len(collection.problems) == 1 and collection.problems[0].startswith("sweep.yaml: cannot list the runs")


def test_a_partial_sweep_counts_its_planned_runs_without_a_folder_and_averages_no_method_missing_a_domain(
        tmp_path, capsys):
    """A folder restored from run records holds its finished runs alone. Mutant: the tables' domains and averages
    taken from the runs at hand (the average of sketch alone shown as the average), the runs never started unsaid."""
    from droptune.experiments.sweep import load_spec

    spec = {"name": "s", "datasets": ["PACS"], "data_dir": str(tmp_path / "data"),
            "test_domains": ["sketch", "art_painting"], "seeds": [0],
            "methods": [{"name": "dropout 0", "dropout": 0.0}, {"name": "dropout 0.9", "dropout": 0.9}]}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    jobs = load_spec(tmp_path / "sweep.yaml").jobs(tmp_path)
    for job in jobs:
        if job.config.test_domain == "sketch":
            fake_run(tmp_path, job.method, job.config.dropout, "sketch", 1e-3, 0, 0.9, 0.7, name=job.id)
    assert main(["report", str(tmp_path), "--output", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| dropout 0.9 | – | 70.0 | – |" in out.splitlines(), "art_painting planned: no average of sketch alone"
    assert "2 run(s) not in the tables" in out
    page = (tmp_path / "report" / "report.md").read_text()
    assert "**Partial**: 2 run(s)" in page
    absent = [job for job in jobs if job.config.test_domain == "art_painting"]
    for job in absent:
        assert f"- `{job.id}` ({job.method}, art_painting): not started" in page


def test_runs_recorded_before_a_config_field_existed_are_one_setting_with_the_runs_after(tmp_path):
    """Mutant: the field's missing value (NaN) taken for another setting: `linearized=nan` beside
    `linearized=False`. An unset field is labelled "none" (head_init's default: the random head)."""
    for seed in range(2):
        path = fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, seed, 0.9, 0.7)
    job = json.loads((path / "job.json").read_text())
    del job["config"]["linearized"]  # as a run recorded before the field existed
    (path / "job.json").write_text(json.dumps(job))
    runs = collect(tmp_path).runs
    assert list(runs["hparams"]) == ["default", "default"] and list(runs["config.linearized"]) == [False, False]
    nan = float("nan")
    labelled = label_hparams(pd.DataFrame({"dataset": ["d"] * 3, "run_method": ["p"] * 3,
                                           "config.head_init": [None, "probe", nan]}))
    assert list(labelled["hparams"]) == ["head_init=none", "head_init=probe", "head_init=none"]


def test_a_results_json_without_a_selected_score_or_with_a_mistyped_one_is_skipped_with_the_reason(tmp_path):
    """Mutants: a run with no o.o.d. accuracy counted as a replicate (n = 2 beside one value); a mistyped
    selection a traceback of pandas or of the subtraction; a run whose job.json is unreadable named after its
    dropout rate, into another method's cell."""
    for seed, broken in enumerate((None, "abc", 74.3)):
        path = fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, seed, 0.9, 0.7)
        results = json.loads((path / "results.json").read_text())
        results["selections"]["training_domain"]["ood"] = broken
        (path / "results.json").write_text(json.dumps(results))
    path = fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, 3, 0.9, 0.7)
    results = json.loads((path / "results.json").read_text())
    (path / "results.json").write_text(json.dumps({**results, "selections": {"training_domain": "x"}}))
    fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, 4, 0.9, 0.7)
    path = fake_run(tmp_path, "dropout 0.9 random head 10x", 0.9, "sketch", 1e-3, 5, 0.9, 0.7)
    (path / "job.json").write_text("{")  # its method would be "dropout 0.9", from config.yaml's rate
    path = fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, 6, 0.9, 0.7)
    results = json.loads((path / "results.json").read_text())
    results["selections"]["training_domain"]["iid"] = None
    (path / "results.json").write_text(json.dumps(results))
    collection = collect(tmp_path)
    reasons = sorted(collection.skipped["reason"])
    assert reasons == ["job.json is unreadable or lacks its config or method",
                       "results.json has no evaluation selected by training-domain validation",
                       "results.json has no selections.training_domain.ood",
                       "results.json's selections.training_domain is 'x': expected a mapping",
                       "results.json's selections.training_domain.ood is 'abc': expected an accuracy (a fraction "
                       "from 0 to 1)",
                       "results.json's selections.training_domain.ood is 74.3: expected an accuracy (a fraction "
                       "from 0 to 1)"]
    assert len(collection.runs) == 1


def test_a_finished_run_with_a_torn_metrics_line_stays_in_the_tables_without_its_curve(tmp_path):
    """Mutant (chaos audit 9): a half-written line of metrics.jsonl left a finished run, whose results.json is
    intact, out of the tables (its cell then chosen among fewer settings), for the sake of its curve."""
    path = fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, 0, 0.9, 0.7)
    fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, 1, 0.8, 0.6)
    (path / "metrics.jsonl").write_text((path / "metrics.jsonl").read_text()[:-20])
    collection = collect(tmp_path)
    assert sorted(collection.runs["run"]) == sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert collection.skipped.empty and set(collection.curves["run"]) == {"dropout_0.9-sketch-0.001-1"}
    assert collection.problems == [f"{path.name}: {path / 'metrics.jsonl'} line 2 is not valid JSON: the run is in "
                                   "the tables, its curve left out of the convergence figure"]


def test_a_results_json_of_another_run_is_skipped_and_a_domain_index_is_read_as_its_name(tmp_path):
    """Mutant: a results.json copied from another run's folder filed under this run's method and cell."""
    for seed, (key, value) in enumerate((("test_domain", "cartoon"), ("seed", 7), ("trial_seed", 7))):
        path = fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, seed, 0.9, 0.7)
        results = json.loads((path / "results.json").read_text())
        (path / "results.json").write_text(json.dumps({**results, key: value}))
    path = fake_run(tmp_path, "dropout 0.9", 0.9, "sketch", 1e-3, 3, 0.9, 0.7)
    job = json.loads((path / "job.json").read_text())
    job["config"]["test_domain"] = "3"  # PACS's fourth domain, by index
    (path / "job.json").write_text(json.dumps(job))
    collection = collect(tmp_path)
    assert sorted(collection.skipped["reason"]) == [
        "results.json's seed 7 differs from its config's 1: the results belong to another run",
        "results.json's test_domain 'cartoon' differs from its config's 'sketch': the results belong to another run",
        "results.json's trial_seed 7 differs from its config's 2: the results belong to another run"]
    assert list(collection.runs["run"]) == [path.name]
