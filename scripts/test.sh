#!/usr/bin/env bash
# The test command: set up, then run the whole test suite (a real local Ray is started once).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider --timeout=600 "$@"
