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
* statuses: COMPLETE -> COMPLETE, PRUNED -> PRUNED, FAILED and TIMEOUT -> FAIL; with
  :func:`sync_store`, a trial running in a live search -> RUNNING, one left in flight by a search
  that stopped -> WAITING (until a resumed search runs it again).
* every metric, the distopt trial id, status, error and attempts -> trial user attributes; the
  learning curve of the first objective (else the first reported metric) -> intermediate values
  (the last attempt's, growing while the trial runs).

:mod:`distopt.interop._optuna_sync` says how a sync keeps up with a search.

A study exported by distopt carries its exact problem (``user_attrs["distopt"]``), so importing it
gives back the same space, objectives, constraints, statuses and metrics. A study made by Optuna
gets a space from its distributions, objectives named by ``metric_names`` (else ``value`` /
``value_<i>``) and one ``constraint_<name> <= 0`` per constraint it recorded.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._checks import check_number, is_finite_number
from .._errors import field_error
from .._problem import Problem
from ..space import Categorical, Float, Int, Space
from ..store import StoreReader, StoreWriter
from ..trial import COMPLETE, CURVE_COLUMNS, FAILED, PRUNED
from ._optuna_sync import (
    ATTEMPT,
    ATTEMPTS,
    ERROR,
    INTERRUPTED,
    METRICS,
    STATUS,
    TRIAL_ID,
    Snapshot,
    read_store,
    sync_trials,
)

_STATUS_OF = {"COMPLETE": COMPLETE, "PRUNED": PRUNED, "FAIL": FAILED}


def _param(distribution: Any) -> Any:
    import optuna.distributions as od

    if isinstance(distribution, od.CategoricalDistribution):
        return Categorical(list(distribution.choices))
    if isinstance(distribution, (od.IntDistribution, od.FloatDistribution)):
        kind = Int if isinstance(distribution, od.IntDistribution) else Float
        step = distribution.step
        if step is not None and step != 1:  # distopt's ranges have no step
            warnings.warn(f"an Optuna {type(distribution).__name__} with step={step} is imported "
                          f"as {kind.__name__}({distribution.low}, {distribution.high}): a "
                          f"distopt strategy continuing it may propose values between the steps",
                          RuntimeWarning, stacklevel=4)
        return kind(distribution.low, distribution.high, log=distribution.log)
    raise TypeError(f"no distopt parameter for {distribution!r}")


def _seconds(moment: datetime.datetime | None) -> float | None:
    """An Optuna time (naive, local) as seconds since the epoch."""
    return None if moment is None else moment.timestamp()


def export_store(store: StoreReader | str | os.PathLike, storage: Any,
                 study_name: str | None = None, *, load_if_exists: bool = False):
    """Write every finished trial of ``store`` into a new Optuna study; return the study.

    Args:
        store: a store path or reader (may be read while a search writes it).
        storage: an Optuna storage URL (``"sqlite:///runs.db"``) or storage object.
        study_name: default: the store folder's name.
        load_if_exists: add to an existing study of that name instead of failing; trials it
            already holds (by their ``distopt.trial_id``) are not added again.
    """
    reader = store if isinstance(store, StoreReader) else StoreReader(store)
    return _sync(reader, storage, study_name, load_if_exists=load_if_exists, unfinished=False)[0]


def sync_store(store: StoreReader | str | os.PathLike, storage: Any, *,
               study_name: str | None = None) -> int:
    """Bring an Optuna study up to date with ``store``; return how many trials it created.

    Each distopt trial is one Optuna trial, found by its ``distopt.trial_id`` user attribute, so
    calling it again adds nothing twice. While a search writes the store, a trial it runs is
    RUNNING with its params and the learning curve reported so far as intermediate values, and
    turns COMPLETE, PRUNED or FAIL in place when it finishes; a trial left in flight by a search
    that stopped is WAITING (see :mod:`distopt.interop._optuna_sync`). Creates the study (named
    as :func:`export_store` names it) on the first call.
    """
    reader = store if isinstance(store, StoreReader) else StoreReader(store)
    return _sync(reader, storage, study_name, load_if_exists=True, unfinished=True)[1]


def _sync(reader: StoreReader, storage: Any, study_name: str | None, *, load_if_exists: bool,
          unfinished: bool) -> tuple[Any, int]:
    """The study, and how many trials this sync created in it."""
    snapshot = read_store(reader, unfinished=unfinished)
    study = _open_study(reader, storage, study_name, snapshot, load_if_exists=load_if_exists)
    return study, sync_trials(snapshot, study, reader.problem,
                              study.user_attrs["distopt"]["intermediate_metric"])


def follow(store: StoreReader | str | os.PathLike, storage: Any, interval: float = 1.0,
           stop: threading.Event | Callable[[], bool] | None = None, *,
           study_name: str | None = None) -> int:
    """Call :func:`sync_store` every ``interval`` seconds until ``stop`` is set (an Event, or a
    callable returning True); sync once more, then return the number of trials created.

    Without ``stop`` it runs until interrupted (Ctrl-C), as ``distopt dashboard`` does.
    """
    interval = check_number("interval", interval, 0.0)
    if isinstance(stop, threading.Event):
        done: Callable[[], bool] = stop.is_set
    else:
        done = stop if stop is not None else (lambda: False)
    import optuna

    path = store.path if isinstance(store, StoreReader) else store  # re-read: ref point, rows
    if isinstance(storage, str):   # one engine for every sync: opening a URL costs more than one
        storage = optuna.storages.get_storage(storage)
    added = 0
    while True:
        stopping = done()   # read before the sync, so the last sync sees everything written
        added += sync_store(path, storage, study_name=study_name)
        if stopping:
            return added
        if isinstance(stop, threading.Event):
            stop.wait(interval)
        else:
            time.sleep(interval)


def dashboard_server(storage: Any, host: str = "127.0.0.1", port: int = 8080):
    """optuna-dashboard on ``storage`` as a WSGI server, bound but not yet serving: call
    ``serve_forever()`` (in a thread if need be), then ``shutdown()`` and ``server_close()``.
    ``port=0`` takes a free port (``server.server_port``). Needs ``pip install optuna-dashboard``.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna
    import optuna_dashboard

    # optuna-dashboard opens a URL without creating Optuna's tables: create them here, before
    # any sync thread does, or a request racing that creation reads a half-made database.
    storage = optuna.storages.get_storage(storage)

    class Server(ThreadingMixIn, WSGIServer):
        # The page polls the API while it is open: one thread per request keeps it responsive.
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass  # one line per poll would bury what the command prints

    return make_server(host, port, optuna_dashboard.wsgi(storage), server_class=Server,
                       handler_class=Quiet)


def _open_study(reader: StoreReader, storage: Any, study_name: str | None, snapshot: Snapshot,
                *, load_if_exists: bool):
    import optuna

    problem = reader.problem
    name = study_name or reader.path.resolve().name  # "." is the folder it names
    directions = ["maximize" if d == "max" else "minimize" for d in problem.objectives.values()]
    study = None
    if load_if_exists:  # quietly: create_study logs "Using an existing study" at every sync
        try:
            study = optuna.load_study(storage=storage, study_name=name)
        except KeyError:
            pass
    if study is None:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                    load_if_exists=load_if_exists)
    if [d.name.lower() for d in study.directions] != directions:
        raise field_error("study_name", f"Optuna study {name!r} has directions "
                          f"{[d.name.lower() for d in study.directions]}, not the store's "
                          f"{directions}", "give another study_name")
    curve_metrics = [c for c in snapshot.curves.column_names if c not in CURVE_COLUMNS]
    curve_metric = next((m for m in problem.objectives if m in curve_metrics),
                        curve_metrics[0] if curve_metrics else None)
    info = {"problem": problem.to_dict(), "ref_point": reader.ref_point, "store": str(reader.path),
            "constraint_order": list(problem.constraints), "intermediate_metric": curve_metric}
    known = study.user_attrs.get("distopt") or {}
    if known.get("problem") not in (None, info["problem"]):
        raise field_error("study_name", f"Optuna study {name!r} holds another distopt study "
                          f"(from {known.get('store')})", "give another study_name")
    if study.metric_names != list(problem.objectives):
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what dashboards show
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(problem.objectives))
    # A curve metric seen once stays: the trials already added used it for their values.
    if known.get("intermediate_metric") is not None:
        info["intermediate_metric"] = known["intermediate_metric"]
    if known != info:
        study.set_user_attr("distopt", info)
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

    RUNNING and WAITING trials are skipped. A parameter that a define-by-run study suggested in
    some trials only is empty (null) in the others, and a search continued from the store
    learns from the trials that have every parameter. Raises ``ConfigError`` if ``store``
    already holds a study (an import writes a whole store: importing into one would overwrite
    its trials).
    """
    import optuna

    from .._preflight import check_store_path
    from .._study import Study
    from ..store import METADATA_FILE

    check_store_path(store)  # a file, a folder of other files, a folder it cannot write
    if (Path(store) / METADATA_FILE).exists():
        raise field_error("store", f"{store} already holds a study",
                          "import into a new folder")
    study = optuna.load_study(storage=storage, study_name=study_name)
    problem, info = _problem_of(study)
    distopt_study = Study(problem.space, problem.objectives,
                          {k: list(v) for k, v in problem.constraints.items()} or None,
                          store=store, ref_point=info.get("ref_point"))
    metadata = distopt_study.metadata({"imported_from": {"storage": str(storage),
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
        metrics = {k: float(v) for k, v in (attrs.get(METRICS) or {}).items()
                   if is_finite_number(v)}
        if TRIAL_ID not in attrs:
            if trial.values is not None:
                metrics.update({m: float(v)
                                for m, v in zip(objectives, trial.values, strict=False)})
            slacks = _constraints(trial)
            for key, value in slacks.items():
                name = f"constraint_{key}"
                if name in constraint_order and is_finite_number(value):
                    metrics[name] = float(value)
        config = {**problem.space.constants, **trial.params}
        start = _seconds(trial.datetime_start)
        end = _seconds(trial.datetime_complete) or start
        rows.append({"trial_id": trial_id, "status": attrs.get(STATUS, _STATUS_OF[state]),
                     "config": config, "metrics": metrics, "error": attrs.get(ERROR),
                     "attempts": int(attrs.get(ATTEMPTS, 1)), "start_time": start,
                     "end_time": end, "worker": "optuna", "node_id": attrs.get("distopt.node_id")})
        for step, value in sorted(trial.intermediate_values.items()):
            if ATTEMPT in attrs and not is_finite_number(value):
                continue  # a live sync's blank for a step only an earlier attempt reported
            curves.append({"trial_id": trial_id, "step": int(step), "time": end or 0.0,
                           curve_metric: float(value)})
    partial = sorted({n for r in rows for n in problem.space.names if n not in r["config"]})
    if partial:
        warnings.warn(f"parameters {partial} are absent from some trials of {study_name!r} (a "
                      f"define-by-run study): they are null there, and a search continued from "
                      f"{store} learns from the trials that have every parameter",
                      RuntimeWarning, stacklevel=2)
    writer = StoreWriter(store, metadata)
    try:
        writer.add_curves(curves)
        writer.add_trials(sorted(rows, key=lambda r: r["trial_id"]))
    finally:
        writer.close()
    return StoreReader(store)


__all__ = ["ATTEMPT", "ATTEMPTS", "ERROR", "INTERRUPTED", "METRICS", "STATUS", "TRIAL_ID",
           "dashboard_server", "export_store", "follow", "import_study", "sync_store"]
