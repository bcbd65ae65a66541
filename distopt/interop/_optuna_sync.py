"""A store's trials as the trials of an Optuna study, kept in step while a search writes the store.

One Optuna trial per distopt trial, found by its ``distopt.trial_id`` user attribute; a sync
reads the study's trials without copying them and only the store rows it needs, so it can run
every second:

* a trial with a row in the store (finished): COMPLETE, PRUNED or FAIL with its values, metrics
  and constraints, and its learning curve as intermediate values. One the study lacks is added
  finished, with the store's start and end times (``add_trials``: a store synced after its search
  ended syncs fast); one the study shows unfinished is finished in place, same number (Optuna
  dates its completion at that sync).
* a trial dispatched with no row while a search holds the store's writer lock: RUNNING, with its
  params, its dispatch time as start and the curve of its current attempt so far; each sync adds
  the steps reported since. A retry restarts the curve: the earlier attempt's steps that the new
  one has not reported yet read NaN (Optuna cannot delete intermediate values).
* a trial dispatched with no row while no search holds the lock (it was in flight when its search
  crashed or was stopped): WAITING, with ``distopt.interrupted`` True and the curve it reported.
  A resumed search runs it again as its next attempt, which turns it RUNNING (from when the
  resumed search takes the lock, a moment before it hands the trial out), then finished. It is
  never shown RUNNING with no search live, and never FAIL: Optuna refuses to touch a finished
  trial again, so the resumed run's result could then only be a second trial.

The study is taken to be written by one sync at a time (one ``distopt dashboard`` per study).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .._checks import is_finite_number
from .._problem import Problem
from ..space import Categorical, Float, Int
from ..store import StoreReader, configs_from_table, metric_columns
from ..trial import COMPLETE, FAILED, PRUNED, TIMEOUT

_STATE_OF = {COMPLETE: "COMPLETE", PRUNED: "PRUNED", FAILED: "FAIL", TIMEOUT: "FAIL"}
#: Trial user attributes of a finished trial.
TRIAL_ID, STATUS, METRICS, ERROR, ATTEMPTS = ("distopt.trial_id", "distopt.status",
                                              "distopt.metrics", "distopt.error",
                                              "distopt.attempts")
#: Of a trial shown before it finished: the attempt its intermediate values are from, and
#: whether it was in flight when its search stopped.
ATTEMPT, INTERRUPTED = "distopt.attempt", "distopt.interrupted"


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


def _when(moment: datetime.datetime | None) -> datetime.datetime | None:
    """A store timestamp (UTC) as Optuna keeps times: naive, local."""
    return None if moment is None else moment.astimezone().replace(tzinfo=None)


@dataclass
class Snapshot:
    """What one sync reads of a store, in the order that keeps it consistent."""

    live: bool                  # a search held the writer lock before the tables were read
    trials: pa.Table            # finished trials
    dispatched: pa.Table | None  # hand-outs (None: not read, or none yet)
    curves: pa.Table            # every attempt's report rows


def read_store(reader: StoreReader, *, unfinished: bool = True) -> Snapshot:
    """Read ``reader``'s tables for a sync (``unfinished=False``: finished trials only)."""
    # The lock first: a search that ends between this and the reads has written its rows, so
    # a trial is never taken as interrupted while its search still runs. Then the trials before
    # the dispatches and the curves: a row is stored after its curve, a curve after its
    # dispatch, so every row read has its curve.
    live = unfinished and reader.live
    trials = reader.trials()
    dispatched = reader.dispatched() if unfinished else None
    return Snapshot(live, trials, dispatched, reader.curves(all_attempts=True))


@dataclass
class _Finished:
    state: str
    values: list[float] | None
    user_attrs: dict[str, Any]
    system_attrs: dict[str, Any]


def _finished(row: dict[str, Any], problem: Problem, metric_names: list[str]) -> _Finished:
    """The Optuna fields of a store row."""
    metrics = {m: row[m] for m in metric_names if m in row and is_finite_number(row[m])}
    state = _STATE_OF.get(row["status"], "FAIL")
    values = None
    if state == "COMPLETE":
        values = [metrics.get(m, math.nan) for m in problem.objectives]
        if not all(is_finite_number(v) for v in values):
            state, values = "FAIL", None
    slack = problem.constraint_slack([metrics])[0].tolist() if problem.constraints else None
    system_attrs = {"constraints": slack} if slack is not None and all(
        is_finite_number(s) for s in slack) else {}
    user_attrs = {TRIAL_ID: row["trial_id"], STATUS: row["status"], METRICS: metrics,
                  ATTEMPTS: row["attempts"]}
    if row["error"]:
        user_attrs[ERROR] = row["error"][-2000:]
    if row.get("node_id"):
        user_attrs["distopt.node_id"] = row["node_id"]
    return _Finished(state, values, user_attrs, system_attrs)


def _last_curves(curves: pa.Table, metric: str | None,
                 ids: set[int]) -> dict[int, tuple[int, dict[int, float]]]:
    """Per trial of ``ids`` that reported: its last attempt and that attempt's finite values of
    ``metric`` by step (the attempt :meth:`StoreReader.curves` shows)."""
    if not ids or curves.num_rows == 0:
        return {}
    part = curves.filter(pc.is_in(curves["trial_id"], value_set=pa.array(sorted(ids),
                                                                          pa.int64())))
    values = part[metric].to_pylist() if metric in part.column_names else [None] * part.num_rows
    out: dict[int, tuple[int, dict[int, float]]] = {}
    for trial_id, attempt, step, value in zip(part["trial_id"].to_pylist(),
                                              part["attempt"].fill_null(1).to_pylist(),
                                              part["step"].to_pylist(), values, strict=True):
        got = out.get(trial_id)
        if got is None or attempt > got[0]:
            got = out[trial_id] = (attempt, {})
        if attempt == got[0] and is_finite_number(value):
            got[1][step] = value
    return out


