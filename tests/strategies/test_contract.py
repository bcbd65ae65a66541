"""The contract of :mod:`distopt.testing`, kept by every registered strategy and by strategies
users write: a class, an import path, a registered name."""

from __future__ import annotations

import numpy as np
import pytest
from strategy_helpers import fast

from distopt._problem import TrialResult
from distopt.strategies import REGISTRY, Strategy, make_strategy, register
from distopt.testing import CLAUSES, StrategyContract, check_strategy

#: The strategies registered when the tests are collected: every built-in one.
REGISTERED = sorted(REGISTRY)


@pytest.mark.parametrize("clause", list(CLAUSES))
@pytest.mark.parametrize("name", REGISTERED)
def test_registered_strategy_keeps_the_contract(name: str, clause: str) -> None:
    CLAUSES[clause](fast(name))


class UniformStrategy(Strategy):
    """What a user might write: uniform points of the cube, never a configuration told, pending
    or already handed out; its random draws depend on the seed and the data alone."""

    replays_exactly = True

    def __init__(self, *, seed: int | None = 0, tries: int = 100):
        super().__init__(seed=seed)
        self.tries = tries

    def _setup(self, problem: object) -> None:
        self._known: set[tuple[float, ...]] = set()

    def _tell(self, results: list[TrialResult]) -> None:
        self._known.update(self.problem.space.config_keys([r.config for r in results]))

    def _ask(self, n: int, pending: list[dict]) -> list[dict]:
        space = self.problem.space
        avoid = self._known | set(space.config_keys(pending) if pending else [])
        rng = np.random.default_rng([self.seed or 0, len(self._known)])
        configs = []
        for _ in range(n):
            for _ in range(self.tries):  # a small space may be exhausted: then a repeat
                config = space.decode(rng.random((1, space.dim)))[0]
                key = space.config_keys([config])[0]
                if key not in avoid:
                    break
            avoid.add(key)
            configs.append(config)
        self._known.update(space.config_keys(configs))
        return configs


class TestAUserStrategyKeepsTheContract(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda seed: UniformStrategy(seed=seed, tries=50)


def test_a_registered_user_strategy_keeps_the_contract() -> None:
    register("uniform", UniformStrategy)
    try:
        check_strategy({"name": "uniform", "options": {"tries": 50}})
        recorded = make_strategy({"name": "uniform", "options": {"tries": 50}}).to_dict()
    finally:
        del REGISTRY["uniform"]
    # recorded by import path: a later process (distopt resume) never ran the register call
    assert recorded == {"name": f"{UniformStrategy.__module__}:UniformStrategy",
                        "options": {"tries": 50}}
    assert type(make_strategy(recorded)).__qualname__ == "UniformStrategy"


class ForgetfulStrategy(UniformStrategy):
    """Ignores pending configurations and forgets what it handed out."""

    def _ask(self, n: int, pending: list[dict]) -> list[dict]:
        known = set(self._known)
        configs = super()._ask(n, [])
        self._known = known
        return configs


def test_the_contract_catches_a_strategy_that_breaks_it() -> None:
    with pytest.raises(AssertionError, match="no_duplicates_among_pending_points"):
        check_strategy(lambda seed: ForgetfulStrategy(seed=seed))
