"""Stores to Optuna studies and back: see a distopt search in optuna-dashboard, or bring an Optuna
study's trials into a store (to plot, resume with a distopt strategy, or compare).

::

    from distopt.interop.optuna import export_store, import_study

    export_store("runs/quickstart", "sqlite:///quickstart.db")      # study name: "quickstart"
    #   optuna-dashboard sqlite:///quickstart.db
    reader = import_study("sqlite:///other.db", "their-study", "runs/from-optuna")

What maps to what:

* parameters -> distributions: ``Float`` -> ``FloatDistribution`` (a ``Float(off=0.0)`` widens the
  range to hold the off value, dropping ``log`` when that value is 0), ``Int`` ->
  ``IntDistribution``, ``Categorical`` -> ``CategoricalDistribution``; constants stay in the
  study's ``distopt`` user attribute.
* objectives -> ``directions`` and ``metric_names``; their values -> ``values`` of COMPLETE trials.
* constraints -> the ``constraints`` system attribute, one slack per constraint in the study's
  order (``<= 0`` is feasible, as Optuna's constrained samplers and ``best_trials`` expect).
* statuses: COMPLETE -> COMPLETE, PRUNED -> PRUNED, FAILED and TIMEOUT -> FAIL.
* every metric, the distopt trial id, status, error and attempts -> trial user attributes; the
  learning curve of the first objective (else the first reported metric) -> intermediate values.

A study exported by distopt carries its exact problem (``user_attrs["distopt"]``), so importing it
gives back the same space, objectives, constraints, statuses and metrics. A study made by Optuna
gets a space from its distributions, objectives named by ``metric_names`` (else ``value`` /
``value_<i>``) and one ``constraint_<name> <= 0`` per constraint it recorded.
"""

from __future__ import annotations

import datetime
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

from .._problem import Problem
from ..space import Categorical, Float, Int, Space
from ..store import StoreReader, StoreWriter
from ..store._schema import metric_columns
from ..trial import COMPLETE, FAILED, PRUNED, TIMEOUT

_STATE_OF = {COMPLETE: "COMPLETE", PRUNED: "PRUNED", FAILED: "FAIL", TIMEOUT: "FAIL"}
_STATUS_OF = {"COMPLETE": COMPLETE, "PRUNED": PRUNED, "FAIL": FAILED}
#: Trial user attributes written by :func:`export_store`.
TRIAL_ID, STATUS, METRICS, ERROR, ATTEMPTS = ("distopt.trial_id", "distopt.status",
                                              "distopt.metrics", "distopt.error",
                                              "distopt.attempts")


def _distribution(param: Any):
    import optuna.distributions as od

    if isinstance(param, Categorical):
        return od.CategoricalDistribution(param.choices)
    if isinstance(param, Int):
        return od.IntDistribution(param.low, param.high, log=param.log)
    if isinstance(param, Float):
        low, high, log = param.low, param.high, param.log
        if param.off is not None:
            low, high = min(low, param.off), max(high, param.off)
            log = log and low > 0
        return od.FloatDistribution(low, high, log=log)
    raise TypeError(f"no Optuna distribution for {param!r}")


def _param(distribution: Any) -> Any:
    import optuna.distributions as od

    if isinstance(distribution, od.CategoricalDistribution):
        return Categorical(list(distribution.choices))
    if isinstance(distribution, od.IntDistribution):
        return Int(distribution.low, distribution.high, log=distribution.log)
    if isinstance(distribution, od.FloatDistribution):
        return Float(distribution.low, distribution.high, log=distribution.log)
    raise TypeError(f"no distopt parameter for {distribution!r}")


def _when(moment: datetime.datetime | None) -> datetime.datetime | None:
    """A store timestamp (UTC) as Optuna keeps times: naive, local."""
    return None if moment is None else moment.astimezone().replace(tzinfo=None)


def _seconds(moment: datetime.datetime | None) -> float | None:
    """An Optuna time (naive, local) as seconds since the epoch."""
    return None if moment is None else moment.timestamp()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def export_store(store: StoreReader | str | os.PathLike, storage: Any,
                 study_name: str | None = None, *, load_if_exists: bool = False):
    """Write every finished trial of ``store`` into a new Optuna study; return the study.

    Args:
        store: a store path or reader (may be read while a search writes it).
        storage: an Optuna storage URL (``"sqlite:///runs.db"``) or storage object.
        study_name: default: the store folder's name.
        load_if_exists: add to an existing study of that name instead of failing.
    """
    import optuna

    reader = store if isinstance(store, StoreReader) else StoreReader(store)
    problem = reader.problem
    study = optuna.create_study(
        storage=storage, study_name=study_name or reader.path.name,
        directions=["maximize" if d == "max" else "minimize" for d in problem.objectives.values()],
        load_if_exists=load_if_exists)
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and what dashboards show
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(problem.objectives))
    curves = reader.curves()
    curve_metrics = [c for c in curves.column_names if c not in ("trial_id", "step", "time")]
    curve_metric = next((m for m in problem.objectives if m in curve_metrics),
                        curve_metrics[0] if curve_metrics else None)
    study.set_user_attr("distopt", {
        "problem": problem.to_dict(), "ref_point": reader.ref_point, "store": str(reader.path),
        "constraint_order": list(problem.constraints), "intermediate_metric": curve_metric})
    distributions = {name: _distribution(p) for name, p in problem.space.params.items()}
    by_trial: dict[int, dict[int, float]] = {}
    if curve_metric is not None:
        for trial_id, step, value in zip(curves["trial_id"].to_pylist(),
                                         curves["step"].to_pylist(),
                                         curves[curve_metric].to_pylist(), strict=True):
            if _finite(value):
                by_trial.setdefault(trial_id, {})[step] = value
    table = reader.trials()
    metric_names = metric_columns(table)
    trials = []
    for row in table.to_pylist():
        metrics = {m: row[m] for m in metric_names if m in row and _finite(row[m])}
        state = _STATE_OF.get(row["status"], "FAIL")
        values = None
        if state == "COMPLETE":
            values = [metrics.get(m, math.nan) for m in problem.objectives]
            if not all(_finite(v) for v in values):
                state, values = "FAIL", None
        slack = problem.constraint_slack([metrics])[0].tolist() if problem.constraints else None
        system_attrs = {"constraints": slack} if slack is not None and all(
            _finite(s) for s in slack) else {}
        user_attrs = {TRIAL_ID: row["trial_id"], STATUS: row["status"], METRICS: metrics,
                      ATTEMPTS: row["attempts"]}
        if row["error"]:
            user_attrs[ERROR] = row["error"][-2000:]
        if row.get("node_id"):
            user_attrs["distopt.node_id"] = row["node_id"]
        params = {name: row[f"config/{name}"] for name in distributions}
        frozen = optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state), values=values, params=params,
            distributions=distributions, user_attrs=user_attrs, system_attrs=system_attrs,
            intermediate_values=by_trial.get(row["trial_id"], {}))
        frozen.datetime_start = _when(row["start_time"]) or frozen.datetime_start
        frozen.datetime_complete = _when(row["end_time"]) or frozen.datetime_complete
        trials.append(frozen)
    study.add_trials(trials)
    return study


