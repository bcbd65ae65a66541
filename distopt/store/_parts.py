"""Published parts: complete, checksummed Parquet files that any tool may read at any moment.

A table folder (``trials``, ``curves``, ``dispatched``) holds
``part-FFFFFFFF-LLLLLLLL-CCCCCCCC.parquet``
files. ``FFFFFFFF``-``LLLLLLLL`` is the range of publication indices the part holds (one index per
publication; a compacted part covers the range of the parts it merged) and ``CCCCCCCC`` is the
CRC-32 of the file's Parquet footer. The footer in turn records the CRC-32 of every row group's
bytes (``distopt.row_group_crc32``), so every byte of a part is covered: damage is found wherever
it lies, and a damaged row group is told apart from the intact ones, whose rows are kept.

A part is written under a dot-prefixed temporary name (which globs, ``pyarrow.dataset``, Spark and
DuckDB's ``part-*`` patterns skip), fsynced, renamed into place and the folder fsynced, so a reader
never sees a half-written part. Parquet's own page CRCs are written too, for other tools.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PART_GLOB = "part-*.parquet"
#: Rows per Parquet row group: the unit a flipped byte can cost (its rows are run again).
ROW_GROUP_ROWS = 1024
_CRC_KEY = b"distopt.row_group_crc32"
_NAME = re.compile(r"^part-(\d{8,})-(\d{8,})-([0-9a-f]{8})\.parquet$")


@dataclass(frozen=True)
class Part:
    """One published part: its file and the publication indices ``first..last`` it holds."""

    path: Path
    first: int
    last: int
    footer_crc: int


def parse_part(path: Path) -> Part | None:
    """The part a file name describes, or None for any other file."""
    match = _NAME.match(path.name)
    if match is None:
        return None
    return Part(path, int(match[1]), int(match[2]), int(match[3], 16))


def list_parts(folder: Path) -> list[Part]:
    """Parts of a table in write order, without those a compacted part already covers.

    A compaction renames the merged part in before it removes the parts it merged; a reader
    listing the folder in between sees both and must count each row once.
    """
    parts = [p for p in map(parse_part, folder.glob(PART_GLOB)) if p is not None]
    widest = [p for p in parts if not any(
        o.first <= p.first and p.last <= o.last and (o.first, o.last) != (p.first, p.last)
        for o in parts)]
    return sorted(widest, key=lambda p: (p.first, p.path.name))


def part_groups(folder: Path) -> list[list[Part]]:
    """``list_parts`` grouped by range: a repaired part and its damaged original share one."""
    groups: dict[tuple[int, int], list[Part]] = {}
    for part in list_parts(folder):
        groups.setdefault((part.first, part.last), []).append(part)
    return list(groups.values())


# -- writing --------------------------------------------------------------------------------------

def _parquet_bytes(table: pa.Table, crc_slot: bytes) -> bytes:
    schema = table.schema.with_metadata({_CRC_KEY: crc_slot})
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, write_page_checksum=True, compression="snappy") as writer:
        for start in range(0, max(table.num_rows, 1), ROW_GROUP_ROWS):
            writer.write_table(table.slice(start, ROW_GROUP_ROWS).cast(schema))
    return sink.getvalue().to_pybytes()


def _layout(data: bytes) -> tuple[pq.FileMetaData, list[tuple[int, int]], int]:
    """Footer metadata, byte range of every row group, and where the footer starts.

    Row group ``i`` spans from where the previous one ends (the ``PAR1`` magic for the first) to
    the end of its last column chunk; the footer runs from the last row group's end to the end.
    """
    footer_len = int.from_bytes(data[-8:-4], "little")
    footer_start = len(data) - 8 - footer_len
    if data[-4:] != b"PAR1" or not 4 <= footer_start <= len(data) - 8:
        raise ValueError("no Parquet footer")
    meta = pq.read_metadata(pa.BufferReader(data))
    ranges, begin = [], 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        end = max((c.dictionary_page_offset or c.data_page_offset) + c.total_compressed_size
                  for c in (group.column(j) for j in range(group.num_columns)))
        if not begin < end <= footer_start:
            raise ValueError(f"row group {i} lies outside the file")
        ranges.append((begin, end))
        begin = end
    if begin != footer_start and meta.num_row_groups:
        raise ValueError("bytes between the row groups and the footer")
    return meta, ranges, footer_start


def encode_part(table: pa.Table) -> tuple[bytes, int]:
    """``table`` as Parquet bytes whose footer records each row group's CRC-32, and the
    footer's CRC-32.

    The row groups' bytes are only known once written, so the footer is written with a
    placeholder of the checksums' exact length, which is then overwritten in place (same length:
    the footer stays valid Thrift).
    """
    table = table.replace_schema_metadata(None)
    groups = max(1, -(-table.num_rows // ROW_GROUP_ROWS))
    slot = json.dumps(["ffffffff"] * groups).encode()
    data = bytearray(_parquet_bytes(table, slot))
    _, ranges, footer_start = _layout(bytes(data))
    at = data.rfind(slot)
    if len(ranges) != groups or at < footer_start:
        raise RuntimeError("unexpected Parquet layout; cannot checksum the part")
    crcs = [f"{zlib.crc32(data[a:b]):08x}" for a, b in ranges]
    data[at:at + len(slot)] = json.dumps(crcs).encode()
    return bytes(data), zlib.crc32(data[footer_start:])


def fsync_folder(folder: Path) -> None:
    """Make renames and unlinks in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_part(folder: Path, first: int, last: int, table: pa.Table) -> Part:
    """Publish ``table`` as the part ``first..last`` of ``folder``: temporary file, fsync,
    rename, fsync of the folder. Returns the part (durable when this returns)."""
    data, crc = encode_part(table)
    path = folder / f"part-{first:08d}-{last:08d}-{crc:08x}.parquet"
    tmp = folder / f".{path.name}.tmp"
    with open(tmp, "wb") as sink:
        sink.write(data)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(tmp, path)
    fsync_folder(folder)
    return Part(path, first, last, crc)


