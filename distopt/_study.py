"""The user-facing Study: validates everything, then hands off to the orchestrator."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._budget import Budget, useful_workers
from ._checks import check_int, check_ref_point, did_you_mean, preview
from ._codepath import ShippedObjective, code_folders
from ._errors import field_error
from ._front import USER
from ._preflight import check_objective_configs, check_store_path
from ._problem import Problem
from .space import Space
from .store import (
    DAMAGED,
    METADATA_FILE,
    StoreReader,
    StoreWriter,
    check_free,
    configs_from_table,
    library_versions,
    settle,
)
from .strategies import Strategy, make_strategy

Objective = Callable[[dict[str, Any]], Mapping[str, float]]


class Study:
    """A multi-objective search: what to search, what to optimise, where to store it.

    Args:
        space: parameter name -> ``Float`` / ``Int`` / ``Categorical`` (or a YAML-style spec, or a
            constant passed to every trial).
        objectives: metric -> ``"min"`` or ``"max"``.
        constraints: metric -> ``("<=", threshold)`` or ``(">=", threshold)``.
        strategy: ``"random"``, ``"bayes"``, ``"pareto"``, ``"tpe"``, ``"jacobian"``, a
            ``{"name": ..., "options": {...}}`` mapping, or a ``Strategy`` instance.
        store: folder of the Arrow store; an existing store of the same study is resumed.
        seed: seed of the strategy.
        ref_point: metric -> value bounding the hypervolume; inferred and recorded when omitted.
    """

    def __init__(self, space: Mapping[str, Any] | Space, objectives: Mapping[str, str] | str,
                 constraints: Mapping[str, Any] | None = None, *,
                 strategy: str | Mapping[str, Any] | Strategy = "random",
                 store: str | os.PathLike[str] | None = None, seed: int | None = 0,
                 ref_point: Mapping[str, float] | None = None):
        self.problem = Problem(space, objectives, constraints)
        # "" would be Path("") == ".": the store's files loose in the working directory
        if store is not None and (not isinstance(store, (str, os.PathLike))
                                  or not os.fspath(store).strip()):
            raise field_error("store", f"must be a folder path; got {store!r}",
                              "e.g. runs/my-study")
        self.strategy_spec = strategy
        self.strategy = make_strategy(strategy, seed=seed)
        self.seed = seed
        self.store_path = Path(store) if store is not None else Path(
            "runs", time.strftime("study-%Y%m%d-%H%M%S"))
        self.ref_point = check_ref_point("ref_point", ref_point, self.problem.objectives)
        if self.ref_point is not None:
            self.strategy.offer_ref_point(self.ref_point)
        self.strategy.check(self.problem)
        self._enqueued: list[dict[str, Any]] = []
        #: How the objective was named (``module:function`` or a factory call), kept in the store
        #: so that ``distopt resume STORE`` can import it again.
        self.objective_spec: Any = None
        self.study_file: str | None = None

    @property
    def space(self) -> Space:
        """The search space."""
        return self.problem.space

    def enqueue(self, config: Mapping[str, Any]) -> None:
        """Run ``config`` before any suggestion of the strategy (Optuna's ``enqueue_trial``,
        Ray Tune's ``points_to_evaluate``); its result is told to the strategy like any other.

        ``config`` gives every searched parameter (constants may be left out; any other key is
        refused: it would reach the objective unrecorded). A configuration
        already in the store is not run again.
        """
        space = self.problem.space
        for name, value in dict(config).items():  # a typo would reach the objective, unstored
            if name in space.constants and value != space.constants[name]:
                raise field_error(f"enqueue.{name}", f"is a constant of the space "
                                  f"({space.constants[name]!r}); got {value!r}",
                                  "leave it out, or make it a parameter")
            if name not in space.constants and name not in space.params:
                raise field_error(f"enqueue.{name}", "is not a parameter of the space"
                                  + did_you_mean(name, space.params),
                                  f"give {', '.join(space.params)}")
        full = {**space.constants, **dict(config)}
        space.validate(full, where="enqueue")
        self._enqueued.append(full)

    def metadata(self, run: dict[str, Any]) -> dict[str, Any]:
        """What the store records of this study and of one run's settings."""
        spec = self.strategy_spec
        strategy = spec if isinstance(spec, (str, Mapping)) else self.strategy.to_dict()
        metadata = {
            "problem": self.problem.to_dict(),
            "config_types": self.problem.space.arrow_types(),
            "metric_order": self.problem.metric_names,
            "strategy": strategy,
            "seed": self.seed,
            "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": run,
        }
        if self.ref_point is not None:
            metadata["ref_point"] = self.ref_point
            metadata["ref_point_source"] = USER
        if self.objective_spec is not None:
            metadata["objective"] = self.objective_spec
        if self.study_file is not None:
            metadata["study_file"] = self.study_file
        return metadata

    def optimize(self, objective: Objective, budget: int, workers: int = 1, *,
                 resources_per_trial: Mapping[str, float] | None = None,
                 address: str | None = None, max_retries: int = 2,
                 trial_timeout: float | None = None, progress: bool = False,
                 scheduler: Any = None, cohort_size: int | None = None,
                 max_consecutive_failures: int | None = 20) -> StoreReader:
        """Run trials until the store holds ``budget`` finished ones; return its reader.

        Args:
            objective: ``config -> {metric: number}``, run inside Ray worker actors; it may call
                ``distopt.report`` for learning curves and ``distopt.device`` for its device. A
                ``distopt.batched`` objective trains cohorts of trials in one call.
            budget: total finished trials (any status) wanted in the store, counting those
                already there when resuming.
            workers: trials (or cohorts) run at once, one Ray actor each; no more are started
                than the remaining budget can use, and workers the cluster cannot place yet
                join when it can.
            resources_per_trial: ``{"cpu": 1, "gpu": 0.25, <custom>: n}`` per worker;
                fractional GPUs pack several workers on one device.
            address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``); None starts an
                embedded local Ray for this call.
            max_retries: re-runs of a trial whose worker process died, before it is FAILED.
            trial_timeout: seconds after which a trial is stopped and recorded TIMEOUT.
            progress: show a live progress bar on stderr.
            scheduler: early stopping from ``distopt.report`` rows, e.g.
                ``distopt.schedulers.MOASHA(grace_period=2)``, ``"moasha"`` or ``{"name":
                "moasha", "options": {...}}``; stopped trials are recorded PRUNED.
            cohort_size: members per cohort of a batched objective (default: what the device's
                free memory holds, see ``distopt.batched``).
            max_consecutive_failures: stop the search when this many trials in a row failed
                with the same cause (None: never). Failed trials are reported as they happen.

        Raises:
            DistoptError: when trials ran but none completed (naming the first cause), or the
                search stopped on repeated failures; the store keeps every finished trial.
        """
        if not callable(objective):
            raise field_error("objective", f"must be callable; got {objective!r}",
                              "pass a function config -> dict of metrics")
        resources = check_run_settings(budget=budget, workers=workers,
                                       resources_per_trial=resources_per_trial, address=address,
                                       max_retries=max_retries, trial_timeout=trial_timeout,
                                       cohort_size=cohort_size,
                                       max_consecutive_failures=max_consecutive_failures)
        _check_cohort_size(objective, cohort_size)
        check_objective_configs(objective, self.problem.space)
        from .schedulers import make_scheduler

        scheduler = make_scheduler(scheduler)
        if scheduler is not None:
            scheduler.bind(self.problem)
        if self.objective_spec is None:
            self.objective_spec = _import_path(objective)

        check_store_path(self.store_path)
        check_free(self.store_path)
        stored = self._stored_results()
        plan = Budget(budget, stored=len(stored))
        from ._summary import RunReport, no_trial_completed_error

        if plan.done:  # nothing to run: no Ray, no trial; what a killed search left published
            _say(plan.nothing_to_run(), progress)
            settle(self.store_path)
            reader = StoreReader(self.store_path)
            failure = no_trial_completed_error(reader, budget)  # a store of failures only
            if failure is not None:
                raise failure
            return reader
        # pickled once, here: an objective the workers cannot receive is one line before Ray
        # starts or anything is written
        shipped = ShippedObjective(objective, code_folders())
        from ._faults import guard
        from ._orchestrator import Orchestrator
        from ._progress import ProgressBar
        from ._ray import ray_session

        n_workers = useful_workers(workers, plan.remaining, cohort_size or 1)
        run = {"budget": budget, "workers": workers, "resources_per_trial": resources,
               "max_retries": max_retries, "trial_timeout": trial_timeout}
        if cohort_size is not None:
            run["cohort_size"] = cohort_size
        if scheduler is not None:
            run["scheduler"] = scheduler.to_dict()
        # Binding imports the strategy's libraries (scipy, BoTorch, Optuna: up to seconds); it
        # runs in a thread while Ray and the worker actors start.
        binding = ThreadPoolExecutor(1, thread_name_prefix="distopt-bind")
        bound = binding.submit(self.strategy.bind, self.problem)
        bar = None
        try:
            # Ray first: a cluster that cannot be joined or cannot hold one worker is refused
            # before anything is written. The guard turns SIGTERM, a full disk or a lost Ray
            # into one line with the resume command, after the store is closed.
            with guard(self.store_path), ray_session(address, workers=n_workers,
                                                     resources=resources):
                writer = StoreWriter(self.store_path, self.metadata(run))
                try:
                    bar = ProgressBar(budget, stored=plan.stored) if progress else None
                    orchestrator = Orchestrator(
                        self.problem, self.strategy, writer, objective, budget=plan,
                        workers=n_workers, resources=resources, max_retries=max_retries,
                        trial_timeout=trial_timeout, on_progress=bar.update if bar else None,
                        scheduler=scheduler, cohort_size=cohort_size, shipped=shipped,
                        enqueued=self._unstored(stored), on_trial=RunReport(
                            max_consecutive_failures=max_consecutive_failures,
                            store=self.store_path, stored=plan.stored,
                            budget=plan.remaining).trial_ended)
                    orchestrator.start_workers()
                    try:
                        # Replaying the store and importing the strategy's libraries overlap
                        # with the actors' start-up.
                        reader = StoreReader(self.store_path)
                        results = reader.results()
                        bound.result()
                        orchestrator.resume_from(results, *_in_flight(reader, results))
                        if scheduler is not None and results:
                            scheduler.replay(reader.curves().to_pylist(),
                                             {r.trial_id: r.status for r in results})
                        orchestrator.run()
                    finally:
                        orchestrator.stop_workers()
                finally:
                    writer.close()
        finally:
            binding.shutdown(wait=True)
            if bar is not None:
                bar.close()
        reader = StoreReader(self.store_path)
        failure = no_trial_completed_error(reader, budget - plan.stored,
                                           before=[r.trial_id for r in stored])
        if failure is not None:
            raise failure
        return reader

    def _stored_results(self) -> list[Any]:
        """The finished trials of an existing store of this study (none for a new store);
        a store of another study is refused here, before anything is written."""
        from ._preflight import different_study_error
        if not (self.store_path / METADATA_FILE).is_file():
            return []
        reader = StoreReader(self.store_path)
        refusal = different_study_error(self.store_path, reader.metadata,
                                        {"problem": self.problem.to_dict()})
        if refusal is not None:
            raise refusal
        before, now = reader.metadata.get("objective"), self.objective_spec
        if before is not None and now is not None and before != now:
            # allowed (a fixed bug, a faster version), but said: the rows share one front
            logging.getLogger("distopt").warning(
                "distopt: store %s was written by objective %s and this run's is %s: their "
                "trials share one front (a new store keeps them apart)", self.store_path,
                _shown_spec(before), _shown_spec(now))
        return reader.results()

    def _unstored(self, stored: list[Any]) -> list[dict[str, Any]]:
        """The enqueued configurations the store does not hold yet."""
        if not self._enqueued:
            return []
        space = self.problem.space
        known = set(space.config_keys([r.config for r in stored
                                       if space.gives_every_param(r.config)]))
        keys = self.problem.space.config_keys(self._enqueued)
        return [c for c, k in zip(self._enqueued, keys, strict=True) if k not in known]


def _say(message: str, loud: bool) -> None:
    """A message for the person running the search (stderr with a progress bar, else a logged
    warning: nothing ran although ``optimize`` was called)."""
    import logging
    import sys

    if loud:
        print(message, file=sys.stderr)
    else:
        logging.getLogger("distopt").warning(message)


def _in_flight(reader: StoreReader, results: list[Any]) -> tuple[list[tuple[int, dict, int]], int]:
    """Trials dispatched but never finished (a crash or Ctrl-C), and the largest id used.

    The largest id counts the curves too when hand-outs were lost to damage: a trial in flight
    whose hand-out row is gone cannot be run again (its configuration went with the row), but
    the curve rows it streamed keep its id, which a new trial must not take (its curves would
    mix with them).
    """
    finished = {r.trial_id for r in results}
    max_id = max(finished, default=-1)
    table = reader.dispatched()
    latest: dict[int, tuple[dict, int]] = {}
    for trial_id, attempt, config in zip(table["trial_id"].to_pylist(),
                                         table["attempt"].to_pylist(),
                                         configs_from_table(table), strict=True):
        latest[trial_id] = (config, attempt)
        max_id = max(max_id, trial_id)
    # damaged now, or set aside by the writer this resume opened before reading (or an earlier)
    if "dispatched" in reader.damaged or (reader.path / DAMAGED / "dispatched").is_dir():
        untraced = sorted(set(reader.curves(all_attempts=True)["trial_id"].to_pylist())
                          - finished - set(latest))
        if untraced:
            max_id = max(max_id, untraced[-1])
            warnings.warn(f"{reader.path}: trials {_id_ranges(untraced)} were running when the "
                          f"search stopped, but the rows that handed them out are damaged: they "
                          f"are not run again (their curves are kept)", RuntimeWarning,
                          stacklevel=2)
    again = [(t, c, a) for t, (c, a) in sorted(latest.items()) if t not in finished]
    return again, max_id


def _shown_spec(spec: Any) -> str:
    """An objective's recorded spec (``module:function`` or a factory call) in a few words."""
    if isinstance(spec, Mapping):
        return f"{spec.get('call')}({preview(spec.get('with') or {})})"
    return str(spec)


def _id_ranges(ids: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (sorted ids)."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def _import_path(objective: Any) -> str | None:
    """``module:qualname`` of an importable function, else None (lambdas, closures, __main__)."""
    module = getattr(objective, "__module__", None)
    qualname = getattr(objective, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def check_run_settings(*, budget: Any = 1, workers: Any = 1, resources_per_trial: Any = None,
                       address: Any = None, max_retries: Any = 2, trial_timeout: Any = None,
                       cohort_size: Any = None, max_consecutive_failures: Any = None,
                       **_: Any) -> dict[str, float]:
    """Validate ``optimize``'s run settings (a study file's too, when it is loaded); return the
    resources per trial with their defaults."""
    check_int("budget", budget, 1)
    check_int("workers", workers, 1)
    check_int("max_retries", max_retries, 0)
    check_int("cohort_size", cohort_size, 1, allow_none=True)
    check_int("max_consecutive_failures", max_consecutive_failures, 1, allow_none=True)
    resources = _check_resources(resources_per_trial)
    if trial_timeout is not None and (isinstance(trial_timeout, bool) or not isinstance(
            trial_timeout, (int, float)) or not trial_timeout > 0):
        raise field_error("trial_timeout", f"must be a number of seconds > 0; got "
                                           f"{trial_timeout!r}")
    if address is not None and not isinstance(address, str):
        raise field_error("address", f"must be a string such as 'auto'; got {address!r}")
    return resources


def _check_cohort_size(objective: Objective, cohort_size: int | None) -> None:
    """A ``cohort_size`` for a plain objective is refused (it would only cut the workers), and
    so is one above a batched objective's ``max_size`` (it cannot take more members per call)."""
    from .cohort import is_batched

    if cohort_size is None:
        return
    if not is_batched(objective):
        raise field_error("cohort_size", "is for a batched objective, and this one takes one "
                                         "config per call",
                          "remove cohort_size, or wrap the objective with @distopt.batched "
                          "(docs/cohorts.md)")
    most = objective.spec.max_size
    if most is not None and cohort_size > most:
        raise field_error("cohort_size", f"{cohort_size} is more than the objective's "
                                         f"max_size of {most}",
                          f"lower cohort_size to {most} or less, or raise "
                          f"distopt.batched(max_size=...)")


#: Keys of ``resources_per_trial`` that mean ``cpu`` or ``gpu`` in Ray's other APIs.
MISSPELLED_RESOURCES = {f"{prefix}{kind}{suffix}": kind for kind in ("cpu", "gpu")
                        for prefix in ("", "num_") for suffix in ("", "s")
                        if prefix or suffix} | {"CPU": "cpu", "GPU": "gpu"}


def _check_resources(resources: Mapping[str, float] | None) -> dict[str, float]:
    if resources is None:
        return {"cpu": 1.0, "gpu": 0.0}
    if not isinstance(resources, Mapping):
        raise field_error("resources_per_trial",
                          f"must be a mapping like {{'cpu': 1, 'gpu': 0.5}}; got {resources!r}")
    out = {"cpu": 1.0, "gpu": 0.0}
    for key, amount in resources.items():
        # Ray's own spellings of the two keys (num_cpus, "CPU"): a custom resource by that name
        # would silently ask the cluster for something no node has
        if str(key) in MISSPELLED_RESOURCES:
            right = MISSPELLED_RESOURCES[str(key)]
            raise field_error(f"resources_per_trial.{key}", f"is not a resource (did you mean "
                                                            f"{right!r}?)", f"write {right}")
        if (isinstance(amount, bool) or not isinstance(amount, (int, float))
                or not math.isfinite(amount) or amount < 0):
            raise field_error(f"resources_per_trial.{key}",
                              f"must be a number >= 0; got {amount!r}")
        out[str(key)] = float(amount)
    gpu = out["gpu"]
    if gpu > 1 and gpu != int(gpu):
        raise field_error("resources_per_trial.gpu",
                          f"must be a fraction <= 1 or a whole number; got {gpu}",
                          "e.g. 0.25 packs 4 trials per GPU")
    return out
