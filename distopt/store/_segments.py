"""Append-only tables as a folder of Arrow IPC stream segments.

A table (``trials``, ``curves``, ``dispatched``) is a folder of ``part-NNNNN.arrow`` files, each an
Arrow IPC *stream* (schema, then record batches). The stream format is chosen over the IPC file
format and Parquet because a stream can be appended batch by batch and flushed after each one,
and every complete prefix of it is readable: a crash loses at most the batch being written.

A writer never appends to an existing segment. A new writer session, or a row with a column the
current schema lacks, starts a new segment; readers unify the schemas (missing columns read as
null), so a metric that first appears late becomes a new nullable column.

A segment is only ever *replaced whole*, atomically (temporary file, fsync, rename): when its
writer closes it, it is compacted to one record batch (``compact_segment``); when a crash left it
torn, the next writer cuts it back to its complete batches and keeps the original beside it as
``part-NNNNN.arrow.torn`` (``repair_segment``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa

SEGMENT_GLOB = "part-*.arrow"
#: A closed segment of more record batches than this is rewritten as one (``compact_segment``).
COMPACT_BATCHES = 64


def segment_paths(folder: Path) -> list[Path]:
    """Segments of a table in write order."""
    return sorted(folder.glob(SEGMENT_GLOB))


class SegmentWriter:
    """Appends record batches to the newest segment of one table folder, widening as needed."""

    def __init__(self, folder: Path, *, metadata: dict[str, str] | None = None):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = segment_paths(folder)
        self._next_index = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        self._metadata = metadata or {}
        self._schema: pa.Schema | None = None
        self._sink: Any = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._path: Path | None = None
        self._n_batches = 0

    def _open(self, schema: pa.Schema) -> None:
        self._close_segment()
        path = self.folder / f"part-{self._next_index:05d}.arrow"
        self._path, self._n_batches = path, 0
        self._next_index += 1
        self._schema = schema.with_metadata(self._metadata)
        self._sink = open(path, "xb")  # "x": never overwrite a segment, even after a clock skew
        self._writer = pa.ipc.new_stream(self._sink, self._schema)

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch``, starting a wider segment first when it brings new columns."""
        if self._schema is None or not _covers(self._schema, batch.schema):
            merged = batch.schema if self._schema is None else pa.unify_schemas(
                [self._schema.remove_metadata(), batch.schema])
            self._open(merged)
        assert self._writer is not None and self._schema is not None
        if batch.schema != self._schema:
            batch = _conform(batch, self._schema)
        self._writer.write_batch(batch)
        self._sink.flush()  # to the OS: the row survives a crash of this process
        self._n_batches += 1

    def sync(self) -> None:
        """Force written batches to the disk (survives a power loss)."""
        if self._sink is not None:
            os.fsync(self._sink.fileno())

    def _close_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()  # writes the end-of-stream marker
            self._sink.flush()
            os.fsync(self._sink.fileno())
            self._sink.close()
            if self._n_batches > COMPACT_BATCHES and self._path is not None:
                compact_segment(self._path)
        self._writer = self._sink = None

    def close(self) -> None:
        """Finish the current segment cleanly."""
        self._close_segment()


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


def _read_complete(path: Path) -> tuple[pa.Table, Exception | None, int]:
    """The complete batches of a segment, the error that ended the read early (a torn tail) and
    the byte offset where the complete part ends.

    Raises ``pa.ArrowInvalid`` or ``OSError`` when not even the schema is readable.
    """
    with pa.memory_map(str(path)) as source:
        try:  # fast path, in C++: a whole segment (closed, or its writer between two batches)
            table = pa.ipc.open_stream(source).read_all()
            return table, None, source.tell()
        except (pa.ArrowInvalid, OSError):
            source.seek(0)
        batches = []
        torn = None
        reader = pa.ipc.open_stream(source)
        schema = reader.schema
        end = source.tell()
        while True:
            try:
                batches.append(reader.read_next_batch())
                end = source.tell()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as error:
                torn = error
                break
        return pa.Table.from_batches(batches, schema=schema), torn, end


