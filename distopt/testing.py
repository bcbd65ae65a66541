"""The contract every strategy keeps, runnable on your own strategy.

Each clause is a function of a *factory*, ``factory(seed) -> Strategy`` (unbound), and raises an
``AssertionError`` saying what broke. Run them all at once::

    from distopt.testing import check_strategy

    check_strategy(lambda seed: MyStrategy(seed=seed, k=3))
    check_strategy("my-registered-name")  # or a {name, options} mapping, as make_strategy takes

or as one pytest test per clause, by overriding the ``make_strategy`` fixture::

    import pytest
    from distopt.testing import StrategyContract

    class TestMyStrategy(StrategyContract):
        @pytest.fixture
        def make_strategy(self):
            return lambda seed: MyStrategy(seed=seed)

The clauses: suggestions lie in the space with their types; the start covers a Float's ``off``
value; the same seed gives the same suggestions and another seed others; no duplicates among
pending points; ``ask(n)`` returns ``n`` and validates ``n``; a small discrete space is covered
without repeats; a strategy rebuilt by replaying results goes on without repeating them; failed,
timed-out, pruned and incomplete results do not break it; a pickled copy suggests the same; an
unknown option is an error naming it; ``to_dict`` rebuilds the same strategy through
:func:`~distopt.strategies.make_strategy`; a single objective works.

A strategy whose state is a function of the told results alone sets the class attribute
``replays_exactly = True``; the replay clause then also demands that a rebuilt copy asks exactly
what the live one asks.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._errors import DistoptError
from ._problem import Problem, TrialResult
from .strategies import Strategy, make_strategy
from .trial import Status

#: Builds an unbound strategy from a seed.
Factory = Callable[[int], Strategy]

#: Evaluations each clause runs: enough for every built-in strategy (with small options) to leave
#: its random start.
N_STEPS = 8


def mixed_space() -> dict[str, Any]:
    """Every parameter kind: log Float, Float with ``off``, Int, log Int, Categorical, constant."""
    return {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "wd": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True, "off": 0.0},
        "layers": {"type": "int", "low": 1, "high": 4},
        "width": {"type": "int", "low": 16, "high": 256, "log": True},
        "act": {"type": "categorical", "choices": ["relu", "gelu", "tanh"]},
        "batch": 32,
    }


def mixed_metrics(config: Mapping[str, Any]) -> dict[str, float]:
    """A smooth two-objective toy over :func:`mixed_space` plus a constraint metric."""
    lr = math.log10(config["lr"]) + 2.0
    wd = 0.0 if config["wd"] == 0.0 else (math.log10(config["wd"]) + 4.0) ** 2 / 10
    penalty = {"relu": 0.2, "gelu": 0.0, "tanh": 0.5}[config["act"]]
    size = config["layers"] * config["width"] / 256
    loss = lr ** 2 + wd + penalty + 1.0 / (1.0 + size)
    return {"loss": loss, "cost": size, "memory": config["width"] / 256}


def mixed_problem() -> Problem:
    """:func:`mixed_space`, minimising ``loss`` and ``cost`` subject to ``memory <= 0.75``."""
    return Problem(mixed_space(), {"loss": "min", "cost": "min"}, {"memory": ["<=", 0.75]})


def drive(strategy: Strategy, evaluate: Callable[[dict[str, Any]], dict[str, float] | None],
          n: int, *, start: int = 0) -> list[TrialResult]:
    """Ask one, evaluate, tell one, ``n`` times (trial ids from ``start``); ``evaluate``
    returning None means the trial FAILED."""
    results = []
    for i in range(start, start + n):
        config = strategy.ask(1)[0]
        metrics = evaluate(config)
        status = Status.FAILED if metrics is None else Status.COMPLETE
        result = TrialResult(i, config, status, metrics or {})
        strategy.tell([result])
        results.append(result)
    return results


def _keys(problem: Problem, configs: list[dict[str, Any]]) -> list[tuple[float, ...]]:
    return problem.space.config_keys(configs) if configs else []


def _bound(factory: Factory, problem: Problem, seed: int = 0) -> Strategy:
    strategy = factory(seed)
    strategy.bind(problem)
    return strategy


# -- the clauses ---------------------------------------------------------------------------------

def suggestions_lie_in_the_space_with_their_types(factory: Factory) -> None:
    """Every suggestion validates against the space, each value of its parameter's type."""
    problem = mixed_problem()
    strategy = _bound(factory, problem)
    results = drive(strategy, mixed_metrics, N_STEPS)
    for config in [r.config for r in results] + strategy.ask(4):
        problem.space.validate(config)  # raises on a value outside its domain or of wrong type
        assert type(config["lr"]) is float and type(config["wd"]) is float, config
        assert type(config["layers"]) is int and type(config["width"]) is int, config
        assert config["act"] in ("relu", "gelu", "tanh"), config
        assert config["batch"] == 32, config


