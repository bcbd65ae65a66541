"""The rows a ``jacobian`` walk descends, and its local linear model of them at a center."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .._problem import Problem


class Rows:
    """The row vector a walk minimises: every objective signed so that smaller is better, then
    every constraint's slack (:meth:`~distopt.Problem.constraint_slack`: ``<= 0`` holds)."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.n_objectives = len(problem.objectives)
        #: ``(kind, metric)`` of every row, kind ``"objective"`` or ``"constraint"``.
        self.all = [("objective", m) for m in problem.objectives]
        self.all += [("constraint", c) for c in problem.constraints]
        objective_signs = [-1.0 if d == "max" else 1.0 for d in problem.objectives.values()]
        #: d row / d metric for every row (+1 or -1), shape ``(n_rows,)``.
        self.signs = np.array(objective_signs + [1.0 if op == "<=" else -1.0
                                                 for op, _ in problem.constraints.values()])

    def __len__(self) -> int:
        return len(self.all)

    def values(self, metrics: Mapping[str, float]) -> np.ndarray:
        """Every row at a usable result, shape ``(n_rows,)``."""
        objectives = [self.signs[i] * metrics[m] for i, m in enumerate(self.problem.objectives)]
        slack = self.problem.constraint_slack([metrics])[0]
        return np.concatenate([np.array(objectives, dtype=float), slack])



@dataclass
class LocalModel:
    """Every row's value and Jacobian at a walk's center, and the rows its step answers to.

    Attributes:
        rows: the rows.
        values: every row at the center, shape ``(n_rows,)``.
        jacobian: every row in the walk's coordinates, shape ``(n_rows, n_cont)``; NaN: unknown.
        active: the rows the direction answers to: the objectives and the violated constraints
            (or the violated constraints alone, when feasibility comes first), plus any held
            constraint that a step crossed.
    """

    rows: Rows
    values: np.ndarray
    jacobian: np.ndarray
    active: list[int]

    @classmethod
    def at(cls, rows: Rows, metrics: Mapping[str, float], n_cont: int) -> LocalModel:
        """A model at a new center (its usable result's ``metrics``), Jacobian still unknown."""
        values = rows.values(metrics)
        violated = [i for i in range(rows.n_objectives, len(rows)) if values[i] > 0]
        return cls(rows, values, np.full((len(rows), n_cont), np.nan),
                   list(range(rows.n_objectives)) + violated)

    @property
    def fx(self) -> np.ndarray:
        """The active rows' values, shape ``(n_active,)``."""
        return self.values[self.active]

    @property
    def active_jacobian(self) -> np.ndarray:
        """The active rows' Jacobian, shape ``(n_active, n_cont)``."""
        return self.jacobian[self.active]

    @property
    def names(self) -> list[str]:
        """The active rows' metrics."""
        return [self.rows.all[i][1] for i in self.active]

    def violated(self) -> list[int]:
        """The active constraints that do not hold at the center."""
        return [i for i in self.active if self.rows.all[i][0] == "constraint"
                and self.values[i] > 0]

    def predicted_gain(self, d: np.ndarray, t: float) -> np.ndarray:
        """First-order improvement of each active row by the step ``-t d``, relative to its value,
        shape ``(n_active,)``."""
        return (self.active_jacobian @ d) * t / np.maximum(np.abs(self.fx), 1e-12)

    def gain(self, metrics: Mapping[str, float]) -> np.ndarray:
        """Improvement of each active row at a usable result, relative to its value at the
        center, shape ``(n_active,)``."""
        return (self.fx - self.rows.values(metrics)[self.active]) / \
            np.maximum(np.abs(self.fx), 1e-12)

    def judge(self, metrics: Mapping[str, float], d: np.ndarray, t: float, *, armijo: float,
              rtol: float, atol: float) -> tuple[bool, list[int]]:
        """Whether a usable result at the end of the step ``-t d`` is accepted (no active row got
        worse beyond noise: ``f_i(y) <= f_i(x) - armijo * t * (J d)_i + rtol * |f_i(x)| + atol``,
        and no held constraint was crossed), and the held constraints it crossed whose Jacobian
        row is known."""
        fy = self.rows.values(metrics)
        predicted = self.active_jacobian @ d * t  # first-order decrease, >= 0
        allowance = rtol * np.abs(self.values) + atol
        active = np.array(self.active, dtype=int)
        better = np.all(fy[active] <= self.fx - armijo * predicted + allowance[active])
        crossed = [i for i, (kind, _) in enumerate(self.rows.all)
                   if kind == "constraint" and i not in self.active and self.values[i] <= 0
                   and fy[i] > atol]
        guardable = [i for i in crossed if np.all(np.isfinite(self.jacobian[i]))]
        return bool(better) and not crossed, guardable
