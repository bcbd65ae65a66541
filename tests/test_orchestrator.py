"""The loop end to end on the session's local Ray: cohorts, suggestions computed in the
background, enqueued configurations, the budget, the elastic start."""

from __future__ import annotations

import logging
import re
import time

import pytest

import distopt
from distopt import Float, Study
from distopt.examples import two_bowls
from distopt.schedulers import Scheduler

SPACE = {"x": Float(0.0, 1.0), "steps": 3, "pause": 0.0, "fail_above": 0.8}
OBJECTIVES = {"f1": "min", "f2": "min"}


def _rows(reader):
    return {r["trial_id"]: r for r in reader.trials().to_pylist()}


def test_cohort_members_are_full_trials(ray_local, tmp_path):
    from loop_objectives import Paced, bowls_cohort

    strategy = Paced(seed=0)
    reader = Study(SPACE, OBJECTIVES, store=tmp_path / "s", strategy=strategy).optimize(
        bowls_cohort, budget=12, workers=2, cohort_size=4)
    rows = _rows(reader)
    assert sorted(rows) == list(range(12))
    for row in rows.values():
        if row["config/x"] > 0.8:  # fails alone, with its own error
            assert row["status"] == "FAILED" and "diverged" in row["error"], row
        else:
            assert row["status"] == "COMPLETE" and row["f1"] == pytest.approx(row["config/x"] ** 2)
    assert {r["status"] for r in rows.values()} == {"COMPLETE", "FAILED"}
    curves = reader.curves().to_pylist()
    for trial_id, row in rows.items():  # one curve per member, with its own values
        mine = [c for c in curves if c["trial_id"] == trial_id]
        assert [c["step"] for c in mine] == [0, 1, 2]
        assert mine[1]["loss"] == pytest.approx(row["config/x"] / 2)
    # members of one call share its start: cohorts of 4, the tail shared by the free workers
    starts = {}
    for row in rows.values():
        starts.setdefault((row["worker"], row["start_time"]), []).append(row["trial_id"])
    sizes = sorted(len(ids) for ids in starts.values())
    assert sizes[-2:] == [4, 4] and len(sizes) <= 4, sizes
    # the pace counts members as trials running at once: 2 workers x 4 members
    assert max(at_once for _, at_once in strategy.paces) == 8, strategy.paces


class StopOdd(Scheduler):
    """Stops every odd trial once it has reported step 1."""

    name = "stop-odd"
    drain_interval = 0.05

    def on_report(self, trial_id, step, metrics):
        return trial_id % 2 == 1 and step >= 1


def test_a_stopped_cohort_member_is_pruned_while_the_others_go_on(ray_local, tmp_path):
    from loop_objectives import bowls_cohort

    space = {**SPACE, "steps": 12, "pause": 0.15, "fail_above": 2.0}
    reader = Study(space, OBJECTIVES, store=tmp_path / "s", seed=0).optimize(
        bowls_cohort, budget=4, workers=1, cohort_size=4, scheduler=StopOdd())
    rows = _rows(reader)
    assert [rows[t]["status"] for t in range(4)] == ["COMPLETE", "PRUNED"] * 2
    curves = reader.curves().to_pylist()
    for trial_id in (1, 3):  # masked: its curve stops early, its metrics are its last report
        steps = [c["step"] for c in curves if c["trial_id"] == trial_id]
        assert 1 <= max(steps) < 11
        last = rows[trial_id]["config/x"] / (max(steps) + 1)
        assert rows[trial_id]["loss"] == pytest.approx(last)
    for trial_id in (0, 2):
        assert rows[trial_id]["steps_seen"] == 12


def test_resume_with_a_cohort_in_flight_reruns_it_once(ray_local, tmp_path):
    from loop_objectives import bowls_cohort

    path = tmp_path / "s"
    study = Study(SPACE, OBJECTIVES, store=path, seed=0)
    study.optimize(bowls_cohort, budget=4, workers=1, cohort_size=4)
    from distopt.store import StoreWriter
    from distopt.strategies import RandomStrategy

    strategy = RandomStrategy(seed=5)
    strategy.bind(study.problem)
    lost = strategy.ask(4)  # a cohort handed out when the driver died
    with StoreWriter(path, study.metadata({"budget": 8})) as writer:
        writer.add_dispatched([{"trial_id": 4 + i, "attempt": 1, "time": time.time(),
                                "config": {**SPACE, **c}} for i, c in enumerate(lost)])
    reader = Study(SPACE, OBJECTIVES, store=path, seed=0).optimize(
        bowls_cohort, budget=10, workers=1, cohort_size=4)
    rows = _rows(reader)
    assert sorted(rows) == list(range(10))  # budget exact, no duplicate
    for i, config in enumerate(lost):
        assert rows[4 + i]["config/x"] == pytest.approx(config["x"])
        assert rows[4 + i]["attempts"] == 2  # the run lost with the driver counts


