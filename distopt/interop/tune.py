"""distopt inside Ray Tune: any distopt strategy as a Tune searcher, MO-ASHA as a Tune scheduler.

For teams that keep ``tune.Tuner``: the searcher proposes configurations with a distopt strategy
(Sobol random, multi-objective Bayesian, ...) over a distopt space, and learns from every metric
the trainable reports, not only Tune's one ``metric``. The scheduler stops trials early by
non-dominated sorting of several reported metrics, which Tune's own schedulers cannot (they rank
on one metric)::

    from ray import tune
    from distopt.interop.tune import DistoptSearcher, MOASHAScheduler

    searcher = DistoptSearcher("bayes", space={"lr": distopt.Float(1e-4, 1e-1, log=True)},
                               objectives={"loss": "min", "latency": "min"})
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=searcher, scheduler=MOASHAScheduler(searcher, grace_period=2),
        num_samples=32))
    results = tuner.fit()
    searcher.pareto_front()                # the feasible non-dominated trials Tune ran

``searcher.metric`` / ``searcher.mode`` are the first objective; give them to Tune's single-metric
views (``TuneConfig(metric=..., mode=...)`` or ``results.get_best_result(metric, mode)``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from .. import pareto
from .._problem import Problem, TrialResult
from ..schedulers import MOASHA
from ..space import Space
from ..strategies import Strategy, make_strategy
from ..trial import COMPLETE, FAILED, PRUNED


class DistoptSearcher(Searcher):
    """A Ray Tune ``Searcher`` backed by a distopt strategy.

    Args:
        strategy: a distopt strategy name (``"random"``, ``"bayes"``, ...), spec mapping, or
            ``Strategy`` instance.
        space: the distopt space (``Float`` / ``Int`` / ``Categorical`` or YAML-style specs,
            constants allowed). Leave Tune's ``param_space`` empty (or constants only).
        objectives: metric -> ``"min"`` / ``"max"``; every one is read from the trial's last
            result.
        constraints: metric -> ``("<=", t)`` / ``(">=", t)``, also read from the last result.
        seed: seed of the strategy.

    A trial whose last result lacks an objective or constraint metric, has a non-finite one, or
    ended in error, is told to the strategy as FAILED; one stopped by a :class:`MOASHAScheduler`
    given this searcher is told as PRUNED (its early metrics do not count as a result).
    """

    def __init__(self, strategy: str | Mapping[str, Any] | Strategy = "random",
                 space: Mapping[str, Any] | Space | None = None,
                 objectives: Mapping[str, str] | str | None = None,
                 constraints: Mapping[str, Any] | None = None, *, seed: int | None = 0):
        if space is None or objectives is None:
            raise TypeError("DistoptSearcher needs space= and objectives=")
        self.problem = Problem(space, objectives, constraints)
        self.strategy = make_strategy(strategy, seed=seed)
        self.strategy.bind(self.problem)
        first = next(iter(self.problem.objectives))
        super().__init__(metric=first, mode=self.problem.objectives[first])
        self._live: dict[str, tuple[int, dict[str, Any]]] = {}
        self._pruned: set[str] = set()
        self._next_id = 0
        #: Finished trials as the strategy saw them, in order.
        self.results: list[TrialResult] = []
        self.tune_ids: dict[int, str] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        """Accept Tune's ``metric``/``mode`` (for its reporting) and a constants-only config."""
        if any(isinstance(v, dict) and v for v in (config or {}).values()) or any(
                type(v).__module__.startswith("ray.tune.search") for v in (config or {}).values()):
            return False  # a Tune search space: the space belongs to this searcher
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        pending = [config for _, config in self._live.values()]
        config = self.strategy.ask(1, pending)[0]
        self._live[trial_id] = (self._next_id, config)
        self.tune_ids[self._next_id] = trial_id
        self._next_id += 1
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        entry = self._live.pop(trial_id, None)
        if entry is None:
            return
        number, config = entry
        metrics: dict[str, float] = {}
        for name in self.problem.metric_names:
            value = (result or {}).get(name)
            if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(
                    value, bool) and math.isfinite(float(value)):
                metrics[name] = float(value)
        ok = not error and len(metrics) == len(self.problem.metric_names)
        status = COMPLETE if ok else FAILED
        if trial_id in self._pruned:
            self._pruned.discard(trial_id)
            status = PRUNED
        trial = TrialResult(number, config, status, metrics)
        self.results.append(trial)
        self.strategy.tell([trial])

    def mark_pruned(self, trial_id: str) -> None:
        """Record that a scheduler stopped ``trial_id`` early (called by MOASHAScheduler)."""
        if trial_id in self._live:
            self._pruned.add(trial_id)

    # -- analysis ---------------------------------------------------------------------------

    def pareto_front(self) -> list[TrialResult]:
        """The COMPLETE, feasible, non-dominated trials told so far."""
        done = [r for r in self.results if r.status == COMPLETE]
        if not done:
            return []
        metrics = [r.metrics for r in done]
        feasible = self.problem.feasible(metrics)
        points = self.problem.objective_values(metrics)
        mask = np.zeros(len(done), dtype=bool)
        if feasible.any():
            mask[feasible] = pareto.is_non_dominated(points[feasible],
                                                     maximize=self.problem.maximize)
        return [r for r, keep in zip(done, mask, strict=True) if keep]

    # -- Tune checkpointing --------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Plain data (JSON-ready): the strategy is rebuilt from the results on restore,
        as a resumed distopt study rebuilds it from its store, so no object is pickled."""
        return {"format": 1,
                "live": {tid: [number, config] for tid, (number, config) in self._live.items()},
                "next_id": self._next_id, "pruned": sorted(self._pruned),
                "results": [{"trial_id": r.trial_id, "config": r.config, "status": r.status,
                             "metrics": r.metrics} for r in self.results],
                "tune_ids": {str(k): v for k, v in self.tune_ids.items()},
                "metric": self._metric, "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        self._live = {tid: (int(number), dict(config))
                      for tid, (number, config) in state["live"].items()}
        self._pruned = set(state.get("pruned", ()))
        self._next_id = int(state["next_id"])
        self.results = [TrialResult(int(r["trial_id"]), dict(r["config"]), r["status"],
                                    dict(r["metrics"])) for r in state["results"]]
        self.tune_ids = {int(k): v for k, v in state["tune_ids"].items()}
        self._metric, self._mode = state["metric"], state["mode"]
        self.strategy.bind(self.problem)  # binding starts the strategy afresh
        if self.results:
            self.strategy.tell(self.results)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w", encoding="utf-8") as handle:
            json.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, encoding="utf-8") as handle:
            self.set_state(json.load(handle))


class MOASHAScheduler(FIFOScheduler):
    """Multi-objective ASHA (:class:`distopt.schedulers.MOASHA`) as a Ray Tune trial scheduler.

    Args:
        problem: a :class:`DistoptSearcher` (its objectives are ranked, and the trials stopped
            are told to it as PRUNED), a :class:`distopt.Problem`, or a mapping metric ->
            ``"min"``/``"max"``.
        time_attr: the result key that counts progress (Tune's ``training_iteration`` starts at 1).
        **options: :class:`~distopt.schedulers.MOASHA` options (``metrics``, ``grace_period``,
            ``reduction_factor``, ``max_step``, ``tie_break``), in ``time_attr`` units.
    """

    def __init__(self, problem: DistoptSearcher | Problem | Mapping[str, str], *,
                 time_attr: str = "training_iteration", **options: Any):
        super().__init__()
        self.searcher = problem if isinstance(problem, DistoptSearcher) else None
        if self.searcher is not None:
            problem = self.searcher.problem
        if not isinstance(problem, Problem):
            problem = Problem({"_": {"type": "float", "low": 0.0, "high": 1.0}}, problem)
        self.moasha = MOASHA(**options)
        self.moasha.bind(problem)
        self.time_attr = time_attr
        self._ids: dict[str, int] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # ranks on its own metrics; Tune's single metric is not needed

    def _number(self, trial: Any) -> int:
        return self._ids.setdefault(trial.trial_id, len(self._ids))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        step = result.get(self.time_attr)
        if step is None:
            return TrialScheduler.CONTINUE
        stop = self.moasha.on_report(self._number(trial), int(step), result)
        if stop and self.searcher is not None:
            self.searcher.mark_pruned(trial.trial_id)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        number = self._number(trial)
        self.moasha.on_trial_end(number, PRUNED if number in self.moasha.stopped else COMPLETE)

    def debug_string(self) -> str:
        stopped = len(self.moasha.stopped)
        return f"MOASHAScheduler: rungs {self.moasha.rung_sizes}, stopped {stopped}"


__all__ = ["DistoptSearcher", "MOASHAScheduler"]
