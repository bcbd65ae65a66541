"""Problems, a synthetic objective and a driver loop shared by the strategy tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from distopt._problem import Problem, TrialResult
from distopt.strategies import make_strategy

STRATEGIES = ["random", "bayes", "pareto", "tpe"]

#: Small settings so that a ``bayes`` suggestion costs tens of milliseconds in tests.
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "bayes": {"n_initial": 5, "num_restarts": 2, "raw_samples": 64, "mc_samples": 16},
    "pareto": {"population_size": 6},
    "tpe": {"n_startup_trials": 4},
    "random": {},
}


def mixed_space() -> dict[str, Any]:
    """Every parameter kind: log Float, Float with ``off``, Int, log Int, Categorical, constant."""
    return {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "wd": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True, "off": 0.0},
        "layers": {"type": "int", "low": 1, "high": 4},
        "width": {"type": "int", "low": 16, "high": 256, "log": True},
        "act": {"type": "categorical", "choices": ["relu", "gelu", "tanh"]},
        "batch": 32,
    }


def mixed_metrics(config: dict[str, Any]) -> dict[str, float]:
    """A smooth two-objective toy over :func:`mixed_space` plus a constraint metric."""
    lr = math.log10(config["lr"]) + 2.0
    wd = 0.0 if config["wd"] == 0.0 else (math.log10(config["wd"]) + 4.0) ** 2 / 10
    penalty = {"relu": 0.2, "gelu": 0.0, "tanh": 0.5}[config["act"]]
    size = config["layers"] * config["width"] / 256
    loss = lr ** 2 + wd + penalty + 1.0 / (1.0 + size)
    return {"loss": loss, "cost": size, "memory": config["width"] / 256}


def mixed_problem() -> Problem:
    return Problem(mixed_space(), {"loss": "min", "cost": "min"}, {"memory": ["<=", 0.75]})


def make(name: str, problem: Problem, seed: int = 0, **options: Any):
    """A bound strategy with the fast test settings (``options`` override them)."""
    strategy = make_strategy({"name": name, "options": {**FAST_OPTIONS[name], **options}},
                             seed=seed)
    strategy.bind(problem)
    return strategy


def drive(strategy: Any, evaluate: Callable[[dict[str, Any]], dict[str, float] | None],
          n: int, *, start: int = 0) -> list[TrialResult]:
    """Ask one, evaluate, tell one, ``n`` times; ``evaluate`` returning None means FAILED."""
    results = []
    for i in range(start, start + n):
        config = strategy.ask(1)[0]
        metrics = evaluate(config)
        result = TrialResult(i, config, "FAILED" if metrics is None else "COMPLETE",
                             metrics or {})
        strategy.tell([result])
        results.append(result)
    return results


def encoded(problem: Problem, configs: list[dict[str, Any]]) -> np.ndarray:
    return problem.space.encode(configs)


def keys(problem: Problem, configs: list[dict[str, Any]]) -> list[tuple[float, ...]]:
    return [tuple(np.round(row, 9)) for row in encoded(problem, configs)]
