"""TrialWorker.stop and distopt.report's TrialPruned, without Ray."""

from __future__ import annotations

import threading

import pytest

import distopt
from distopt._worker import TrialWorker
from distopt.store._schema import RESERVED


def make_objective(stopped_at: threading.Event, go_on: threading.Event):
    def objective(config):
        for step in range(100):
            distopt.report(step=step, loss=1.0 / (step + 1))
            if step % 5 == 0:
                distopt.report(step=step, slow_metric=float(step))  # every 5th step only
            if step == 7:
                stopped_at.set()
                go_on.wait(5)     # the driver's stop arrives while step 7 runs
        return {"loss": 0.0}

    return objective


def test_stop_prunes_at_the_next_report_with_the_latest_value_of_each_metric():
    reached, go_on = threading.Event(), threading.Event()
    worker = TrialWorker(make_objective(reached, go_on), ["loss"], RESERVED, "w")
    result = {}
    thread = threading.Thread(target=lambda: result.update(worker.run_one(3, {}, 1)))
    thread.start()
    assert reached.wait(5)
    assert worker.stop(99) is False          # not the running trial
    assert worker.stop(3) is True
    go_on.set()
    thread.join(5)
    assert result["status"] == "PRUNED"
    assert "stopped early" in result["error"]
    # The next report (step 8) raised; its row is kept, and slow_metric keeps its step-5 value.
    assert result["metrics"] == {"loss": pytest.approx(1 / 9), "slow_metric": 5.0}
    assert [r["step"] for r in result["curves"]][-1] == 8
    assert worker.stop(3) is False           # the trial has ended


def test_should_stop_and_report_outside_a_trial():
    assert distopt.should_stop() is False
    distopt.report(step=0, loss=1.0)          # no trial: never raises
    with pytest.raises(distopt.TrialPruned):
        raise distopt.TrialPruned("importable from distopt")
