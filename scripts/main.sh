#!/usr/bin/env bash
# The main job: set up, then run a real multi-objective search on an embedded local Ray
# (the mixed-symmetry task, 2 workers, about a minute on 2 cores) and print the Pareto front.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/distopt run searchspaces/studies/quickstart.yaml "$@"
