"""distopt strategies drive a real ``tune.Tuner``; MO-ASHA stops Tune trials on two metrics."""

from __future__ import annotations

import json
import time

import numpy as np
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


# -- Ray Tune's searcher contract (ported from ray/tune/tests/test_searchers.py), called
#    directly: no cluster needed except for the one Tuner run at the end.

def two_objectives(**options):
    from distopt.interop.tune import DistoptSearcher

    return DistoptSearcher("random", space(), {"f1": "min", "f2": "max"},
                           {"width": ("<=", 48)}, seed=3, **options)


def finish(searcher, trial_id, **metrics):
    """Tune's callbacks for a trial that ran: one intermediate result, then completion."""
    result = {"training_iteration": 1, "config/x": 1.0, "time_total_s": 1, **metrics}
    searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result)


def test_save_and_restore_into_a_bare_searcher(tmp_path):
    """SaveRestoreCheckpointTest: restored without set_search_properties, the live trial kept."""
    from distopt.interop.tune import DistoptSearcher

    searcher = DistoptSearcher("tpe", {"a": distopt.Float(0.0, 5.0), "epochs": 3},
                               {"metric": "max"}, seed=5)
    assert searcher.set_search_properties("metric", "max", {"epochs": 3})
    for trial_id in ("1", "2", "not_completed"):
        searcher.suggest(trial_id)
    finish(searcher, "1", metric=1.0)
    searcher.save_to_dir(str(tmp_path), session_str="s")
    restored = DistoptSearcher()                       # as Tune's tests do with OptunaSearch()
    restored.restore_from_dir(str(tmp_path))
    assert type(restored.strategy) is type(searcher.strategy) and restored.strategy.seed == 5
    assert restored.problem.to_dict() == searcher.problem.to_dict()
    assert (restored.metric, restored.mode) == ("metric", "max")
    assert "not_completed" in restored._live and restored.results == searcher.results
    for copy in (searcher, restored):                  # the same next steps, the same proposals
        finish(copy, "2", metric=2.0)
        copy.suggest("3")
        finish(copy, "3", metric=float("nan"))
    assert restored.results == searcher.results
    assert [r.status for r in restored.results] == ["COMPLETE", "COMPLETE", "FAILED"]
    assert [r.tune_trial_id for r in restored.results] == ["1", "2", "3"]
    assert restored.suggest("4") == searcher.suggest("4")
    # a searcher built for another space refuses the checkpoint in one line, not a KeyError
    changed = DistoptSearcher("tpe", {"a": distopt.Float(0.0, 5.0), "b": distopt.Int(1, 3)},
                              {"metric": "max"})
    with pytest.raises(distopt.ConfigError, match=r"^restore: the checkpoint's space differ"):
        changed.restore_from_dir(str(tmp_path))
    state = json.loads(next(tmp_path.glob("searcher-state-*")).read_text())
    del state["problem"]                               # a checkpoint that predates this check
    with pytest.raises(distopt.ConfigError, match=r"restore\.results\[0\]\.config\.b: is miss"):
        changed.set_state(state)
    with pytest.raises(distopt.ConfigError, match="suggest: .*no space and objectives"):
        DistoptSearcher().suggest("t")
    with pytest.raises(distopt.ConfigError, match="search_alg: .*restore a checkpoint"):
        DistoptSearcher().set_search_properties("metric", "max", {})
    with pytest.raises(distopt.ConfigError, match="objectives: .*needs both"):
        DistoptSearcher("random", space())


