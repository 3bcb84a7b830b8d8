#!/usr/bin/env bash
# The evidence sweeps behind docs/results (Office-Caltech-10, Office-31, PACS at convergence), one after the
# other. Resumable: run it again and finished jobs are skipped, interrupted ones resume from last.pt.
# PRESETS picks some of them, in the order given (default: all four, in the order below); a sweep whose run folders
# were lost after its report landed need not run again. Runs kept in docs/results/run-records/<folder> (without
# weights, by `python scripts/run_records.py save`) are put back first, so a new machine trains only the rest.
# The sweeps run from a frozen copy of src/ at one commit, so that work on the code does not change a job's
# identity (its folder name) half-way through a sweep; pass another commit only to start the sweeps afresh.
#   bash scripts/evidence.sh [COMMIT]
#   env: SWEEPS (default /work/sweeps), DATA (default ../shared/data), WORKERS (default 2), PYTHON (.venv's),
#        PRESETS (default "officecaltech10-cpu office31-cpu pacs-long-cpu pacs-head-cpu")
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
commit=${1:-1db655b969b475396e58d36fecf6aea37db4df49}   # the commit the sweeps started from
sweeps=$(realpath -m "${SWEEPS:-/work/sweeps}")
data=$(realpath "${DATA:-../shared/data}")
python=${PYTHON:-$repo/.venv/bin/python}
frozen=$sweeps/.code/$commit
if [ ! -d "$frozen/src" ]; then
  mkdir -p "$frozen"
  git archive "$commit" src | tar -x -C "$frozen"
fi
cd "$(dirname "$sweeps")"   # the presets' cache_dir, sweeps/.image-cache, is relative to here
run() {  # preset, output folder
  echo "== $(date -u +%FT%TZ) $1 -> $sweeps/$2"
  records=$repo/docs/results/run-records/$2   # finished runs kept in the repository (scripts/run_records.py)
  if [ -d "$records" ]; then "$python" "$repo/scripts/run_records.py" restore "$records" "$sweeps/$2"; fi
  PYTHONPATH=$frozen/src "$python" -m droptune.cli.main sweep "$1" --data-dir "$data" --output "$sweeps/$2" \
    --workers "${WORKERS:-2}"
}
for preset in ${PRESETS:-officecaltech10-cpu office31-cpu pacs-long-cpu pacs-head-cpu}; do
  case $preset in
    officecaltech10-cpu | office31-cpu | pacs-long-cpu) run "$preset" "$preset" ;;
    pacs-head-cpu) run pacs-head-cpu pacs-long-cpu ;;   # shares two runs with pacs-long-cpu
    *) echo "evidence.sh: unknown preset '$preset' in PRESETS (expected officecaltech10-cpu, office31-cpu," \
         "pacs-long-cpu or pacs-head-cpu)" >&2; exit 2 ;;
  esac
done
