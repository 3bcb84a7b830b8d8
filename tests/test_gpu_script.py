"""benchmarks/gpu.sh before it meets a GPU: its arguments, its refusal without CUDA, and its whole dry run on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.sh"


def gpu_sh(*args: str, out: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_unknown_argument_is_one_line(tmp_path):
    result = gpu_sh("--fast", out=tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip() == ("gpu.sh: unknown argument '--fast' (expected --dry-run, --device cuda|cpu, "
                                     "--data-dir DIR, --budget S, --pack)")
    result = gpu_sh("--device", "tpu", out=tmp_path / "out")
    assert result.returncode == 2 and result.stderr.strip() == "gpu.sh: --device must be cuda or cpu, got 'tpu'"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_script_refuses_before_measuring(tmp_path):
    result = gpu_sh(out=tmp_path / "out")
    assert result.returncode == 2
    assert "gpu.sh: CUDA is not available on this machine" in result.stderr and "--dry-run" in result.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_measures_everything_and_writes_the_summary(tmp_path):
    """The whole script on CPU at tiny sizes, on a generated PACS-shaped folder: every step runs."""
    out = tmp_path / "out"
    result = gpu_sh("--dry-run", out=out, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    figures = summary["figures"]
    assert summary["dry_run"] is True
    for name in ("resnet50", "lite0"):
        assert set(figures[name]) >= {"full", "limit", "reference", "ratios"}, figures[name]
        assert figures[name]["full"]["train_images_per_s"] > 0
    assert figures["lite0-files"]["cache"] is False and figures["lite0"]["cache"] is True
    assert {(r["source"], r["augment"], r["workers"]) for r in figures["loader"]["loader"]} == {
        (s, a, w) for s in ("files", "cache") for a in ("per-image", "batch") for w in (0, 1)}
    assert [r["path"] for r in figures["augment"]["augment"]] == ["per-image PIL", "per-image tensor", "batch"]
    assert figures["run"]["steps_done"] == 4 and 0 <= figures["run"]["ood"] <= 1 and figures["run"]["wall_s"] > 0
    assert "skipped" in figures["lite0-compile"]
    markdown = (out / "summary.md").read_text()
    assert markdown.startswith("# droptune GPU check (DRY RUN") and "| ResNet-50, random weights | limit |" in markdown
