r"""The Jacobian a walk descends along, and the step direction it gives.

A walk's Jacobian ``J`` has one row per entry of :class:`~._jacobian_rows.Rows` and one column per
coordinate of its :class:`Box`. :class:`Estimator` fills each column from whichever source is there:
hypergradients the center's trial returned (:mod:`distopt.gradients` keys, converted to the
encoded coordinate by the chain rule), finite differences around the center, or a Broyden update
of the previous center's Jacobian. :class:`Aggregator` turns ``J`` into a direction ``d`` with
``J d >= 0`` (torchjd's UPGrad), so that the step ``x - t d`` worsens no row to first order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..gradients import grad_key
from ..space import OFF_BAND, Float
from ._jacobian_rows import Rows
from ._jacobian_table import GRID, Grid, Observation

#: Margin kept above a ``Float``'s off band, so that a moving coordinate never switches it off.
_OFF_MARGIN = 1e-6
_AT_BOUND = 1e-9


@dataclass
class Box:
    """The coordinates a walk moves (positions ``cont`` in the encoding: its Floats that are on)
    and their bounds in the encoded cube, each of shape ``(n_cont,)``."""

    cont: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    lo: np.ndarray = field(default_factory=lambda: np.empty(0))
    hi: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def at(cls, floats: Mapping[int, Float], start: np.ndarray) -> Box:
        """The box of a walk from ``start``: a Float with ``off`` moves in its range band, or
        stays off when it starts off."""
        cont, lo, hi = [], [], []
        for j, param in floats.items():
            if param.off is not None and start[j] < OFF_BAND:
                continue  # starts off, stays off
            cont.append(j)
            lo.append(OFF_BAND + _OFF_MARGIN if param.off is not None else 0.0)
            hi.append(1.0)
        return cls(np.array(cont, dtype=int), np.array(lo, dtype=float),
                   np.array(hi, dtype=float))

    def __len__(self) -> int:
        return len(self.cont)

    def moved(self, x: np.ndarray, delta: np.ndarray | float = 0.0) -> np.ndarray:
        """A copy of the point ``x`` with its box coordinates moved by ``delta`` and clipped to
        the box."""
        point = x.copy()
        point[self.cont] = np.clip(x[self.cont] + delta, self.lo, self.hi)
        return point

    def pushed_out(self, xc: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Mask of the coordinates at a bound that a step along ``-d`` would leave."""
        return ((xc <= self.lo + _AT_BOUND) & (d > 0)) | ((xc >= self.hi - _AT_BOUND) & (d < 0))


@dataclass
class Broyden:
    """A walk's Broyden bookkeeping (see :meth:`Estimator.update`).

    Attributes:
        limit: the most Jacobians in a row that may come from updates (the ``broyden`` option).
        basis: the last center's ``(x, rows, Jacobian)``, which the next update starts from
            (None: a fresh start, or a refresh after an update the trial contradicted).
        updates: Jacobians in a row that came from updates.
    """

    limit: int
    basis: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    updates: int = 0

    def allows(self, *, after_step: bool = False) -> bool:
        """Whether the next Jacobian may come from an update (no differences): at the current
        center, or (``after_step``) at the end of the step that is running."""
        return self.limit > 0 and self.updates < self.limit and (after_step
                                                                 or self.basis is not None)


