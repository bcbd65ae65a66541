"""Store faults injected for real, without Ray: torn tails (truncation at every offset of a
journal and of an old store's segment, and a writer process SIGKILLed mid-append), two writers,
and a metric that first appears late."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distopt
from distopt.store import StoreWriter

from ._util import raw_ids, start_cli, subprocess_env

SPACE = {"x": distopt.Float(0.0, 1.0)}
OBJECTIVES = {"f1": "min", "f2": "min"}


def _metadata() -> dict:
    return distopt.Study(SPACE, OBJECTIVES, store="unused").metadata({})


def _row(trial_id: int, **metrics: float) -> dict:
    metrics = metrics or {"f1": trial_id / 10, "f2": 1 - trial_id / 10}
    return {"trial_id": trial_id, "status": "COMPLETE", "config": {"x": trial_id / 10},
            "metrics": metrics, "start_time": 1.0 + trial_id, "end_time": 2.0 + trial_id}


def _write_store(path: Path, n: int) -> None:
    with StoreWriter(path, _metadata()) as writer:
        for trial_id in range(n):
            writer.add_trials([_row(trial_id)])


def _write_stream(path: Path, n: int) -> None:
    """``n`` one-row trial batches as one Arrow IPC stream: an old store's segment, or the
    journal a writer killed before publishing leaves."""
    from distopt.store._schema import trial_batch

    meta = _metadata()
    batches = [trial_batch([_row(i)], meta["config_types"], meta["metric_order"])
               for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, batches[0].schema) as out:
        for batch in batches:
            out.write_batch(batch)


def _legacy_store(path: Path, n: int) -> Path:
    """A store as distopt wrote it before Parquet parts: ``trials/part-00000.arrow``."""
    from distopt.store._metadata import write_metadata

    path.mkdir(parents=True)
    write_metadata(path, _metadata())
    _write_stream(path / "trials" / "part-00000.arrow", n)
    return path


def _batch_ends(segment: Path) -> list[int]:
    """Byte offset where the schema and each record batch of an intact segment end."""
    with pa.OSFile(str(segment)) as source:
        reader = pa.ipc.open_stream(source)
        ends = [source.tell()]
        while True:
            try:
                reader.read_next_batch()
            except StopIteration:
                return ends
            ends.append(source.tell())


def _read_trials(path: Path) -> tuple[pa.Table, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = distopt.open_store(path).trials()
    return table, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def intact_store(tmp_path_factory) -> tuple[Path, bytes, list[int]]:
    path = _legacy_store(tmp_path_factory.mktemp("intact") / "store", 5)
    segment = path / "trials" / "part-00000.arrow"
    return path, segment.read_bytes(), _batch_ends(segment)


@pytest.mark.parametrize("name", ["part-00000.arrow", ".journal-00000000.arrows"])
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_truncated_tail_at_any_offset_reads_the_complete_rows_and_warns(
        intact_store, tmp_path_factory, data, name):
    """``name``: an old store's segment, or the journal of a writer killed mid-append (no
    writer holds the store: a torn tail is damage, not a write in progress)."""
    source, content, ends = intact_store
    cut = data.draw(st.integers(0, len(content)), label="cut")
    path = tmp_path_factory.mktemp("cut") / "store"
    (path / "trials").mkdir(parents=True)
    (path / "study.json").write_bytes((source / "study.json").read_bytes())
    (path / "trials" / name).write_bytes(content[:cut])

    table, messages = _read_trials(path)

    complete = sum(end <= cut for end in ends[1:])
    assert table.num_rows == complete
    assert table["trial_id"].to_pylist() == list(range(complete))
    clean = cut == 0 or cut in ends or cut == len(content)
    if clean:
        assert messages == []
    else:
        assert len(messages) == 1, messages
        assert name in messages[0]
        assert (f"torn tail after {complete} complete rows dropped" in messages[0]
                or "unreadable segment skipped" in messages[0]
                or "unreadable journal skipped" in messages[0])


def test_a_torn_journal_is_set_aside_under_a_name_ls_shows(intact_store, tmp_path):
    """It kept its dot name (.journal-...torn), hidden from a plain `ls damaged/trials`."""
    source, content, ends = intact_store
    path = tmp_path / "store"
    (path / "trials").mkdir(parents=True)
    (path / "study.json").write_bytes((source / "study.json").read_bytes())
    (path / "trials" / ".journal-00000000.arrows").write_bytes(content[:ends[3] + 50])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StoreWriter(path, _metadata()).close()
    assert [p.name for p in (path / "damaged" / "trials").iterdir()] == [
        "journal-00000000.arrows.torn"]
    assert distopt.open_store(path).trials().num_rows == 3  # the complete rows, published


def test_the_next_writer_repairs_a_torn_segment_once_and_keeps_the_original(tmp_path):
    path = _legacy_store(tmp_path / "store", 5)
    segment = path / "trials" / "part-00000.arrow"
    content = segment.read_bytes()
    ends = _batch_ends(segment)
    cut = ends[3] + 100  # three whole rows, then the head of the fourth
    segment.write_bytes(content[:cut])

    with pytest.warns(RuntimeWarning, match=r"torn tail after 3 complete rows dropped"):
        assert distopt.open_store(path).trials().num_rows == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer = StoreWriter(path, _metadata())
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "kept 3 complete rows, dropped 100 bytes" in messages[0]
    assert "migrated 1 Arrow stream segment(s), 3 rows, to part-00000000-00000000-" in messages[1]
    with writer:
        writer.add_trials([_row(3), _row(4)])
    # The damaged bytes are kept (outside the folders tools read), and the store now reads
    # without any warning, from Parquet parts only.
    assert (path / "damaged" / "trials" / "part-00000.arrow.torn").read_bytes() == content[:cut]
    assert sorted(p.name.split("-")[0] for p in (path / "trials").iterdir()) == ["part"]
    table, messages = _read_trials(path)
    assert messages == []
    assert table["trial_id"].to_pylist() == [0, 1, 2, 3, 4]
    assert sorted(raw_ids(path)) == [0, 1, 2, 3, 4]


def test_a_segment_torn_inside_its_schema_is_set_aside_and_the_rest_still_reads(tmp_path):
    path = _legacy_store(tmp_path / "store", 3)
    second = path / "trials" / "part-00001.arrow"  # a second session's segment
    _write_stream(second, 4)
    second.write_bytes(second.read_bytes()[:40])

    table, messages = _read_trials(path)
    assert table["trial_id"].to_pylist() == [0, 1, 2]
    assert len(messages) == 1 and "unreadable segment skipped" in messages[0]
    with pytest.warns(RuntimeWarning, match="unreadable.*set aside"):
        StoreWriter(path, _metadata()).close()
    assert (path / "damaged" / "trials" / "part-00001.arrow.torn").exists()
    assert _read_trials(path) == (table, [])


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    import distopt
    from distopt.store import StoreWriter

    study = distopt.Study({"x": distopt.Float(0.0, 1.0)}, {"f1": "min", "f2": "min"},
                          store=sys.argv[1])
    writer = StoreWriter(sys.argv[1], study.metadata({}))
    trial_id = 0
    while True:  # big batches, so that SIGKILL often lands in the middle of one
        rows = [{"trial_id": trial_id + i, "status": "COMPLETE", "config": {"x": 0.5},
                 "metrics": {"f1": 1.0, "f2": 2.0}, "error": "x" * 2000}
                for i in range(200)]
        writer.add_trials(rows)
        trial_id += len(rows)
        print(trial_id, flush=True)  # written and flushed to the OS: must survive
""")


