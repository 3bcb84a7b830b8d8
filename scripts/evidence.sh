#!/usr/bin/env bash
# The evidence sweeps behind docs/results (Office-Caltech-10, Office-31, PACS at convergence), one after the
# other. Resumable: run it again and finished jobs are skipped, interrupted ones resume from last.pt.
# PRESETS picks some of them, in the order given (default: all four, in the order below); a sweep whose run folders
# were lost after its report landed need not run again. Runs kept in docs/results/run-records/<folder> (without
# weights, by `python scripts/run_records.py save`) are put back first, so a new machine trains only the rest.
# The sweeps run from a frozen copy of src/ at one commit, so that work on the code does not change a job's
# identity (its folder name) half-way through a sweep; pass another commit only to start the sweeps afresh.
# pacs-cpu-head runs from the commit that trained the `cpu` study (60a8fd4), whose runs it pairs with; that
# copy predates the preset, so it reads the preset's file from this checkout.
#   bash scripts/evidence.sh [COMMIT]
#   env: SWEEPS (default /work/sweeps), DATA (default ../shared/data), WORKERS (default 2), PYTHON (.venv's),
#        PRESETS (default "officecaltech10-cpu office31-cpu pacs-long-cpu pacs-head-cpu pacs-cpu-head")
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
commit=${1:-1db655b969b475396e58d36fecf6aea37db4df49}   # the commit the sweeps started from
sweeps=$(realpath -m "${SWEEPS:-/work/sweeps}")
data=$(realpath "${DATA:-../shared/data}")
python=${PYTHON:-$repo/.venv/bin/python}
frozen() {  # commit -> its frozen copy of src/, made once
  local copy=$sweeps/.code/$1
  if [ ! -d "$copy/src" ]; then
    mkdir -p "$copy"
    git -C "$repo" archive "$1" src | tar -x -C "$copy"
  fi
  echo "$copy"
}
cd "$(dirname "$sweeps")"   # the presets' cache_dir, sweeps/.image-cache, is relative to here
run() {  # preset (a name or a YAML file), output folder, commit
  echo "== $(date -u +%FT%TZ) $1 -> $sweeps/$2"
  records=$repo/docs/results/run-records/$2   # finished runs kept in the repository (scripts/run_records.py)
  if [ -d "$records" ]; then "$python" "$repo/scripts/run_records.py" restore "$records" "$sweeps/$2"; fi
  PYTHONPATH=$(frozen "$3")/src "$python" -m droptune.cli.main sweep "$1" --data-dir "$data" --output "$sweeps/$2" \
    --workers "${WORKERS:-2}"
}
for preset in ${PRESETS:-officecaltech10-cpu office31-cpu pacs-long-cpu pacs-head-cpu pacs-cpu-head}; do
  case $preset in
    officecaltech10-cpu | office31-cpu | pacs-long-cpu) run "$preset" "$preset" "$commit" ;;
    pacs-head-cpu) run pacs-head-cpu pacs-long-cpu "$commit" ;;   # shares two runs with pacs-long-cpu
    pacs-cpu-head) run "$repo/src/droptune/experiments/presets/pacs-cpu-head.yaml" pacs-cpu-head \
                     60a8fd43a63a0067a8ffa4278d13383d2d879dc8 ;;
    *) echo "evidence.sh: unknown preset '$preset' in PRESETS (expected officecaltech10-cpu, office31-cpu," \
         "pacs-long-cpu, pacs-head-cpu or pacs-cpu-head)" >&2; exit 2 ;;
  esac
done
