"""scripts/run_records.py: a sweep's finished runs kept without weights survive the loss of its folder."""

import importlib.util
import shutil
import sys

import yaml

from conftest import REPO
from droptune.cli.main import main
from droptune.experiments.collect import collect
from test_sweep import TINY_BASE

spec = importlib.util.spec_from_file_location("run_records", REPO / "scripts" / "run_records.py")
run_records = sys.modules["run_records"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_records)


def files(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_a_lost_sweep_restored_from_its_records_reports_the_same_and_trains_nothing(image_folder, tmp_path,
                                                                                    capsys):
    """Mutants: weights or locks kept; an unfinished run kept; restore overwriting a folder that is there;
    sweep files or a combination's group.json not kept. The restored folder must report exactly what the original
    did, its ensemble of runs included."""
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump({"datasets": [str(image_folder)], "test_domains": ["c"], "base": TINY_BASE,
                                         "seeds": [0, 1], "trial_seeds": [0], "combine": ["ensemble"],
                                         "methods": [{"name": "dropout 0.9", "dropout": 0.9}]}))
    sweep, records = tmp_path / "sweep", tmp_path / "records"
    assert main(["sweep", str(spec_file), "--output", str(sweep)]) == 0
    finished = sorted((sweep / "runs").iterdir())
    assert len(finished) == 2 and any(path.suffix == ".safetensors" for path in finished[0].iterdir())
    unfinished = sweep / "runs" / "000000000000"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("seed: 9\n")
    (unfinished / "last.pt").write_bytes(b"checkpoint")
    (finished[0] / ".lock").write_text("")

    assert run_records.main(["save", str(sweep), str(records)]) == 0
    assert "saved 3 finished runs and combinations" in capsys.readouterr().out
    kept = files(records)
    assert "sweep.yaml" in kept and not any("000000000000" in name for name in kept)
    assert not [name for name in kept if name.endswith((".safetensors", ".pt", ".lock"))]
    assert {f"runs/{run.name}/{name}" for run in finished for name in ("config.yaml", "results.json",
                                                                       "metrics.jsonl")} <= set(kept)

    before = collect(sweep).runs
    assert main(["report", str(sweep), "--output", str(tmp_path / "before")]) == 0
    shutil.rmtree(sweep)
    assert run_records.main(["restore", str(records), str(sweep)]) == 0
    assert "restored 3 runs and combinations" in capsys.readouterr().out
    after = collect(sweep).runs
    assert after.sort_values("run").reset_index(drop=True).equals(before.sort_values("run").reset_index(drop=True))
    assert main(["report", str(sweep), "--output", str(tmp_path / "after")]) == 0
    for table in ("runs.csv", "tables.csv"):
        assert (tmp_path / "after" / table).read_text() == (tmp_path / "before" / table).read_text(), table

    capsys.readouterr()
    assert main(["sweep", str(spec_file), "--output", str(sweep)]) == 0
    retrained = [path for run in finished for path in (sweep / "runs" / run.name).iterdir()
                 if path.suffix == ".safetensors"]
    assert not retrained, "a restored run is skipped, not trained again"

    (sweep / "runs" / finished[0].name / "results.json").write_text("{}")
    assert run_records.main(["restore", str(records), str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "restored 0 runs" in out and "(3 already there)" in out
    assert (sweep / "runs" / finished[0].name / "results.json").read_text() == "{}", "a folder that is there wins"


def test_a_missing_source_folder_is_one_line(tmp_path, capsys):
    assert run_records.main(["restore", str(tmp_path / "absent"), str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent is not a folder" in err
