"""Scrambled Sobol sampling of the encoded space: the baseline every strategy must beat."""

from __future__ import annotations

from typing import Any

from .._problem import TrialResult
from ._base import Strategy
from ._sobol import draw


class RandomStrategy(Strategy):
    """Quasi-random search: points of a scrambled Sobol sequence in ``[0, 1]^d``, decoded.

    Sobol points fill the cube more evenly than i.i.d. uniforms (lower discrepancy), which is why
    BoTorch and Optuna's QMCSampler start from them. The sequence position is the number of
    distinct configurations known to have been handed out: those this instance drew, those told
    back, and pending ones it did not draw (trials a crashed run left in flight, re-run on
    resume). So a resumed study continues the sequence instead of repeating points.
    """

    name = "random"
    replays_exactly = True
    queue_depth = 2  # suggestions ignore results, so a queued trial loses nothing

    def _setup(self, problem: Any) -> None:
        from scipy.stats import qmc  # lazy: scipy is only needed once a search starts

        self._sobol = qmc.Sobol(d=problem.space.dim, scramble=True, seed=self.seed)
        self._drawn = 0
        self._known: set[tuple[float, ...]] = set()

    def _key(self, config: dict[str, Any]) -> tuple[float, ...]:
        return self.problem.space.config_keys([config])[0]

    def _catch_up(self, configs: list[dict[str, Any]]) -> None:
        """Skip the sequence past configurations handed out by an earlier run."""
        self._known.update(self._key(c) for c in configs)
        behind = len(self._known) - self._drawn
        if behind > 0:
            self._sobol.fast_forward(behind)
            self._drawn += behind

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._catch_up(pending)
        points = draw(self._sobol, n)
        self._drawn += n
        configs = self.problem.space.decode(points)
        self._known.update(self._key(c) for c in configs)
        return configs

    def _tell(self, results: list[TrialResult]) -> None:
        self._catch_up([r.config for r in results])
