"""The contract every strategy keeps, whatever its algorithm."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from strategy_helpers import STRATEGIES, drive, keys, make, mixed_metrics, mixed_problem

from distopt._problem import Problem, TrialResult

#: Enough evaluations for every strategy to leave its random start with the fast settings.
N_STEPS = 8


@pytest.fixture(params=STRATEGIES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_suggestions_lie_in_the_space_with_their_types(name: str) -> None:
    problem = mixed_problem()
    strategy = make(name, problem)
    results = drive(strategy, mixed_metrics, N_STEPS)
    configs = [r.config for r in results] + strategy.ask(4)
    for config in configs:
        problem.space.validate(config)  # raises on a value outside its domain or of wrong type
        assert type(config["lr"]) is float and type(config["wd"]) is float
        assert type(config["layers"]) is int and type(config["width"]) is int
        assert config["act"] in ("relu", "gelu", "tanh")
        assert config["batch"] == 32


def test_start_covers_the_off_value(name: str) -> None:
    # 10% of the coordinate decodes to ``off``: 30 start points hit it (Sobol: about 3 times).
    problem = mixed_problem()
    configs = make(name, problem).ask(30)
    assert 1 <= sum(c["wd"] == 0.0 for c in configs) <= 9
    assert len(set(keys(problem, configs))) == 30


def test_same_seed_same_suggestions_and_other_seed_differs(name: str) -> None:
    problem = mixed_problem()
    first, second, other = (make(name, problem, seed=s) for s in (3, 3, 4))
    runs = [drive(s, mixed_metrics, N_STEPS) for s in (first, second, other)]
    assert [r.config for r in runs[0]] == [r.config for r in runs[1]]
    assert first.ask(3) == second.ask(3)
    assert [r.config for r in runs[0]] != [r.config for r in runs[2]]


def test_no_duplicates_among_pending_points(name: str) -> None:
    problem = mixed_problem()
    strategy = make(name, problem)
    drive(strategy, mixed_metrics, N_STEPS)
    batch = strategy.ask(5)
    more = strategy.ask(3, pending=batch)
    assert len(set(keys(problem, batch + more))) == 8


def test_small_discrete_space_is_covered_without_repeats(name: str) -> None:
    # 4 x 2 = 8 configurations: eight asks with the running ones pending give all of them.
    problem = Problem({"k": {"type": "int", "low": 0, "high": 3},
                       "c": {"type": "categorical", "choices": ["a", "b"]}}, {"y": "min"})
    strategy = make(name, problem)
    evaluate = lambda c: {"y": (c["k"] - 2) ** 2 + (c["c"] == "a")}  # noqa: E731
    told = drive(strategy, evaluate, 3)
    pending: list[dict] = []
    for _ in range(5):
        pending += strategy.ask(1, pending=pending)
    configs = [r.config for r in told] + pending
    assert sorted((c["k"], c["c"]) for c in configs) == [(k, c) for k in range(4) for c in "ab"]


def test_a_strategy_rebuilt_from_results_continues_without_repeating(name: str) -> None:
    problem = mixed_problem()
    original = make(name, problem, seed=1)
    results = drive(original, mixed_metrics, N_STEPS)
    rebuilt = make(name, problem, seed=1)
    rebuilt.tell(results)  # a resumed study replays its store; no pickle involved
    rebuilt.tell(results[:3])  # replays of the same trial ids are ignored
    nxt = rebuilt.ask(4)
    assert not set(keys(problem, nxt)) & set(keys(problem, [r.config for r in results]))
    if name in ("random", "pareto"):  # their state is a function of the data alone
        assert nxt == original.ask(4)


def test_failed_and_incomplete_results_do_not_crash(name: str) -> None:
    problem = mixed_problem()
    strategy = make(name, problem)
    configs = strategy.ask(4)
    strategy.tell([TrialResult(0, configs[0], "FAILED"),
                   TrialResult(1, configs[1], "TIMEOUT"),
                   TrialResult(2, configs[2], "PRUNED", {"loss": 3.0}),
                   TrialResult(3, configs[3], "COMPLETE", {**mixed_metrics(configs[3]),
                                                           "loss": float("nan")})])
    # every other trial fails: the strategy keeps working and never re-proposes a failure
    failing = lambda c: None if c["layers"] % 2 else mixed_metrics(c)  # noqa: E731
    results = drive(strategy, failing, N_STEPS, start=4)
    later = strategy.ask(3)
    for config in later:
        problem.space.validate(config)
    failed = configs + [r.config for r in results if r.status != "COMPLETE"]
    failed_keys = set(keys(problem, failed))
    assert not failed_keys & set(keys(problem, later))
    assert sum(r.status == "COMPLETE" for r in results) >= 2


def test_pickled_strategy_suggests_the_same(name: str) -> None:
    problem = mixed_problem()
    strategy = make(name, problem)
    drive(strategy, mixed_metrics, N_STEPS)
    copy = pickle.loads(pickle.dumps(strategy))
    assert copy.ask(2) == strategy.ask(2)


def test_ask_validates_n(name: str) -> None:
    strategy = make(name, mixed_problem())
    with pytest.raises(Exception, match="ask.n"):
        strategy.ask(0)


def test_unknown_option_is_an_error_naming_it(name: str) -> None:
    from distopt import strategies

    with pytest.raises(Exception, match="not_an_option"):
        strategies.make_strategy({"name": name, "options": {"not_an_option": 1}})


def test_single_objective_problem_is_supported(name: str) -> None:
    problem = Problem({"x": {"type": "float", "low": -2.0, "high": 2.0},
                       "y": {"type": "float", "low": -2.0, "high": 2.0}}, {"f": "min"})
    strategy = make(name, problem)
    results = drive(strategy, lambda c: {"f": (c["x"] - 1) ** 2 + c["y"] ** 2}, 12)
    values = np.array([r.metrics["f"] for r in results])
    assert np.all(np.isfinite(values))