def test_set_search_properties_rejects_what_the_strategy_would_not_optimise():
    searcher = two_objectives()
    assert (searcher.metric, searcher.mode) == ("f1", "min")
    with pytest.raises(distopt.ConfigError, match=r"^mode: 'max' for 'f1' contradicts"):
        searcher.set_search_properties("f1", "max", {"epochs": 3})
    with pytest.raises(distopt.ConfigError, match=r"^mode: 'max' for 'f1'"):
        searcher.set_search_properties(None, "max", {"epochs": 3})
    with pytest.raises(distopt.ConfigError, match=r"^metric: 'acc' is not an objective"):
        searcher.set_search_properties("acc", "max", {"epochs": 3})
    with pytest.raises(distopt.ConfigError, match=r"^metric: 'width' is not an objective"):
        searcher.set_search_properties("width", "min", {"epochs": 3})   # a constraint
    assert (searcher.metric, searcher.mode) == ("f1", "min")          # nothing changed
    assert searcher.set_search_properties(["f2", "f1"], ["max", "min"], {"epochs": 3})
    assert (searcher.metric, searcher.mode) == ("f2", "max")
    assert searcher.set_search_properties("f1", None, {})
    assert (searcher.metric, searcher.mode) == ("f1", "min")
    assert not searcher.set_search_properties("f1", "min", {"x": tune.uniform(0, 1)})


def test_invalid_values_count_as_failed_and_late_reports_are_ignored():
    """InvalidValuesTest and testOptunaReportTooOften."""
    searcher = two_objectives()
    values = [float("nan"), float("inf"), float("-inf"), None, "0.5", True, np.float32(0.25),
              np.int64(2)]
    for i, f1 in enumerate(values):
        searcher.suggest(str(i))
        finish(searcher, str(i), f1=f1, f2=0.5, width=16)
    assert [r.status for r in searcher.results] == ["FAILED"] * 6 + ["COMPLETE"] * 2
    assert searcher.results[-2].metrics == {"f1": 0.25, "f2": 0.5, "width": 16.0}
    assert {r.tune_trial_id for r in searcher.pareto_front()} == {"6"}
    searcher.on_trial_result("6", {"training_iteration": 3, "f1": 1.0})  # after completion
    searcher.on_trial_complete("6", {"training_iteration": 4, "f1": 1.0, "f2": 1.0})
    searcher.on_trial_complete("never-suggested", {"f1": 1.0})
    assert len(searcher.results) == 8
    searcher.suggest("error")
    searcher.on_trial_complete("error", {"f1": 0.1, "f2": 0.9, "width": 8}, error=True)
    assert searcher.results[-1].status == "FAILED"


