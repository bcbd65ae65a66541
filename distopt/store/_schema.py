"""Column layout of the three stored tables, and rows -> Arrow record batches.

``trials``: one row per finished trial attempt that ended the trial::

    trial_id, status, config/<param>..., <metric>..., error, attempts,
    start_time, end_time, worker, node_id

``curves``: one row per ``distopt.report`` call: ``trial_id, step, time, attempt, <metric>...``.
``dispatched``: one row per trial handed to a worker: ``trial_id, attempt, time, config/<param>...``
(a trial dispatched but absent from ``trials`` was in flight when the driver stopped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from ..trial import CONFIG_PREFIX, CURVE_COLUMNS, RESERVED

TIMESTAMP = pa.timestamp("us", tz="UTC")

TRIAL_HEAD = [("trial_id", pa.int64()), ("status", pa.string())]
TRIAL_TAIL = [
    ("error", pa.string()),
    ("attempts", pa.int64()),
    ("start_time", TIMESTAMP),
    ("end_time", TIMESTAMP),
    ("worker", pa.string()),
    ("node_id", pa.string()),
]
CURVE_HEAD = [("trial_id", pa.int64()), ("step", pa.int64()), ("time", TIMESTAMP),
              ("attempt", pa.int64())]
DISPATCH_HEAD = [("trial_id", pa.int64()), ("attempt", pa.int64()), ("time", TIMESTAMP)]

__all__ = ["CONFIG_PREFIX", "RESERVED"]  # re-exported: the store's users import them from here

_ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string(),
                "bool": pa.bool_()}


def config_fields(config_types: Mapping[str, str]) -> list[tuple[str, pa.DataType]]:
    """``config/<name>`` fields with each parameter's own type."""
    return [(CONFIG_PREFIX + name, _ARROW_TYPES[kind]) for name, kind in config_types.items()]


def empty_table(name: str, metadata: Mapping[str, Any]) -> pa.Table:
    """A table (``trials``, ``curves`` or ``dispatched``) of a store without rows of it yet: its
    columns as the study defines them (curves: only the fixed ones; each metric is a column once
    reported)."""
    if name == "curves":
        return pa.schema(CURVE_HEAD).empty_table()
    if name == "dispatched":
        return pa.schema(DISPATCH_HEAD + config_fields(metadata["config_types"])).empty_table()
    fields = TRIAL_HEAD + config_fields(metadata["config_types"]) + [
        (m, pa.float64()) for m in metadata.get("metric_order", [])] + TRIAL_TAIL
    return pa.schema(fields).empty_table()


def _seconds_to_us(value: float | None) -> int | None:
    return None if value is None else int(round(value * 1e6))


def _metric_names(rows: Sequence[Mapping[str, Any]], key: str | None) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        for name in (row[key] if key else row):
            names.setdefault(name, None)
    return list(names)


def trial_batch(rows: Sequence[Mapping[str, Any]], config_types: Mapping[str, str],
                metric_order: Sequence[str] = ()) -> pa.RecordBatch:
    """Record batch of trial rows (dicts with ``config`` and ``metrics`` sub-dicts)."""
    metrics = list(metric_order) + [m for m in _metric_names(rows, "metrics")
                                    if m not in metric_order]
    fields = TRIAL_HEAD + config_fields(config_types) + [(m, pa.float64()) for m in metrics] \
        + TRIAL_TAIL
    columns: dict[str, list[Any]] = {name: [] for name, _ in fields}
    for row in rows:
        columns["trial_id"].append(row["trial_id"])
        columns["status"].append(row["status"])
        for name in config_types:
            columns[CONFIG_PREFIX + name].append(row["config"].get(name))
        for name in metrics:
            columns[name].append(row["metrics"].get(name))
        columns["error"].append(row.get("error"))
        columns["attempts"].append(row.get("attempts", 1))
        columns["start_time"].append(_seconds_to_us(row.get("start_time")))
        columns["end_time"].append(_seconds_to_us(row.get("end_time")))
        columns["worker"].append(row.get("worker"))
        columns["node_id"].append(row.get("node_id"))
    schema = pa.schema(fields)
    return pa.RecordBatch.from_arrays(
        [pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)


def curve_batch(rows: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
    """Record batch of report rows (flat dicts with ``trial_id``, ``step``, ``time`` and
    ``attempt``, 1 when absent)."""
    metrics = [m for m in _metric_names(rows, None) if m not in CURVE_COLUMNS]
    fields = CURVE_HEAD + [(m, pa.float64()) for m in metrics]
    schema = pa.schema(fields)
    arrays = [
        pa.array([r["trial_id"] for r in rows], pa.int64()),
        pa.array([r["step"] for r in rows], pa.int64()),
        pa.array([_seconds_to_us(r["time"]) for r in rows], TIMESTAMP),
        pa.array([r.get("attempt") or 1 for r in rows], pa.int64()),
    ] + [pa.array([r.get(m) for r in rows], pa.float64()) for m in metrics]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def dispatch_batch(rows: Sequence[Mapping[str, Any]],
                   config_types: Mapping[str, str]) -> pa.RecordBatch:
    """Record batch of dispatch rows (``trial_id``, ``attempt``, ``time``, ``config``)."""
    schema = pa.schema(DISPATCH_HEAD + config_fields(config_types))
    arrays = [
        pa.array([r["trial_id"] for r in rows], pa.int64()),
        pa.array([r["attempt"] for r in rows], pa.int64()),
        pa.array([_seconds_to_us(r["time"]) for r in rows], TIMESTAMP),
    ] + [pa.array([r["config"].get(n) for r in rows], kind)
         for n, (_, kind) in zip(config_types, config_fields(config_types), strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def configs_from_table(table: pa.Table) -> list[dict[str, Any]]:
    """The ``config`` dicts of a trials or dispatched table, one per row."""
    names = [c for c in table.column_names if c.startswith(CONFIG_PREFIX)]
    columns = {c[len(CONFIG_PREFIX):]: table.column(c).to_pylist() for c in names}
    return [{k: v[i] for k, v in columns.items()} for i in range(table.num_rows)]


def metric_columns(table: pa.Table) -> list[str]:
    """Metric column names of a trials table."""
    fixed = {name for name, _ in TRIAL_HEAD + TRIAL_TAIL}
    return [c for c in table.column_names if c not in fixed and not c.startswith(CONFIG_PREFIX)]
