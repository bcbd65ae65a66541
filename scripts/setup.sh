#!/usr/bin/env bash
# Create .venv with distopt and every dependency (idempotent; a second run is a no-op check).
# torch is pinned to the CPU build that pip finds locally; an unpinned torch pulls GBs of CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.distopt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[dev]"
  touch "$stamp"
fi
