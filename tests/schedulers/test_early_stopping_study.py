"""MO-ASHA inside real searches (session Ray): trials stop early, are recorded PRUNED with their
last reported metrics, and the scheduler survives a resume and a study file."""

from __future__ import annotations

import time
from collections import defaultdict

import pyarrow.compute as pc
import pytest

import distopt
from distopt.schedulers import MOASHA

EPOCHS = 12


def make_objective(epochs=EPOCHS, sleep=0.08):
    """Curves that improve with epochs; ``y`` makes both objectives worse (dominated trials)."""

    def objective(config):
        x, y = config["x"], config["y"]
        for epoch in range(epochs):
            decay = 1.0 / (epoch + 1)
            distopt.report(step=epoch, f1=x + y + decay, f2=1 - x + y + decay)
            time.sleep(sleep)
        return {"f1": x + y, "f2": 1 - x + y}

    return objective


def space():
    return {"x": distopt.Float(0.0, 1.0), "y": distopt.Float(0.0, 1.0)}


@pytest.fixture(scope="module")
def pruned_run(ray_local, tmp_path_factory):
    path = tmp_path_factory.mktemp("moasha") / "store"
    scheduler = MOASHA(grace_period=2, reduction_factor=2)
    study = distopt.Study(space(), {"f1": "min", "f2": "min"}, store=path, seed=3)
    reader = study.optimize(make_objective(), budget=16, workers=2, scheduler=scheduler)
    return reader, scheduler


def test_stopped_trials_are_pruned_with_their_last_reported_metrics(pruned_run):
    reader, scheduler = pruned_run
    trials = reader.trials()
    status = dict(zip(trials["trial_id"].to_pylist(), trials["status"].to_pylist(), strict=False))
    assert len(status) == 16 and set(status.values()) == {"COMPLETE", "PRUNED"}
    pruned = {t for t, s in status.items() if s == "PRUNED"}
    assert len(pruned) >= 4
    assert pruned == set(scheduler.stopped)          # exactly the trials the scheduler stopped
    curves = reader.curves()
    for row in trials.to_pylist():
        curve = curves.filter(pc.equal(curves["trial_id"], row["trial_id"])).to_pylist()
        if row["status"] == "COMPLETE":
            assert [c["step"] for c in curve] == list(range(EPOCHS))
            continue
        steps = [c["step"] for c in curve]
        # Stopped at its next report after the decision (a decision that lands during the last
        # epoch still stops it there, without its return value).
        assert steps == list(range(len(steps))) and len(steps) <= EPOCHS
        assert steps[-1] >= scheduler.stopped[row["trial_id"]]           # at or after its rung
        assert (row["f1"], row["f2"]) == (curve[-1]["f1"], curve[-1]["f2"])
        assert "stopped early" in row["error"]
    # Work was saved: fewer epochs ran than 16 full trials.
    assert curves.num_rows < 16 * EPOCHS


def test_pruned_trials_stay_off_the_front(pruned_run):
    reader, _ = pruned_run
    front = reader.pareto_front()
    assert front.num_rows >= 1
    assert set(front["status"].to_pylist()) == {"COMPLETE"}
    assert reader.metadata["run"]["scheduler"]["name"] == "moasha"


def test_one_trial_at_a_time_per_worker(pruned_run):
    """``run`` calls are serialised per actor (queued trials wait): no overlap on one worker."""
    reader, _ = pruned_run
    spans = defaultdict(list)
    for row in reader.trials().to_pylist():
        spans[row["worker"]].append((row["start_time"], row["end_time"]))
    for worker, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            assert start >= end, (worker, intervals)


def test_resume_replays_the_rungs(pruned_run, tmp_path):
    reader, first = pruned_run
    scheduler = MOASHA(grace_period=2, reduction_factor=2)
    study = distopt.Study(space(), {"f1": "min", "f2": "min"}, store=reader.path, seed=3)
    again = study.optimize(make_objective(), budget=18, workers=2, scheduler=scheduler)
    assert again.trials().num_rows == 18
    # Every trial reaches the first rung (step 2): the 16 replayed ones and the 2 new ones.
    assert scheduler.rung_sizes[2] == 18
    # The stored PRUNED trials are stopped again in the rebuilt state; higher rungs are rebuilt.
    pruned = {r.trial_id for r in reader.results() if r.status == "PRUNED"}
    assert pruned <= set(scheduler.stopped)
    assert all(scheduler.rung_sizes.get(m, 0) >= n for m, n in first.rung_sizes.items())


def test_scheduler_from_a_study_file_and_kept_by_resume(ray_local, tmp_path):
    from distopt import cli
    from distopt._studyfile import study_from_dict

    store = tmp_path / "yaml-store"
    study_file = study_from_dict({
        "objective": "distopt.examples:two_bowls",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0},
                  "y": {"type": "float", "low": -1.0, "high": 1.0}, "epochs": 10, "sleep": 0.1},
        "objectives": {"f1": "min", "f2": "min"},
        "scheduler": {"name": "moasha", "options": {"metrics": {"train_loss": "min"},
                                                    "grace_period": 1, "reduction_factor": 3}},
        "budget": 9, "workers": 2, "store": str(store)})
    reader = study_file.optimize()
    statuses = reader.trials()["status"].to_pylist()
    assert len(statuses) == 9 and "PRUNED" in statuses and "COMPLETE" in statuses
    assert cli.main(["resume", str(store), "--budget", "12", "--no-progress"]) == 0
    resumed = distopt.open_store(store)
    assert resumed.trials().num_rows == 12
    assert resumed.metadata["run"]["scheduler"]["options"]["metrics"] == {"train_loss": "min"}
