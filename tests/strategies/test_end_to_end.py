"""Every model-based strategy through Ray: asynchronous workers, a constraint, then a resume."""

from __future__ import annotations

import math

import pytest
from strategy_helpers import FAST_OPTIONS

import distopt
from distopt.examples import two_bowls

pytestmark = pytest.mark.slow

SPACE = {"x": distopt.Float(-0.5, 1.5), "y": distopt.Float(-1.0, 1.0), "epochs": 1}
OBJECTIVES = {"f1": "min", "f2": "min"}
#: ``g = x``: the right half of the Pareto set (x in [0, 1]) is infeasible.
CONSTRAINTS = {"g": ("<=", 0.5)}


def study(name: str, store: object) -> distopt.Study:
    return distopt.Study(SPACE, OBJECTIVES, CONSTRAINTS,
                         strategy={"name": name, "options": FAST_OPTIONS[name]},
                         store=store, seed=0)


@pytest.mark.parametrize("name", ["bayes", "pareto", "tpe"])
def test_two_workers_a_constraint_and_a_resume(name: str, ray_local, tmp_path) -> None:
    reader = study(name, tmp_path / "store").optimize(two_bowls, budget=14, workers=2)
    trials = reader.trials()
    assert trials.num_rows == 14 and set(trials["status"].to_pylist()) == {"COMPLETE"}
    front = reader.pareto_front()
    assert front.num_rows >= 1 and max(front["g"].to_pylist()) <= 0.5
    # Resuming rebuilds the strategy from the stored rows: it goes on to the new budget and
    # proposes nothing it already ran.
    reader = study(name, tmp_path / "store").optimize(two_bowls, budget=20, workers=2)
    trials = reader.trials()
    assert trials.num_rows == 20 and len(set(trials["trial_id"].to_pylist())) == 20
    points = list(zip(trials["config/x"].to_pylist(), trials["config/y"].to_pylist(), strict=True))
    assert len(set(points)) == 20
    assert math.isfinite(reader.hypervolume())
