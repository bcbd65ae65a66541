"""NSGA-II operators on plain arrays: constrained ranking, crowding, selection and variation.

Points live in the unit cube of the space's encoding; ``objectives`` are in minimisation form
with shape ``(n_points, n_objectives)``; ``violation`` is the total constraint violation per
point (0 = feasible). References: Deb, Pratap, Agarwal and Meyarivan, "A fast and elitist
multiobjective genetic algorithm: NSGA-II", IEEE TEC 6(2), 2002 (constrained domination,
section VI; crowding distance, section III-B); Deb and Agrawal, "Simulated binary crossover for
continuous search space", Complex Systems 9, 1995.
"""

from __future__ import annotations

import numpy as np

from ..pareto import pareto_rank


def constrained_rank(objectives: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Rank under Deb's constrained domination, shape ``(n_points,)``; 0 is best.

    Feasible points are ranked by non-dominated sorting. Every infeasible point ranks after
    every feasible one, and among infeasible points smaller total violation ranks first (equal
    violations share a rank).
    """
    n = len(objectives)
    rank = np.zeros(n, dtype=int)
    feasible = violation <= 0
    if feasible.any():
        rank[feasible] = pareto_rank(objectives[feasible])
    if (~feasible).any():
        offset = rank[feasible].max() + 1 if feasible.any() else 0
        _, dense = np.unique(violation[~feasible], return_inverse=True)
        rank[~feasible] = offset + dense
    return rank


def crowding_distance(objectives: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Crowding distance within each rank, shape ``(n_points,)``; extremes get ``inf``.

    The sum over objectives of the gap between a point's two neighbours along that objective,
    divided by the objective's range on the front, so isolated points score high.
    """
    n, k = objectives.shape
    distance = np.zeros(n)
    for r in np.unique(rank):
        members = np.flatnonzero(rank == r)
        if len(members) <= 2:
            distance[members] = np.inf
            continue
        for j in range(k):
            values = objectives[members, j]
            order = np.argsort(values, kind="stable")
            span = values[order[-1]] - values[order[0]]
            distance[members[order[[0, -1]]]] = np.inf
            if span > 0:
                gaps = (values[order[2:]] - values[order[:-2]]) / span
                distance[members[order[1:-1]]] += gaps
    return distance


def survivors(rank: np.ndarray, crowding: np.ndarray, size: int) -> np.ndarray:
    """Indices of the best ``size`` points: lower rank first, then larger crowding distance."""
    order = np.lexsort((-crowding, rank))
    return order[:size]


def tournament(rng: np.random.Generator, rank: np.ndarray, crowding: np.ndarray) -> int:
    """Binary tournament: the better of two random members (rank, then crowding; ties random)."""
    a, b = rng.integers(len(rank), size=2)
    if rank[a] != rank[b]:
        return int(a if rank[a] < rank[b] else b)
    if crowding[a] != crowding[b]:
        return int(a if crowding[a] > crowding[b] else b)
    return int(a if rng.random() < 0.5 else b)


def sbx(rng: np.random.Generator, p1: np.ndarray, p2: np.ndarray, eta: float,
        dims: np.ndarray) -> np.ndarray:
    """One child of simulated binary crossover on coordinates ``dims`` in ``[0, 1]``.

    Each coordinate crosses with probability 0.5 using the bounded spread factor of Deb and
    Agrawal (the child stays inside the cube); larger ``eta`` keeps children nearer the parents.
    """
    child = p1.copy()
    for j in dims:
        x1, x2 = sorted((p1[j], p2[j]))
        if rng.random() >= 0.5 or x2 - x1 < 1e-12:
            continue
        u = rng.random()
        children = []
        for distance_to_bound in (x1, 1.0 - x2):
            beta = 1.0 + 2.0 * distance_to_bound / (x2 - x1)
            alpha = 2.0 - beta ** -(eta + 1.0)
            if u <= 1.0 / alpha:
                beta_q = (u * alpha) ** (1.0 / (eta + 1.0))
            else:
                beta_q = (1.0 / (2.0 - u * alpha)) ** (1.0 / (eta + 1.0))
            children.append(beta_q)
        low = 0.5 * ((x1 + x2) - children[0] * (x2 - x1))
        high = 0.5 * ((x1 + x2) + children[1] * (x2 - x1))
        child[j] = np.clip(low if rng.random() < 0.5 else high, 0.0, 1.0)
    return child


def polynomial_mutation(rng: np.random.Generator, x: np.ndarray, eta: float, prob: float,
                        dims: np.ndarray) -> np.ndarray:
    """Deb's bounded polynomial mutation of each coordinate in ``dims`` (probability ``prob``)."""
    x = x.copy()
    for j in dims:
        if rng.random() >= prob:
            continue
        u = rng.random()
        if u < 0.5:
            delta = (2 * u + (1 - 2 * u) * (1 - x[j]) ** (eta + 1)) ** (1 / (eta + 1)) - 1
        else:
            delta = 1 - (2 * (1 - u) + 2 * (u - 0.5) * x[j] ** (eta + 1)) ** (1 / (eta + 1))
        x[j] = np.clip(x[j] + delta, 0.0, 1.0)
    return x


def categorical_variation(rng: np.random.Generator, child: np.ndarray,
                          other: np.ndarray | None, codes: dict[int, list[float]],
                          prob: float) -> np.ndarray:
    """Uniform crossover (when ``other`` is given) then random resetting on categoricals.

    Each categorical coordinate (``codes``: coordinate -> codes of its choices) takes the other
    parent's category with probability 0.5, then a uniformly random category with probability
    ``prob``: categories have no order, so interpolating their codes (as SBX would) means
    nothing.
    """
    child = child.copy()
    for j, values in codes.items():
        if other is not None and rng.random() < 0.5:
            child[j] = other[j]
        if rng.random() < prob:
            child[j] = values[rng.integers(len(values))]
    return child
