"""What a strategy knows of past trials, rebuilt from told results alone.

Shared by the model-based strategies (``bayes``, ``pareto``): the split of results into usable
observations and failures, and the keys of every configuration told or handed out (so nothing is
proposed twice). Nothing here is pickled state that could not be rebuilt by replaying the same
results through ``tell``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._problem import Problem, TrialResult
from ..space import point_keys
from ..trial import Status
from ._points import snap


class History:
    """Told results split into observations (COMPLETE, all metrics finite) and failures.

    A result told twice (same ``trial_id``, e.g. a resume replaying the store after trials were
    told live) counts once.

    Attributes:
        configs: every told configuration, in order.
        points: their encodings, shape ``(n_told, dim)``.
        complete: mask over ``configs`` of usable observations.
        values: metrics of the usable observations in ``problem.metric_names`` order,
            shape ``(n_complete, n_metrics)``.
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self._ids: set[int] = set()
        self.configs: list[dict[str, Any]] = []
        self._points: list[np.ndarray] = []
        self._complete: list[bool] = []
        self._values: list[list[float]] = []
        self.keys: set[tuple[float, ...]] = set()
        #: Keys handed out by ``ask`` and not told yet: avoided even when a caller forgets to
        #: pass them as pending (never fantasised, since a cancelled trial is never told).
        self.outstanding: set[tuple[float, ...]] = set()

    def issue(self, points: np.ndarray) -> None:
        """Remember encoded points handed out by ``ask``."""
        self.outstanding.update(point_keys(points))

    def known(self, pending: np.ndarray) -> tuple[set[tuple[float, ...]], int]:
        """Keys to avoid and the number of distinct configurations known (told or running)."""
        running = self.outstanding | set(point_keys(pending))
        return self.keys | running, len(self.configs) + len(running - self.keys)

    def add(self, results: Sequence[TrialResult]) -> list[TrialResult]:
        """Record results not seen before; returns those."""
        new = [r for r in results if r.trial_id not in self._ids]
        if not new:
            return []
        names = self.problem.metric_names
        encoded = snap(self.problem, self.problem.space.encode([r.config for r in new]))
        for result, point, key in zip(new, encoded, point_keys(encoded), strict=True):
            self._ids.add(result.trial_id)
            self.configs.append(dict(result.config))
            self._points.append(point)
            self.keys.add(key)
            self.outstanding.discard(key)
            row = [_as_float(result.metrics.get(name)) for name in names]
            usable = result.status == Status.COMPLETE and all(np.isfinite(row))
            self._complete.append(usable)
            if usable:
                self._values.append(row)
        return new

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def points(self) -> np.ndarray:
        return np.array(self._points).reshape(len(self._points), self.problem.space.dim)

    @property
    def complete(self) -> np.ndarray:
        return np.array(self._complete, dtype=bool)

    @property
    def n_complete(self) -> int:
        return len(self._values)

    @property
    def values(self) -> np.ndarray:
        return np.array(self._values, dtype=float).reshape(len(self._values),
                                                           len(self.problem.metric_names))

    def objectives(self) -> np.ndarray:
        """Raw objective values of the observations, shape ``(n_complete, n_objectives)``."""
        return self.values[:, : len(self.problem.objectives)]

    def violation(self) -> np.ndarray:
        """Total constraint violation of the observations, shape ``(n_complete,)``; 0 = feasible.

        Each slack is divided by ``max(1, |threshold|)`` so constraints on different scales
        weigh alike, then positive parts are summed (Deb's constrained domination).
        """
        problem = self.problem
        if not problem.constraints:
            return np.zeros(self.n_complete)
        names = problem.metric_names
        metrics = [dict(zip(names, row, strict=True)) for row in self._values]
        slack = problem.constraint_slack(metrics)
        scale = np.array([max(1.0, abs(t)) for _, t in problem.constraints.values()])
        return np.clip(slack / scale, 0.0, None).sum(axis=1)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
