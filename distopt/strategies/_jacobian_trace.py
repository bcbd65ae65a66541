"""How a walk that ended on the front goes on along it: a predictor step towards one objective,
then the next walk's UPGrad steps correct back onto the front (``reseed="trace"``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._jacobian_estimate import Box
from ._jacobian_options import JacobianOptions
from ._jacobian_table import Grid


@dataclass
class Trace:
    """A walk's trace: the objective it heads for and the predictor it last took.

    Attributes:
        objective: the objective the current walk traces the front towards (-1: none).
        ref: that objective's row value at the trace's origin.
        origin: the last walk end that improved the objective, shape ``(dim,)``.
        direction: the unit predictor direction from ``origin``, shape ``(n_cont,)``.
        length: the current predictor length in the cube.
    """

    objective: int = -1
    ref: float = math.nan
    origin: np.ndarray = field(default_factory=lambda: np.empty(0))
    direction: np.ndarray = field(default_factory=lambda: np.empty(0))
    length: float = 0.0

    def reset(self) -> None:
        """No trace: the walk starts afresh."""
        self.objective, self.ref, self.length = -1, math.nan, 0.0

    def next_point(self, x: np.ndarray, values: np.ndarray, jacobian: np.ndarray, box: Box, *,
                   feasible_end: bool, heading: int, options: JacobianOptions,
                   grid: Grid) -> np.ndarray | None:
        """Where a walk that ended at ``x`` (its rows ``values``, their Jacobian ``jacobian``)
        continues, or None for a fresh Sobol start.

        From a stationary (or stalled) feasible end, the next walk starts a predictor step away
        along the descent direction of one objective alone (``heading`` for a new trace, giving
        up the others), and its UPGrad steps correct back onto the front, better in that
        objective. A walk that ends better in it than the previous end becomes the new origin and
        the predictor grows by 1.5 (up to twice ``trace_step``); one that does not is retried
        from the same origin with half the step, and the trace ends below half of
        ``trace_step``. No trace starts towards an objective whose descent the box holds for the
        most part (its row keeps less than half its norm once the components pointing out of the
        box are dropped): that end of the front is on the box.
        """
        if self.objective >= 0:
            k, ref = self.objective, self.ref
            if feasible_end and values[k] < ref - options.rtol * abs(ref) - options.atol:
                self.length = min(1.5 * self.length, 2.0 * options.trace_step)
            else:  # no progress towards objective k: a shorter predictor from the same origin
                self.length *= 0.5
                if self.length < 0.5 * options.trace_step - 1e-12:
                    return None
                return self._predict(box, grid)
        elif not feasible_end:
            return None
        else:
            k = heading
            self.length = options.trace_step
        row = jacobian[k]
        if not np.all(np.isfinite(row)):
            return None
        full = float(np.linalg.norm(row))
        row = np.where(box.pushed_out(x[box.cont], row), 0.0, row)
        norm = float(np.linalg.norm(row))
        if norm <= 0.5 * full or norm <= 1e-300:
            # The box holds most of objective k's descent: that end of the front lies on the box,
            # and hops along the bound's face would only chase what is left.
            return None
        self.objective, self.ref = k, float(values[k])
        self.origin, self.direction = x.copy(), row / norm
        return self._predict(box, grid)

    def _predict(self, box: Box, grid: Grid) -> np.ndarray | None:
        """The predictor's end from the origin, or None where it vanishes on the grid."""
        point = grid.snap(box.moved(self.origin, -(self.length * self.direction)))
        return None if Grid.key(point) == Grid.key(self.origin) else point


def heading(values: np.ndarray, n_objectives: int, front: tuple[np.ndarray, np.ndarray] | None,
            fallback: int) -> int:
    """The objective a new trace from an end with rows ``values`` heads for: the one in which
    the end is farthest from the best the design's front reached (``front = (low, span)`` of its
    objective rows), relative to that front's span, so that an end near one extreme of the front
    traces towards the other instead of crowding its own extreme, where the front is flat and
    extra points add little hypervolume. Without a design (walks started at once):
    ``fallback % n_objectives``, so that members alternate."""
    if front is None:
        return fallback % n_objectives
    low, span = front
    room = (values[:n_objectives] - low) / np.where(span > 0, span, 1.0)
    return int(np.argmax(room))
