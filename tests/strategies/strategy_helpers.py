"""Small options and a bound-strategy builder shared by the strategy tests; the problems, the
toy objective and the driver loop are the public ones of :mod:`distopt.testing`."""

from __future__ import annotations

from typing import Any

from distopt._problem import Problem
from distopt.strategies import Strategy, make_strategy
from distopt.testing import Factory, drive, mixed_metrics, mixed_problem, mixed_space

#: Small settings so that a ``bayes`` suggestion costs tens of milliseconds in tests, and a
#: ``jacobian`` walk starts within the contract's few evaluations.
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "bayes": {"n_initial": 5, "num_restarts": 2, "raw_samples": 64, "mc_samples": 16},
    "pareto": {"population_size": 6},
    "tpe": {"n_startup_trials": 4},
    "random": {},
    "jacobian": {"population": 2},
}


def fast(name: str, **options: Any) -> Factory:
    """A factory of the strategy registered as ``name`` with the fast test settings (``options``
    override them)."""
    spec = {"name": name, "options": {**FAST_OPTIONS.get(name, {}), **options}}
    return lambda seed: make_strategy(spec, seed=seed)


def make(name: str, problem: Problem, seed: int = 0, **options: Any) -> Strategy:
    """A bound strategy with the fast test settings (``options`` override them)."""
    strategy = fast(name, **options)(seed)
    strategy.bind(problem)
    return strategy


__all__ = ["FAST_OPTIONS", "drive", "fast", "make", "mixed_metrics", "mixed_problem",
           "mixed_space"]
