"""distopt strategies drive a real ``tune.Tuner``; MO-ASHA stops Tune trials on two metrics."""

from __future__ import annotations

import json
import time

import pytest

import distopt
from distopt.strategies import RandomStrategy

tune = pytest.importorskip("ray.tune")

ITERATIONS = 8


def make_trainable():
    """A nested function, so Ray pickles it by value (the test module is not importable on
    the workers)."""

    def trainable(config):
        from ray import tune as tune_

        for iteration in range(1, ITERATIONS + 1):
            decay = 1.0 / iteration
            tune_.report({"f1": config["x"] + config["y"] + decay,
                          "f2": 1.0 - config["x"] + config["y"] + decay,
                          "width": config["width"]})
            time.sleep(0.02)

    return trainable


def space():
    return {"x": distopt.Float(0.0, 1.0), "y": distopt.Float(0.0, 1.0),
            "width": distopt.Int(8, 64, log=True), "act": distopt.Categorical(["relu", "silu"])}


def fit(searcher, tmp_path, scheduler=None, num_samples=8):
    tuner = tune.Tuner(
        make_trainable(),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=num_samples, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="distopt", verbose=0))
    return tuner.fit()


def test_a_distopt_strategy_as_the_tune_searcher(ray_local, tmp_path):
    from distopt.interop.tune import DistoptSearcher

    searcher = DistoptSearcher("random", space(), {"f1": "min", "f2": "min"},
                               {"width": ("<=", 48)}, seed=7)
    grid = fit(searcher, tmp_path)
    assert len(grid) == 8 and not grid.errors
    # Every Tune trial ran a configuration the distopt strategy proposed, in its Sobol order.
    reference = RandomStrategy(seed=7)
    reference.bind(distopt.Problem(space(), {"f1": "min", "f2": "min"}))
    expected = reference.ask(8)
    told = sorted(searcher.results, key=lambda r: r.trial_id)
    assert [r.config for r in told] == expected
    by_tune_id = {searcher.tune_ids[r.trial_id]: r for r in told}
    for result in grid:
        mine = by_tune_id[result.metrics["trial_id"]]
        assert {k: result.config[k] for k in mine.config} == mine.config
        assert result.metrics["f1"] == pytest.approx(mine.metrics["f1"])
        assert mine.status == "COMPLETE" and set(mine.metrics) == {"f1", "f2", "width"}
    # The final metrics are the last iteration's, and the front honours the constraint.
    front = searcher.pareto_front()
    assert front and all(r.metrics["width"] <= 48 for r in front)
    best = grid.get_best_result(metric=searcher.metric, mode=searcher.mode)
    assert best.metrics["f1"] == min(r.metrics["f1"] for r in told)


def test_moasha_stops_tune_trials_on_two_metrics(ray_local, tmp_path):
    from distopt.interop.tune import DistoptSearcher, MOASHAScheduler

    searcher = DistoptSearcher("random", space(), {"f1": "min", "f2": "min"}, seed=1)
    scheduler = MOASHAScheduler(searcher, grace_period=1, reduction_factor=2,
                                max_step=ITERATIONS)   # rungs at iterations 1, 2 and 4
    grid = fit(searcher, tmp_path, scheduler=scheduler, num_samples=10)
    assert len(grid) == 10 and not grid.errors
    iterations = {r.metrics["trial_id"]: r.metrics["training_iteration"] for r in grid}
    stopped = {searcher.tune_ids[n] for n in scheduler.moasha.stopped}
    assert stopped, "MO-ASHA stopped nothing"
    assert all(iterations[t] < ITERATIONS for t in stopped)
    assert all(iterations[t] == ITERATIONS for t in set(iterations) - stopped)
    statuses = {searcher.tune_ids[r.trial_id]: r.status for r in searcher.results}
    assert {t for t, s in statuses.items() if s == "PRUNED"} == stopped
    assert all(r.status == "COMPLETE" for r in searcher.pareto_front())


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_searcher_rejects_a_tune_search_space_and_round_trips_its_state(tmp_path, strategy):
    from distopt.interop.tune import DistoptSearcher

    searcher = DistoptSearcher(strategy, space(), {"f1": "min", "f2": "max"})
    assert searcher.metric == "f1" and searcher.mode == "min"
    assert not searcher.set_search_properties(None, None, {"x": tune.uniform(0, 1)})
    assert searcher.set_search_properties("f2", "max", {"epochs": 3})
    done = searcher.suggest("done")
    searcher.on_trial_complete("done", {"f1": 0.5, "f2": 0.25})
    config = searcher.suggest("t0")
    searcher.save(str(tmp_path / "state.json"))
    # plain JSON: the strategy is rebuilt from the results, nothing is unpickled
    assert json.loads((tmp_path / "state.json").read_text())["results"][0]["config"] == done
    again = DistoptSearcher(strategy, space(), {"f1": "min", "f2": "max"})
    again.restore(str(tmp_path / "state.json"))
    assert again.results == searcher.results and again.metric == "f2"
    assert again.suggest("t1") == searcher.suggest("t1") not in (config, done)
    again.on_trial_complete("t0", {"f1": 0.1}, error=False)   # f2 missing: FAILED
    assert again.results[-1].status == "FAILED" and again.results[-1].config == config
