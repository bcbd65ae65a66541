"""distopt.pareto against brute-force numpy implementations written here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from distopt import pareto

# -- brute force ----------------------------------------------------------------------------------


def to_min(points, maximize) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    flags = np.broadcast_to(np.asarray(maximize, dtype=bool), (points.shape[-1],))
    return np.where(flags, -points, points)


def dominates(a, b) -> bool:
    """``a`` dominates ``b`` (minimisation): no worse anywhere, better somewhere."""
    return bool(np.all(a <= b) and np.any(a < b))


def bf_non_dominated(points, maximize=False) -> np.ndarray:
    q = to_min(points, maximize)
    finite = np.isfinite(q).all(axis=1)
    return np.array([finite[i] and not any(finite[j] and dominates(q[j], q[i])
                                           for j in range(len(q)) if j != i)
                     for i in range(len(q))], dtype=bool)


def bf_rank(points, maximize=False) -> np.ndarray:
    q = to_min(points, maximize)
    finite = np.isfinite(q).all(axis=1)
    ranks = np.full(len(q), -1)
    remaining = set(np.flatnonzero(finite))
    rank = 0
    while remaining:
        front = {i for i in remaining if not any(dominates(q[j], q[i]) for j in remaining)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    ranks[~finite] = rank if finite.any() else 0
    return ranks


def bf_hypervolume_grid(points, ref, maximize=False) -> float:
    """Exact volume of the union of boxes, by summing the cells of the coordinate grid."""
    q = to_min(points, maximize)
    r = to_min(np.asarray(ref, dtype=float)[None, :], maximize)[0]
    q = q[np.isfinite(q).all(axis=1)]
    q = q[(q < r).all(axis=1)]
    if len(q) == 0:
        return 0.0
    axes = [np.unique(np.append(q[:, k], r[k])) for k in range(q.shape[1])]
    lows = np.array(list(itertools.product(*[a[:-1] for a in axes])))
    widths = np.array(list(itertools.product(*[np.diff(a) for a in axes])))
    covered = (q[None, :, :] <= lows[:, None, :]).all(axis=2).any(axis=1)
    return float(widths[covered].prod(axis=1).sum())


def bf_hypervolume_2d(points, ref, maximize=False) -> float:
    """2-D hypervolume by sorting on the first objective and sweeping."""
    q = to_min(points, maximize)
    r = to_min(np.asarray(ref, dtype=float)[None, :], maximize)[0]
    q = q[np.isfinite(q).all(axis=1)]
    q = q[(q < r).all(axis=1)]
    q = q[np.lexsort((q[:, 1], q[:, 0]))]
    area, best_y = 0.0, r[1]
    for i, (x, y) in enumerate(q):
        best_y = min(best_y, y)
        next_x = q[i + 1, 0] if i + 1 < len(q) else r[0]
        area += (next_x - x) * (r[1] - best_y)
    return area


def bf_reference_point(points, maximize=False, margin=0.1, front_only=True) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    finite = np.isfinite(points).all(axis=1)
    front = points[bf_non_dominated(points, maximize)] if front_only else points[finite]
    flags = np.broadcast_to(np.asarray(maximize, dtype=bool), (points.shape[1],))
    ref = []
    for k, is_max in enumerate(flags):
        column = front[:, k]
        worst, best = (column.min(), column.max()) if is_max else (column.max(), column.min())
        span = abs(best - worst) or abs(worst) or 1.0
        ref.append(worst - margin * span if is_max else worst + margin * span)
    return np.array(ref)


def random_case(seed: int):
    """Random points (some with ties from a coarse grid), mixed directions, ref, NaN rows."""
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 25)), int(rng.choice([2, 3]))
    if seed % 3 == 0:
        points = rng.integers(0, 4, size=(n, d)).astype(float)  # duplicates and weak dominance
    else:
        points = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d)
    maximize = [bool(b) for b in rng.integers(0, 2, size=d)]
    if seed % 4 == 1:
        maximize = [True, False] + maximize[2:]
    return points, maximize, rng


# -- the brute force is itself right --------------------------------------------------------------

def test_brute_force_hypervolumes_agree_on_a_known_case():
    points = [[1, 3], [2, 2], [3, 1]]
    # boxes to ref (4, 4): 3x1 + 2x1 + 1x1 stacked: 3 + 2 + 1 = 6
    assert bf_hypervolume_2d(points, [4, 4]) == pytest.approx(6.0)
    assert bf_hypervolume_grid(points, [4, 4]) == pytest.approx(6.0)


# -- dominance and ranks --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_is_non_dominated_matches_brute_force(seed):
    points, maximize, _ = random_case(seed)
    expected = bf_non_dominated(points, maximize)
    got = pareto.is_non_dominated(points, maximize=maximize)
    assert got.dtype == bool and got.shape == (len(points),)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("seed", range(40))
def test_pareto_rank_matches_brute_force(seed):
    points, maximize, _ = random_case(seed)
    np.testing.assert_array_equal(pareto.pareto_rank(points, maximize=maximize),
                                  bf_rank(points, maximize))


def test_mixed_directions_small_example():
    points = [[1.0, 5.0], [2.0, 3.0], [4.0, 1.0], [4.0, 2.0], [0.0, 0.0]]
    # maximise the first, minimise the second: (4, 1) beats everything but (0, 0) (best f2);
    # then (4, 2) beats (2, 3), which beats (1, 5)
    np.testing.assert_array_equal(
        pareto.is_non_dominated(points, maximize=[True, False]), [False, False, True, False, True])
    np.testing.assert_array_equal(pareto.pareto_rank(points, maximize=[True, False]),
                                  [3, 2, 0, 1, 0])
    # minimise both: only (0, 0)
    np.testing.assert_array_equal(pareto.is_non_dominated(points), [0, 0, 0, 0, 1])
    # maximise both: (4, 2), (2, 3) and (1, 5) trade f1 against f2
    np.testing.assert_array_equal(pareto.is_non_dominated(points, maximize=True),
                                  [True, True, False, True, False])


def test_duplicates_kept_or_dropped():
    points = [[3.0, 3.0], [1.0, 2.0], [1.0, 2.0], [2.0, 1.0]]
    np.testing.assert_array_equal(pareto.is_non_dominated(points), [False, True, True, True])
    np.testing.assert_array_equal(pareto.is_non_dominated(points, keep_duplicates=False),
                                  [False, True, False, True])


def test_nan_rows_are_never_on_the_front_and_rank_last():
    points = np.array([[1.0, 2.0], [np.nan, 0.0], [2.0, 1.0], [3.0, 3.0], [0.0, np.nan]])
    np.testing.assert_array_equal(pareto.is_non_dominated(points),
                                  [True, False, True, False, False])
    np.testing.assert_array_equal(pareto.pareto_rank(points), [0, 2, 0, 1, 2])
    ref = [4.0, 4.0]
    assert pareto.hypervolume(points, ref) == pytest.approx(
        pareto.hypervolume(points[[0, 2, 3]], ref))
    np.testing.assert_allclose(pareto.reference_point(points),
                               pareto.reference_point(points[[0, 2, 3]]))
    assert pareto.reference_point(points, front_only=False) == pytest.approx(
        bf_reference_point(points, front_only=False))


@pytest.mark.parametrize("empty", [[], np.zeros((0, 2)), np.zeros((0, 3))])
def test_empty_input(empty):
    assert pareto.is_non_dominated(empty).shape == (0,)
    assert pareto.pareto_rank(empty).shape == (0,)
    assert pareto.hypervolume(empty, [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError):
        pareto.reference_point(empty)


def test_all_nan_input():
    points = np.full((3, 2), np.nan)
    assert not pareto.is_non_dominated(points).any()
    assert pareto.hypervolume(points, [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError):
        pareto.reference_point(points)


def test_shape_errors():
    with pytest.raises(ValueError):
        pareto.is_non_dominated([1.0, 2.0])
    with pytest.raises(ValueError):
        pareto.is_non_dominated([[1.0, 2.0]], maximize=[True, False, True])
    with pytest.raises(ValueError):
        pareto.hypervolume([[1.0, 2.0]], [3.0, 3.0, 3.0])


# -- hypervolume ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_hypervolume_matches_brute_force(seed):
    points, maximize, rng = random_case(seed)
    q = to_min(points, maximize)
    # a reference point worse than most points, sometimes cutting some off
    r = q.max(axis=0) + rng.uniform(-0.5, 1.0, size=q.shape[1]) * (np.ptp(q, axis=0) + 0.1)
    ref = np.where(maximize, -r, r)
    expected = bf_hypervolume_grid(points, ref, maximize)
    if points.shape[1] == 2:
        assert bf_hypervolume_2d(points, ref, maximize) == pytest.approx(expected)
    assert pareto.hypervolume(points, ref, maximize=maximize) == pytest.approx(expected,
                                                                                rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 50])
def test_hypervolume_of_linear_front(n):
    """Points (i/n, 1 - i/n) under ref (1, 1): a staircase of area (n - 1) / (2n)."""
    x = np.arange(n + 1) / n
    points = np.stack([x, 1 - x], axis=1)
    expected = (n - 1) / (2 * n)
    assert pareto.hypervolume(points, [1.0, 1.0]) == pytest.approx(expected)
    assert pareto.hypervolume(points, [2.0, 2.0]) == pytest.approx(3 + expected)
    # the same front stated as max/min, max/max
    assert pareto.hypervolume(points * [-1, 1], [-1.0, 1.0], maximize=[True, False]) == \
        pytest.approx(expected)
    assert pareto.hypervolume(-points, [-1.0, -1.0], maximize=True) == pytest.approx(expected)
    assert pareto.is_non_dominated(points).all()


def test_hypervolume_3d_analytic():
    assert pareto.hypervolume([[0.2, 0.3, 0.5]], [1, 1, 1]) == pytest.approx(0.8 * 0.7 * 0.5)
    # two boxes of 0.25 overlapping in a cube of 0.125
    assert pareto.hypervolume([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], [1, 1, 1]) == \
        pytest.approx(0.375)
    # maximise the last objective: the same boxes mirrored
    assert pareto.hypervolume([[0.0, 0.5, -0.5], [0.5, 0.0, -0.5]], [1, 1, -1],
                              maximize=[False, False, True]) == pytest.approx(0.375)


@pytest.mark.parametrize("m", [2, 4, 6])
def test_hypervolume_3d_simplex_front(m):
    """A lattice on the plane f1 + f2 + f3 = 1 (all non-dominated) against the grid sum."""
    points = np.array([[i, j, m - i - j] for i in range(m + 1) for j in range(m + 1 - i)]) / m
    assert pareto.is_non_dominated(points).all()
    ref = [1.1, 1.2, 1.3]
    assert pareto.hypervolume(points, ref) == pytest.approx(bf_hypervolume_grid(points, ref))


def test_points_not_strictly_better_than_ref_add_nothing():
    assert pareto.hypervolume([[1.0, 0.0], [0.0, 1.0]], [1.0, 1.0]) == 0.0
    assert pareto.hypervolume([[2.0, 0.0]], [1.0, 1.0]) == 0.0
    assert pareto.hypervolume([[0.5, 0.5], [2.0, 0.0]], [1.0, 1.0]) == pytest.approx(0.25)


# -- reference point ------------------------------------------------------------------------------

def test_reference_point_examples():
    points = [[1.0, 5.0], [2.0, 3.0], [4.0, 1.0]]
    np.testing.assert_allclose(pareto.reference_point(points), [4.3, 5.4])
    # max f1 / min f2: the front is the single point (4, 1); zero span -> margin * |worst|
    np.testing.assert_allclose(pareto.reference_point(points, maximize=[True, False]), [3.6, 1.1])
    np.testing.assert_allclose(pareto.reference_point([[0.0, -2.0]]), [0.1, -1.8])
    np.testing.assert_allclose(pareto.reference_point(points, margin=0.5), [5.5, 7.0])
    # the margin from a wider set's range (e.g. infeasible points too), the worst from points
    wider = [[0.0, 0.0], [10.0, 25.0]]
    np.testing.assert_allclose(pareto.reference_point(points, front_only=False, scale=wider),
                               [5.0, 7.5])
    np.testing.assert_allclose(pareto.reference_point(points, scale=[[1.0, 1.0]]), [4.3, 5.4])


@pytest.mark.parametrize("seed", range(30))
def test_reference_point_matches_brute_force_and_is_dominated(seed):
    points, maximize, _ = random_case(seed)
    ref = pareto.reference_point(points, maximize=maximize)
    np.testing.assert_allclose(ref, bf_reference_point(points, maximize), rtol=1e-12)
    np.testing.assert_allclose(pareto.reference_point(points, maximize=maximize, front_only=False),
                               bf_reference_point(points, maximize, front_only=False), rtol=1e-12)
    # every front point strictly dominates it, so each adds positive hypervolume
    front = to_min(points[bf_non_dominated(points, maximize)], maximize)
    assert (front < to_min(ref[None, :], maximize)).all()
    assert pareto.hypervolume(points, ref, maximize=maximize) > 0


# -- purity ---------------------------------------------------------------------------------------

def test_inputs_not_mutated():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(20, 3))
    points[3, 1] = np.nan
    maximize = [True, False, True]
    ref = np.array([-5.0, 5.0, -5.0])
    before, ref_before = points.copy(), ref.copy()
    as_list = points.tolist()
    pareto.is_non_dominated(points, maximize=maximize)
    pareto.pareto_rank(points, maximize=maximize)
    pareto.hypervolume(points, ref, maximize=maximize)
    pareto.reference_point(points, maximize=maximize)
    pareto.to_minimization(points, maximize=maximize)
    pareto.hypervolume(as_list, ref.tolist(), maximize=maximize)
    np.testing.assert_array_equal(points, before)
    np.testing.assert_array_equal(ref, ref_before)
    assert np.array_equal(np.array(as_list), before, equal_nan=True)


def test_to_minimization():
    out = pareto.to_minimization(np.array([[1.0, 2.0]]), maximize=[True, False])
    np.testing.assert_array_equal(out, [[-1.0, 2.0]])