def _in_flight(dispatched: pa.Table | None,
               finished: pa.Array) -> dict[int, tuple[int, Any, dict[str, Any]]]:
    """Trials dispatched with no row: their last attempt, its dispatch time and the config."""
    if dispatched is None or dispatched.num_rows == 0:
        return {}
    part = dispatched.filter(pc.invert(pc.is_in(dispatched["trial_id"], value_set=finished)))
    out: dict[int, tuple[int, Any, dict[str, Any]]] = {}
    for trial_id, attempt, moment, config in zip(
            part["trial_id"].to_pylist(), part["attempt"].to_pylist(), part["time"].to_pylist(),
            configs_from_table(part), strict=True):
        if trial_id not in out or attempt >= out[trial_id][0]:
            out[trial_id] = (attempt, moment, config)
    return out


def sync_trials(snapshot: Snapshot, study: Any, problem: Problem,
                curve_metric: str | None) -> int:
    """Bring ``study``'s trials up to date with ``snapshot``; return how many it created."""
    import optuna

    storage, study_id = study._storage, study._study_id
    shown = {t.user_attrs[TRIAL_ID]: t for t in storage.get_all_trials(study_id, deepcopy=False)
             if TRIAL_ID in t.user_attrs}
    done = pa.array([i for i, t in shown.items() if t.state.is_finished()], pa.int64())
    table = snapshot.trials
    rows = table.filter(pc.invert(pc.is_in(table["trial_id"], value_set=done))).to_pylist()
    running = _in_flight(snapshot.dispatched, table["trial_id"].combine_chunks())
    curves = _last_curves(snapshot.curves, curve_metric,
                          {row["trial_id"] for row in rows} | set(running))
    distributions = {name: _distribution(p) for name, p in problem.space.params.items()}
    metric_names = metric_columns(table)
    states = optuna.trial.TrialState
    new = []
    for row in rows:
        fields = _finished(row, problem, metric_names)
        trial = shown.get(row["trial_id"])
        if trial is not None:
            _finish_in_place(storage, trial, fields, curves.get(row["trial_id"]))
            continue
        frozen = optuna.trial.create_trial(
            state=getattr(states, fields.state), values=fields.values,
            params={name: row[f"config/{name}"] for name in distributions},
            distributions=distributions, user_attrs=fields.user_attrs,
            system_attrs=fields.system_attrs,
            intermediate_values=curves.get(row["trial_id"], (0, {}))[1])
        frozen.datetime_start = _when(row["start_time"]) or frozen.datetime_start
        frozen.datetime_complete = _when(row["end_time"]) or frozen.datetime_complete
        new.append(frozen)
    study.add_trials(new)
    state = states.RUNNING if snapshot.live else states.WAITING
    for trial_id, (attempt, moment, config) in sorted(running.items()):
        # A retry's first report may be read before its dispatch: the later attempt wins.
        reported, steps = curves.get(trial_id, (attempt, {}))
        attempt = max(attempt, reported)
        steps = steps if reported == attempt else {}
        trial = shown.get(trial_id)
        if trial is None:
            frozen = optuna.trial.create_trial(
                state=state, params={name: config[name] for name in distributions},
                distributions=distributions, intermediate_values=steps,
                user_attrs={TRIAL_ID: trial_id, ATTEMPT: attempt,
                            **({} if snapshot.live else {INTERRUPTED: True})})
            frozen.datetime_start = _when(moment) or frozen.datetime_start
            storage.create_new_trial(study_id, template_trial=frozen)
            new.append(frozen)
        elif not trial.state.is_finished():
            _set_curve(storage, trial, attempt, steps)
            if trial.state != state:
                storage.set_trial_state_values(trial._trial_id, state)  # WAITING -> RUNNING too
                storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, not snapshot.live)
    return len(new)


def _set_curve(storage: Any, trial: Any, attempt: int, steps: dict[int, float]) -> None:
    """Make an unfinished trial's intermediate values those of ``attempt``: ``steps``."""
    old = trial.intermediate_values
    for step, value in steps.items():
        if old.get(step) != value:
            storage.set_trial_intermediate_value(trial._trial_id, step, value)
    if trial.user_attrs.get(ATTEMPT) != attempt:
        for step, value in old.items():
            if step not in steps and not math.isnan(value):
                storage.set_trial_intermediate_value(trial._trial_id, step, math.nan)
        storage.set_trial_user_attr(trial._trial_id, ATTEMPT, attempt)


def _finish_in_place(storage: Any, trial: Any, fields: _Finished,
                     curve: tuple[int, dict[int, float]] | None) -> None:
    """Finish a trial shown running (or waiting) with its row: the state last, since Optuna
    allows no change after it."""
    import optuna

    if curve is not None:
        _set_curve(storage, trial, *curve)
    attrs = fields.user_attrs
    if trial.user_attrs.get(INTERRUPTED):  # it ran again, as a finished row says
        attrs = {**attrs, INTERRUPTED: False}
    for key, value in attrs.items():
        if trial.user_attrs.get(key) != value:
            storage.set_trial_user_attr(trial._trial_id, key, value)
    for key, value in fields.system_attrs.items():
        storage.set_trial_system_attr(trial._trial_id, key, value)
    storage.set_trial_state_values(trial._trial_id, getattr(optuna.trial.TrialState,
                                                            fields.state), fields.values)
