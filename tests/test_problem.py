"""Problem: objectives, constraints, slack and feasibility, and errors naming the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

import distopt
from distopt import Float, Int, Problem

SPACE = {"x": Float(0, 1), "n": Int(1, 3)}


def test_objectives_and_metric_names():
    problem = Problem(SPACE, {"loss": "min", "acc": "max"},
                      {"equiv_err": ("<=", 0.05), "acc": (">=", 0.5)})
    assert problem.objectives == {"loss": "min", "acc": "max"}
    assert problem.maximize == [False, True]
    # objectives first, then constraint metrics that are not objectives, each once
    assert problem.metric_names == ["loss", "acc", "equiv_err"]
    assert problem.constraints == {"equiv_err": ("<=", 0.05), "acc": (">=", 0.5)}


def test_single_objective_string_means_minimise():
    problem = Problem(SPACE, "test_mse")
    assert problem.objectives == {"test_mse": "min"}
    assert problem.maximize == [False]


def test_constraint_slack_and_feasibility():
    problem = Problem(SPACE, {"f": "min"}, {"a": ["<=", 1.0], "b": [">=", 2]})
    metrics = [
        {"a": 0.5, "b": 3.0},        # both satisfied
        {"a": 1.0, "b": 2.0},        # both on the boundary: satisfied
        {"a": 1.5, "b": 3.0},        # a violated
        {"a": 0.0, "b": 1.0},        # b violated
        {"a": math.nan, "b": 3.0},   # NaN is a violation
        {"b": 3.0},                  # a missing is a violation
    ]
    slack = problem.constraint_slack(metrics)
    assert slack.shape == (6, 2)
    np.testing.assert_allclose(slack[:4], [[-0.5, -1.0], [0.0, 0.0], [0.5, -1.0], [-1.0, 1.0]])
    assert np.isnan(slack[4, 0]) and np.isnan(slack[5, 0])
    np.testing.assert_array_equal(problem.feasible(metrics),
                                  [True, True, False, False, False, False])


def test_no_constraints_everything_feasible():
    problem = Problem(SPACE, {"f": "min"})
    metrics = [{"f": 1.0}, {"f": math.nan}, {}]
    assert problem.constraint_slack(metrics).shape == (3, 0)
    np.testing.assert_array_equal(problem.feasible(metrics), [True, True, True])
    assert problem.feasible([]).shape == (0,)


def test_objective_values_nan_where_missing():
    problem = Problem(SPACE, {"f1": "min", "f2": "max"})
    values = problem.objective_values([{"f1": 1.0, "f2": 2.0}, {"f1": 3.0}, {}])
    assert values.shape == (3, 2)
    np.testing.assert_array_equal(values[0], [1.0, 2.0])
    assert values[1, 0] == 3.0 and np.isnan(values[1, 1]) and np.isnan(values[2]).all()
    assert problem.objective_values([]).shape == (0, 2)


def test_to_dict_round_trip():
    problem = Problem({**SPACE, "epochs": 3}, {"f1": "min", "f2": "max"}, {"g": ("<=", 0.2)})
    data = problem.to_dict()
    assert data["constraints"] == {"g": ["<=", 0.2]}
    assert data["objectives"] == {"f1": "min", "f2": "max"}
    assert data["space"]["epochs"] == 3
    again = Problem.from_dict(data)
    assert again.to_dict() == data
    assert again.space == problem.space


@pytest.mark.parametrize("objectives, field", [
    ({}, "objectives"),
    ([], "objectives"),
    (None, "objectives"),
    (["f1", "f2"], "objectives"),
    ({"f1": "minimize"}, "objectives.f1"),
    ({"f1": "min", "f2": "MAX"}, "objectives.f2"),
    ({"f1": None}, "objectives.f1"),
    ({"": "min"}, "objectives"),
    ({1: "min"}, "objectives"),
    ({"x": "min"}, "objectives"),  # the name of a parameter
])
def test_bad_objectives_name_the_field(objectives, field):
    with pytest.raises(distopt.ConfigError) as info:
        Problem(SPACE, objectives)
    assert str(info.value).startswith(f"{field}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("constraints, field", [
    ([("g", "<=", 1)], "constraints"),
    ("g <= 1", "constraints"),
    ({"g": ("<", 1.0)}, "constraints.g"),
    ({"g": ("==", 1.0)}, "constraints.g"),
    ({"g": ("<=",)}, "constraints.g"),
    ({"g": ("<=", 1.0, 2.0)}, "constraints.g"),
    ({"g": 1.0}, "constraints.g"),
    ({"g": ("<=", "1")}, "constraints.g"),
    ({"g": ("<=", True)}, "constraints.g"),
    ({"g": ("<=", math.nan)}, "constraints.g"),
    ({"g": (">=", -math.inf)}, "constraints.g"),
])
def test_bad_constraints_name_the_field(constraints, field):
    with pytest.raises(distopt.ConfigError) as info:
        Problem(SPACE, {"f": "min"}, constraints)
    assert str(info.value).startswith(f"{field}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["status", "error", "trial_id", "attempts", "config/x"])
def test_reserved_metric_names_are_rejected_up_front(name):
    # a metric named like a store column could never be recorded: every trial would be FAILED
    with pytest.raises(distopt.ConfigError, match=rf"^objectives(\.{name})?: .*reserved"):
        Problem(SPACE, {name: "min"})
    with pytest.raises(distopt.ConfigError, match=rf"^constraints(\.{name})?: .*reserved"):
        Problem(SPACE, {"f": "min"}, {name: ("<=", 1.0)})
