#!/usr/bin/env bash
# The main job, offline: installs droptune, then compares p=0 with p=0.9 on the built-in RotatedDigits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/droptune compare "$@"
