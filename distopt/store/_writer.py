"""The store writer: the driver alone appends trial rows, curves and dispatches.

Workers never touch the store; they send results over Ray. So a cluster needs no shared filesystem,
only the driver's disk.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import StoreError
from .._preflight import different_study_error
from ._lock import StoreLock
from ._metadata import METADATA_FILE, read_metadata, write_metadata
from ._reader import _last_per_trial
from ._schema import curve_batch, dispatch_batch, trial_batch
from ._segments import SegmentWriter, read_table, repair_segment, segment_paths

#: Seconds between fsyncs of the open segments (rows are flushed to the OS at every write).
SYNC_INTERVAL = 1.0
#: Seconds between refreshes of the Parquet snapshots read by pandas and DuckDB.
SNAPSHOT_INTERVAL = 30.0


class StoreWriter:
    """Exclusive appender to one store folder.

    Args:
        path: the store folder (created if missing).
        metadata: the study definition to record (``problem``, ``strategy``, ``seed`` ...). If the
            store exists, its recorded ``problem`` must equal this one: resuming a different study
            into it would mix incomparable trials.
    """

    def __init__(self, path: str | os.PathLike[str], metadata: Mapping[str, Any]):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} is a file; give a folder path")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = StoreLock(self.path)
        self._lock.acquire()
        try:
            self.metadata = self._reconcile(dict(metadata))
            _repair_torn_segments(self.path)
        except BaseException:
            self._lock.release()
            raise
        self._config_types: dict[str, str] = self.metadata["config_types"]
        self._metric_order: list[str] = list(self.metadata.get("metric_order", []))
        self._tables = {name: SegmentWriter(self.path / name) for name in
                        ("trials", "curves", "dispatched")}
        self._last_sync = time.monotonic()
        self._last_snapshot = time.monotonic()
        self._closed = False

    def _reconcile(self, metadata: dict[str, Any]) -> dict[str, Any]:
        if (self.path / METADATA_FILE).exists():
            stored = read_metadata(self.path)
            refusal = different_study_error(self.path, stored, metadata)
            if refusal is not None:
                raise refusal
            stored["resumed"] = stored.get("resumed", 0) + 1
            for key in ("strategy", "versions", "run", "objective", "study_file"):
                if key in metadata:
                    stored[key] = metadata[key]
            metadata = stored
        write_metadata(self.path, metadata)
        return metadata

    def record(self, **fields: Any) -> None:
        """Add or replace top-level metadata fields (e.g. the inferred ``ref_point``)."""
        self.metadata.update(fields)
        write_metadata(self.path, self.metadata)

    def add_trials(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append finished trials; they are on disk (flushed) when this returns."""
        if rows:
            self._tables["trials"].write(trial_batch(rows, self._config_types, self._metric_order))
            self._maybe_sync()

    def add_curves(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append ``report`` rows (dicts with ``trial_id``, ``step``, ``time`` and metrics)."""
        if rows:
            self._tables["curves"].write(curve_batch(rows))
            self._maybe_sync()

    def add_dispatched(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append trials handed to workers (``trial_id``, ``attempt``, ``time``, ``config``)."""
        if rows:
            self._tables["dispatched"].write(dispatch_batch(rows, self._config_types))

    def _maybe_sync(self) -> None:
        now = time.monotonic()
        if now - self._last_sync >= SYNC_INTERVAL:
            for table in self._tables.values():
                table.sync()
            self._last_sync = now
        if now - self._last_snapshot >= SNAPSHOT_INTERVAL:
            self.snapshot()

    def snapshot(self) -> None:
        """Rewrite ``trials.parquet`` and ``curves.parquet`` from the log (atomic rename).

        The IPC segments are the source of truth; the snapshots exist so that pandas, polars and
        DuckDB open a store with one call and no distopt.
        """
        import pyarrow.parquet as pq

        for name in ("trials", "curves"):
            table = read_table(self.path / name, live_segment=None)
            if table is None:
                continue
            if name == "trials":  # the same rows the reader gives: last row per trial, in order
                table = _last_per_trial(table).sort_by("trial_id")
            tmp = self.path / f".{name}.parquet.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, self.path / f"{name}.parquet")
        self._last_snapshot = time.monotonic()

    def close(self) -> None:
        """Finish every segment, write the snapshots and release the lock (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for table in self._tables.values():
                table.close()
            self.snapshot()
        finally:
            self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _repair_torn_segments(path: Path) -> None:
    """Cut segments a crashed writer left torn back to their complete rows, with a warning.

    Done once, by the next writer (it holds the lock), so that the store reads cleanly ever after
    instead of warning on every open; the damaged originals are kept as ``*.arrow.torn``.
    """
    for name in ("trials", "curves", "dispatched"):
        for segment in segment_paths(path / name):
            dropped = repair_segment(segment)
            if dropped:
                warnings.warn(f"store {path}: {dropped}", RuntimeWarning, stacklevel=4)
