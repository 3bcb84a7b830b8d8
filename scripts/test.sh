#!/usr/bin/env bash
# The test command: installs everything on a fresh machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
