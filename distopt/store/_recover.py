"""What the next writer of a store does before appending (it holds the lock, so no one else
writes): leave every table folder holding only intact, published parts.

- temporary files of a publication, compaction or snapshot cut short by a kill are removed;
- an old store's IPC segments are migrated, once, to a Parquet part;
- journals a crashed writer left are published (their complete rows; a torn tail is dropped);
- a damaged part is replaced by a part of its readable rows, the original set aside;
- parts a finished compaction covers are removed.

Set-aside files go to ``STORE/damaged/<table>/``, outside the folders tools read. Every step is
reported once, as a ``RuntimeWarning`` naming the file and the rows affected.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pyarrow as pa

from ._parts import (
    PART_GLOB,
    fsync_folder,
    list_parts,
    parse_part,
    part_groups,
    read_part,
    write_part,
)
from ._segments import read_stream, segment_paths
from ._table import journal_paths, next_index

DAMAGED = "damaged"


def recover(store: Path, tables: tuple[str, ...]) -> None:
    """Bring every table folder of ``store`` to intact parts only (see the module docstring)."""
    for tmp in store.glob(".*.tmp"):  # a snapshot cut short
        tmp.unlink()
    for name in tables:
        folder = store / name
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink()
        messages = _migrate_segments(store, folder) + _publish_journals(store, folder) \
            + _set_aside_damaged(store, folder) + _remove_covered(folder)
        _fill_gaps(folder)
        for message in messages:
            warnings.warn(f"store {store}: {message}", RuntimeWarning, stacklevel=4)


def _set_aside(store: Path, path: Path, *, copy: bool = False, suffix: str = "") -> Path:
    """Move (or copy) ``path`` to ``STORE/damaged/<table>/`` under a name not yet taken."""
    folder = store / DAMAGED / path.parent.name
    folder.mkdir(parents=True, exist_ok=True)
    name = path.name.lstrip(".")  # a journal's dot name would hide it from `ls` there
    target = folder / (name + suffix)
    index = 1
    while target.exists():
        target = folder / f"{name}{suffix}{index}"
        index += 1
    if copy:
        shutil.copyfile(path, target)
    else:
        os.replace(path, target)
    return target


def _shown(store: Path, path: Path) -> str:
    return str(path.relative_to(store))


def _salvage_stream(store: Path, path: Path) -> tuple[pa.Table | None, str | None]:
    """The complete batches of a journal or old segment, and what was dropped (None if whole).
    A damaged original is set aside."""
    size = path.stat().st_size
    try:
        table, torn, kept = read_stream(path)
    except (pa.ArrowInvalid, OSError) as error:
        if size == 0:
            return None, None
        backup = _set_aside(store, path, copy=True, suffix=".torn")
        return None, (f"{path}: unreadable ({error}); set aside as {_shown(store, backup)}, "
                      f"no complete row was in it")
    if torn is None:
        return table.replace_schema_metadata(None), None
    backup = _set_aside(store, path, copy=True, suffix=".torn")
    return table.replace_schema_metadata(None), (
        f"{path}: torn tail (a crash mid-write) dropped: kept {table.num_rows} complete rows, "
        f"dropped {size - kept} bytes of an unfinished batch ({torn}); the original is kept "
        f"as {_shown(store, backup)}")


def _migrate_segments(store: Path, folder: Path) -> list[str]:
    segments = segment_paths(folder)
    if not segments:
        return []
    messages, tables = [], []
    for segment in segments:
        table, dropped = _salvage_stream(store, segment)
        messages += [dropped] if dropped else []
        if table is not None:
            tables.append(table)
    rows = 0
    if tables:
        merged = pa.concat_tables(tables, promote_options="default")
        rows = merged.num_rows
        index = next_index(folder)
        part = write_part(folder, index, index, merged)
    for segment in segments:  # only once the part is durable
        segment.unlink()
    fsync_folder(folder)
    target = part.path.name if tables else "no part (no complete row)"
    messages.append(f"{folder.name}: migrated {len(segments)} Arrow stream segment(s), "
                    f"{rows} rows, to {target}")
    return messages


def _publish_journals(store: Path, folder: Path) -> list[str]:
    messages = []
    covered = {i for p in list_parts(folder) for i in range(p.first, p.last + 1)}
    for index, journal in journal_paths(folder):
        if index not in covered:  # else published before the crash; only its removal was lost
            table, dropped = _salvage_stream(store, journal)
            messages += [dropped] if dropped else []
            if table is not None and table.num_rows:
                write_part(folder, index, index, table)
        journal.unlink()
    fsync_folder(folder)
    return messages


def _set_aside_damaged(store: Path, folder: Path) -> list[str]:
    messages = []
    for group in part_groups(folder):
        reads = [(part, read_part(part)) for part in group]
        intact = [part for part, read in reads if read.lost is None]
        for part, read in reads:
            if read.lost is None:
                continue
            if not intact and read.table is not None and read.table.num_rows:
                replaced = write_part(folder, part.first, part.last, read.table)
                intact.append(replaced)
                kept = f"its {read.table.num_rows} readable rows are kept in {replaced.path.name}"
            elif intact:
                kept = f"its rows are in {intact[0].path.name}"
            else:
                kept = "no row of it is readable"
            backup = _set_aside(store, part.path)
            messages.append(f"{part.path}: {read.lost}; set aside as {_shown(store, backup)}, "
                            f"{kept}; the trials of lost rows run again on resume")
    fsync_folder(folder)
    return messages


def _fill_gaps(folder: Path) -> None:
    """Give publication indices that lost every row (a journal with no complete batch, a part
    with no readable row) an empty part: readers take a gap for a listing that raced a
    compaction, and list again."""
    parts = list_parts(folder)
    covered = {i for p in parts for i in range(p.first, p.last + 1)}
    missing = sorted(set(range(max(covered, default=-1) + 1)) - covered)
    if not missing:
        return
    schema = pa.schema([("trial_id", pa.int64())])
    start = missing[0]
    for index, following in zip(missing, missing[1:] + [None], strict=True):
        if following != index + 1:
            write_part(folder, start, index, schema.empty_table())
            start = following


def _remove_covered(folder: Path) -> list[str]:
    """Remove parts a compaction covered before it could remove them itself."""
    widest = {p.path for p in list_parts(folder)}
    for path in folder.glob(PART_GLOB):
        if parse_part(path) is not None and path not in widest:
            path.unlink()
    return []
