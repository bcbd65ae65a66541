"""The steady-state NSGA-II strategy (``strategy="pareto"``)."""

from __future__ import annotations

import numpy as np
import pytest
from strategy_helpers import drive, make

from distopt._errors import ConfigError
from distopt._problem import Problem
from distopt.pareto import hypervolume
from distopt.strategies import strategy_class
from distopt.strategies._nsga2 import NSGA2Strategy, ParetoStrategy


def zdt1(config: dict[str, float]) -> dict[str, float]:
    x = np.array([config[f"x{i}"] for i in range(6)])
    g = 1 + 9 * x[1:].mean()
    return {"f1": float(x[0]), "f2": float(g * (1 - np.sqrt(x[0] / g)))}


ZDT1 = Problem({f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(6)},
               {"f1": "min", "f2": "min"})


def _hv(results: list, problem: Problem = ZDT1) -> float:
    ok = [r.metrics for r in results if r.status == "COMPLETE"]
    keep = problem.feasible(ok)
    return hypervolume(problem.objective_values(ok)[keep], [1.1, 11.0], maximize=False)


def test_population_improves_hypervolume_over_random_on_zdt1() -> None:
    pareto = _hv(drive(make("pareto", ZDT1, population_size=20), zdt1, 200))
    random = _hv(drive(make("random", ZDT1), zdt1, 200))
    # max is 11.1 + 2/3 = 11.77; Sobol gets about 10.1 in 200 points
    assert pareto > random + 0.7, (pareto, random)


def test_constrained_domination_keeps_the_population_feasible() -> None:
    # f1 >= 0.4 cuts the best part of ZDT1's front; the population must respect it
    problem = Problem(ZDT1.space, ZDT1.objectives, {"f1": [">=", 0.4]})
    strategy = make("pareto", problem, population_size=20)
    results = drive(strategy, zdt1, 150)
    keep, rank, _ = strategy.population()
    complete = [r for r in results if r.status == "COMPLETE"]
    feasible = problem.feasible([complete[i].metrics for i in keep])
    assert feasible.all()
    assert (np.diff(rank) >= 0).all()
    late = problem.feasible([r.metrics for r in results[100:]])
    assert late.mean() > 0.8  # children of feasible parents mostly stay feasible


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="population_size"):
        make("pareto", ZDT1, population_size=1)
    with pytest.raises(ConfigError, match="crossover_prob"):
        make("pareto", ZDT1, crossover_prob=1.5)


def test_registered_as_pareto_and_importable_by_its_old_name() -> None:
    assert strategy_class("pareto") is NSGA2Strategy is ParetoStrategy
    assert NSGA2Strategy.name == "pareto"
    assert make("pareto", ZDT1).to_dict()["name"] == "pareto"
