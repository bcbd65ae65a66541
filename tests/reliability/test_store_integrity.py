"""Bit rot injected for real, without Ray: a byte flipped anywhere in a closed (compacted) part or
in a small part published while a writer runs. It is found wherever it lies, reported once with
the file and the rows affected, never changes a value silently, the file is set aside with its
readable rows kept, and resume runs again exactly the trials whose rows were lost."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distopt
from distopt._study import _in_flight
from distopt.store import StoreWriter
from distopt.store._parts import ROW_GROUP_ROWS, _layout, list_parts

SPACE = {"x": distopt.Float(0.0, 1.0)}
OBJECTIVES = {"f1": "min", "f2": "min"}
N = 2 * ROW_GROUP_ROWS + 276  # three row groups in the compacted part


def _metadata() -> dict:
    return distopt.Study(SPACE, OBJECTIVES, store="unused").metadata({})


def _row(trial_id: int) -> dict:
    return {"trial_id": trial_id, "status": "COMPLETE", "config": {"x": trial_id / N},
            "metrics": {"f1": trial_id / 7, "f2": 1 - trial_id / 7},
            "start_time": 1.0 + trial_id, "end_time": 2.0 + trial_id}


def _read(path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = distopt.open_store(path)
        table = reader.trials()
    return reader, table, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def closed_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("closed") / "store"
    with StoreWriter(path, _metadata()) as writer:
        for start in range(0, N, 100):
            ids = range(start, min(start + 100, N))
            writer.add_dispatched([{"trial_id": i, "attempt": 1, "time": 1.0,
                                    "config": {"x": i / N}} for i in ids])
            writer.add_trials([_row(i) for i in ids])
    return path


def _flip(part: Path, offset: int) -> None:
    data = bytearray(part.read_bytes())
    data[offset] ^= 0x10
    part.write_bytes(bytes(data))


def _expected_loss(data: bytes, offset: int) -> set[int]:
    """Trial ids whose rows the flip at ``offset`` destroys: its row group's, or all (footer)."""
    _, ranges, footer_start = _layout(data)
    if offset >= footer_start:
        return set(range(N))
    group = next(i for i, (a, b) in enumerate(ranges) if a <= offset < b)
    return set(range(group * ROW_GROUP_ROWS, min((group + 1) * ROW_GROUP_ROWS, N)))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_flip_anywhere_in_a_closed_part_is_found_and_loses_only_its_row_group(
        closed_store, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("flip") / "store"
    shutil.copytree(closed_store, path)
    [part] = list_parts(path / "trials")
    content = part.path.read_bytes()
    offset = data.draw(st.integers(0, len(content) - 1), label="offset")
    _flip(part.path, offset)
    lost = _expected_loss(content, offset)
    original = {r["trial_id"]: r for r in distopt.open_store(closed_store).trials().to_pylist()}

    reader, table, messages = _read(path)
    assert len(messages) == 1, messages
    assert part.path.name in messages[0]
    assert ("footer is damaged" in messages[0]) == (len(lost) == N)
    if len(lost) < N:
        assert f"rows {min(lost)}-{max(lost)} of {N} damaged" in messages[0]
    rows = table.to_pylist()
    assert {r["trial_id"] for r in rows} == set(range(N)) - lost
    assert all(r == original[r["trial_id"]] for r in rows)  # no value changed silently
    # Resume runs again exactly the trials whose rows are lost.
    again, _ = _in_flight(reader, reader.results())
    assert sorted(t for t, _, _ in again) == sorted(lost)

    # The next writer sets the part aside, keeps the readable rows, and says so once.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        StoreWriter(path, _metadata()).close()
    [message] = [str(w.message) for w in caught]
    assert f"set aside as damaged/trials/{part.path.name}" in message
    assert (path / "damaged" / "trials" / part.path.name).read_bytes() != content
    _, after, messages = _read(path)
    assert messages == []
    assert after.to_pylist() == rows


@pytest.mark.parametrize("where", ["data", "footer"])
def test_a_flip_in_a_small_part_of_a_running_writer(tmp_path, monkeypatch, where):
    """Parts published while the writer runs (one per write here); the third is damaged."""
    monkeypatch.setattr("distopt.store._writer.PUBLISH_INTERVAL", 0.0)
    path = tmp_path / "store"
    writer = StoreWriter(path, _metadata())
    for start in range(0, 50, 10):
        writer.add_dispatched([{"trial_id": i, "attempt": 1, "time": 1.0,
                                "config": {"x": i / N}} for i in range(start, start + 10)])
        writer.add_trials([_row(i) for i in range(start, start + 10)])
    parts = list_parts(path / "trials")
    assert len(parts) == 5
    content = parts[2].path.read_bytes()
    _, ranges, footer_start = _layout(content)
    _flip(parts[2].path, ranges[0][0] + 40 if where == "data" else footer_start + 30)

    reader, table, messages = _read(path)  # while the writer holds the store
    assert len(messages) == 1 and parts[2].path.name in messages[0]
    kept = sorted(set(range(50)) - set(range(20, 30)))
    assert table["trial_id"].to_pylist() == kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported by the reader already; not once more
        writer.close()  # a damaged part is not merged: it stays for the next writer to set aside
    assert parts[2].path.exists()
    again, _ = _in_flight(reader, reader.results())
    assert [t for t, _, _ in again] == list(range(20, 30))
    with pytest.warns(RuntimeWarning, match="set aside as damaged/trials/"):
        reopened = StoreWriter(path, _metadata())
    # every publication index has a part again (one that lost every row: an empty part), so
    # readers do not take a gap for a listing that raced a compaction
    covered = sorted(i for p in list_parts(path / "trials") for i in range(p.first, p.last + 1))
    assert covered == list(range(5))
    reopened.close()
    _, table, messages = _read(path)
    assert messages == [] and table["trial_id"].to_pylist() == kept


def test_a_damaged_hand_out_part_keeps_the_ids_of_the_trials_it_held(tmp_path, monkeypatch):
    """Trials 10-19 were running when the search stopped and 15-19 had streamed curves; the part
    that handed them out is damaged. Resume cannot run them again (their configurations went
    with the rows), says so for those that left a trace, and never gives their ids to new
    trials, whose curves would mix with theirs."""
    monkeypatch.setattr("distopt.store._writer.PUBLISH_INTERVAL", 0.0)
    path = tmp_path / "store"
    writer = StoreWriter(path, _metadata())
    writer.add_dispatched([{"trial_id": i, "attempt": 1, "time": 1.0,
                            "config": {"x": i / N}} for i in range(10)])
    writer.add_trials([_row(i) for i in range(10)])
    writer.add_dispatched([{"trial_id": i, "attempt": 1, "time": 2.0,
                            "config": {"x": i / N}} for i in range(10, 20)])
    writer.add_curves([{"trial_id": i, "attempt": 1, "step": 0, "time": 3.0,
                        "f1": 0.5} for i in range(15, 20)])
    parts = list_parts(path / "dispatched")
    assert len(parts) == 2
    _, _, footer_start = _layout(parts[1].path.read_bytes())
    _flip(parts[1].path, footer_start + 30)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = distopt.open_store(path)
        again, max_id = _in_flight(reader, reader.results())
    messages = [str(w.message) for w in caught]
    assert again == [] and max_id == 19
    assert reader.damaged == {"dispatched"}
    assert len(messages) == 2 and parts[1].path.name in messages[0]
    assert "trials 15-19 were running when the search stopped" in messages[1]
    writer.close()
    # as a resume meets it: the writer it opens sets the damaged part aside before the reader
    # reads (the ids 15-19 were given to new trials then, their curves mixed)
    StoreWriter(path, _metadata()).close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = distopt.open_store(path)
        again, max_id = _in_flight(reader, reader.results())
    assert again == [] and max_id == 19 and reader.damaged == set()
    assert any("trials 15-19 were running" in str(w.message) for w in caught)
    # an intact store reads no curves for this and warns of nothing
    clean = tmp_path / "clean"
    with StoreWriter(clean, _metadata()) as other:
        other.add_dispatched([{"trial_id": i, "attempt": 1, "time": 1.0,
                               "config": {"x": i / N}} for i in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader = distopt.open_store(clean)
        assert _in_flight(reader, []) == ([(i, {"x": i / N}, 1) for i in range(3)], 2)
        assert reader.damaged == set()