class Estimator:
    """Jacobians of every row in a walk's continuous coordinates (NaN: unknown).

    Args:
        rows: the rows.
        grid: the point grid (difference points are snapped to it).
        lookup: the result at a point, None while it has not run.
        source: ``"auto"``, ``"hypergrad"`` or ``"fd"`` (hypergradient keys ignored).
        h: difference step in the encoded cube.
        forward: forward differences (``x + h e_j``, backward at an upper bound) instead of
            central ones (``x +- h e_j``).
    """

    def __init__(self, rows: Rows, grid: Grid, lookup: Callable[[np.ndarray], Observation | None],
                 *, source: str, h: float, forward: bool):
        self.rows, self.grid, self.lookup = rows, grid, lookup
        self.source, self.h, self.forward = source, h, forward

    def hypergradients(self, center: Observation, box: Box,
                       active: list[int]) -> dict[int, np.ndarray]:
        """Columns (position in ``box`` -> every row, NaN where no key) that the center's
        ``grad/`` keys give for every active row."""
        if self.source == "fd":
            return {}
        metrics, config = center.metrics, center.config
        columns = {}
        for c, j in enumerate(box.cont):
            name = self.grid.names[j]
            raw = np.array([metrics.get(grad_key(metric, name), math.nan)
                            for _, metric in self.rows.all], dtype=float)
            if not np.all(np.isfinite(raw[active])):
                continue
            columns[c] = self.rows.signs * raw * _dx_du(self.grid.floats[j], float(config[name]))
        return columns

    def difference_points(self, x: np.ndarray, box: Box, c: int) -> tuple[np.ndarray, np.ndarray]:
        """The two points whose difference estimates column ``c`` at ``x`` (with forward
        differences one of them is ``x`` itself, which the walk has already run)."""
        j = box.cont[c]
        up, down = x.copy(), x.copy()
        if self.forward and x[j] + self.h <= box.hi[c]:
            up[j] = x[j] + self.h
        elif self.forward:
            down[j] = max(x[j] - self.h, box.lo[c])  # at the upper bound: backward
        else:
            up[j] = min(x[j] + self.h, box.hi[c])
            down[j] = max(x[j] - self.h, box.lo[c])
        return self.grid.snap(up), self.grid.snap(down)

    def differences(self, x: np.ndarray, box: Box, skip: Collection[int] = ()) -> list[np.ndarray]:
        """The difference points of every column at ``x`` but those in ``skip``."""
        points: list[np.ndarray] = []
        for c in range(len(box)):
            if c not in skip:
                points += list(self.difference_points(x, box, c))
        return points

    def measure(self, x: np.ndarray, center: Observation, values: np.ndarray, box: Box,
                active: list[int]) -> np.ndarray | None:
        """Every row x every coordinate of ``box`` at the center ``x`` (its result ``center``,
        its rows ``values``), or None while differences are missing."""
        columns = self.hypergradients(center, box, active)
        jacobian = np.full((len(self.rows), len(box)), np.nan)
        missing = False
        for c in range(len(box)):
            if c in columns:
                jacobian[:, c] = columns[c]
                continue
            up, down = self.difference_points(x, box, c)
            j = box.cont[c]
            span = up[j] - down[j]
            if span <= 0:
                # a range too narrow for the grid: the coordinate does not move
                jacobian[:, c] = 0.0
                continue
            sides = []
            for point in (up, down):
                obs = center if Grid.key(point) == Grid.key(x) else self.lookup(point)
                if obs is None:
                    missing = True
                sides.append(obs)
            if missing:
                continue
            f_up, f_down = (self.rows.values(o.metrics) if o is not None and o.ok else None
                            for o in sides)
            if f_up is not None and f_down is not None:
                jacobian[:, c] = (f_up - f_down) / span
            elif f_up is not None:  # one side failed: one-sided difference from the center
                jacobian[:, c] = (f_up - values) / max(up[j] - x[j], GRID)
            elif f_down is not None:
                jacobian[:, c] = (values - f_down) / max(x[j] - down[j], GRID)
            else:
                jacobian[:, c] = 0.0  # both sides failed: leave the coordinate where it is
        return None if missing else jacobian

    def update(self, basis: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray,
               values: np.ndarray, box: Box) -> np.ndarray | None:
        r"""Broyden's update of the previous center's Jacobian, or None where it has none.

        With the previous center's ``basis = (x_0, f(x_0), J_0)``, the step
        ``s = x - x_0`` and the measured change ``\Delta f = f(x) - f(x_0)``,
        ``J = J_0 + (\Delta f - J_0 s) s^T / (s^T s)``: the least change to ``J_0`` (in the
        Frobenius norm) that agrees with the change along ``s`` (Broyden, 1965). A trace or a
        walk visits points a step apart, so ``J_0`` is close; its other directions age, which
        the ``broyden`` option bounds, and a rejected step refreshes it.

        Written here rather than taken from a library: it is one rank-one formula on arrays the
        strategy already holds (SciPy's Broyden solvers hide it inside root finding).
        """
        x0, f0, j0 = basis
        if j0.shape != (len(self.rows), len(box)) or not np.all(np.isfinite(j0)):
            return None
        s = (x - x0)[box.cont]
        norm2 = float(s @ s)
        if norm2 <= 0:
            return j0.copy()
        residual = values - f0 - j0 @ s
        return j0 + np.outer(residual, s) / norm2


