"""The ``jacobian`` strategy's points and results: the grid it proposes on, and the table of every
result told, looked up by point."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._problem import Problem, TrialResult
from ..gradients import GRAD_PREFIX
from ..space import Float, point_keys
from ..trial import Status
from ._points import snap

#: Grid of the continuous coordinates of every proposed point: far above encode/decode round-off,
#: so a point's key (rounded to 9 decimals) survives the round trip through a config.
GRID = 1e-7

Key = tuple[float, ...]


@dataclass
class Observation:
    """The result that counts at one point: usable (``ok``: COMPLETE, every metric finite) or
    not."""

    trial_id: int
    ok: bool
    metrics: dict[str, float]
    config: dict[str, Any]


class Grid:
    """Encoded points as the strategy proposes them: continuous coordinates on a grid of
    :data:`GRID`, every coordinate on the configuration the point decodes to."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.names = list(problem.space.names)
        #: Position in the encoding -> the Float there: the coordinates a walk may move.
        self.floats = {j: p for j, p in enumerate(problem.space.params.values())
                       if isinstance(p, Float)}

    def snap(self, point: np.ndarray) -> np.ndarray:
        """Quantise continuous coordinates to the grid and round-trip through a config."""
        point = np.asarray(point, dtype=float).copy()
        floats = list(self.floats)
        if floats:
            point[floats] = np.round(point[floats] / GRID) * GRID
        return snap(self.problem, point[None])[0]

    @staticmethod
    def key(point: np.ndarray) -> Key:
        """The point's identity (:func:`distopt.space.point_keys`)."""
        return point_keys(point[None])[0]


class Table:
    """Every told result by point; where one configuration ran more than once, a usable result
    beats an unusable one, then the lowest trial id wins (so replay order does not matter)."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self._table: dict[Key, Observation] = {}
        #: Keys handed out by ``ask`` and not told yet.
        self.outstanding: set[Key] = set()
        #: Whether a usable result returned hypergradient keys.
        self.has_gradients = False

    def __len__(self) -> int:
        return len(self._table)

    def keys(self) -> set[Key]:
        return set(self._table)

    def lookup(self, point: np.ndarray) -> Observation | None:
        return self._table.get(Grid.key(point))

    def record(self, result: TrialResult) -> None:
        try:
            point = self.problem.space.encode([result.config])[0]
        except (KeyError, ValueError, TypeError):
            return  # not a configuration of this space
        key = Grid.key(point)
        metrics = {k: float(v) for k, v in result.metrics.items() if _is_number(v)}
        ok = (result.status == Status.COMPLETE
              and all(math.isfinite(metrics.get(m, math.nan)) for m in self.problem.metric_names))
        new = Observation(result.trial_id, ok, metrics, dict(result.config))
        old = self._table.get(key)
        if old is None or (new.ok, -new.trial_id) > (old.ok, -old.trial_id):
            self._table[key] = new
        self.outstanding.discard(key)
        if ok and any(k.startswith(GRAD_PREFIX) for k in metrics):
            self.has_gradients = True


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