def read_segment(path: Path, *, warn_torn: bool = True) -> pa.Table | None:
    """Every complete batch of one segment; a torn tail is dropped with a warning.

    Returns None for a segment too short to hold even its schema (a writer that died at once).
    """
    try:
        table, torn, _ = _read_complete(path)
    except (pa.ArrowInvalid, OSError) as error:
        if warn_torn and path.stat().st_size > 0:
            warnings.warn(f"{path}: unreadable segment skipped ({error})", RuntimeWarning,
                          stacklevel=3)
        return None
    if torn is not None and warn_torn:
        warnings.warn(f"{path}: torn tail after {table.num_rows} complete rows dropped ({torn})",
                      RuntimeWarning, stacklevel=3)
    return table


#: The IPC end-of-stream marker a cleanly closed segment ends with.
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _write_stream(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` as an IPC stream of one record batch, and fsync it."""
    with open(path, "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.combine_chunks().to_batches():
                writer.write_batch(batch)
        sink.flush()
        os.fsync(sink.fileno())


def compact_segment(path: Path) -> None:
    """Rewrite a whole segment as one record batch, atomically (readers see old or new).

    A segment gets one batch per write, often one trial, and reading 10,000 one-row batches
    costs ~100x more than one batch of 10,000 rows; a closed segment is written once more, whole.
    On any error the segment is left as it was (it is only slower to read).
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        table, torn, _ = _read_complete(path)
        if torn is not None:
            return
        _write_stream(tmp, table)
        os.replace(tmp, path)
    except (pa.ArrowInvalid, OSError):
        tmp.unlink(missing_ok=True)


def repair_segment(path: Path) -> str | None:
    """Cut a segment left torn by a crash back to its complete batches; say what was dropped.

    Only a writer holding the store's lock calls this (no one appends to the segment). The
    original bytes are kept beside it as ``<segment>.torn`` (readers ignore that name) and the
    repaired stream replaces the segment atomically, so a crash here loses nothing either.
    Returns None when the segment is whole (a clean close, or a crash between two batches: such
    a segment is only compacted and closed).
    """
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb") as handle:
        handle.seek(max(0, size - len(_END_OF_STREAM)))
        if handle.read() == _END_OF_STREAM:
            return None  # closed cleanly
    backup = path.with_name(path.name + ".torn")
    index = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.torn{index}")
        index += 1
    try:
        table, torn, kept = _read_complete(path)
    except (pa.ArrowInvalid, OSError) as error:
        os.replace(path, backup)
        return (f"{path}: unreadable ({error}); set aside as {backup.name}, no complete row "
                f"was in it")
    if torn is None:
        compact_segment(path)  # the writer died between two batches: every row is there
        return None
    tmp = path.with_name(path.name + ".tmp")
    _write_stream(tmp, table)
    os.link(path, backup)   # the damaged original stays readable under the new name
    os.replace(tmp, path)   # atomic: readers see the old or the repaired segment
    return (f"{path}: torn tail (a crash mid-write) dropped: kept {table.num_rows} complete "
            f"rows, dropped {size - kept} bytes of an unfinished batch ({torn}); the "
            f"original is kept as {backup.name}")


def read_table(folder: Path, *, live_segment: Path | None = None) -> pa.Table | None:
    """All segments of a table concatenated under one unified schema (None if empty).

    ``live_segment`` is the segment a running writer is appending to: its partial last batch is
    expected, not damage, so it is dropped without a warning.
    """
    tables = []
    for path in segment_paths(folder):
        table = read_segment(path, warn_torn=path != live_segment)
        if table is not None:
            tables.append(table.replace_schema_metadata(None))
    if not tables:
        return None
    # One chunk per column: a segment holds one record batch per write (often a single trial),
    # and compute over 10,000 one-row chunks is ~100x slower than over one array.
    return pa.concat_tables(tables, promote_options="default").combine_chunks()
