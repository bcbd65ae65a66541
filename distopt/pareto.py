"""Pareto maths on plain arrays: dominance, non-dominated sorting, reference points, hypervolume.

This layer imports numpy and moocore only (never strategies, Ray or the store), so it is cheap to
import and easy to test. ``points`` always has shape ``(n_points, n_objectives)`` and ``maximize``
is a bool or one bool per objective, as everywhere in distopt.

Dominance and hypervolume are delegated to moocore (C implementations of the best-known
algorithms: O(n log n) dimension sweep for 2-3 objectives, exact WFG-style hypervolume beyond);
writing our own would be slower and less trusted. What is ours: the mixed min/max convention, the
handling of empty and NaN rows, and the reference-point rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Maximize = bool | Sequence[bool]


def _as_points(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim == 1 and array.size == 0:
        return array.reshape(0, 0)
    if array.ndim != 2:
        raise ValueError(f"points must have shape (n_points, n_objectives); got {array.shape}")
    return array


def _maximize_vector(maximize: Maximize, n_objectives: int) -> np.ndarray:
    if isinstance(maximize, (bool, np.bool_)):
        return np.full(n_objectives, bool(maximize))
    vector = np.asarray(list(maximize), dtype=bool)
    if vector.shape != (n_objectives,):
        raise ValueError(f"maximize must be a bool or have {n_objectives} entries; "
                         f"got {maximize!r}")
    return vector


def to_minimization(points: np.ndarray, *, maximize: Maximize = False) -> np.ndarray:
    """A copy of ``points`` with maximised columns negated, so that smaller is better everywhere."""
    points = _as_points(points)
    signs = np.where(_maximize_vector(maximize, points.shape[1]), -1.0, 1.0)
    return points * signs


def is_non_dominated(points: np.ndarray | Sequence[Sequence[float]], *,
                     maximize: Maximize = False, keep_duplicates: bool = True) -> np.ndarray:
    """Mask of the points no other point dominates, shape ``(n_points,)``.

    ``a`` dominates ``b`` when it is no worse in every objective and better in one. Rows with a
    NaN are never on the front. With ``keep_duplicates=False`` only the first of identical
    non-dominated rows is kept.
    """
    points = _as_points(points)
    mask = np.zeros(len(points), dtype=bool)
    finite = np.all(np.isfinite(points), axis=1) if points.size else mask.copy()
    if finite.any():
        import moocore

        flags = _maximize_vector(maximize, points.shape[1])
        mask[finite] = moocore.is_nondominated(points[finite], maximise=flags,
                                               keep_weakly=keep_duplicates)
    return mask


def pareto_rank(points: np.ndarray | Sequence[Sequence[float]], *,
                maximize: Maximize = False) -> np.ndarray:
    """Non-dominated sorting: rank 0 for the front, 1 for the front of the rest, and so on.

    Rows with a NaN get the rank after the last finite front.
    """
    points = _as_points(points)
    ranks = np.zeros(len(points), dtype=int)
    finite = np.all(np.isfinite(points), axis=1) if points.size else ranks.astype(bool)
    if finite.any():
        import moocore

        flags = _maximize_vector(maximize, points.shape[1])
        ranks[finite] = moocore.pareto_rank(points[finite], maximise=flags)
        ranks[~finite] = ranks[finite].max() + 1
    return ranks


def reference_point(points: np.ndarray | Sequence[Sequence[float]], *,
                    maximize: Maximize = False, margin: float | np.ndarray = 0.1,
                    front_only: bool = True,
                    scale: np.ndarray | Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """A reference point slightly worse than the worst point, shape ``(n_objectives,)``.

    Per objective: ``nadir ± margin * range`` of the non-dominated points (``margin * |nadir|``,
    or ``margin``, when the range is zero), the same rule as BoTorch's
    ``infer_reference_point``. Every front point then strictly dominates it, so each contributes
    positive hypervolume. With ``front_only=False`` the nadir and range are those of all finite
    points, a more generous box (used to fix a reference point from an initial design).
    ``margin``: one share for every objective, or one per objective (shape ``(n_objectives,)``).
    ``scale``: other points (``(n, n_objectives)``) whose range, where wider, sets the margin
    instead, e.g. every observation while ``points`` are only the feasible ones.
    """
    points = _as_points(points)
    finite = np.all(np.isfinite(points), axis=1) if points.size else np.zeros(len(points), bool)
    front = points[is_non_dominated(points, maximize=maximize)] if front_only else points[finite]
    if len(front) == 0:
        raise ValueError("no finite point to infer a reference point from")
    flags = _maximize_vector(maximize, points.shape[1])
    worst = np.where(flags, front.min(axis=0), front.max(axis=0))
    best = np.where(flags, front.max(axis=0), front.min(axis=0))
    span = np.abs(best - worst)
    if scale is not None:
        scale = _as_points(scale)
        scale = scale[np.all(np.isfinite(scale), axis=1)]
        if len(scale):
            span = np.maximum(span, np.ptp(scale, axis=0))
    span = np.where(span > 0, span, np.where(np.abs(worst) > 0, np.abs(worst), 1.0))
    return np.where(flags, worst - margin * span, worst + margin * span)


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], ref_point: Sequence[float], *,
                maximize: Maximize = False) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``ref_point``.

    Points that do not strictly dominate the reference point, and rows with a NaN, add nothing.
    Returns 0.0 for no points.
    """
    points = _as_points(points)
    ref = np.asarray(ref_point, dtype=float)
    if points.size == 0:
        return 0.0
    if ref.shape != (points.shape[1],):
        raise ValueError(f"ref_point must have {points.shape[1]} entries; got {ref.shape}")
    flags = _maximize_vector(maximize, points.shape[1])
    points = points[np.all(np.isfinite(points), axis=1)]
    better = np.where(flags, points > ref, points < ref).all(axis=1)
    points = points[better]
    if len(points) == 0:
        return 0.0
    import moocore

    return float(moocore.hypervolume(points, ref=ref, maximise=flags))
