"""Optuna's multivariate TPE with constraints, driven through ask/tell (``strategy="tpe"``)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._checks import check_int, option_field
from .._problem import Problem, TrialResult
from ..space import Categorical, Float, Int, point_keys
from ..trial import Status
from ._base import Strategy
from ._seeding import derive_seed

#: Samples drawn before a repeated configuration is replaced by a fresh random one.
MAX_TRIES = 16


class TPEStrategy(Strategy):
    """Multivariate TPE (Optuna's ``TPESampler(multivariate=True)``) over the distopt space.

    An in-memory Optuna study mirrors the distopt trials: configurations this strategy asked are
    Optuna trials told through ``study.tell``; results whose configuration came from elsewhere
    (a resumed store, trials queued by hand) are added with ``create_trial`` + ``add_trial``.
    Running trials stay RUNNING in the study, so the constant-liar TPE spreads concurrent
    suggestions. Constraint slacks (``<= 0`` feasible) are attached with Optuna's
    ``set_constraint`` (the replacement of the deprecated ``constraints_func``), which TPE uses
    to favour feasible trials.

    Parameters map to Optuna distributions one to one (Float -> FloatDistribution, Int ->
    IntDistribution, Categorical -> CategoricalDistribution), except a Float with ``off``:
    TPE then samples its unit-cube coordinate in ``[0, 1]`` (log-scaled if the Float is), whose
    bottom 10% decodes to the ``off`` value, exactly as every other distopt strategy sees it.

    Args:
        seed: seed of the one TPE sampler this strategy uses for its whole life.
        n_startup_trials: random trials before TPE starts modelling.
        n_ei_candidates: candidates scored per suggestion.
        constant_liar: treat running trials as bad observations (spreads parallel asks).
    """

    name = "tpe"

    def __init__(self, *, seed: int | None = 0, n_startup_trials: int = 10,
                 n_ei_candidates: int = 24, constant_liar: bool = True):
        super().__init__(seed=seed)
        for field, value, low in (("n_startup_trials", n_startup_trials, 0),
                                  ("n_ei_candidates", n_ei_candidates, 1)):
            check_int(option_field("strategy", field), value, low)
        self.n_startup_trials, self.n_ei_candidates = n_startup_trials, n_ei_candidates
        self.constant_liar = bool(constant_liar)

    def _setup(self, problem: Problem) -> None:
        import optuna

        self._entropy = self.seed if self.seed is not None else derive_seed(
            int(np.random.SeedSequence().entropy % 2**31))
        self._distributions = {name: _distribution(param)
                               for name, param in problem.space.params.items()}
        directions = ["maximize" if up else "minimize" for up in problem.maximize]
        with _quiet():
            self._study = optuna.create_study(directions=directions,
                                              sampler=self._sampler())
        self._seen: set[int] = set()
        # config key -> the Optuna trial still running for it: a Trial this strategy asked, or
        # the number of a RUNNING trial added for a pending configuration from elsewhere
        self._running: dict[tuple[float, ...], Any] = {}
        self._told: set[tuple[float, ...]] = set()

    def _sampler(self) -> Any:
        # One sampler for the strategy's life, seeded with the strategy's seed: with one worker
        # this is exactly Optuna's own TPE run. (Re-seeding it at every ask, to make a resumed
        # study repeat an uninterrupted one, cost 0.1-0.2 in log10 hypervolume gap on
        # BraninCurrin and DTLZ2: benchmarks/bench_quality.py.)
        import optuna

        with _quiet():
            return optuna.samplers.TPESampler(
                multivariate=True, seed=self._entropy,
                n_startup_trials=self.n_startup_trials, n_ei_candidates=self.n_ei_candidates,
                constant_liar=self.constant_liar)

    def _key(self, config: dict[str, Any]) -> tuple[float, ...]:
        return point_keys(self.problem.space.encode([config]))[0]

    def _params(self, config: dict[str, Any]) -> dict[str, Any]:
        """Optuna parameter values of a distopt configuration."""
        params = {}
        for name, param in self.problem.space.params.items():
            value = config[name]
            if isinstance(param, Float) and param.off is not None:
                value = param.to_unit(value)
            elif isinstance(param, Int):
                value = int(value)
            elif isinstance(param, Float):
                value = float(value)
            params[name] = value
        return params

    def _config(self, params: dict[str, Any]) -> dict[str, Any]:
        """The distopt configuration of Optuna parameter values (constants added)."""
        config: dict[str, Any] = {}
        for name, param in self.problem.space.params.items():
            value = params[name]
            config[name] = param.from_unit(value) if isinstance(param, Float) and \
                param.off is not None else value
        config.update(self.problem.space.constants)
        return config

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import optuna

        study = self._study
        with _quiet():
            for config in pending:  # running elsewhere: let the constant liar see them too
                key = self._key(config)
                if key not in self._running and key not in self._told:
                    study.add_trial(optuna.trial.create_trial(
                        state=optuna.trial.TrialState.RUNNING, params=self._params(config),
                        distributions=self._distributions))
                    self._running[key] = len(study.get_trials(deepcopy=False)) - 1
            avoid = self._told | set(self._running)
            configs = []
            for _ in range(n):
                config, key = self._sample(avoid)
                avoid.add(key)
                configs.append(config)
        return configs

    def _sample(self, avoid: set[tuple[float, ...]]) -> tuple[dict[str, Any], tuple[float, ...]]:
        """One new configuration as a RUNNING Optuna trial; repeats are discarded (FAIL)."""
        import optuna

        study = self._study
        for attempt in range(MAX_TRIES + 1):
            if attempt == MAX_TRIES:  # TPE keeps repeating itself: queue a random new point
                rng = np.random.default_rng(derive_seed(
                    self._entropy, len(study.get_trials(deepcopy=False))))
                for _ in range(64):
                    config = self.problem.space.decode(rng.random((1, self.problem.space.dim)))[0]
                    if self._key(config) not in avoid:
                        break
                study.enqueue_trial(self._params(config), skip_if_exists=False)
            trial = study.ask(self._distributions)
            config = self._config(trial.params)
            key = self._key(config)
            if key not in avoid or attempt == MAX_TRIES:
                self._running[key] = trial
                return config, key
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise AssertionError("unreachable")

    def _tell(self, results: list[TrialResult]) -> None:
        import optuna

        study = self._study
        with _quiet():
            for result in results:
                if result.trial_id in self._seen:
                    continue
                self._seen.add(result.trial_id)
                key = self._key(result.config)
                state, values, constraints = self._outcome(result)
                running = self._running.pop(key, None)
                self._told.add(key)
                if isinstance(running, optuna.trial.Trial):  # asked here: finish it
                    for name, slack in constraints.items():
                        running.set_constraint(name, slack)
                    study.tell(running, values, state=state)
                    continue
                if running is not None:  # a foreign pending trial: close it, record the result
                    study.tell(running, state=optuna.trial.TrialState.FAIL)
                study.add_trial(optuna.trial.create_trial(
                    state=state, values=values, params=self._params(result.config),
                    distributions=self._distributions, constraints=constraints or None))

    def _outcome(self, result: TrialResult) -> tuple[Any, list[float] | None, dict[str, float]]:
        """Optuna state, objective values and constraint slacks of a distopt result."""
        import optuna

        problem = self.problem
        values = problem.objective_values([result.metrics])[0]
        slack = problem.constraint_slack([result.metrics])[0]
        constraints = {name: float(s) if math.isfinite(s) else math.inf
                       for name, s in zip(problem.constraints, slack, strict=True)}
        if result.status == Status.COMPLETE and np.all(np.isfinite(values)):
            return optuna.trial.TrialState.COMPLETE, [float(v) for v in values], constraints
        if result.status == Status.PRUNED:
            return optuna.trial.TrialState.PRUNED, None, constraints
        return optuna.trial.TrialState.FAIL, None, {}


def _distribution(param: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(param, Float):
        if param.off is not None:
            return FloatDistribution(0.0, 1.0)
        return FloatDistribution(param.low, param.high, log=param.log)
    if isinstance(param, Int):
        return IntDistribution(param.low, param.high, log=param.log)
    if isinstance(param, Categorical):
        return CategoricalDistribution(param.choices)
    raise TypeError(f"unsupported parameter {param!r}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's per-trial INFO logs and experimental warnings inside the strategy."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
