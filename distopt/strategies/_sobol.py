"""Scrambled Sobol points in the unit cube, addressed by their position in the sequence."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .._problem import Problem
from ..space import point_keys
from ._points import snap


def draw(engine: Any, n: int) -> np.ndarray:
    """The next ``n`` points of a scipy Sobol engine, ``n x dim``. Its warning that balance
    needs a power of 2 is not for a search, which uses every prefix of the sequence."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The balance properties of Sobol",
                                category=UserWarning)
        return engine.random(n)


class SobolStart:
    """Points of one scrambled Sobol sequence in ``[0, 1]^dim``, addressed by position.

    The position is the number of configurations already known (told plus pending), so a
    strategy rebuilt from the store continues the sequence where the study left it.
    """

    def __init__(self, dim: int, seed: int | None):
        self.dim = dim
        self.seed = seed

    def take(self, start: int, n: int, avoid: set[tuple[float, ...]], problem: Problem,
             ) -> np.ndarray:
        """``n`` snapped points from position ``start`` on, skipping ones whose key is in ``avoid``.

        In a small discrete space the sequence may run out of new configurations; after
        ``64 * n`` draws the remaining slots take repeats rather than looping forever.
        """
        from scipy.stats import qmc

        if n <= 0:
            return np.empty((0, self.dim))
        engine = qmc.Sobol(d=self.dim, scramble=True, seed=self.seed)
        if start:
            engine.fast_forward(start)
        chosen: list[np.ndarray] = []
        seen = set(avoid)
        for _ in range(64):
            draws = snap(problem, draw(engine, max(n, 8)))
            for point, key in zip(draws, point_keys(draws), strict=True):
                if key not in seen:
                    seen.add(key)
                    chosen.append(point)
                    if len(chosen) == n:
                        return np.array(chosen)
        while len(chosen) < n:  # the space is (nearly) exhausted
            chosen.append(snap(problem, engine.random(1))[0])
        return np.array(chosen)


class SobolPoints:
    """The raw points of one scrambled Sobol sequence in ``[0, 1]^dim``, by index.

    Drawn in blocks of 64 (a power of two keeps the sequence's balance) as indices are asked for,
    and kept: a strategy that addresses fixed points of the sequence (``jacobian``'s design and
    starts) finds the same point at the same index, however it got there.
    """

    BLOCK = 64

    def __init__(self, dim: int, seed: int | None):
        self.dim, self.seed = dim, seed
        self._points: list[np.ndarray] = []
        self._engine: Any = None

    def __getitem__(self, index: int) -> np.ndarray:
        if index >= len(self._points):
            from scipy.stats import qmc

            if self._engine is None:
                self._engine = qmc.Sobol(d=self.dim, scramble=True, seed=self.seed)
            while index >= len(self._points):
                self._points.extend(self._engine.random(self.BLOCK))
        return self._points[index]
