"""Sobol points for the strategies: addressed by position, the same whatever the access order."""

from __future__ import annotations

import numpy as np
from scipy.stats import qmc

from distopt._problem import Problem
from distopt.space import point_keys
from distopt.strategies._seeding import derive_seed, stream_seed
from distopt.strategies._sobol import SobolPoints, SobolStart


def test_sobol_points_are_the_sequence_by_index_whatever_the_order_asked() -> None:
    expected = qmc.Sobol(d=3, scramble=True, seed=7).random(256)
    backwards, forwards = SobolPoints(3, 7), SobolPoints(3, 7)
    late = [backwards[i] for i in (200, 3, 64, 0)]
    np.testing.assert_array_equal(late, expected[[200, 3, 64, 0]])
    np.testing.assert_array_equal([forwards[i] for i in range(256)], expected)


def test_stream_seeds_are_fixed_per_stream_and_unseeded_stays_unseeded() -> None:
    assert stream_seed(3, 0) == stream_seed(3, 0) != stream_seed(3, 1)
    assert stream_seed(None, 0) is None
    assert derive_seed(None, 1) == derive_seed(None, 1) != derive_seed(0, 1)


def test_sobol_start_skips_known_configurations() -> None:
    problem = Problem({"x": {"type": "float", "low": 0.0, "high": 1.0},
                       "k": {"type": "int", "low": 0, "high": 1}}, {"y": "min"})
    start = SobolStart(problem.space.dim, 0)
    first = start.take(0, 4, set(), problem)
    again = start.take(0, 4, set(point_keys(first[:2])), problem)
    assert not set(point_keys(again)) & set(point_keys(first[:2]))
    np.testing.assert_array_equal(again[:2], first[2:])


def test_random_asks_of_any_size_show_no_sobol_balance_warning():
    """scipy warns that Sobol balance needs a power of 2; a search uses every prefix on purpose,
    so a user running 3 or 4 workers should not see it."""
    import warnings

    import distopt
    from distopt.strategies._random import RandomStrategy

    strategy = RandomStrategy(seed=0)
    strategy.bind(distopt.Problem({"x": distopt.Float(0, 1)}, {"f": "min"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(strategy.ask(3, [])) == 3
