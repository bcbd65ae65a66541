"""Steady-state NSGA-II with constrained domination (``strategy="pareto"``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_int, check_number, option_field
from .._problem import Problem, TrialResult
from ..pareto import to_minimization
from ..space import Categorical, point_keys
from ._base import Strategy
from ._nsga2_ops import (
    categorical_variation,
    constrained_rank,
    crowding_distance,
    polynomial_mutation,
    sbx,
    survivors,
    tournament,
)
from ._observations import History
from ._points import pending_points, snap
from ._seeding import derive_seed
from ._sobol import SobolStart

#: Children drawn before giving up on finding one that is not a repeat (then: Sobol point).
MAX_TRIES = 32


class NSGA2Strategy(Strategy):
    """Evolutionary Pareto search: NSGA-II, steady state, with Deb's constrained domination.

    The first ``population_size`` configurations are scrambled Sobol points. From then on the
    population is the best ``population_size`` of all finished trials (feasible before
    infeasible, then non-dominated rank, then crowding distance; infeasible ones by total
    violation), recomputed from the data at every ask. Each child comes from two binary
    tournaments, simulated binary crossover and polynomial mutation in the unit cube (uniform
    crossover and random resetting for categoricals). Nothing waits for a generation to
    finish: a free worker gets a child of the population as it is now.

    Args:
        seed: seed of the Sobol start and of the variation operators.
        population_size: survivors kept as parents (and size of the Sobol start).
        crossover_prob: probability that a child is a crossover of two parents (else a copy of
            the first, then mutated).
        eta_crossover: SBX distribution index (larger: children nearer their parents).
        eta_mutation: polynomial mutation distribution index.
        mutation_prob: per-coordinate mutation probability (default ``1 / dim``).
    """

    name = "pareto"
    #: A strategy rebuilt by replaying the told results asks exactly what the live one asks.
    replays_exactly = True

    def __init__(self, *, seed: int | None = 0, population_size: int = 20,
                 crossover_prob: float = 0.9, eta_crossover: float = 15.0,
                 eta_mutation: float = 20.0, mutation_prob: float | None = None):
        super().__init__(seed=seed)
        check_int(option_field("strategy", "population_size"), population_size, 2)
        for name, value in (("crossover_prob", crossover_prob), ("mutation_prob", mutation_prob)):
            check_number(option_field("strategy", name), value, 0, maximum=1, allow_none=True)
        for name, value in (("eta_crossover", eta_crossover), ("eta_mutation", eta_mutation)):
            check_number(option_field("strategy", name), value, 0, strict=True)
        self.population_size = population_size
        self.crossover_prob = float(crossover_prob)
        self.eta_crossover, self.eta_mutation = float(eta_crossover), float(eta_mutation)
        self.mutation_prob = mutation_prob

    def _setup(self, problem: Problem) -> None:
        space = problem.space
        self._entropy = self.seed if self.seed is not None else derive_seed(
            int(np.random.SeedSequence().entropy % 2**31))
        self._history = History(problem)
        self._sobol = SobolStart(space.dim, self._entropy)
        self._categorical = {j: [space.params[n].to_unit(c) for c in space.params[n].choices]
                             for j, n in enumerate(space.names)
                             if isinstance(space.params[n], Categorical)}
        self._ordinal = np.array([j for j in range(space.dim) if j not in self._categorical],
                                 dtype=int)

    def _tell(self, results: list[TrialResult]) -> None:
        self._history.add(results)

    def population(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The current parents: indices into the usable observations (best first), their
        constrained ranks and crowding distances, each of shape ``(min(n, population_size),)``."""
        history = self._history
        objectives = to_minimization(history.objectives(), maximize=self.problem.maximize)
        rank = constrained_rank(objectives, history.violation())
        crowding = crowding_distance(objectives, rank)
        keep = survivors(rank, crowding, self.population_size)
        return keep, rank[keep], crowding[keep]

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        history, dim = self._history, self.problem.space.dim
        avoid, position = history.known(pending_points(self.problem, pending))
        n_sobol = n if history.n_complete < 2 else min(n, max(0, self.population_size - position))
        points = self._sobol.take(position, n_sobol, avoid, self.problem).reshape(-1, dim)
        avoid = avoid | set(point_keys(points))
        if n_sobol < n:
            rng = np.random.default_rng(derive_seed(self._entropy, len(history), position))
            keep, rank, crowding = self.population()
            parents = history.points[history.complete][keep]
            children = []
            for _ in range(n - n_sobol):
                child = self._child(rng, parents, rank, crowding, avoid, position)
                avoid.add(point_keys(child[None])[0])
                children.append(child)
            points = np.concatenate([points, np.array(children)])
        history.issue(points)
        return self.problem.space.decode(points)

    def _child(self, rng: np.random.Generator, parents: np.ndarray, rank: np.ndarray,
               crowding: np.ndarray, avoid: set[tuple[float, ...]], position: int) -> np.ndarray:
        """One new snapped point bred from ``parents`` (``p x dim``), not in ``avoid``."""
        prob = self.mutation_prob if self.mutation_prob is not None else 1.0 / len(parents[0])
        for _ in range(MAX_TRIES):
            first = parents[tournament(rng, rank, crowding)]
            second = parents[tournament(rng, rank, crowding)]
            cross = rng.random() < self.crossover_prob
            child = sbx(rng, first, second, self.eta_crossover, self._ordinal) if cross else first
            child = polynomial_mutation(rng, child, self.eta_mutation, prob, self._ordinal)
            child = categorical_variation(rng, child, second if cross else None,
                                          self._categorical, prob)
            child = snap(self.problem, child[None])[0]
            if point_keys(child[None])[0] not in avoid:
                return child
        # A converged population in a small discrete space: explore instead of repeating.
        return self._sobol.take(position + MAX_TRIES, 1, avoid, self.problem)[0]


#: The name this class had before it was named for its algorithm (old imports keep working).
ParetoStrategy = NSGA2Strategy
