"""One table of a store being written: a durable journal, published parts and their compaction.

Each write is appended to the table's journal, ``.journal-NNNNNNNN.arrows`` (an Arrow IPC stream,
flushed at once and fsynced when the caller asks), so a row is durable as soon as ``write``
returns without costing a Parquet file per write. At most every ``PUBLISH_INTERVAL`` the rows of
the journal are published as part ``NNNNNNNN`` (see ``_parts``) and the journal is removed. The
journal's dot-prefixed name keeps it out of every tool's globs; distopt's reader reads it too, so
it sees a row the moment it is written. A crash between publishing a part and removing its journal
leaves both: the part wins (same index), and the next writer removes the journal.

Every ``COMPACT_PARTS`` publications the newest small parts are merged into one (renamed in first,
then the small ones removed; readers skip parts a wider part covers), and closing merges all parts
into one, so the number of files stays small however long a search runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._parts import fsync_folder, list_parts, read_part, write_part

JOURNAL_PREFIX = ".journal-"
JOURNAL_SUFFIX = ".arrows"
#: Seconds a written row may wait before tools (DuckDB, polars, pandas) see it in a part.
PUBLISH_INTERVAL = 0.5
#: Small parts merged into one once this many have been published.
COMPACT_PARTS = 128


def journal_path(folder: Path, index: int) -> Path:
    return folder / f"{JOURNAL_PREFIX}{index:08d}{JOURNAL_SUFFIX}"


def journal_paths(folder: Path) -> list[tuple[int, Path]]:
    """Journals in a table folder with their publication index, oldest first."""
    out = []
    for path in folder.glob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}"):
        digits = path.name[len(JOURNAL_PREFIX):-len(JOURNAL_SUFFIX)]
        if digits.isdigit():
            out.append((int(digits), path))
    return sorted(out)


def next_index(folder: Path) -> int:
    """The publication index after every part and journal in ``folder``."""
    used = [p.last for p in list_parts(folder)] + [i for i, _ in journal_paths(folder)]
    return max(used, default=-1) + 1


class TableWriter:
    """Appends record batches to one table folder; widens its schema as new columns arrive."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index = next_index(folder)
        # New parts keep (at least) the columns of the last one, so the newest part always has
        # every column: tools that take the schema of one file take it from the newest.
        self._schema: pa.Schema | None = _last_schema(folder)
        self._pending: list[pa.RecordBatch] = []
        self._sink: Any = None
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None
        self._dirty = False
        self._published = 0

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch`` to the journal (flushed to the OS: it survives a crash of this
        process); a batch with new columns first publishes the rows before it."""
        if self._schema is None or not _covers(self._schema, batch.schema):
            merged = batch.schema if self._schema is None else pa.unify_schemas(
                [self._schema, batch.schema])
            self.publish()
            self._schema = merged
        if batch.schema != self._schema:
            batch = _conform(batch, self._schema)
        if self._stream is None:
            self._sink = open(journal_path(self.folder, self._index), "xb")
            self._stream = pa.ipc.new_stream(self._sink, self._schema)
        self._stream.write_batch(batch)
        self._sink.flush()
        self._pending.append(batch)
        self._dirty = True

    def sync(self) -> None:
        """Force the journal to the disk (survives a power loss)."""
        if self._dirty and self._sink is not None:
            os.fsync(self._sink.fileno())
        self._dirty = False

    def publish(self) -> None:
        """Publish the journal's rows as one part, then remove the journal."""
        if not self._pending:
            return
        assert self._stream is not None and self._schema is not None
        table = pa.Table.from_batches(self._pending, schema=self._schema)
        # the journal stays open until its part is durable: if writing the part fails (a full
        # disk), nothing changed and the next publication tries again
        write_part(self.folder, self._index, self._index, table)
        self._stream.close()
        self._sink.close()
        os.unlink(journal_path(self.folder, self._index))
        self._stream = self._sink = None
        self._pending, self._dirty = [], False
        self._index += 1
        self._published += 1
        if self._published % COMPACT_PARTS == 0:
            compact(self.folder, small_only=True)

    def close(self) -> None:
        """Publish what is left and merge every part into one."""
        self.publish()
        compact(self.folder, small_only=False)


def compact(folder: Path, *, small_only: bool) -> None:
    """Merge parts into one: the trailing single-publication parts, or all of them.

    The merged part is renamed in before the parts it covers are removed, so a reader sees every
    row at every moment (and skips the covered parts if it lists the folder in between). A damaged
    part is left alone: the next writer to open the store sets it aside.
    """
    parts = list_parts(folder)
    if small_only:
        tail = []
        for part in reversed(parts):
            if part.first != part.last:
                break
            tail.append(part)
        parts = tail[::-1]
    if len(parts) < 2:
        return
    tables = []
    for part in parts:
        read = read_part(part)
        if read.lost is not None or read.table is None:
            return
        tables.append(read.table)
    merged = pa.concat_tables(tables, promote_options="default")
    write_part(folder, parts[0].first, parts[-1].last, merged)
    for part in parts:
        part.path.unlink()
    fsync_folder(folder)


def _last_schema(folder: Path) -> pa.Schema | None:
    parts = list_parts(folder)
    if not parts:
        return None
    try:
        return pq.read_schema(parts[-1].path).remove_metadata()
    except (OSError, pa.ArrowException):
        return None


def _covers(schema: pa.Schema, other: pa.Schema) -> bool:
    return all(schema.get_field_index(f.name) >= 0 for f in other)


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Reorder ``batch``'s columns to ``schema``, filling absent ones with nulls."""
    columns = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            columns.append(pa.nulls(batch.num_rows, type=field.type))
        else:
            columns.append(batch.column(index).cast(field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