def _problem_of(study: Any) -> tuple[Problem, dict[str, Any]]:
    """The distopt problem of an Optuna study (exact when distopt exported it)."""
    info = dict(study.user_attrs.get("distopt") or {})
    if "problem" in info:
        return Problem.from_dict(info["problem"]), info
    names = list(study.metric_names or [])
    directions = ["max" if d.name == "MAXIMIZE" else "min" for d in study.directions]
    if len(names) != len(directions):
        names = ["value"] if len(directions) == 1 else [f"value_{i}" for i in
                                                        range(len(directions))]
    distributions: dict[str, Any] = {}
    constraint_keys: list[str] = []
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            distributions.setdefault(name, distribution)
        for key in _constraints(trial):
            if key not in constraint_keys:
                constraint_keys.append(key)
    if not distributions:
        raise ValueError(f"study {study.study_name!r} has no trial with parameters to import")
    space = Space({name: _param(d) for name, d in distributions.items()})
    constraints = {f"constraint_{key}": ("<=", 0.0) for key in constraint_keys}
    info["constraint_order"] = [f"constraint_{key}" for key in constraint_keys]
    return Problem(space, dict(zip(names, directions, strict=True)), constraints or None), info


def _constraints(trial: Any) -> dict[str, float]:
    values = getattr(trial, "constraints", None)
    if isinstance(values, Mapping):
        return dict(values)
    listed = trial.system_attrs.get("constraints") or []
    return {str(i): v for i, v in enumerate(listed)}


def import_study(storage: Any, study_name: str, store: str | os.PathLike) -> StoreReader:
    """Write the finished trials of an Optuna study into a new distopt store; return its reader.

    RUNNING and WAITING trials are skipped. Raises ``StoreError`` if ``store`` already holds a
    different study.
    """
    import optuna

    from .._study import Study

    study = optuna.load_study(storage=storage, study_name=study_name)
    problem, info = _problem_of(study)
    distopt_study = Study(problem.space, problem.objectives,
                          {k: list(v) for k, v in problem.constraints.items()} or None,
                          store=store, ref_point=info.get("ref_point"))
    metadata = distopt_study._metadata({"imported_from": {"storage": str(storage),
                                                           "study_name": study_name}})
    metadata["strategy"] = {"name": "optuna", "sampler": study.sampler.__class__.__name__}
    objectives = list(problem.objectives)
    constraint_order = info.get("constraint_order") or list(problem.constraints)
    curve_metric = info.get("intermediate_metric") or objectives[0]
    rows, curves = [], []
    for trial in study.get_trials(deepcopy=False):
        state = trial.state.name
        if state not in _STATUS_OF:
            continue
        attrs = trial.user_attrs
        trial_id = int(attrs.get(TRIAL_ID, trial.number))
        metrics = {k: float(v) for k, v in (attrs.get(METRICS) or {}).items() if _finite(v)}
        if TRIAL_ID not in attrs:
            if trial.values is not None:
                metrics.update({m: float(v)
                                for m, v in zip(objectives, trial.values, strict=False)})
            slacks = _constraints(trial)
            for key, value in slacks.items():
                name = f"constraint_{key}"
                if name in constraint_order and _finite(value):
                    metrics[name] = float(value)
        config = {**problem.space.constants, **trial.params}
        start = _seconds(trial.datetime_start)
        end = _seconds(trial.datetime_complete) or start
        rows.append({"trial_id": trial_id, "status": attrs.get(STATUS, _STATUS_OF[state]),
                     "config": config, "metrics": metrics, "error": attrs.get(ERROR),
                     "attempts": int(attrs.get(ATTEMPTS, 1)), "start_time": start,
                     "end_time": end, "worker": "optuna", "node_id": attrs.get("distopt.node_id")})
        for step, value in sorted(trial.intermediate_values.items()):
            curves.append({"trial_id": trial_id, "step": int(step), "time": end or 0.0,
                           curve_metric: float(value)})
    writer = StoreWriter(store, metadata)
    try:
        writer.add_curves(curves)
        writer.add_trials(sorted(rows, key=lambda r: r["trial_id"]))
    finally:
        writer.close()
    return StoreReader(store)


__all__ = ["export_store", "import_study"]