# -- reading --------------------------------------------------------------------------------------

@dataclass
class PartRead:
    """What a part yielded: its readable rows, and if damaged which rows were lost and why."""

    table: pa.Table | None
    lost: str | None = None   # e.g. "rows 512-1023 of 1300 (row group 1 of 3)"; None if intact


def read_part(part: Part) -> PartRead:
    """The rows of ``part``, every byte checked against its checksums.

    Raises ``FileNotFoundError`` if the part was removed (by a compaction) since it was listed.
    """
    data = part.path.read_bytes()
    try:
        meta, ranges, footer_start = _layout(data)
        if zlib.crc32(data[footer_start:]) != part.footer_crc:
            raise ValueError("footer checksum mismatch")
        crcs = [int(crc, 16) for crc in json.loads(meta.metadata[_CRC_KEY])]
    except (ValueError, KeyError, TypeError, OSError, pa.ArrowException):
        return PartRead(None, "its footer is damaged: no row of it can be trusted")
    bad = [i for i, (a, b) in enumerate(ranges) if zlib.crc32(data[a:b]) != crcs[i]]
    # One thread: Arrow's I/O threads would hold the last reference to ``data`` (a Python
    # buffer) and release it without the GIL during interpreter exit, which aborts the process.
    file = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
    if not bad:
        return PartRead(_plain(file.read(use_threads=False)))
    kept, lost, start = [], [], 0
    for i in range(meta.num_row_groups):
        rows = meta.row_group(i).num_rows
        if i in bad:
            lost.append(f"{start}-{start + rows - 1}")
        else:
            kept.append(_plain(file.read_row_group(i, use_threads=False)))
        start += rows
    table = pa.concat_tables(kept) if kept else None
    return PartRead(table, f"rows {', '.join(lost)} of {meta.num_rows} damaged "
                           f"(row group{'s' if len(bad) > 1 else ''} "
                           f"{', '.join(str(i) for i in bad)} of {meta.num_row_groups})")


def _plain(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)
