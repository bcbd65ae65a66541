"""The store reader: trials, curves, the feasible Pareto front and its hypervolume.

It needs neither Ray, nor a lock, nor write access, and may run while a search writes the store:
each call reads the parts and journals as they are on disk at that moment, every byte checked.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import pareto
from .._checks import check_ref_point
from .._errors import field_error
from .._problem import Problem, TrialResult
from ..trial import COMPLETE, CONFIG_PREFIX, TRIAL_HEAD_COLUMNS, TRIAL_TAIL_COLUMNS
from ._lock import StoreLock
from ._metadata import read_metadata
from ._rows import read_rows
from ._schema import configs_from_table, empty_table, metric_columns


class StoreReader:
    """Read access to a store folder written by :class:`~distopt.store.StoreWriter`.

    Attributes:
        damaged: the tables (``"trials"``, ``"curves"``, ``"dispatched"``) of which a read by
            this reader lost rows to damage (each loss is also warned of, once).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.metadata: dict[str, Any] = read_metadata(self.path)
        self.problem = Problem.from_dict(self.metadata["problem"])
        self.damaged: set[str] = set()
        self._reported: set[str] = set()
        self._frozen: dict[str, pa.Table | None] | None = None

    def __repr__(self) -> str:
        return f"StoreReader({str(self.path)!r})"

    @property
    def live(self) -> bool:
        """Whether a search holds the store's writer lock now (it is being written)."""
        return StoreLock.is_held(self.path)

    def snapshot(self) -> StoreReader:
        """This store as it is now: each table is read once, at the first call that needs it,
        and every later call on the snapshot sees those same rows, so that the front, the counts
        and the hypervolume of a store a search is writing agree with each other. A snapshot's
        snapshot is itself."""
        if self._frozen is not None:
            return self
        frozen = copy.copy(self)
        frozen._frozen = {}
        return frozen

    def _read(self, name: str) -> pa.Table | None:
        def report(message: str) -> None:
            self.damaged.add(name)
            self._report(message)

        if self._frozen is not None and name in self._frozen:
            return self._frozen[name]
        table = read_rows(self.path / name, live=self.live, report=report)
        if self._frozen is not None:
            self._frozen[name] = table
        return table

    def _report(self, message: str) -> None:
        """Warn of damage once per reader (a store is read many times by one session)."""
        if message not in self._reported:
            self._reported.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=5)

    def _empty_trials(self) -> pa.Table:
        return empty_table("trials", self.metadata)

    def trials(self) -> pa.Table:
        """One row per finished trial, sorted by ``trial_id``.

        Columns: ``trial_id``, ``status``, ``config/<param>``, one per metric, ``error``,
        ``attempts``, ``start_time``, ``end_time``, ``worker``, ``node_id``.
        """
        table = self._read("trials")
        if table is None:
            return self._empty_trials()
        return trial_rows(table)

    def curves(self, trial_id: int | None = None, *, all_attempts: bool = False) -> pa.Table:
        """``distopt.report`` rows (``trial_id``, ``step``, ``time``, metrics), optionally one
        trial's, sorted by trial and step.

        A trial run again (its worker lost, or resumed) reported once per attempt: by default
        only each trial's last attempt is shown; ``all_attempts=True`` shows every row with its
        ``attempt`` column (sorted by trial, attempt, step).
        """
        table = self._read("curves")
        if table is None:
            table = empty_table("curves", self.metadata)
        if "attempt" not in table.column_names:  # written before curves carried the attempt
            table = table.add_column(3, "attempt", pa.array([1] * table.num_rows, pa.int64()))
        if trial_id is not None:
            table = table.filter(pc.equal(table["trial_id"], trial_id))
        if all_attempts:
            return table.sort_by([(k, "ascending") for k in ("trial_id", "attempt", "step")])
        # one attempt per trial, so the column says nothing more (and callers that take every
        # other column for a metric keep working)
        table = table.filter(pa.array(_last_attempt_mask(table))).drop_columns(["attempt"])
        return table.sort_by([("trial_id", "ascending"), ("step", "ascending")])

    def dispatched(self) -> pa.Table:
        """Every hand-out of a trial to a worker (``trial_id``, ``attempt``, ``time``, config)."""
        table = self._read("dispatched")
        return empty_table("dispatched", self.metadata) if table is None else table

    def results(self) -> list[TrialResult]:
        """Finished trials as strategies consume them (used to rebuild a strategy on resume)."""
        table = self.trials()
        metrics = metric_columns(table)
        values = {m: table.column(m).to_pylist() for m in metrics}
        configs = configs_from_table(table)
        out = []
        for i, (trial_id, status) in enumerate(zip(table["trial_id"].to_pylist(),
                                                   table["status"].to_pylist(), strict=True)):
            row = {m: values[m][i] for m in metrics if values[m][i] is not None}
            out.append(TrialResult(trial_id, configs[i], status, row))
        return out

    # -- analysis -------------------------------------------------------------------------------

    def _complete(self, table: pa.Table) -> pa.Table:
        return table.filter(pc.equal(table["status"], COMPLETE))

    def _objective_points(self, table: pa.Table) -> np.ndarray:
        cols = [table.column(m).to_numpy(zero_copy_only=False).astype(float)
                if m in table.column_names else np.full(table.num_rows, math.nan)
                for m in self.problem.objectives]
        return np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))

    def _feasible_mask(self, table: pa.Table) -> np.ndarray:
        mask = np.ones(table.num_rows, dtype=bool)
        for name, (op, threshold) in self.problem.constraints.items():
            if name not in table.column_names:
                return np.zeros(table.num_rows, dtype=bool)
            values = table.column(name).to_numpy(zero_copy_only=False).astype(float)
            with np.errstate(invalid="ignore"):
                mask &= values <= threshold if op == "<=" else values >= threshold
        return mask

    def feasible_trials(self) -> pa.Table:
        """COMPLETE trials that satisfy every constraint."""
        table = self._complete(self.trials())
        return table.filter(pa.array(self._feasible_mask(table)))

    def pareto_front(self) -> pa.Table:
        """COMPLETE, feasible, non-dominated trials (all columns), sorted by the first objective."""
        table = self.feasible_trials()
        mask = pareto.is_non_dominated(self._objective_points(table),
                                       maximize=self.problem.maximize)
        front = table.filter(pa.array(mask))
        first = next(iter(self.problem.objectives))
        order = "descending" if self.problem.objectives[first] == "max" else "ascending"
        return front.sort_by([(first, order)])

    @property
    def ref_point(self) -> dict[str, float] | None:
        """The reference point recorded in the store (metric -> value), if any."""
        return self.metadata.get("ref_point")

    def ref_point_in_use(self) -> dict[str, float] | None:
        """The point :meth:`hypervolume` measures from by default: the recorded one, else one
        inferred from the current feasible front (None while no feasible point is finite)."""
        ref = self._ref_vector(None, self._objective_points(self.feasible_trials()))
        if ref is None:
            return None
        return dict(zip(self.problem.objectives, map(float, ref), strict=True))

    def hypervolume(self, ref_point: dict[str, float] | list[float] | None = None) -> float:
        """Hypervolume of the feasible front.

        ``ref_point`` defaults to the one recorded in the store; a store without one (a search that
        has not yet inferred it) infers it from the current front.
        """
        points = self._objective_points(self.feasible_trials())
        ref = self._ref_vector(ref_point, points)
        if ref is None:
            return 0.0
        return pareto.hypervolume(points, ref, maximize=self.problem.maximize)

    def _ref_vector(self, ref_point: Any, points: np.ndarray) -> np.ndarray | None:
        ref_point = ref_point if ref_point is not None else self.ref_point
        if ref_point is None:
            if not np.isfinite(points).all(axis=1).any():
                return None
            return pareto.reference_point(points, maximize=self.problem.maximize)
        if isinstance(ref_point, Mapping):  # exactly the objectives: a stray key is a typo
            ref_point = check_ref_point("ref_point", ref_point, self.problem.objectives)
            return np.array([ref_point[m] for m in self.problem.objectives])
        vector = np.asarray(ref_point, dtype=float)
        if vector.shape != (len(self.problem.objectives),):
            raise field_error("ref_point", f"has {vector.size} values for the "
                              f"{len(self.problem.objectives)} objectives "
                              f"{list(self.problem.objectives)}", "give one per objective")
        return vector

    # -- the names Optuna and Ray Tune users reach for ------------------------------------------

    @property
    def best_trials(self) -> list[dict[str, Any]]:
        """The feasible Pareto front as ``{"trial_id", "config", "metrics"}`` dicts (like Optuna's
        ``study.best_trials``), in :meth:`pareto_front` order."""
        front = self.pareto_front()
        params = [c for c in front.column_names if c.startswith(CONFIG_PREFIX)]
        metrics = _metric_names(front)
        return [{"trial_id": row["trial_id"],
                 "config": {c.removeprefix(CONFIG_PREFIX): row[c] for c in params},
                 "metrics": {m: row[m] for m in metrics if row[m] is not None}}
                for row in front.to_pylist()]

    def trials_dataframe(self) -> Any:
        """Every trial as a pandas DataFrame with Optuna's column names.

        Columns: ``number`` (the trial id), ``state`` (``COMPLETE``, ``FAILED``, ...),
        ``values_<objective>`` per objective, ``metrics_<name>`` per other metric (constraints),
        ``params_<param>`` per parameter, ``datetime_start``, ``datetime_complete`` (UTC),
        ``duration``, ``error``, ``attempts``. :meth:`trials` keeps the store's own names.
        """
        return self._dataframe(self.trials())

    def front_dataframe(self) -> Any:
        """The feasible Pareto front with the columns of :meth:`trials_dataframe`."""
        return self._dataframe(self.pareto_front())

    def _dataframe(self, table: pa.Table) -> Any:
        import pandas as pd  # lazy: only these two methods need pandas

        objectives = self.problem.objectives
        frame = pd.DataFrame({"number": table["trial_id"].to_pylist(),
                              "state": table["status"].to_pylist()})
        for m in _metric_names(table):
            name = f"values_{m}" if m in objectives else f"metrics_{m}"
            frame[name] = table[m].to_numpy(zero_copy_only=False).astype(float)
        for c in (c for c in table.column_names if c.startswith(CONFIG_PREFIX)):
            frame[f"params_{c.removeprefix(CONFIG_PREFIX)}"] = table[c].to_pylist()
        start, end = (pd.to_datetime(table[c].to_pandas(), utc=True)  # stored as UTC timestamps
                      for c in ("start_time", "end_time"))
        frame["datetime_start"], frame["datetime_complete"] = start, end
        frame["duration"] = end - start
        frame["error"] = table["error"].to_pylist()
        frame["attempts"] = table["attempts"].to_pylist()
        return frame


