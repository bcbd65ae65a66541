"""Every row of a table folder, as a reader sees it at one moment: parts, then the journal rows
not yet published (see ``_table``), or an old store's IPC segments.

Reading needs no write access and takes no lock.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from ._parts import Part, part_groups, read_part
from ._segments import read_segments, read_stream
from ._table import journal_paths

#: Listings retried when a part or journal vanished, or indices were missing, while reading
#: (a publication or compaction ran meanwhile; a directory listing is not atomic), with a
#: pause growing to _PAUSE_MAX seconds: one publication takes milliseconds, so a pause lets it
#: end even when a writer publishes many times a second.
_RETRIES = 12
_PAUSE_MAX = 0.05


def read_rows(folder: Path, *, live: bool = False,
              report: Callable[[str], None] | None = None) -> pa.Table | None:
    """All rows of ``folder`` concatenated in write order under one schema (None if none).

    ``live``: a writer holds the store, so the journal's partial last batch is expected, not
    damage. ``report`` receives each damage message (default: a ``RuntimeWarning``).
    """
    report = report or _warn
    for attempt in range(_RETRIES):
        try:
            pieces, complete = _read_once(folder, live, report)
        except FileNotFoundError:
            if attempt == _RETRIES - 1:
                raise
            complete = False
        if complete or attempt == _RETRIES - 1:
            break
        time.sleep(min(0.001 * 2 ** attempt, _PAUSE_MAX))
    if pieces is None:
        return read_segments(folder)
    tables = [table for _, table in sorted(pieces, key=lambda piece: piece[0])]
    if not tables:
        return None
    # One chunk per column: compute over many small chunks is much slower than over one array.
    return pa.concat_tables(tables, promote_options="default").combine_chunks()


def _read_once(folder: Path, live: bool, report: Callable[[str], None]
               ) -> tuple[list[tuple[int, pa.Table]] | None, bool]:
    """The pieces of the folder with their index, and whether the indices were contiguous.

    Journals are listed before parts: a journal published in between then has its part listed.
    """
    journals = journal_paths(folder)
    groups = part_groups(folder)
    if not journals and not groups:
        return None, True
    pieces, covered = [], set()
    for group in groups:
        table = _read_group(group, report)
        if table is not None:
            pieces.append((group[0].first, table))
        covered.update(range(group[0].first, group[0].last + 1))
    for index, path in journals:
        if index in covered:
            continue
        try:
            table, torn, _ = read_stream(path)
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError) as error:  # not even its schema yet
            if not live and path.stat().st_size > 0:
                report(f"{path}: unreadable journal skipped ({error})")
            covered.add(index)
            continue
        if torn is not None and not live:
            report(f"{path}: torn tail after {table.num_rows} complete rows dropped (a crash "
                   f"mid-write; the next writer publishes the complete rows) ({torn})")
        pieces.append((index, table.replace_schema_metadata(None)))
        covered.add(index)
    return pieces, covered == set(range(max(covered) + 1))


def _read_group(group: list[Part], report: Callable[[str], None]) -> pa.Table | None:
    """The rows of one range: an intact part if there is one (a repaired part and the damaged
    original it replaces may both be listed), else what the damaged part still holds."""
    damaged = []
    for part in group:
        read = read_part(part)
        if read.lost is None:
            return read.table
        damaged.append((part, read))
    part, read = damaged[0]
    report(f"{part.path}: {read.lost}; the other rows are read, the lost trials count as not "
           f"finished (resume runs them again)")
    return read.table


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)