def test_points_to_evaluate_and_evaluated_points():
    """AddEvaluatedPointTest, with a mapping of metrics as the value of a point."""
    from distopt.interop.tune import DistoptSearcher

    full = {"x": 0.1, "y": 0.2, "width": 16, "act": "silu"}
    searcher = two_objectives(points_to_evaluate=[full, {"x": 0.9}])
    assert searcher.suggest("p0") == full
    partial = searcher.suggest("p1")
    assert partial["x"] == 0.9 and searcher.problem.space.validate(partial) is None
    assert searcher.suggest("p2")["x"] != 0.9                     # then the strategy's own
    assert searcher.results == []
    searcher.add_evaluated_point({**full, "__trial_index__": 0}, {"f1": 0.3, "f2": 0.7,
                                                                 "width": 16},
                                 intermediate_values=[0.8, 0.9])
    searcher.add_evaluated_point(full, {"f1": 0.3, "f2": 0.7, "width": 16}, error=True)
    searcher.add_evaluated_point(full, {"f1": 0.3}, pruned=True)
    assert [r.status for r in searcher.results] == ["COMPLETE", "FAILED", "PRUNED"]
    assert [r.tune_trial_id for r in searcher.results] == [None] * 3
    assert len({r.trial_id for r in searcher.results} | set(searcher.tune_ids)) == 6
    assert searcher.pareto_front() == searcher.results[:1]
    with pytest.raises(distopt.ConfigError, match="add_evaluated_point.value: a number"):
        searcher.add_evaluated_point(full, 1.0)
    with pytest.raises(distopt.ConfigError, match=r"parameters\.width: 128 is outside"):
        searcher.add_evaluated_point({**full, "width": 128}, {"f1": 1.0, "f2": 1.0})
    with pytest.raises(distopt.ConfigError, match=r"points_to_evaluate\[0\]\.x: 2 is outside"):
        two_objectives(points_to_evaluate=[{"x": 2}])
    from ray.tune.experiment import Trial
    from ray.tune.result import DONE

    trials = []
    for status, done in [(Trial.TERMINATED, True), (Trial.TERMINATED, False), (Trial.ERROR, False),
                         (Trial.RUNNING, False)]:
        trial = Trial("f", config={**full, "epochs": 3}, stub=True)
        trial.set_status(status)
        trial.run_metadata.last_result = {"f1": 0.2, "f2": 0.6, "width": 16, DONE: done}
        trials.append(trial)
    fresh = two_objectives()
    fresh.add_evaluated_trials(trials[0])
    fresh.add_evaluated_trials(trials, metric="f2")
    assert [r.status for r in fresh.results] == ["COMPLETE", "COMPLETE", "PRUNED", "FAILED"]
    assert fresh.results[0].metrics == {"f1": 0.2, "f2": 0.6, "width": 16.0}
    with pytest.raises(distopt.ConfigError, match="add_evaluated_trials.metric: 'acc'"):
        fresh.add_evaluated_trials(trials, metric="acc")
    one = DistoptSearcher("random", {"report": distopt.Float(0.0, 5.0)}, {"metric": "max"},
                          points_to_evaluate=[{"report": 1.0}], evaluated_rewards=[1.0])
    assert [(r.config, r.metrics, r.status) for r in one.results] == [
        ({"report": 1.0}, {"metric": 1.0}, "COMPLETE")]
    assert one.suggest("1")["report"] != 1.0                      # told, not run again


def test_concurrency_limiter_wraps_the_searcher(tmp_path):
    from ray.tune.search import ConcurrencyLimiter

    from distopt.interop.tune import DistoptSearcher

    limiter = ConcurrencyLimiter(two_objectives(), max_concurrent=2)
    first, second = limiter.suggest("t0"), limiter.suggest("t1")
    assert first != second and limiter.suggest("t2") is None       # at the limit
    finish(limiter, "t0", f1=0.1, f2=0.9, width=16)
    assert limiter.suggest("t2") is not None
    assert [r.tune_trial_id for r in limiter.searcher.results] == ["t0"]
    limiter.save(str(tmp_path / "state.json"))
    again = ConcurrencyLimiter(DistoptSearcher(), max_concurrent=2)
    again.restore(str(tmp_path / "state.json"))
    assert set(again.searcher._live) == {"t1", "t2"}
    batch = ConcurrencyLimiter(two_objectives(), max_concurrent=2, batch=True)
    batch.suggest("b0"), batch.suggest("b1")
    finish(batch, "b0", f1=0.1, f2=0.9, width=16)
    assert batch.searcher.results == []                            # waits for the whole batch
    finish(batch, "b1", f1=0.2, f2=0.8, width=16)
    assert [r.tune_trial_id for r in batch.searcher.results] == ["b0", "b1"]


def test_repeater_averages_every_metric_and_rays_own_warns():
    from ray.tune.search import Repeater as RayRepeater

    from distopt.interop.tune import Repeater

    repeater = Repeater(two_objectives(), repeat=2)
    a, b = repeater.suggest("r0"), repeater.suggest("r1")
    assert (a.pop("__trial_index__"), b.pop("__trial_index__")) == (0, 1) and a == b
    repeater.on_trial_complete("r0", {"f1": 1.0, "f2": 2.0, "width": 16})
    assert repeater.searcher.results == []
    repeater.on_trial_complete("r1", {"f1": 3.0, "f2": float("nan"), "width": 16})
    [told] = repeater.searcher.results
    assert told.status == "COMPLETE" and told.tune_trial_id == "r0"
    assert told.metrics == {"f1": 2.0, "f2": 2.0, "width": 16.0}
    ray_repeater = RayRepeater(two_objectives(), repeat=2)
    ray_repeater.suggest("r0"), ray_repeater.suggest("r1")
    ray_repeater.on_trial_complete("r0", {"f1": 1.0, "f2": 2.0, "width": 16})
    with pytest.warns(UserWarning, match="Ray's Repeater.*distopt.interop.tune.Repeater"):
        ray_repeater.on_trial_complete("r1", {"f1": 3.0, "f2": 2.0, "width": 16})
    assert [r.status for r in ray_repeater.searcher.results] == ["FAILED"]


