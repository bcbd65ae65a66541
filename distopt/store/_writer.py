"""The store writer: the driver alone appends trial rows, curves and dispatches.

Workers never touch the store; they send results over Ray. So a cluster needs no shared filesystem,
only the driver's disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import StoreError
from .._preflight import different_study_error
from ._lock import LOCK_FILE, StoreLock
from ._metadata import METADATA_FILE, TABLES, read_metadata, write_metadata
from ._reader import trial_rows
from ._recover import recover
from ._rows import read_rows
from ._schema import curve_batch, dispatch_batch, empty_table, trial_batch
from ._table import PUBLISH_INTERVAL, TableWriter, compact, journal_paths

#: Every name a store folder holds, a merge's temporary files aside (``.trials.parquet.tmp``).
STORE_NAMES = frozenset({METADATA_FILE, LOCK_FILE, *TABLES, *(f"{t}.parquet" for t in TABLES)})
#: Seconds between fsyncs of the journals (trial rows are fsynced at once if FSYNC_TRIALS).
SYNC_INTERVAL = 1.0
#: Fsync every ``add_trials`` (with the curves before it) before it returns, so that a trial
#: counts as done only once its row would survive a power loss. False: rows survive a crash of
#: the process at once (flushed to the OS) and a power loss within SYNC_INTERVAL, and writing
#: costs no disk round trip per call (see benchmarks/results/bench_store.md).
FSYNC_TRIALS = True


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
            recover(self.path, TABLES)
            self._tables = {name: TableWriter(self.path / name) for name in TABLES}
        except BaseException:
            self._lock.release()
            raise
        self._config_types: dict[str, str] = self.metadata["config_types"]
        self._metric_order: list[str] = list(self.metadata.get("metric_order", []))
        # Publication runs on the caller's thread when it is due, else on a timer, so that rows
        # reach the parts within PUBLISH_INTERVAL even when no further write comes.
        self._mutex = threading.RLock()
        self._timer: threading.Timer | None = None
        self._last_sync = self._last_publish = time.monotonic()
        self._closed = False

    def _reconcile(self, metadata: dict[str, Any]) -> dict[str, Any]:
        if (self.path / METADATA_FILE).exists():
            stored = read_metadata(self.path)
            refusal = different_study_error(self.path, stored, metadata)
            if refusal is not None:
                raise refusal
            stored["resumed"] = stored.get("resumed", 0) + 1
            for key in ("strategy", "seed", "versions", "run", "objective", "study_file"):
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
        """Append finished trials; they are durable (fsynced, with the curves written before
        them; see FSYNC_TRIALS) when this returns."""
        if rows:
            with self._mutex:
                self._tables["trials"].write(trial_batch(rows, self._config_types,
                                                         self._metric_order))
                if FSYNC_TRIALS:
                    for name in ("curves", "trials"):  # dispatches: every SYNC_INTERVAL
                        self._tables[name].sync()
                else:
                    self._maybe_sync()
                self._maybe_publish()

    def add_curves(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append ``report`` rows (dicts with ``trial_id``, ``step``, ``time``, optionally
        ``attempt``, and metrics)."""
        if rows:
            with self._mutex:
                self._tables["curves"].write(curve_batch(rows))
                self._maybe_sync()
                self._maybe_publish()

    def add_dispatched(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append trials handed to workers (``trial_id``, ``attempt``, ``time``, ``config``)."""
        if rows:
            with self._mutex:
                self._tables["dispatched"].write(dispatch_batch(rows, self._config_types))
                self._maybe_sync()
                self._maybe_publish()

    def _maybe_sync(self) -> None:
        now = time.monotonic()
        if now - self._last_sync >= SYNC_INTERVAL:
            for table in self._tables.values():
                table.sync()
            self._last_sync = now

    def _maybe_publish(self) -> None:
        wait = self._last_publish + PUBLISH_INTERVAL - time.monotonic()
        if wait <= 0:
            self.publish()
        elif self._timer is None:
            self._timer = threading.Timer(wait, self._publish_later)
            self._timer.daemon = True
            self._timer.start()

    def _publish_later(self) -> None:
        with self._mutex:
            self._timer = None
            if not self._closed:
                try:
                    self.publish()
                except OSError:
                    # A full disk, say: the rows stay durable in their journal and the next
                    # publication (the search's own thread, which reports the fault) retries.
                    pass

    def publish(self) -> None:
        """Publish every written row as Parquet parts (readable by any tool from then on)."""
        with self._mutex:
            for name in TABLES:
                self._tables[name].publish()
            self._last_publish = time.monotonic()

    def snapshot(self) -> None:
        """Write ``trials.parquet`` and ``curves.parquet``: one file each for tools that want
        one (atomic rename). The parts are the live data; these are written at close."""
        write_snapshots(self.path, self.metadata)

    def close(self) -> None:
        """Publish every row, merge each table's parts into one, write the snapshots and release
        the lock (idempotent)."""
        if self._closed:
            return
        with self._mutex:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            try:
                for name in TABLES:
                    self._tables[name].close()
                self.snapshot()
            finally:
                self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_snapshots(path: Path, metadata: Mapping[str, Any]) -> None:
    """``trials.parquet`` (the rows :meth:`StoreReader.trials` gives) and ``curves.parquet``
    (every attempt's rows) of the store at ``path``, each renamed into place whole."""
    import pyarrow.parquet as pq

    for name in ("trials", "curves"):
        # damage is reported by readers and set aside by the next writer, not here again
        table = read_rows(path / name, report=lambda message: None)
        if table is None:  # none yet: the file still exists, for tools that read it by name
            table = empty_table(name, metadata)
        elif name == "trials":
            table = trial_rows(table)
        tmp = path / f".{name}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, path / f"{name}.parquet")


def settle(path: str | os.PathLike[str]) -> bool:
    """Publish what a search killed mid-write left unpublished in the store at ``path``: its
    journals (rows only :func:`~distopt.open_store` reads; DuckDB, polars and pyarrow read the
    Parquet parts), temporary files and missing snapshots, as the next search would before
    appending. Does nothing while a search holds the store (it publishes its own rows) or when
    nothing was left. Returns whether anything was settled (damage found is warned of, as
    :func:`~distopt.store._recover.recover` does for every writer)."""
    path = Path(path)
    if not _unsettled(path):
        return False
    lock = StoreLock(path)
    try:
        lock.acquire()
    except (StoreError, OSError):  # a search holds it, or the store is read-only
        return False
    try:
        recover(path, TABLES)
        for name in TABLES:
            if (path / name).is_dir():
                compact(path / name, small_only=False)
        write_snapshots(path, read_metadata(path))
    finally:
        lock.release()
    return True


def _unsettled(path: Path) -> bool:
    """Whether a writer left the store without closing it (a kill): journals, temporary files or
    no snapshot."""
    if not (path / "trials.parquet").exists() or any(path.glob(".*.tmp")):
        return True
    return any(journal_paths(path / name) or any((path / name).glob(".*.tmp"))
               for name in TABLES if (path / name).is_dir())
