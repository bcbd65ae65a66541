"""NSGA-II operators on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from distopt.strategies._nsga2_ops import (
    categorical_variation,
    constrained_rank,
    crowding_distance,
    polynomial_mutation,
    sbx,
    survivors,
    tournament,
)


def test_constrained_rank_puts_feasible_fronts_first_then_smaller_violation() -> None:
    objectives = np.array([[1.0, 4.0], [2.0, 2.0], [3.0, 3.0], [0.0, 0.0], [0.5, 0.5], [4, 1]])
    violation = np.array([0.0, 0.0, 0.0, 2.0, 0.5, 0.0])
    rank = constrained_rank(objectives, violation)
    # feasible: (1,4), (2,2), (4,1) form the front, (3,3) is dominated by (2,2)
    # infeasible: (0.5,0.5) violates less than (0,0), though it is dominated by it
    assert rank.tolist() == [0, 0, 1, 3, 2, 0]


def test_constrained_rank_without_any_feasible_point_orders_by_violation() -> None:
    rank = constrained_rank(np.zeros((3, 2)), np.array([3.0, 1.0, 1.0]))
    assert rank.tolist() == [1, 0, 0]


def test_crowding_distance_by_hand() -> None:
    objectives = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    distance = crowding_distance(objectives, np.zeros(4, dtype=int))
    assert np.isinf(distance[[0, 3]]).all()
    # point 1: (3 - 0)/4 + (4 - 1)/4 ; point 2: (4 - 1)/4 + (2 - 0)/4
    assert distance[1] == pytest.approx(1.5) and distance[2] == pytest.approx(1.25)


def test_survivors_take_whole_fronts_then_the_least_crowded() -> None:
    rank = np.array([1, 0, 1, 2, 1])
    crowding = np.array([0.5, np.inf, 2.0, np.inf, 1.0])
    assert survivors(rank, crowding, 3).tolist() == [1, 2, 4]


def test_tournament_prefers_rank_then_crowding() -> None:
    rng = np.random.default_rng(0)
    rank, crowding = np.array([0, 1]), np.array([0.0, np.inf])
    picks = {tournament(rng, rank, crowding) for _ in range(50)}
    assert picks == {0, 1}  # both drawn sometimes (a vs a), but 1 never beats 0
    wins = [tournament(rng, rank, crowding) for _ in range(200)]
    assert wins.count(0) > 140  # 0 wins every mixed pair (p = 3/4)


def test_sbx_and_mutation_stay_in_the_cube_and_near_parents_for_large_eta() -> None:
    rng = np.random.default_rng(1)
    p1, p2 = np.array([0.0, 0.2, 0.9, 1.0]), np.array([0.05, 0.4, 1.0, 1.0])
    dims = np.arange(4)
    children = np.array([polynomial_mutation(rng, sbx(rng, p1, p2, 15.0, dims), 20.0, 1.0, dims)
                         for _ in range(500)])
    assert children.min() >= 0.0 and children.max() <= 1.0
    tight = np.array([sbx(rng, p1, p2, 500.0, dims) for _ in range(200)])
    lo, hi = np.minimum(p1, p2), np.maximum(p1, p2)
    assert np.all(tight >= lo - 0.02) and np.all(tight <= hi + 0.02)
    assert np.ptp(children[:, 1]) > 0.2  # eta=15 and mutation do explore


def test_categorical_variation_only_takes_valid_codes() -> None:
    rng = np.random.default_rng(2)
    codes = {1: [1 / 6, 3 / 6, 5 / 6]}
    child = np.array([0.3, 1 / 6])
    out = {categorical_variation(rng, child, np.array([0.7, 5 / 6]), codes, 0.5)[1]
           for _ in range(100)}
    assert out == set(codes[1])
    assert all(categorical_variation(rng, child, None, codes, 0.5)[0] == 0.3 for _ in range(5))