def start_covers_the_off_value(factory: Factory) -> None:
    """The first 30 suggestions are distinct and hit a Float's ``off`` value about as often as
    its share of the coordinate (10%)."""
    # 10% of the coordinate decodes to ``off``: 30 start points hit it (Sobol: about 3 times).
    problem = mixed_problem()
    configs = _bound(factory, problem).ask(30)
    hits = sum(c["wd"] == 0.0 for c in configs)
    assert 1 <= hits <= 9, f"{hits} of 30 start points are off; expected about 3"
    assert len(set(_keys(problem, configs))) == 30, "the start repeats a configuration"


def same_seed_same_suggestions_and_other_seed_differs(factory: Factory) -> None:
    """Equal seeds and results give equal suggestions; another seed gives others."""
    problem = mixed_problem()
    first, second, other = (_bound(factory, problem, seed) for seed in (3, 3, 4))
    runs = [drive(s, mixed_metrics, N_STEPS) for s in (first, second, other)]
    assert [r.config for r in runs[0]] == [r.config for r in runs[1]], "same seed, other configs"
    assert first.ask(3) == second.ask(3), "same seed and results, other suggestions"
    assert [r.config for r in runs[0]] != [r.config for r in runs[2]], "seed 4 repeats seed 3"


def no_duplicates_among_pending_points(factory: Factory) -> None:
    """A suggestion never repeats a pending configuration."""
    problem = mixed_problem()
    strategy = _bound(factory, problem)
    drive(strategy, mixed_metrics, N_STEPS)
    batch = strategy.ask(5)
    more = strategy.ask(3, pending=batch)
    assert len(set(_keys(problem, batch + more))) == 8, "a suggestion repeats a pending one"


def ask_returns_n_and_validates_n(factory: Factory) -> None:
    """``ask(n)`` returns ``n`` configurations; ``ask(0)`` is an error naming ``ask.n``."""
    strategy = _bound(factory, mixed_problem())
    for n in (1, 2, 5):
        assert len(strategy.ask(n)) == n, f"ask({n}) did not return {n} configurations"
    try:
        strategy.ask(0)
    except DistoptError as error:
        assert "ask.n" in str(error), error
    else:
        raise AssertionError("ask(0) did not raise")


def small_discrete_space_is_covered_without_repeats(factory: Factory) -> None:
    """Asking one at a time with the running ones pending covers a space of 8 configurations."""
    # 4 x 2 = 8 configurations: eight asks with the running ones pending give all of them.
    problem = Problem({"k": {"type": "int", "low": 0, "high": 3},
                       "c": {"type": "categorical", "choices": ["a", "b"]}}, {"y": "min"})
    strategy = _bound(factory, problem)
    told = drive(strategy, lambda c: {"y": (c["k"] - 2) ** 2 + (c["c"] == "a")}, 3)
    pending: list[dict[str, Any]] = []
    for _ in range(5):
        pending += strategy.ask(1, pending=pending)
    configs = [r.config for r in told] + pending
    covered = sorted((c["k"], c["c"]) for c in configs)
    assert covered == [(k, c) for k in range(4) for c in "ab"], covered


def rebuilt_from_results_continues_without_repeating(factory: Factory) -> None:
    """A strategy rebuilt by replaying results (in any batches, repeats ignored) asks nothing it
    was told and as any other copy rebuilt from them; with ``replays_exactly``, as the live
    one."""
    problem = mixed_problem()
    original = _bound(factory, problem, 1)
    results = drive(original, mixed_metrics, N_STEPS)
    rebuilt, again = _bound(factory, problem, 1), _bound(factory, problem, 1)
    rebuilt.tell(results)  # a resumed study replays its store; no pickle involved
    rebuilt.tell(results[:3])  # replays of the same trial ids are ignored
    again.tell(results[:5])
    again.tell(results[5:])
    nxt = rebuilt.ask(4)
    assert not set(_keys(problem, nxt)) & set(_keys(problem, [r.config for r in results])), \
        "a rebuilt strategy re-proposes a configuration it was told"
    assert nxt == again.ask(4), "two strategies rebuilt from the same results ask differently"
    if getattr(original, "replays_exactly", False):
        assert nxt == original.ask(4), "replays_exactly: the rebuilt one asks other than the live"


def failed_and_incomplete_results_do_not_crash(factory: Factory) -> None:
    """FAILED, TIMEOUT, PRUNED and NaN results are taken; failures are never proposed again."""
    problem = mixed_problem()
    strategy = _bound(factory, problem)
    configs = strategy.ask(4)
    strategy.tell([TrialResult(0, configs[0], Status.FAILED),
                   TrialResult(1, configs[1], Status.TIMEOUT),
                   TrialResult(2, configs[2], Status.PRUNED, {"loss": 3.0}),
                   TrialResult(3, configs[3], Status.COMPLETE, {**mixed_metrics(configs[3]),
                                                                "loss": float("nan")})])
    # every other trial fails: the strategy keeps working and never re-proposes a failure
    results = drive(strategy, lambda c: None if c["layers"] % 2 else mixed_metrics(c), N_STEPS,
                    start=4)
    later = strategy.ask(3)
    for config in later:
        problem.space.validate(config)
    failed = configs + [r.config for r in results if r.status != Status.COMPLETE]
    assert not set(_keys(problem, failed)) & set(_keys(problem, later)), "a failure re-proposed"
    assert sum(r.status == Status.COMPLETE for r in results) >= 2, "it only proposes failures"