def _metric_names(table: pa.Table) -> list[str]:
    """Metric columns of a trial table: all but the fixed and the ``config/`` columns."""
    fixed = set(TRIAL_HEAD_COLUMNS) | set(TRIAL_TAIL_COLUMNS)
    return [c for c in table.column_names if c not in fixed and not c.startswith(CONFIG_PREFIX)]


def _last_attempt_mask(table: pa.Table) -> np.ndarray:
    """Rows of each trial's highest attempt."""
    ids = table["trial_id"].to_numpy()
    attempts = table["attempt"].fill_null(1).to_numpy()
    if ids.size == 0:
        return np.zeros(0, dtype=bool)
    last = np.full(ids.max() + 1 - ids.min(), -1)
    np.maximum.at(last, ids - ids.min(), attempts)
    return attempts == last[ids - ids.min()]


def trial_rows(table: pa.Table) -> pa.Table:
    """The trial rows of a store as every reader gives them: the last row of each trial, in
    ``trial_id`` order, with the columns in the documented order (a metric first returned after
    some parts were written is the last column of the parts after them)."""
    table = _last_per_trial(table).sort_by("trial_id")
    names = table.column_names
    tail = [c for c in TRIAL_TAIL_COLUMNS if c in names]
    head = [c for c in TRIAL_HEAD_COLUMNS if c in names]
    configs = [c for c in names if c.startswith(CONFIG_PREFIX)]
    metrics = [c for c in names if c not in (*head, *tail, *configs)]
    order = head + configs + metrics + tail
    return table if order == names else table.select(order)


def _last_per_trial(table: pa.Table) -> pa.Table:
    """Drop all but the last row of any trial id written twice (e.g. across a resume)."""
    ids = table["trial_id"].to_numpy()
    if len(np.unique(ids)) == len(ids):
        return table
    _, reverse_first = np.unique(ids[::-1], return_index=True)
    keep = np.sort(len(ids) - 1 - reverse_first)
    return table.take(pa.array(keep))


def open_store(path: str | os.PathLike[str]) -> StoreReader:
    """Open a store for reading (no Ray needed; safe while a search writes it)."""
    return StoreReader(path)