def test_a_slow_strategy_does_not_leave_workers_idle(ray_local, tmp_path):
    from loop_objectives import SlowAsk, quick

    strategy = SlowAsk(seed=0, delay=0.6)
    space = {"x": Float(0.0, 1.0), "sleep": 0.05}
    reader = Study(space, OBJECTIVES, store=tmp_path / "s", strategy=strategy).optimize(
        quick, budget=16, workers=2)
    rows = _rows(reader)
    assert len(rows) == 16
    asks = strategy.asks[1:]  # after the first answer, trials start while the strategy thinks
    started_while_thinking = [r for r in rows.values()
                              if any(a < r["start_time"].timestamp() < b for a, b in asks)]
    assert started_while_thinking, asks
    xs = [r["config/x"] for r in rows.values()]
    assert len(set(xs)) == len(xs)  # interim points never repeat a pending one
    # the strategy is told the pace it can afford to think at: trials of >= 0.05 s, 2 workers
    assert strategy.paces and all(workers == 2 for _, workers in strategy.paces)
    assert all(0.05 <= seconds < 5 for seconds, _ in strategy.paces), strategy.paces


def test_enqueued_configurations_run_first(ray_local, tmp_path):
    from loop_objectives import quick

    study = Study({"x": Float(0.0, 1.0)}, OBJECTIVES, store=tmp_path / "s", seed=0)
    study.enqueue({"x": 0.125})
    study.enqueue({"x": 0.5})
    with pytest.raises(distopt.ConfigError, match=r"enqueue\.x"):
        study.enqueue({"x": 3.0})
    # a typo reached the objective and was never stored; a constant is the space's
    with pytest.raises(distopt.ConfigError, match=r"^enqueue\.xx: is not a parameter of the "
                                                  r"space \(did you mean 'x'\?\); give x$"):
        study.enqueue({"x": 0.5, "xx": 1})
    constant = Study({"x": Float(0.0, 1.0), "epochs": 3}, OBJECTIVES, store=tmp_path / "c")
    constant.enqueue({"x": 0.5, "epochs": 3})
    with pytest.raises(distopt.ConfigError, match=r"^enqueue\.epochs: is a constant of the "
                                                  r"space \(3\); got 4"):
        constant.enqueue({"x": 0.5, "epochs": 4})
    reader = study.optimize(quick, budget=5, workers=1)
    rows = _rows(reader)
    assert [rows[0]["config/x"], rows[1]["config/x"]] == [0.125, 0.5]
    again = study.optimize(quick, budget=7, workers=1)  # already stored: not run twice
    assert [r["config/x"] for r in again.trials().to_pylist()].count(0.5) == 1


def test_a_finished_store_has_nothing_to_run(ray_local, tmp_path, capsys, caplog):
    from loop_objectives import quick

    study = Study({"x": Float(0.0, 1.0)}, OBJECTIVES, store=tmp_path / "s", seed=0)
    study.optimize(quick, budget=3, workers=1)
    capsys.readouterr()
    (tmp_path / "s" / "trials.parquet").unlink()  # as a search killed outright leaves a store
    reader = study.optimize(quick, budget=3, workers=1, progress=True)
    assert "nothing to run (3/3 done; raise --budget to continue)" in capsys.readouterr().err
    assert reader.trials().num_rows == 3
    assert (tmp_path / "s" / "trials.parquet").exists()  # published again for every tool
    caplog.set_level(logging.WARNING, logger="distopt")
    # another objective on this store: allowed, and said
    Study({"x": Float(0.0, 1.0)}, OBJECTIVES, store=tmp_path / "s", seed=0).optimize(
        two_bowls, budget=3, workers=1)
    assert ("was written by objective loop_objectives:quick and this run's is "
            "distopt.examples:two_bowls" in caplog.text), caplog.text


def test_workers_beyond_capacity_wait_and_the_search_runs(ray_local, tmp_path, caplog):
    """The one-GPU case with CPUs: 3 workers of 3 CPUs on a 4-CPU Ray. One fits: it runs every
    trial, the others wait (killed at the end), and a warning says so."""
    from loop_objectives import quick

    caplog.set_level(logging.WARNING, logger="distopt")
    reader = Study({"x": Float(0.0, 1.0)}, OBJECTIVES, store=tmp_path / "s", seed=0).optimize(
        quick, budget=4, workers=3, resources_per_trial={"cpu": 3})
    assert reader.trials().num_rows == 4
    assert {r["status"] for r in reader.trials().to_pylist()} == {"COMPLETE"}
    # 4 CPUs, or fewer while actors of an earlier test are still being torn down (then none
    # may fit at that moment; the search runs once they are gone, as asserted above)
    assert re.search(r"3 workers x 3 CPU asked, [234] CPU now: [01] runs?, [23] wait for "
                     r"capacity", caplog.text), caplog.text


def test_workers_are_capped_at_the_budget(ray_local, tmp_path):
    from loop_objectives import quick

    reader = Study({"x": Float(0.0, 1.0)}, OBJECTIVES, store=tmp_path / "s", seed=0).optimize(
        quick, budget=2, workers=16)
    assert {r["worker"] for r in reader.trials().to_pylist()} <= {"worker-0", "worker-1"}
