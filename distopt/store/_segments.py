"""Arrow IPC streams: the journals of a store being written, and the segments of old stores.

A stream (schema, then record batches) can be appended batch by batch and flushed after each one,
and every complete prefix of it is readable: a crash loses at most the batch being written. Stores
written before the Parquet parts (``part-NNNNN.arrow`` segments) are read here until their next
writer migrates them (``_recover``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow as pa

SEGMENT_GLOB = "part-*.arrow"


def segment_paths(folder: Path) -> list[Path]:
    """Segments of an old store's table, in write order."""
    return sorted(folder.glob(SEGMENT_GLOB))


def read_stream(path: Path) -> tuple[pa.Table, Exception | None, int]:
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
    """Every complete batch of one stream; a torn tail is dropped with a warning.

    Returns None for a segment too short to hold even its schema (a writer that died at once).
    """
    try:
        table, torn, _ = read_stream(path)
    except (pa.ArrowInvalid, OSError) as error:
        if warn_torn and path.stat().st_size > 0:
            warnings.warn(f"{path}: unreadable segment skipped ({error})", RuntimeWarning,
                          stacklevel=3)
        return None
    if torn is not None and warn_torn:
        warnings.warn(f"{path}: torn tail after {table.num_rows} complete rows dropped ({torn})",
                      RuntimeWarning, stacklevel=3)
    return table


def read_segments(folder: Path) -> pa.Table | None:
    """All segments of an old store's table concatenated under one unified schema."""
    tables = []
    for path in segment_paths(folder):
        table = read_segment(path, warn_torn=True)
        if table is not None:
            tables.append(table.replace_schema_metadata(None))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default").combine_chunks()


def read_table(folder: Path, **_: object) -> pa.Table | None:
    """Every row of a table folder as on disk, in write order (duplicates kept)."""
    from ._rows import read_rows  # here for callers of the old name; _rows imports this module

    return read_rows(folder)
