"""The background suggester without Ray: how many suggestions it keeps ready."""

from __future__ import annotations

import time

from distopt import Float
from distopt._problem import Problem
from distopt._suggest import MAX_DEPTH, Suggester
from distopt.space import Space


def _suggester(delay: float):
    from loop_objectives import SlowAsk

    strategy = SlowAsk(seed=0, delay=delay)
    problem = Problem(Space({"x": Float(0.0, 1.0)}), {"f": "min"})
    strategy.bind(problem)
    sizes: list[int] = []
    ask = strategy.ask

    def recording(n, pending=None):
        sizes.append(n)
        return ask(n, pending)

    strategy.ask = recording
    return Suggester(strategy, problem, background=True), sizes


def _wait_idle(suggester: Suggester) -> None:
    deadline = time.monotonic() + 10
    while suggester.thinking and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_strategy_slower_than_a_trial_keeps_several_workers_worth_ready():
    suggester, sizes = _suggester(delay=0.2)
    try:
        configs, interim = suggester.take(2, [], idle=True, waited=0.0, trial_seconds=None)
        assert len(configs) == 2 and interim == 0
        # trials of 0.05 s: two workers finish 2 * 0.2 / 0.05 = 8 trials during one ask;
        # the depth is capped at MAX_DEPTH workers' worth
        suggester.prefetch(2, configs, trial_seconds=0.05)
        _wait_idle(suggester)
        assert sizes[-1] == 2 * MAX_DEPTH
        # slow trials: a worker's worth is enough
        configs, _ = suggester.take(2 * MAX_DEPTH, [], idle=False, waited=0.0,
                                    trial_seconds=10.0)
        assert len(configs) == 2 * MAX_DEPTH
        suggester.prefetch(2, configs, trial_seconds=10.0)
        _wait_idle(suggester)
        assert sizes[-1] == 2
    finally:
        suggester.close()


def test_interim_points_of_a_resumed_study_do_not_repeat_the_stored_ones():
    from loop_objectives import SlowAsk

    from distopt._problem import TrialResult
    from distopt.strategies import RandomStrategy
    from distopt.trial import COMPLETE

    problem = Problem(Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)}), {"f": "min"})
    first = RandomStrategy(seed=7919)  # the interim sequence of a study seeded 0
    first.bind(problem)
    stored = [TrialResult(i, c, COMPLETE, {"f": 0.0}) for i, c in enumerate(first.ask(8))]
    strategy = SlowAsk(seed=0, delay=1.0)
    strategy.bind(problem)
    suggester = Suggester(strategy, problem, background=True, seed=0, history=stored)
    try:  # the strategy thinks for a second: the free workers get interim points at once
        configs, interim = suggester.take(4, [], idle=False, waited=1.0, trial_seconds=0.1)
    finally:
        suggester.close()
    assert interim == 4
    keys = problem.space.config_keys([r.config for r in stored])
    assert not set(problem.space.config_keys(configs)) & set(keys)
