"""Fixed-seed fingerprints of a few short runs, to show that a refactor changes no number and no weight.

Trains each case below with the CLI, then hashes what a run folder holds: results.json and metrics.jsonl
without their timing fields, config.yaml, and the tensors and metadata of every .safetensors file. Run it before a
change (`--write before.json`) and after it (`--compare before.json`): any difference is listed by case
and file, and the exit status is 1.

    python scripts/fingerprint.py --write before.json [--data-dir ../shared/data]
    python scripts/fingerprint.py --compare before.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors import safe_open

TIMING_KEYS = {"wall_time_s", "train_images_per_s", "eval_images_per_s", "images_per_s", "elapsed_s"}

DIGITS = ["--dataset", "RotatedDigits", "--test-domain", "0", "--image-size", "32", "--batch-size", "8",
          "--workers", "0", "--head-lr-mult", "10"]
# Every along-run baseline, BatchNorm re-estimation, the probe head start, both selections and both
# holdout/ensemble options: one case each path of the trainer takes.
CASES = {
    "digits-baselines": DIGITS + ["--steps", "24", "--eval-every", "6", "--ensemble-start", "6",
                                  "--average-start", "6", "--ema-decay", "0.9", "--swad", "--no-freeze-bn",
                                  "--bn-steps", "4", "--head-init", "probe", "--seed", "3"],
    "digits-dombed": DIGITS + ["--steps", "12", "--eval-every", "4", "--no-clean-holdout",
                               "--ensemble-start", "4", "--ensemble-outputs", "logits", "--selection", "oracle",
                               "--dropout", "0.5", "--trial-seed", "1"],
    "pacs-short": ["--dataset", "PACS", "--test-domain", "sketch", "--image-size", "48", "--batch-size", "4",
                   "--steps", "6", "--eval-every", "3", "--ensemble-start", "3", "--average-start", "3",
                   "--workers", "0"],
}


def scrub(value, ignored: frozenset = frozenset()):
    """Drop timing fields, which differ between identical runs, and the `ignored` ones."""
    if isinstance(value, dict):
        return {k: scrub(v, ignored) for k, v in value.items() if k not in TIMING_KEYS | ignored}
    if isinstance(value, list):
        return [scrub(v, ignored) for v in value]
    return value


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def weights_digest(path: Path) -> str:
    """Tensors and metadata, less the run's own folder name (a temporary path)."""
    h = hashlib.sha256()
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        if isinstance(meta.get("config"), dict):
            meta["config"].pop("output_dir", None)
        h.update(json.dumps(meta, sort_keys=True).encode())
        for key in sorted(f.keys()):
            h.update(key.encode() + f.get_tensor(key).numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint_folder(run: Path, ignored: frozenset = frozenset()) -> dict[str, str]:
    out = {}
    for path in sorted(run.iterdir()):
        if path.suffix == ".safetensors":
            out[path.name] = weights_digest(path)
        elif path.name == "results.json":
            out[path.name] = digest(json.dumps(scrub(json.loads(path.read_text()), ignored), sort_keys=True).encode())
        elif path.name == "metrics.jsonl":
            rows = [scrub(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
            out[path.name] = digest(json.dumps(rows, sort_keys=True).encode())
        elif path.name == "config.yaml":
            lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("output_dir:")]
            out[path.name] = digest("\n".join(lines).encode())
    return out


def run_case(name: str, args: list[str], data_dir: str, work: Path, ignored: frozenset) -> dict[str, str]:
    out = work / name
    if "PACS" in args and not (Path(data_dir) / "PACS").is_dir():
        return {"skipped": f"no {data_dir}/PACS"}
    cmd = [sys.executable, "-m", "droptune.cli.main", "train", *args, "--data-dir", data_dir,
           "--output-dir", str(out), "--device", "cpu", "--no-progress"]
    print(f"[{name}] {' '.join(cmd[3:])}", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return fingerprint_folder(out, ignored)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="write the fingerprints to this JSON file")
    group.add_argument("--compare", type=Path, help="compare with fingerprints written before")
    parser.add_argument("--data-dir", default=os.environ.get("DROPTUNE_DATA_DIR", "../shared/data"))
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--ignore-fields", nargs="+", default=[], metavar="FIELD",
                        help="results.json fields added since the fingerprints were written (left out of its hash)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prints = {name: run_case(name, CASES[name], args.data_dir, Path(tmp), frozenset(args.ignore_fields))
                  for name in args.cases}
    if args.write:
        args.write.write_text(json.dumps(prints, indent=2) + "\n")
        print(f"wrote {args.write}")
        return 0
    before = json.loads(args.compare.read_text())
    differences = [f"{case}/{name}: {before.get(case, {}).get(name)} -> {value}"
                   for case, files in prints.items() for name, value in files.items()
                   if before.get(case, {}).get(name) != value]
    differences += [f"{case}/{name}: missing now" for case, files in before.items() if case in prints
                    for name in files if name not in prints[case]]
    print("\n".join(differences) if differences else f"identical: {', '.join(prints)}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
