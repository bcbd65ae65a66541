"""What a study optimises: a space, named objectives with directions, and outcome constraints.

Shared by the Study (validation), the strategies (what to model) and the store reader (what the
front is), so the meaning of "min", "max", "<=" and ">=" lives here only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._checks import is_finite_number
from ._errors import field_error
from .space import Space
from .trial import Status, is_reserved

DIRECTIONS = ("min", "max")
OPERATORS = ("<=", ">=")


@dataclass(frozen=True)
class TrialResult:
    """A finished trial as strategies see it: its configuration, status and returned metrics."""

    trial_id: int
    config: dict[str, Any]
    status: Status | str
    metrics: dict[str, float] = field(default_factory=dict)


def _check_metric_name(where: str, name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise field_error(where, f"metric names must be non-empty strings; got {name!r}")
    if is_reserved(name):
        raise field_error(where, f"metric name {name!r} is reserved (a column of the store)",
                          "rename the metric")


def _parse_objectives(objectives: Any) -> dict[str, str]:
    if isinstance(objectives, str):
        objectives = {objectives: "min"}
    if not isinstance(objectives, Mapping) or not objectives:
        raise field_error("objectives", f"must be a non-empty mapping of metric to 'min' or 'max'; "
                                        f"got {objectives!r}", 'e.g. {"test_mse": "min"}')
    parsed = {}
    for name, direction in objectives.items():
        _check_metric_name("objectives", name)
        if direction not in DIRECTIONS:
            raise field_error(f"objectives.{name}", f"must be 'min' or 'max'; got {direction!r}")
        parsed[name] = direction
    return parsed


def _parse_constraints(constraints: Any) -> dict[str, tuple[str, float]]:
    if constraints is None:
        return {}
    if not isinstance(constraints, Mapping):
        raise field_error("constraints", f"must be a mapping of metric to [op, threshold]; got "
                                         f"{constraints!r}", 'e.g. {"equiv_err": ["<=", 0.05]}')
    parsed = {}
    for name, rule in constraints.items():
        _check_metric_name("constraints", name)
        where = f"constraints.{name}"
        if not isinstance(rule, (list, tuple)) or len(rule) != 2:
            raise field_error(where, f"must be a pair [op, threshold]; got {rule!r}",
                              'e.g. ["<=", 0.05]')
        op, threshold = rule
        if op not in OPERATORS:
            raise field_error(where, f"operator must be '<=' or '>='; got {op!r}")
        if not is_finite_number(threshold):
            raise field_error(where, f"threshold must be a finite number; got {threshold!r}")
        parsed[name] = (op, float(threshold))
    return parsed


class Problem:
    """A space, objectives (metric -> "min"/"max") and constraints (metric -> (op, threshold)).

    ``shared_names``: allow an objective named like a parameter (refused by default).
    """

    def __init__(self, space: Space | Mapping[str, Any], objectives: Any,
                 constraints: Any = None, *, shared_names: bool = False):
        self.space = space if isinstance(space, Space) else Space(space)
        self.objectives = _parse_objectives(objectives)
        self.constraints = _parse_constraints(constraints)
        # Configs and metrics are separate dicts in a TrialResult and the store keeps parameters
        # under ``config/``, so a shared name collides nowhere in the data. A study still
        # refuses one (``distopt show`` prints both as columns of that name, likely a slip);
        # ``shared_names`` lets Ray Tune users keep their examples' names (metric ``a`` for
        # parameter ``a``). Reserved names are refused either way.
        clash = set(self.objectives) & set(self.space.names)
        if clash and not shared_names:
            raise field_error("objectives", f"{sorted(clash)} are also parameter names",
                              "rename the metric or the parameter")
        clash = [c for c in self.constraints if c in self.space.params]
        if clash and not shared_names:
            raise field_error(f"constraints.{clash[0]}", "is also a parameter name",
                              "rename the metric or the parameter")

    @property
    def metric_names(self) -> list[str]:
        """Metrics every COMPLETE trial must return: objectives, then constraint metrics."""
        names = list(self.objectives)
        names += [c for c in self.constraints if c not in self.objectives]
        return names

    @property
    def maximize(self) -> list[bool]:
        """Per objective, whether larger is better."""
        return [d == "max" for d in self.objectives.values()]

    def objective_values(self, metrics: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Raw objective values, shape ``(n_points, n_objectives)``, NaN where missing."""
        return np.array([[m.get(k, math.nan) for k in self.objectives] for m in metrics],
                        dtype=float).reshape(len(metrics), len(self.objectives))

    def constraint_slack(self, metrics: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Slack per constraint, shape ``(n_points, n_constraints)``: ``<= 0`` means satisfied.

        For ``metric <= t`` the slack is ``metric - t``; for ``metric >= t`` it is ``t - metric``.
        Missing metrics give NaN, which counts as violated.
        """
        cols = []
        for name, (op, threshold) in self.constraints.items():
            values = np.array([m.get(name, math.nan) for m in metrics], dtype=float)
            cols.append(values - threshold if op == "<=" else threshold - values)
        if not cols:
            return np.zeros((len(metrics), 0))
        return np.stack(cols, axis=1)

    def feasible(self, metrics: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Boolean mask, shape ``(n_points,)``: every constraint satisfied (NaN is not)."""
        slack = self.constraint_slack(metrics)
        return np.all(slack <= 0, axis=1) if slack.shape[1] else np.ones(len(metrics), bool)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready definition, as kept in the store's metadata."""
        return {
            "space": self.space.to_dict(),
            "objectives": dict(self.objectives),
            "constraints": {k: [op, t] for k, (op, t) in self.constraints.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, shared_names: bool = False) -> Problem:
        """Inverse of :meth:`to_dict`."""
        return cls(data["space"], data["objectives"], data.get("constraints") or None,
                   shared_names=shared_names)
