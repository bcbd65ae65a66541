"""Scrambled Sobol sampling of the encoded space: the baseline every strategy must beat."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._problem import TrialResult
from ._base import Strategy


class RandomStrategy(Strategy):
    """Quasi-random search: points of a scrambled Sobol sequence in ``[0, 1]^d``, decoded.

    Sobol points fill the cube more evenly than i.i.d. uniforms (lower discrepancy), which is why
    BoTorch and Optuna's QMCSampler start from them. The sequence position is the number of
    configurations handed out, so a resumed study that replays its trials through ``tell``
    continues the same sequence instead of repeating its first points.
    """

    name = "random"
    queue_depth = 2  # suggestions ignore results, so a queued trial loses nothing

    def _setup(self, problem: Any) -> None:
        from scipy.stats import qmc  # lazy: scipy is only needed once a search starts

        self._sobol = qmc.Sobol(d=problem.space.dim, scramble=True, seed=self.seed)
        self._drawn = 0
        self._seen: set[int] = set()

    def _draw(self, n: int) -> np.ndarray:
        self._drawn += n
        return self._sobol.random(n)

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.problem.space.decode(self._draw(n))

    def _tell(self, results: list[TrialResult]) -> None:
        # Replayed trials (resume) advance the sequence past points already handed out.
        new = [r for r in results if r.trial_id not in self._seen]
        self._seen.update(r.trial_id for r in new)
        behind = len(self._seen) - self._drawn
        if behind > 0:
            self._sobol.fast_forward(behind)
            self._drawn += behind