def pickled_strategy_suggests_the_same(factory: Factory) -> None:
    """A pickled and unpickled copy suggests what the original suggests."""
    strategy = _bound(factory, mixed_problem())
    drive(strategy, mixed_metrics, N_STEPS)
    copy = pickle.loads(pickle.dumps(strategy))
    assert copy.ask(2) == strategy.ask(2), "a pickled copy suggests other configurations"


def unknown_option_is_an_error_naming_it(factory: Factory) -> None:
    """``make_strategy`` with an unknown option raises a ``ConfigError`` naming it."""
    spec = factory(0).to_dict()
    try:
        make_strategy({"name": spec["name"], "options": {**spec["options"], "not_an_option": 1}})
    except DistoptError as error:
        assert "not_an_option" in str(error), error
    else:
        raise AssertionError("an unknown option was accepted")


def to_dict_rebuilds_the_same_strategy(factory: Factory) -> None:
    """``to_dict()`` survives JSON and ``make_strategy`` rebuilds the same class, options and
    suggestions from it."""
    problem = mixed_problem()
    original = factory(2)
    spec = original.to_dict()
    stored = json.loads(json.dumps(spec))  # a study keeps it in its store's metadata
    rebuilt = make_strategy(stored, seed=original.seed)
    assert type(rebuilt) is type(original), (type(rebuilt), type(original))
    assert rebuilt.to_dict() == spec, (rebuilt.to_dict(), spec)
    for strategy in (original, rebuilt):
        strategy.bind(problem)
    runs = [drive(s, mixed_metrics, N_STEPS) for s in (original, rebuilt)]
    assert [r.config for r in runs[0]] == [r.config for r in runs[1]], \
        "the strategy rebuilt from to_dict() suggests other configurations"


def single_objective_problem_is_supported(factory: Factory) -> None:
    """One objective works."""
    problem = Problem({"x": {"type": "float", "low": -2.0, "high": 2.0},
                       "y": {"type": "float", "low": -2.0, "high": 2.0}}, {"f": "min"})
    strategy = _bound(factory, problem)
    results = drive(strategy, lambda c: {"f": (c["x"] - 1) ** 2 + c["y"] ** 2}, 12)
    assert all(r.status == Status.COMPLETE for r in results)
    assert np.all(np.isfinite([r.metrics["f"] for r in results]))


#: Every clause by name, in the order :func:`check_strategy` runs them.
CLAUSES: dict[str, Callable[[Factory], None]] = {f.__name__: f for f in (
    suggestions_lie_in_the_space_with_their_types,
    start_covers_the_off_value,
    same_seed_same_suggestions_and_other_seed_differs,
    no_duplicates_among_pending_points,
    ask_returns_n_and_validates_n,
    small_discrete_space_is_covered_without_repeats,
    rebuilt_from_results_continues_without_repeating,
    failed_and_incomplete_results_do_not_crash,
    pickled_strategy_suggests_the_same,
    unknown_option_is_an_error_naming_it,
    to_dict_rebuilds_the_same_strategy,
    single_objective_problem_is_supported,
)}


def as_factory(strategy: Factory | str | Mapping[str, Any]) -> Factory:
    """A factory from a factory, a registered name or import path, or a ``{name, options}``
    mapping (as :func:`~distopt.strategies.make_strategy` takes)."""
    if callable(strategy):
        return strategy
    return lambda seed: make_strategy(strategy, seed=seed)


def check_strategy(strategy: Factory | str | Mapping[str, Any]) -> None:
    """Run every clause on ``strategy`` (see :func:`as_factory`); the first that fails raises
    an ``AssertionError`` that names it."""
    factory = as_factory(strategy)
    for name, clause in CLAUSES.items():
        try:
            clause(factory)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error


class StrategyContract:
    """Every clause as a pytest test: subclass it as ``Test...`` and define a ``make_strategy``
    fixture that returns a factory, a name or a ``{name, options}`` mapping (see the module
    docstring). Needs no import of pytest here: the fixture is yours."""


def _as_test(clause: Callable[[Factory], None]) -> Callable[[Any, Factory], None]:
    def test(self: Any, make_strategy: Factory | str | Mapping[str, Any]) -> None:
        clause(as_factory(make_strategy))

    test.__name__ = f"test_{clause.__name__}"
    test.__doc__ = clause.__doc__
    return test


for _name, _clause in CLAUSES.items():
    setattr(StrategyContract, f"test_{_name}", _as_test(_clause))


__all__ = ["CLAUSES", "N_STEPS", "Factory", "StrategyContract", "as_factory", "check_strategy",
           "drive", "mixed_metrics", "mixed_problem", "mixed_space"]
