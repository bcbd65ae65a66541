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
views (``TuneConfig(metric=..., mode=...)`` or ``results.get_best_result(metric, mode)``): a
``TuneConfig`` metric that is not an objective, or a mode against its direction, is a
``ConfigError`` (Tune only asks the searcher when ``param_space`` is not empty). To repeat each
configuration, wrap the searcher in this module's :class:`Repeater`, not Ray's.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Repeater as RayRepeater
from ray.tune.search import Searcher

from .. import pareto
from .._checks import is_finite_number, preview
from .._errors import field_error
from .._problem import Problem, TrialResult
from ..schedulers import MOASHA
from ..space import Space
from ..strategies import Strategy, make_strategy
from ..trial import COMPLETE, FAILED, PRUNED


@dataclass(frozen=True)
class TuneResult(TrialResult):
    """A finished trial as :class:`DistoptSearcher` told it to its strategy, with the Tune trial
    id (None for a point given to :meth:`~DistoptSearcher.add_evaluated_point`)."""

    tune_trial_id: str | None = None


class DistoptSearcher(Searcher):
    """A Ray Tune ``Searcher`` backed by a distopt strategy.

    Args:
        strategy: a distopt strategy name (``"random"``, ``"bayes"``, ...), spec mapping, or
            ``Strategy`` instance; default ``"random"`` (or the checkpoint's, on restore).
        space: the distopt space (``Float`` / ``Int`` / ``Categorical`` or YAML-style specs,
            constants allowed). Leave Tune's ``param_space`` empty (or constants only).
        objectives: metric -> ``"min"`` / ``"max"``; every one is read from the trial's last
            result. Metrics may share names with parameters (Tune keeps configs apart).
        constraints: metric -> ``("<=", t)`` / ``(">=", t)``, also read from the last result.
        seed: seed of the strategy.
        points_to_evaluate: configurations to run first, in order; a partial one is completed
            by the strategy.
        evaluated_rewards: the metrics (mapping, or a number for a lone metric) already known
            for each of ``points_to_evaluate``: those points are told, not run.

    Leave ``space`` and ``objectives`` out only to :meth:`restore` a checkpoint (as Tune's
    ``restore_from_dir``), which brings its own problem, strategy and seed.

    A trial whose last result lacks an objective or constraint metric, has a non-finite one, or
    ended in error, is told to the strategy as FAILED; one stopped by a :class:`MOASHAScheduler`
    given this searcher is told as PRUNED (its early metrics do not count as a result). Wrap it
    in :class:`Repeater` (not Ray's, which passes on Tune's one metric only) to repeat trials.
    """

    def __init__(self, strategy: str | Mapping[str, Any] | Strategy | None = None,
                 space: Mapping[str, Any] | Space | None = None,
                 objectives: Mapping[str, str] | str | None = None,
                 constraints: Mapping[str, Any] | None = None, *, seed: int | None = 0,
                 points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
                 evaluated_rewards: Sequence[Any] | None = None):
        super().__init__()
        if (space is None) != (objectives is None):
            raise field_error("objectives" if objectives is None else "space",
                              "DistoptSearcher needs both space= and objectives=",
                              "or neither, to restore a checkpoint into it")
        self.problem: Problem | None = None
        self.strategy: Strategy | None = None
        self._live: dict[str, tuple[int, dict[str, Any]]] = {}
        self._pruned: set[str] = set()
        self._points: list[dict[str, Any]] = []
        self._next_id = 0
        #: Finished trials as the strategy saw them, in order.
        self.results: list[TuneResult] = []
        self.tune_ids: dict[int, str] = {}
        if space is None:
            self._spec, self._seed = strategy, seed   # a restore may replace both
            if points_to_evaluate or evaluated_rewards:
                raise field_error("points_to_evaluate", "needs space= and objectives=")
            return
        self._bind(Problem(space, objectives, constraints, shared_names=True),
                   make_strategy("random" if strategy is None else strategy, seed=seed))
        points = [self._point(f"points_to_evaluate[{i}]", p, partial=evaluated_rewards is None)
                  for i, p in enumerate(points_to_evaluate or [])]
        if evaluated_rewards is None:
            self._points = points
            return
        if len(evaluated_rewards) != len(points):
            raise field_error("evaluated_rewards", f"has {len(evaluated_rewards)} entries for "
                              f"{len(points)} points_to_evaluate", "give one per point")
        for point, reward in zip(points, evaluated_rewards, strict=True):
            self.add_evaluated_point(point, reward)

    def _bind(self, problem: Problem, strategy: Strategy) -> None:
        self.problem, self.strategy = problem, strategy
        strategy.bind(problem)   # binding starts the strategy afresh
        self._metric, self._mode = next(iter(problem.objectives.items()))

    def _bound(self, where: str) -> Problem:
        if self.problem is None:
            raise field_error(where, "this DistoptSearcher has no space and objectives",
                              "pass space= and objectives=, or restore a checkpoint first")
        return self.problem

    def _point(self, where: str, point: Any, *, partial: bool = False) -> dict[str, Any]:
        """A configuration of this space; keys that are not parameters (Tune's constants,
        ``__trial_index__``) are dropped. ``partial``: only the parameters it names."""
        space = self._bound(where).space
        if not isinstance(point, Mapping):
            raise field_error(where, f"must be a mapping of parameter to value; got "
                              f"{preview(point)}")
        config = {k: v for k, v in point.items() if k in space.params}
        if not partial:
            space.validate(config, where=where)
            return {**config, **space.constants}
        if not config:
            raise field_error(where, f"names no parameter of the space {space.names}")
        for name, value in config.items():
            if not space.params[name].contains(value):
                raise field_error(f"{where}.{name}", f"{value!r} is outside "
                                  f"{space.params[name]!r}")
        return config

    def set_search_properties(self, metric: str | list[str] | None, mode: str | list[str] | None,
                              config: dict, **spec: Any) -> bool:
        """Check Tune's ``metric``/``mode`` against the objectives; accept constants only.

        Returns False for a Tune search space in ``config`` (Tune then says the searcher has
        its own). A metric that is not an objective, or a mode that contradicts its direction,
        raises ``ConfigError``: Tune ignores False when ``config`` holds only constants, so the
        strategy would silently optimise something else than Tune reports as best.
        """
        problem = self._bound("search_alg")
        if any(isinstance(v, dict) and v for v in (config or {}).values()) or any(
                type(v).__module__.startswith("ray.tune.search") for v in (config or {}).values()):
            return False  # a Tune search space: the space belongs to this searcher
        metrics = [metric] if isinstance(metric, str) else list(metric or [])
        modes = [mode] if isinstance(mode, str) else list(mode or [])
        if modes and len(modes) != max(len(metrics), 1):
            raise field_error("mode", f"{modes} does not match metric {metrics}",
                              "give one mode per metric")
        for i, name in enumerate(metrics or [self._metric]):
            if name not in problem.objectives:
                raise field_error("metric", f"{name!r} is not an objective of this "
                                  f"DistoptSearcher ({list(problem.objectives)})",
                                  "name one of them, or add it to objectives=")
            if modes and modes[i] != problem.objectives[name]:
                raise field_error("mode", f"{modes[i]!r} for {name!r} contradicts the "
                                  f"searcher's objectives ({name}: "
                                  f"{problem.objectives[name]!r})",
                                  "give the objective's direction, or change objectives=")
        if metrics:
            self._metric, self._mode = metrics[0], problem.objectives[metrics[0]]
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        problem = self._bound("suggest")
        pending = [config for _, config in self._live.values()]
        if self._points:
            config = self._points.pop(0)   # a partial point: the strategy fills in the rest
            config = {**self.strategy.ask(1, pending)[0], **config} if len(
                config) < problem.space.dim else {**config, **problem.space.constants}
        else:
            config = self.strategy.ask(1, pending)[0]
        self._live[trial_id] = (self._next_id, config)
        self.tune_ids[self._next_id] = trial_id
        self._next_id += 1
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        entry = self._live.pop(trial_id, None)
        if entry is None:
            return   # unknown, or reported twice: Tune may call again after a restore
        number, config = entry
        status, metrics = self._outcome(result, error)
        if status == FAILED and not error and result and set(result) == {self._metric} and len(
                self._bound("on_trial_complete").metric_names) > 1:
            warnings.warn(f"DistoptSearcher got only {self._metric!r} in a trial's result, as "
                          f"Ray's Repeater passes it; its other metrics are lost and the trial "
                          f"counts as FAILED: wrap the searcher in distopt.interop.tune.Repeater, "
                          f"which averages every metric", stacklevel=2)
        if trial_id in self._pruned:
            self._pruned.discard(trial_id)
            status = PRUNED
        self._tell(TuneResult(number, config, status, metrics, trial_id))

    def _outcome(self, result: Mapping[str, Any] | None, error: bool) -> tuple[str, dict]:
        names = self._bound("on_trial_complete").metric_names
        metrics = {name: float(v) for name in names
                   if is_finite_number(v := (result or {}).get(name))}
        return (COMPLETE if not error and len(metrics) == len(names) else FAILED), metrics

    def _tell(self, trial: TuneResult) -> None:
        self.results.append(trial)
        self.strategy.tell([trial])

    def add_evaluated_point(self, parameters: Mapping[str, Any], value: Any, error: bool = False,
                            pruned: bool = False,
                            intermediate_values: Sequence[float] | None = None) -> None:
        """Tell the strategy a trial run elsewhere (Tune's signature).

        ``value`` is a mapping metric -> number, or a number when the searcher has one metric;
        ``intermediate_values`` is accepted for Tune's signature and not used (strategies learn
        from final results).
        """
        problem = self._bound("add_evaluated_point")
        config = self._point("add_evaluated_point.parameters", parameters)
        if not isinstance(value, Mapping):
            if len(problem.metric_names) != 1:
                raise field_error("add_evaluated_point.value", f"a number, but this searcher "
                                  f"reads {problem.metric_names}", "pass a mapping metric -> value")
            value = {problem.metric_names[0]: value}
        status, metrics = self._outcome(value, error)
        number, self._next_id = self._next_id, self._next_id + 1
        self._tell(TuneResult(number, config, PRUNED if pruned else status, metrics))

    def add_evaluated_trials(self, trials_or_analysis: Any, metric: str | None = None) -> None:
        """Tell the strategy Tune trials run elsewhere (a ``Trial``, a list of them, or an
        ``ExperimentAnalysis``): every metric of each finished trial's last result, where
        Tune's passes ``metric`` only; an ended trial that was not done counts as PRUNED."""
        from ray.tune.experiment import Trial
        from ray.tune.result import DONE

        problem = self._bound("add_evaluated_trials")
        if metric is not None and metric not in problem.metric_names:
            raise field_error("add_evaluated_trials.metric", f"{metric!r} is not read by this "
                              f"searcher ({problem.metric_names})", "leave it out: all are read")
        trials = getattr(trials_or_analysis, "trials", trials_or_analysis)
        for trial in [trials] if isinstance(trials, Trial) else list(trials):
            if trial.status not in (Trial.TERMINATED, Trial.ERROR):
                continue   # still pending or running: nothing to learn from yet
            result = dict(trial.last_result or {})
            self.add_evaluated_point(trial.config, result, error=trial.status == Trial.ERROR,
                                     pruned=trial.status == Trial.TERMINATED and not result.get(
                                         DONE, False))

    def mark_pruned(self, trial_id: str) -> None:
        """Record that a scheduler stopped ``trial_id`` early (called by MOASHAScheduler)."""
        if trial_id in self._live:
            self._pruned.add(trial_id)

    # -- analysis ---------------------------------------------------------------------------

    def pareto_front(self) -> list[TuneResult]:
        """The COMPLETE, feasible, non-dominated trials told so far (``tune_trial_id`` names
        each one's Tune trial)."""
        done = [r for r in self.results if r.status == COMPLETE]
        if not done:
            return []
        problem = self._bound("pareto_front")
        metrics = [r.metrics for r in done]
        feasible = problem.feasible(metrics)
        points = problem.objective_values(metrics)
        mask = np.zeros(len(done), dtype=bool)
        if feasible.any():
            mask[feasible] = pareto.is_non_dominated(points[feasible], maximize=problem.maximize)
        return [r for r, keep in zip(done, mask, strict=True) if keep]

    # -- Tune checkpointing --------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Plain data (JSON-ready): the strategy is rebuilt from the results on restore,
        as a resumed distopt study rebuilds it from its store, so no object is pickled."""
        problem = self._bound("save")
        return {"format": 2, "problem": problem.to_dict(), "strategy": self.strategy.to_dict(),
                "seed": self.strategy.seed,
                "live": {tid: [number, config] for tid, (number, config) in self._live.items()},
                "points": self._points, "next_id": self._next_id, "pruned": sorted(self._pruned),
                "results": [{"trial_id": r.trial_id, "config": r.config, "status": str(r.status),
                             "metrics": r.metrics, "tune_trial_id": r.tune_trial_id}
                            for r in self.results],
                "tune_ids": {str(k): v for k, v in self.tune_ids.items()},
                "metric": self._metric, "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        """Load :meth:`get_state`'s data; a searcher made without a space takes the saved
        problem, strategy and seed, one with a space must match the saved problem."""
        saved = state.get("problem")
        if self.problem is None:
            if saved is None:
                raise field_error("restore", "this checkpoint predates saved problems",
                                  "restore into DistoptSearcher(strategy, space, objectives)")
            mine = self._spec is not None   # a strategy given here wins over the saved one
            self._bind(Problem.from_dict(saved, shared_names=True), make_strategy(
                self._spec if mine else state["strategy"],
                seed=self._seed if mine else state.get("seed")))
        elif saved is not None and saved != self.problem.to_dict():
            mine = self.problem.to_dict()
            differ = [key for key in ("space", "objectives", "constraints")
                      if saved.get(key) != mine.get(key)]
            raise field_error("restore", f"the checkpoint's {' and '.join(differ)} differ from "
                              f"this searcher's", "restore into DistoptSearcher() to take the "
                              "checkpoint's, or start a new experiment")
        results = [TuneResult(int(r["trial_id"]), dict(r["config"]), r["status"],
                              dict(r["metrics"]), r.get("tune_trial_id"))
                   for r in state["results"]]
        for i, r in enumerate(results):   # a checkpoint without a problem: check its configs
            self.problem.space.validate(r.config, where=f"restore.results[{i}].config")
        self._live = {tid: (int(number), dict(config))
                      for tid, (number, config) in state["live"].items()}
        self._points = [dict(p) for p in state.get("points", [])]
        self._pruned = set(state.get("pruned", ()))
        self._next_id = int(state["next_id"])
        self.results = results
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


class Repeater(RayRepeater):
    """Ray Tune's ``Repeater`` that averages every metric across the repeats of a
    configuration, so a multi-objective searcher learns from all its objectives.

    Ray's own ``Repeater`` passes only ``{searcher.metric: mean}`` to the searcher, so every
    other objective is missing and a :class:`DistoptSearcher` must count each trial as FAILED.
    Here each metric is the mean of its finite values over the repeats (as Ray's ``nanmean``);
    the group counts as an error only when every repeat failed. Arguments as Ray's.
    """

    def __init__(self, searcher: Searcher, repeat: int = 1, set_index: bool = True):
        super().__init__(searcher, repeat=repeat, set_index=set_index)
        self._reported: dict[str, tuple[dict[str, Any], bool]] = {}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False, **kwargs: Any) -> None:
        group = self._trial_id_to_group.get(trial_id)
        if group is None:
            return
        result = dict(result or {})
        self._reported[trial_id] = (result, error)
        score = result.get(self.searcher.metric)
        group.report(trial_id, score if is_finite_number(score) else np.nan)   # Ray's bookkeeping
        if not group.finished_reporting():
            return
        members = [t for t, g in self._trial_id_to_group.items() if g is group]
        reports = [self._reported.pop(t) for t in members if t in self._reported]
        values: dict[str, list[float]] = {}
        for report, _ in reports:
            for name, value in report.items():
                if is_finite_number(value):
                    values.setdefault(name, []).append(float(value))
        mean = {name: float(np.mean(v)) for name, v in values.items()}
        self.searcher.on_trial_complete(group.primary_trial_id, result=mean,
                                        error=all(failed for _, failed in reports), **kwargs)


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


__all__ = ["DistoptSearcher", "MOASHAScheduler", "Repeater", "TuneResult"]
