"""Encoded points as strategies propose them: snapped onto the configurations they decode to.

Two points that give one configuration get one encoding here, so that the one "same config" rule
(:func:`distopt.space.point_keys`) sees them as one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._problem import Problem


def snap(problem: Problem, points: np.ndarray) -> np.ndarray:
    """The encodings of the configurations ``points`` decode to, shape ``(n_points, dim)``.

    Integers and categoricals land on the centre of their cell and a Float's ``off`` band on its
    single code, so two points that give the same configuration get the same encoding.
    """
    space = problem.space
    return space.encode(space.decode(points)) if len(points) else np.empty((0, space.dim))


def pending_points(problem: Problem, pending: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Snapped encodings of running configurations, shape ``(n_pending, dim)``."""
    if not pending:
        return np.empty((0, problem.space.dim))
    return snap(problem, problem.space.encode(list(pending)))
