"""MO-ASHA decisions, without Ray: rungs, non-dominated ranking, tie-breaks, replay, specs."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

import distopt
from distopt.schedulers import MOASHA, crowding_distance, make_scheduler, number_better


def problem(objectives=None):
    return distopt.Problem({"x": distopt.Float(0, 1)}, objectives or {"f1": "min", "f2": "min"})


def bound(**kwargs) -> MOASHA:
    scheduler = MOASHA(**kwargs)
    scheduler.bind(problem(kwargs.pop("_objectives", None)))
    return scheduler


def test_rungs_are_geometric_and_capped():
    s = bound(grace_period=1, reduction_factor=3)
    assert [s.milestone(k) for k in range(4)] == [1, 3, 9, 27]
    capped = bound(grace_period=2, reduction_factor=2, max_step=10)
    assert [capped.milestone(k) for k in range(4)] == [2, 4, 8, None]


@pytest.mark.parametrize("kwargs, field", [
    ({"reduction_factor": 1}, "reduction_factor"),
    ({"grace_period": -1}, "grace_period"),
    ({"grace_period": 0}, "grace_period"),   # every rung at step 0: on_report never returned
    ({"grace_period": 4, "max_step": 4}, "max_step"),
    ({"tie_break": "random"}, "tie_break"),
    ({"metrics": {"val": "lowest"}}, "metrics.val"),
])
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(distopt.ConfigError, match=rf"^scheduler\.options\.{field}: "):
        MOASHA(**kwargs)


def test_metric_list_must_name_objectives():
    with pytest.raises(distopt.ConfigError, match="not objectives"):
        MOASHA(metrics=["val_mse"]).bind(problem())
    s = MOASHA(metrics=["f2"])
    s.bind(problem({"f1": "min", "f2": "max"}))
    assert s.metrics == {"f2": "max"}


def test_one_objective_reduces_to_asha():
    """Arrivals at rung 1 with eta=3: a trial goes on iff fewer than ceil(n/3) are better."""
    s = bound(metrics={"loss": "min"}, grace_period=1, reduction_factor=3)
    losses = [5.0, 6.0, 1.0, 7.0, 0.5, 3.0]
    decisions = [s.on_report(i, 1, {"loss": v}) for i, v in enumerate(losses)]
    # n=1 keep; n=2 (6 > 5) stop; n=3 (1 best) keep; n=4 quota 2, 3 better: stop;
    # n=5 (0.5 best) keep; n=6 quota 2, 3 better (0.5, 1, ...): stop.
    assert decisions == [False, True, False, True, False, True]
    assert s.stopped == {1: 1, 3: 1, 5: 1}
    assert s.rung_sizes == {1: 6}


def test_no_decision_before_the_grace_period_and_maximised_metrics():
    s = bound(metrics={"acc": "max"}, grace_period=3, reduction_factor=2)
    assert not s.on_report(0, 0, {"acc": 0.9})
    assert not s.on_report(1, 2, {"acc": 0.1})     # below the first rung: never stopped
    assert not s.on_report(0, 3, {"acc": 0.9})
    assert s.on_report(1, 3, {"acc": 0.1})         # lower accuracy is worse when maximising
    assert not s.on_report(2, 3, {"acc": 0.95})


def test_a_trade_off_point_survives_where_single_objective_asha_stops_it():
    """The new trial is the worst in f1 but the best in f2: on the rung's front, so it goes on;
    ranking on f1 alone would stop it."""
    reports = [(0, {"f1": 1.0, "f2": 5.0}), (1, {"f1": 2.0, "f2": 4.0}),
               (2, {"f1": 3.0, "f2": 6.0}), (3, {"f1": 4.0, "f2": 0.5})]
    multi = bound(grace_period=1, reduction_factor=2)
    single = bound(metrics={"f1": "min"}, grace_period=1, reduction_factor=2)
    multi_stops = [multi.on_report(t, 1, m) for t, m in reports]
    single_stops = [single.on_report(t, 1, m) for t, m in reports]
    assert multi_stops == [False, False, True, False]   # trial 2 is dominated by 0 and 1
    assert single_stops[3] is True and multi_stops[3] is False


def test_crowding_breaks_ties_inside_one_front():
    front = np.array([[0.0, 4.0], [1.0, 3.0], [1.1, 2.9], [4.0, 0.0]])
    distance = crowding_distance(front)
    assert math.isinf(distance[0]) and math.isinf(distance[3])
    # (1, 3) is hemmed in by (0, 4) and (1.1, 2.9): crowding 0.275 + 0.275; (1.1, 2.9) has
    # room on both sides: 0.75 + 0.75. Extremes (infinite distance) beat both.
    assert distance[1] == pytest.approx(0.55) and distance[2] == pytest.approx(1.5)
    assert number_better(front, 0) == 0
    assert number_better(front, 2) == 2
    assert number_better(front, 1) == 3
    # A dominated point counts every front member as better.
    with_dominated = np.vstack([front, [[5.0, 5.0]]])
    assert number_better(with_dominated, 4) == 4


def test_hypervolume_contribution_breaks_ties():
    # Same front; the knee (1, 1) adds far more hypervolume than (2.9, 0.2) or (0.2, 2.9).
    front = np.array([[0.2, 2.9], [1.0, 1.0], [2.9, 0.2]])
    assert number_better(front, 1, tie_break="hypervolume") == 0
    assert number_better(front, 0, tie_break="hypervolume") >= 1
    assert number_better(front, 1, tie_break="crowding") == 2  # extremes: infinite distance


def test_metrics_reported_in_separate_calls_are_combined():
    s = bound(grace_period=2, reduction_factor=2)
    assert not s.on_report(0, 0, {"f1": 1.0})
    assert not s.on_report(0, 2, {"f2": 1.0})       # rung 2: point (1, 1) from both rows
    assert not s.on_report(1, 1, {"f2": 2.0})
    assert s.on_report(1, 2, {"f1": 2.0})           # (2, 2) is dominated by (1, 1): stop
    assert s.on_report(1, 3, {"f1": 0.0})           # once stopped, always stopped
    assert not s.on_report(2, 2, {"loss": 0.0})     # no ranked metric in the row: ignored
    assert s.rung_sizes == {2: 2}


def test_reports_without_a_ranked_metric_say_so_once(caplog):
    """The default metrics are the objectives, which an objective often returns only at the
    end: then no trial could ever be stopped, and the run used to say nothing."""
    s = bound(grace_period=1, reduction_factor=2)      # ranks f1 and f2
    with caplog.at_level(logging.WARNING, logger="distopt"):
        assert not s.on_report(0, 0, {"val_mse": 0.5})  # before the first milestone: quiet
        for step in (1, 2):
            assert not s.on_report(0, step, {"val_mse": 0.5})
        assert not s.on_report(1, 1, {"val_mse": 0.4})
    assert [r.getMessage() for r in caplog.records] == [
        "distopt: moasha ranks trials on ['f1', 'f2'], but trial 0 reported up to step 1 without "
        "them (val_mse), so no trial can be stopped; set the scheduler's metrics to what is "
        "reported each step, e.g. metrics={'val_mse': 'min'}"]
    caplog.clear()
    ranked = bound(grace_period=1, reduction_factor=2)
    with caplog.at_level(logging.WARNING, logger="distopt"):
        ranked.on_report(0, 1, {"f1": 1.0, "f2": 2.0})
        ranked.on_report(1, 3, {"loss": 0.0})           # rows of other metrics: fine
    assert caplog.records == []


def test_a_rung_reached_without_one_ranked_metric_says_so_once(caplog):
    """With one of two metrics never reported per step (an equivariance error returned only at
    the end), no trial could be stopped, and the run said nothing (only the case of none
    reported was caught)."""
    s = bound(grace_period=1, reduction_factor=2)      # ranks f1 and f2
    with caplog.at_level(logging.WARNING, logger="distopt"):
        for trial in range(4):
            for step in (1, 2, 3):
                assert not s.on_report(trial, step, {"f1": float(trial)})   # never stopped
    assert [r.getMessage() for r in caplog.records] == [
        "distopt: moasha ranks trials on ['f1', 'f2'], but trial 0 reached the rung at step 1 "
        "without reporting f2, so it cannot be ranked there and goes on; report it at least once "
        "per rung, or leave it out of the scheduler's metrics"]
    caplog.clear()
    every_other = bound(grace_period=2, reduction_factor=2)   # f2 every 2nd step: ranked
    with caplog.at_level(logging.WARNING, logger="distopt"):
        for trial in range(4):
            for step in (1, 2, 3, 4):
                every_other.on_report(trial, step, {"f1": float(trial), **(
                    {"f2": float(-trial)} if step % 2 == 0 else {})})
    assert caplog.records == []


def test_nan_ranks_last():
    s = bound(grace_period=1, reduction_factor=2)
    assert not s.on_report(0, 1, {"f1": 1.0, "f2": 1.0})
    assert s.on_report(1, 1, {"f1": math.nan, "f2": 0.0})


def test_replay_rebuilds_the_rungs_from_ended_trials_only():
    rows = [{"trial_id": t, "step": step, "time": 0.0, "f1": v, "f2": v}
            for t, v in enumerate([1.0, 2.0, 3.0]) for step in range(5)]
    s = bound(grace_period=1, reduction_factor=2)
    s.replay(rows, {0: "COMPLETE", 1: "PRUNED"})      # trial 2 was in flight: it runs again
    # Each ended trial is recorded at every rung its stored reports reached (no decisions), and
    # the PRUNED one is marked stopped at its last rung.
    assert s.rung_sizes == {1: 2, 2: 2, 4: 2}
    assert s.stopped == {1: 4}
    assert s.on_report(1, 5, {"f1": 0.0, "f2": 0.0})   # still stopped
    assert not s.on_report(2, 1, {"f1": 0.5, "f2": 0.5})  # trial 2 decided afresh


def test_specs_round_trip():
    s = make_scheduler({"name": "moasha", "options": {"grace_period": 2, "reduction_factor": 4,
                                                      "metrics": {"val": "min"}}})
    assert isinstance(s, MOASHA) and s.grace_period == 2 and s.reduction_factor == 4
    again = make_scheduler(s.to_dict())
    assert again.to_dict() == s.to_dict()
    assert isinstance(make_scheduler("moasha"), MOASHA)
    assert make_scheduler(None) is None
    with pytest.raises(distopt.ConfigError, match="unknown scheduler"):
        make_scheduler("hyperband")
    with pytest.raises(distopt.ConfigError, match="scheduler.options"):
        make_scheduler({"name": "moasha", "options": {"eta": 3}})
