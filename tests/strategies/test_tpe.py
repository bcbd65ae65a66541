"""The ``tpe`` strategy: how distopt trials are mirrored in its Optuna study."""

from __future__ import annotations

import math

import numpy as np
import pytest
from strategy_helpers import drive, make, mixed_metrics, mixed_problem

from distopt._errors import ConfigError
from distopt._problem import Problem, TrialResult

optuna = pytest.importorskip("optuna")
State = optuna.trial.TrialState


def test_asked_trials_run_in_the_study_and_are_told_with_values_and_constraints() -> None:
    problem = mixed_problem()
    strategy = make("tpe", problem)
    configs = strategy.ask(3)
    study = strategy._study
    assert [t.state for t in study.trials] == [State.RUNNING] * 3
    metrics = mixed_metrics(configs[1])
    strategy.tell([TrialResult(7, configs[1], "COMPLETE", metrics)])
    trial = study.trials[1]
    assert trial.state == State.COMPLETE
    assert trial.values == [metrics["loss"], metrics["cost"]]
    assert trial.constraints == {"memory": pytest.approx(metrics["memory"] - 0.75)}
    assert [t.state for t in study.trials].count(State.RUNNING) == 2


def test_results_from_elsewhere_are_added_with_their_parameters() -> None:
    problem = mixed_problem()
    config = {"lr": 0.01, "wd": 0.0, "layers": 2, "width": 64, "act": "gelu", "batch": 32}
    strategy = make("tpe", problem)
    strategy.tell([TrialResult(0, config, "COMPLETE", mixed_metrics(config)),
                   TrialResult(1, {**config, "layers": 3}, "FAILED"),
                   TrialResult(2, {**config, "layers": 4}, "PRUNED")])
    trials = strategy._study.trials
    assert [t.state for t in trials] == [State.COMPLETE, State.FAIL, State.PRUNED]
    assert trials[0].params["wd"] == pytest.approx(0.05)  # the off band's code
    assert trials[0].params["layers"] == 2 and trials[0].params["act"] == "gelu"
    assert strategy._config(trials[0].params) == config


def test_float_with_off_round_trips_through_optuna_parameters() -> None:
    strategy = make("tpe", mixed_problem())
    for wd in (0.0, 1e-6, 3e-4, 1e-2):
        config = {"lr": 1e-3, "wd": wd, "layers": 1, "width": 16, "act": "relu", "batch": 32}
        assert strategy._config(strategy._params(config))["wd"] == pytest.approx(wd)


def test_pending_configurations_from_elsewhere_become_running_trials() -> None:
    problem = mixed_problem()
    strategy = make("tpe", problem)
    foreign = {"lr": 0.01, "wd": 0.0, "layers": 2, "width": 64, "act": "gelu", "batch": 32}
    strategy.ask(1, pending=[foreign])
    states = [t.state for t in strategy._study.trials]
    assert states == [State.RUNNING, State.RUNNING]
    strategy.tell([TrialResult(5, foreign, "COMPLETE", mixed_metrics(foreign))])
    states = [t.state for t in strategy._study.trials]
    assert states.count(State.COMPLETE) == 1 and states.count(State.RUNNING) == 1


def test_tpe_beats_random_search_on_a_quadratic() -> None:
    problem = Problem({"x": {"type": "float", "low": -5.0, "high": 5.0},
                       "y": {"type": "float", "low": -5.0, "high": 5.0}}, {"f": "min"})
    f = lambda c: {"f": (c["x"] - 1.3) ** 2 + (c["y"] + 0.7) ** 2}  # noqa: E731
    best = {name: min(r.metrics["f"] for r in drive(make(name, problem, seed=s), f, 40))
            for name in ("tpe", "random") for s in (0,)}
    assert best["tpe"] < best["random"] / 3, best


def test_constraints_steer_tpe_to_feasible_points() -> None:
    # f pulls x to 0; with x >= 0.6 as a constraint TPE must search just above 0.6 instead
    def late_feasible_share(constraints: dict | None) -> float:
        problem = Problem({"x": {"type": "float", "low": 0.0, "high": 1.0}}, {"f": "min"},
                          constraints)
        results = drive(make("tpe", problem), lambda c: {"f": c["x"], "x_value": c["x"]}, 40)
        return float(np.mean([r.config["x"] >= 0.6 for r in results[20:]]))

    # the constraint's metric is x's value (a metric named like a parameter is refused)
    constrained = late_feasible_share({"x_value": [">=", 0.6]})
    free = late_feasible_share(None)
    assert constrained >= 0.5 and free <= 0.1, (constrained, free)


def test_nan_metrics_count_as_failed() -> None:
    problem = mixed_problem()
    strategy = make("tpe", problem)
    config = strategy.ask(1)[0]
    strategy.tell([TrialResult(0, config, "COMPLETE", {"loss": math.nan, "cost": 1.0,
                                                       "memory": 0.1})])
    assert strategy._study.trials[0].state == State.FAIL


def test_one_worker_replays_optunas_own_tpe_run_for_the_same_seed() -> None:
    optuna = pytest.importorskip("optuna")

    def metrics(x: float, y: float) -> dict[str, float]:
        return {"f1": (x - 0.2) ** 2 + y ** 2, "f2": (x - 0.8) ** 2 + (y - 0.5) ** 2}

    problem = Problem({"x": {"type": "float", "low": 0.0, "high": 1.0},
                       "y": {"type": "float", "low": 0.0, "high": 1.0}},
                      {"f1": "min", "f2": "min"})
    ours = drive(make("tpe", problem, seed=7, n_startup_trials=5),
                 lambda c: metrics(c["x"], c["y"]), 16)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize"] * 2, sampler=optuna.samplers.TPESampler(
        multivariate=True, seed=7, n_startup_trials=5))
    theirs = []
    for _ in range(16):
        trial = study.ask()
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
        values = metrics(x, y)
        study.tell(trial, [values["f1"], values["f2"]])
        theirs.append({"x": x, "y": y})
    assert [r.config for r in ours] == theirs


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="n_startup_trials"):
        make("tpe", mixed_problem(), n_startup_trials=-1)
