"""The reference point has one owner: recorded once with its source, resumed exactly; an inferred
point is never handed to the strategy as if the user had given it."""

from __future__ import annotations

import pytest

import distopt
from distopt import Float, Study, cli
from distopt._front import INFERRED, USER, FrontTracker, user_ref_point
from distopt.strategies import make_strategy

OBJECTIVES = {"f1": "min", "f2": "min"}


def test_the_point_is_inferred_once_after_the_initial_design():
    recorded = []
    problem = distopt.Problem({"x": Float(0.0, 1.0)}, OBJECTIVES)
    front = FrontTracker(problem, 10, ref_point=None, record=lambda **kw: recorded.append(kw))
    for x in (0.1, 0.9, 0.5):
        front.note("COMPLETE", {"f1": x, "f2": 1 - x})
    assert recorded == [] and front.summary()[1] is None      # 2(d+1) = 4 not reached
    front.note("FAILED", {})
    front.note("COMPLETE", {"f1": 0.3, "f2": 0.8})
    assert len(recorded) == 1 and recorded[0]["ref_point_source"] == INFERRED
    ref = recorded[0]["ref_point"]
    assert ref["f1"] == pytest.approx(0.9 + 0.08) and ref["f2"] == pytest.approx(0.9 + 0.08)
    front.note("COMPLETE", {"f1": 0.05, "f2": 0.05})            # dominates every other point
    assert len(recorded) == 1                                  # fixed: never moved again
    size, hv = front.summary()
    assert size == 1 and hv == pytest.approx((ref["f1"] - 0.05) * (ref["f2"] - 0.05))


def test_user_ref_point_reads_the_source():
    assert user_ref_point({"ref_point": {"f1": 1.0}, "ref_point_source": USER}) == {"f1": 1.0}
    assert user_ref_point({"ref_point": {"f1": 1.0}, "ref_point_source": INFERRED}) is None
    assert user_ref_point({}) is None


def test_a_resumed_bayes_study_keeps_inferring_its_point(ray_local, tmp_path, monkeypatch):
    from distopt.strategies._bayes import BayesStrategy

    path = tmp_path / "s"
    study = Study({"x": Float(0.0, 1.0)}, OBJECTIVES, store=path, seed=0,
                  strategy={"name": "bayes", "options": {"n_initial": 4}})
    study.objective_spec = "distopt.examples:two_bowls"
    study.optimize(_bowls, budget=5, workers=1)
    metadata = distopt.open_store(path).metadata
    assert metadata["ref_point_source"] == INFERRED and metadata["ref_point"] is not None

    offered = []
    monkeypatch.setattr(BayesStrategy, "offer_ref_point",
                        lambda self, ref: offered.append(ref))
    assert cli.main(["resume", str(path), "--budget", "6", "--no-progress"]) == 0
    assert offered == []                      # the recorded point was not imposed on bayes
    after = distopt.open_store(path).metadata
    assert after["ref_point"] == metadata["ref_point"]  # and the store kept it exactly
    assert after["ref_point_source"] == INFERRED


def test_a_user_point_is_offered_again_on_resume(ray_local, tmp_path, monkeypatch):
    from distopt.strategies._bayes import BayesStrategy

    path = tmp_path / "s"
    given = {"f1": 2.0, "f2": 2.0}
    study = Study({"x": Float(0.0, 1.0)}, OBJECTIVES, store=path, seed=0, ref_point=given,
                  strategy={"name": "bayes", "options": {"n_initial": 4}})
    study.objective_spec = "distopt.examples:two_bowls"
    study.optimize(_bowls, budget=4, workers=1)
    offered = []
    monkeypatch.setattr(BayesStrategy, "offer_ref_point",
                        lambda self, ref: offered.append(ref))
    assert cli.main(["resume", str(path), "--budget", "5", "--no-progress"]) == 0
    assert offered == [given]


def test_a_strategy_instance_resumes_with_its_options(ray_local, tmp_path):
    from loop_objectives import Scaled

    path = tmp_path / "s"
    study = Study({"x": Float(0.0, 1.0)}, OBJECTIVES, store=path, seed=0,
                  strategy=Scaled(scale=0.25))
    study.objective_spec = "distopt.examples:two_bowls"
    study.optimize(_bowls, budget=3, workers=1)
    recorded = distopt.open_store(path).metadata["strategy"]
    assert recorded == {"name": "loop_objectives:Scaled", "options": {"scale": 0.25}}
    rebuilt = make_strategy(recorded)
    assert isinstance(rebuilt, Scaled) and rebuilt.scale == 0.25
    assert cli.main(["resume", str(path), "--budget", "6", "--no-progress"]) == 0
    xs = distopt.open_store(path).trials()["config/x"].to_pylist()
    assert len(xs) == 6 and max(xs) <= 0.25   # the resumed run asked with scale 0.25 too


def _bowls(config):
    from distopt.examples import two_bowls

    return two_bowls(config)