def test_metrics_may_share_parameter_names_in_the_searcher_only():
    from distopt.interop.tune import DistoptSearcher

    space = {"a": distopt.Float(0.0, 1.0), "b": distopt.Float(0.0, 1.0)}
    searcher = DistoptSearcher("random", space, {"a": "max", "b": "min"})
    config = searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"a": 100 * config["a"], "b": -100 * config["b"]})
    [told] = searcher.pareto_front()
    assert told.config == config and told.metrics == {"a": 100 * config["a"],
                                                      "b": -100 * config["b"]}
    with pytest.raises(distopt.ConfigError, match=r"^objectives: \['a'\] are also parameter"):
        distopt.Problem(space, {"a": "max"})         # a study still refuses the slip
    with pytest.raises(distopt.ConfigError, match="reserved"):
        DistoptSearcher("random", space, {"trial_id": "min"})


def multi_objective():
    """Tune's multi-objective example (metrics named like the parameters), with noise that
    differs between repeats so that the average shows."""

    def trainable(config):
        from ray import tune as tune_

        tune_.report({"a": config["a"] * 100 + config["__trial_index__"],
                      "b": config["b"] * -100, "c": config["c"]})

    return trainable


def test_a_tuner_run_with_repeats_limits_and_metrics_named_like_parameters(ray_local, tmp_path):
    from ray.tune.search import ConcurrencyLimiter

    from distopt.interop.tune import DistoptSearcher, Repeater

    searcher = DistoptSearcher("random", {k: distopt.Float(0.0, 1.0) for k in "abc"},
                               {"a": "max", "b": "min", "c": "max"}, seed=2)
    tuner = tune.Tuner(
        multi_objective(),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(Repeater(searcher, repeat=2), max_concurrent=4),
            num_samples=8, metric="a", mode="max", reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="mo", verbose=0))
    grid = tuner.fit()
    assert len(grid) == 8 and not grid.errors
    assert len(searcher.results) == 4 and all(r.status == "COMPLETE" for r in searcher.results)
    for told in searcher.results:
        assert told.metrics["a"] == pytest.approx(told.config["a"] * 100 + 0.5)   # mean of 2
        assert told.metrics["b"] == pytest.approx(told.config["b"] * -100)
    tune_ids = {r.metrics["trial_id"] for r in grid}
    front = searcher.pareto_front()
    assert front and {r.tune_trial_id for r in front} <= tune_ids
    best = grid.get_best_result()                                  # Tune's metric "a", max
    assert best.config["a"] == max(r.config["a"] for r in searcher.results)
    # A mode that contradicts the objectives stops the run before any trial, in one line.
    with pytest.raises(distopt.ConfigError, match="mode: 'min' for 'a' contradicts"):
        tune.Tuner(multi_objective(), param_space={"note": "x"},
                   tune_config=tune.TuneConfig(search_alg=DistoptSearcher(
                       "random", {k: distopt.Float(0.0, 1.0) for k in "abc"}, {"a": "max"}),
                       num_samples=1, metric="a", mode="min"),
                   run_config=tune.RunConfig(storage_path=str(tmp_path), name="bad",
                                             verbose=0)).fit()