class Aggregator:
    """Directions from Jacobians with torchjd's UPGrad.

    Args:
        normalize: scale every row to norm 1 first.
        precondition: the most a column may be scaled up, relative to the largest (1: off).
    """

    def __init__(self, *, normalize: bool, precondition: float):
        import torch  # noqa: F401 - fail early, at bind, when torch/torchjd are missing
        from torchjd.aggregation import UPGrad
        from torchjd.linalg import QuadprogProjector

        self.normalize, self.precondition = normalize, precondition
        # torchjd regularises the Gramian by 1e-4 by default, which lets J d dip below 0 by about
        # that much when rows are nearly dependent; a tiny regularisation keeps J d >= 0 to
        # round-off, the default is the fallback when the QP is too singular for it.
        self._upgrads = [UPGrad(projector=QuadprogProjector(reg_eps=eps)) for eps in (1e-9, 1e-6)]
        self._upgrads.append(UPGrad())

    def direction(self, jacobian: np.ndarray, box: Box, xc: np.ndarray) -> np.ndarray:
        """UPGrad of ``jacobian`` (rows x coordinates of ``box``, at ``xc``), with coordinates
        that a step would push out of the box frozen (and the rest aggregated again)."""
        free = np.ones(len(box), dtype=bool)
        d = np.zeros(len(box))
        for _ in range(len(box) + 1):
            d = np.zeros(len(box))
            if free.any():
                d[free] = self.aggregate(jacobian[:, free])
            blocked = free & box.pushed_out(xc, d)
            if not blocked.any():
                break
            free &= ~blocked
        return d

    def aggregate(self, jacobian: np.ndarray) -> np.ndarray:
        r"""UPGrad of the (row-normalised) Jacobian, its columns equalised up to ``precondition``.

        With column norms ``c_j``, ``s_j = min(max_k c_k / c_j, precondition)`` and
        ``S = diag(s)``, UPGrad runs on ``J S``: ``u = UPGrad(J S)``, and the direction is
        ``d = S u |u| / |S u|``. Since ``(J S) u >= 0``, ``J d >= 0`` still: ``d`` conflicts with
        no row. ``|d| = |u|``, so the step length and ``tol`` read the equalised problem, whose
        Pareto-stationary points are those of ``J`` (``S`` is positive and diagonal).
        """
        matrix = _unit_rows(np.nan_to_num(jacobian.copy(), nan=0.0), self.normalize)
        if not np.any(matrix):
            return np.zeros(matrix.shape[1])
        if self.precondition <= 1:
            return self._upgrad(matrix)
        columns = np.linalg.norm(matrix, axis=0)
        top = float(columns.max())
        scale = top / np.maximum(columns, top / self.precondition)  # in [1, precondition]
        u = self._upgrad(_unit_rows(matrix * scale, self.normalize))
        d = u * scale
        size = float(np.linalg.norm(d))
        return d * (float(np.linalg.norm(u)) / size) if size > 0 else d

    def _upgrad(self, matrix: np.ndarray) -> np.ndarray:
        import torch

        tensor = torch.as_tensor(matrix, dtype=torch.float64)
        for upgrad in self._upgrads:
            try:
                with torch.no_grad():
                    d = upgrad(tensor).numpy().astype(float)
            except Exception:  # quadprog: "matrix G is not positive definite"
                continue
            if np.all(np.isfinite(d)):
                return d
        return np.zeros(matrix.shape[1])


def _unit_rows(matrix: np.ndarray, normalize: bool) -> np.ndarray:
    """``matrix`` with every nonzero row scaled to norm 1 (unchanged when not ``normalize``)."""
    if not normalize:
        return matrix
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.where(norms > 1e-300, matrix / np.where(norms > 1e-300, norms, 1.0), 0.0)


def _dx_du(param: Float, value: float) -> float:
    """Derivative of a Float's raw value with respect to its encoded coordinate, at ``value``."""
    scale = 1.0 / (1.0 - OFF_BAND) if param.off is not None else 1.0
    if param.log:
        return value * (math.log(param.high) - math.log(param.low)) * scale
    return (param.high - param.low) * scale


__all__ = ["Aggregator", "Box", "Broyden", "Estimator"]