@pytest.mark.parametrize("after_batches", [3, 7])
def test_a_writer_sigkilled_mid_append_loses_at_most_the_batch_being_written(
        tmp_path, after_batches):
    path = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), str(path)], env=subprocess_env(),
                               stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    for _ in range(after_batches):
        acknowledged = int(process.stdout.readline())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    for line in process.stdout.read().split():
        acknowledged = int(line)  # printed before the kill landed

    table, messages = _read_trials(path)  # never an exception
    assert table.num_rows >= acknowledged
    assert table.num_rows % 200 == 0  # whole batches only
    assert table["trial_id"].to_pylist() == list(range(table.num_rows))
    assert all("torn tail" in m for m in messages)
    # The next writer repairs whatever was torn; from then on the store reads cleanly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StoreWriter(path, _metadata()).close()
    assert _read_trials(path) == (table, [])


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path, monkeypatch):
    def ray_session(*args, **kwargs):
        raise AssertionError("a held store is refused before Ray starts (seconds)")

    monkeypatch.setattr("distopt._ray.ray_session", ray_session)
    path = tmp_path / "store"
    _write_store(path, 2)
    before = {p.name: p.read_bytes() for p in (path / "trials").iterdir()}
    with StoreWriter(path, _metadata()):
        holder = json.loads((path / "LOCK").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(distopt.StoreError, match=rf"being written by .*\"pid\": {os.getpid()}"):
            StoreWriter(path, _metadata())
        with pytest.raises(distopt.StoreError, match="being written by"):
            distopt.Study(SPACE, OBJECTIVES, store=path).optimize(
                lambda config: {"f1": 0.0, "f2": 0.0}, budget=3)
    assert {p.name: p.read_bytes() for p in (path / "trials").iterdir()} == before
    assert sorted(raw_ids(path)) == [0, 1]
    StoreWriter(path, _metadata()).close()  # released: a new writer opens it
    # a LOCK whose text names a holder that is gone (a store copied from another machine, a
    # garbled text) held the store for good; the flock is free, so it is not held
    from distopt.store import check_free

    for text in ('{"host": "another-machine", "pid": 1, "since": "x"}', "garbage"):
        (path / "LOCK").write_text(text)
        check_free(path)


def test_a_second_distopt_run_is_refused_while_one_writes(tmp_path):
    path = tmp_path / "store"
    study = tmp_path / "study.yaml"
    study.write_text(textwrap.dedent(f"""
        objective: "reliability.faulty:sleepy"
        space: {{x: {{type: float, low: 0.0, high: 1.0}}}}
        objectives: {{f1: min, f2: min}}
        store: {path}
        budget: 4
    """))
    _write_store(path, 0)  # same study definition as the YAML
    with StoreWriter(path, _metadata()):
        process = start_cli("run", str(study), "--no-progress", cwd=tmp_path)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    assert "distopt: error:" in stderr and "being written by" in stderr
    assert f'"pid": {os.getpid()}' in stderr
    assert "Traceback" not in stderr
    assert raw_ids(path) == []


def test_a_metric_that_first_appears_late_becomes_a_nullable_column(tmp_path):
    path = tmp_path / "store"
    with StoreWriter(path, _metadata()) as writer:
        writer.add_trials([_row(0), _row(1)])
        writer.add_trials([_row(2, f1=0.2, f2=0.8, aux=5.0)])
        writer.add_curves([{"trial_id": 0, "step": 0, "time": 1.0, "loss": 1.0}])
        writer.add_curves([{"trial_id": 2, "step": 0, "time": 2.0, "loss": 0.5, "grad": 3.0}])
    with StoreWriter(path, _metadata()) as writer:  # a resumed session adds one more
        writer.add_trials([_row(3, f1=0.3, f2=0.7, later=1.0)])
    reader = distopt.open_store(path)
    table = reader.trials()
    assert table["aux"].to_pylist() == [None, None, 5.0, None]
    assert table["later"].to_pylist() == [None, None, None, 1.0]
    assert table.schema.field("aux").nullable and table.schema.field("aux").type == pa.float64()
    curves = reader.curves()
    assert curves["grad"].to_pylist() == [None, 3.0]
    assert reader.pareto_front().num_rows >= 1
    assert {r.trial_id: r.metrics.get("aux") for r in reader.results()} == {
        0: None, 1: None, 2: 5.0, 3: None}


def test_parts_while_writing_one_part_once_closed(tmp_path, monkeypatch):
    """Each publication is a part (here one per write); every COMPACT_PARTS of them are merged
    while the search runs, and closing merges all into one, so opening a big store stays fast."""
    from distopt.store import _table

    monkeypatch.setattr(_table, "PUBLISH_INTERVAL", 0.0)
    monkeypatch.setattr(_table, "COMPACT_PARTS", 32)
    monkeypatch.setattr("distopt.store._writer.PUBLISH_INTERVAL", 0.0)
    path = tmp_path / "store"
    writer = StoreWriter(path, _metadata())
    for trial_id in range(100):
        writer.add_trials([_row(trial_id)])
    names = sorted(p.name[:22] for p in (path / "trials").glob("part-*.parquet"))
    assert names == ["part-00000000-00000031", "part-00000032-00000063", "part-00000064-00000095",
                     "part-00000096-00000096", "part-00000097-00000097", "part-00000098-00000098",
                     "part-00000099-00000099"]
    live, _ = _read_trials(path)
    writer.close()
    assert [p.name[:22] for p in (path / "trials").iterdir()] == ["part-00000000-00000099"]
    table, messages = _read_trials(path)
    assert messages == [] and table.equals(live)
    assert table["trial_id"].to_pylist() == list(range(100))
    assert table["trial_id"].num_chunks == 1


def test_a_publication_that_fails_is_retried_and_loses_nothing(tmp_path, monkeypatch):
    """A part that cannot be written (here: the disk full once) leaves the journal as it was;
    the next publication writes the part."""
    import errno

    from distopt.store import _table

    monkeypatch.setattr("distopt.store._writer.PUBLISH_INTERVAL", 0.0)
    real, failures = _table.write_part, []

    def full_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(_table, "write_part", full_once)
    path = tmp_path / "store"
    writer = StoreWriter(path, _metadata())
    with pytest.raises(OSError, match="No space"):
        writer.add_trials([_row(0)])  # durable in the journal; its publication failed
    assert _read_trials(path)[0]["trial_id"].to_pylist() == [0]
    writer.add_trials([_row(1)])
    writer.close()
    table, messages = _read_trials(path)
    assert messages == [] and table["trial_id"].to_pylist() == [0, 1]
    assert failures == [1]
