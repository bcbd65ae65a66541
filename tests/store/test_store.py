"""The Arrow store: writer/reader round trip, metadata, concurrent reading, torn tails, the lock,
and direct reads of the Parquet snapshots by pyarrow, pandas and DuckDB."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import distopt
from distopt import Categorical, Float, Int, Problem, StoreReader, open_store
from distopt.store import StoreWriter
from distopt.store._metadata import FORMAT_VERSION

T0 = 1_700_000_000.0  # a whole second: every timestamp below is exact in microseconds

SPACE = {
    "x": Float(-1.0, 1.0),
    "n": Int(1, 8),
    "act": Categorical(["relu", "gelu"]),
    "flag": Categorical([True, False]),
    "width": Categorical([16, 32]),
    "drop": Categorical([0.0, 0.5]),
    "epochs": 3,
    "dataset": "qm9",
    "augment": True,
    "rate": 0.25,
}


def metadata_for(problem: Problem, **extra) -> dict:
    return {"problem": problem.to_dict(), "config_types": problem.space.arrow_types(),
            "metric_order": problem.metric_names, **extra}


@pytest.fixture
def problem() -> Problem:
    return Problem(SPACE, {"f1": "min", "f2": "max"}, {"g": ("<=", 0.5)})


def config(i: int) -> dict:
    return {"x": -1 + i / 10, "n": 1 + i % 8, "act": ["relu", "gelu"][i % 2],
            "flag": i % 3 == 0, "width": [16, 32][i % 2], "drop": [0.0, 0.5][i % 2],
            "epochs": 3, "dataset": "qm9", "augment": True, "rate": 0.25}


def row(i: int, metrics: dict, status: str = "COMPLETE", error: str | None = None) -> dict:
    return {"trial_id": i, "status": status, "config": config(i), "metrics": metrics,
            "error": error, "attempts": 1 + i % 2, "start_time": T0 + i + 0.25,
            "end_time": T0 + i + 0.75, "worker": f"worker-{i % 2}", "node_id": f"node-{i}"}


def g_of(i: int) -> float:
    """The constraint metric of trial i: <= 0.5 (feasible) except trial 5."""
    return {4: 0.5, 5: 0.75}.get(i, 0.1 * i)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# -- round trip -----------------------------------------------------------------------------------

@pytest.fixture
def written(tmp_path, problem) -> Path:
    """A closed store: 3 trials, then 1 FAILED, then 2 with a metric that appears late."""
    store = tmp_path / "store"
    with StoreWriter(store, metadata_for(problem, seed=7)) as writer:
        writer.add_dispatched([{"trial_id": i, "attempt": 1, "time": T0 + i, "config": config(i)}
                               for i in range(6)])
        writer.add_trials([row(i, {"f1": i * 1.5, "f2": -i, "g": g_of(i)}) for i in range(3)])
        writer.add_trials([row(3, {}, status="FAILED", error="ValueError: boom")])
        writer.add_trials([row(i, {"f1": i * 1.5, "f2": -i, "g": g_of(i), "late": i * 10.0})
                           for i in (4, 5)])
        writer.add_curves([{"trial_id": 0, "step": 0, "time": T0, "loss": 1.0},
                           {"trial_id": 0, "step": 1, "time": T0 + 0.5, "loss": 0.5}])
        writer.add_curves([{"trial_id": 1, "step": 0, "time": T0 + 1, "loss": 2.0, "acc": 0.1},
                           {"trial_id": 1, "step": 1, "time": T0 + 2, "acc": 0.3}])
        writer.record(ref_point={"f1": 9.0, "f2": -9.0})
    return store


def test_trials_round_trip_every_column_type(written):
    table = StoreReader(written).trials()
    expected_types = {
        "trial_id": pa.int64(), "status": pa.string(),
        "config/x": pa.float64(), "config/n": pa.int64(), "config/act": pa.string(),
        "config/flag": pa.bool_(), "config/width": pa.int64(), "config/drop": pa.float64(),
        "config/epochs": pa.int64(), "config/dataset": pa.string(), "config/augment": pa.bool_(),
        "config/rate": pa.float64(),
        "f1": pa.float64(), "f2": pa.float64(), "g": pa.float64(), "late": pa.float64(),
        "error": pa.string(), "attempts": pa.int64(),
        "start_time": pa.timestamp("us", tz="UTC"), "end_time": pa.timestamp("us", tz="UTC"),
        "worker": pa.string(), "node_id": pa.string(),
    }
    assert {f.name: f.type for f in table.schema} == expected_types
    # in the documented order, though the late metric is the last column of the parts it widened
    assert table.column_names == list(expected_types)
    assert pq.read_schema(written / "trials.parquet").names == list(expected_types)
    assert table.num_rows == 6
    rows = table.to_pylist()
    assert [r["trial_id"] for r in rows] == list(range(6))
    for r in rows:
        i = r["trial_id"]
        assert {k[len("config/"):]: v for k, v in r.items() if k.startswith("config/")} == config(i)
        assert type(r["config/flag"]) is bool and type(r["config/n"]) is int
        assert r["attempts"] == 1 + i % 2
        assert r["start_time"] == utc(T0 + i + 0.25) and r["end_time"] == utc(T0 + i + 0.75)
        assert r["worker"] == f"worker-{i % 2}" and r["node_id"] == f"node-{i}"
        if i == 3:
            assert r["status"] == "FAILED" and r["error"] == "ValueError: boom"
            assert r["f1"] is None and r["f2"] is None and r["g"] is None
        else:
            assert r["status"] == "COMPLETE" and r["error"] is None
            assert (r["f1"], r["f2"], r["g"]) == (i * 1.5, -i, g_of(i))
        # a metric first returned by trial 4 is a new nullable column
        assert r["late"] == (i * 10.0 if i >= 4 else None)
    # closing merged the parts (the late metric widened the schema) into one Parquet part
    assert len(list((written / "trials").glob("part-*.parquet"))) == 1


def test_curves_with_different_metric_sets(written):
    reader = StoreReader(written)
    curves = reader.curves()
    assert curves.column_names == ["trial_id", "step", "time", "loss", "acc"]
    every = reader.curves(all_attempts=True)
    assert every.column_names == ["trial_id", "step", "time", "attempt", "loss", "acc"]
    assert every["attempt"].to_pylist() == [1, 1, 1, 1]  # rows without one are attempt 1
    assert curves.select(["trial_id", "step", "loss", "acc"]).to_pylist() == [
        {"trial_id": 0, "step": 0, "loss": 1.0, "acc": None},
        {"trial_id": 0, "step": 1, "loss": 0.5, "acc": None},
        {"trial_id": 1, "step": 0, "loss": 2.0, "acc": 0.1},
        {"trial_id": 1, "step": 1, "loss": None, "acc": 0.3},
    ]
    assert curves["time"].to_pylist()[1] == utc(T0 + 0.5)
    assert reader.curves(trial_id=1)["step"].to_pylist() == [0, 1]
    assert reader.curves(trial_id=2).num_rows == 0


def test_dispatched_and_results(written):
    reader = StoreReader(written)
    dispatched = reader.dispatched()
    assert dispatched["trial_id"].to_pylist() == list(range(6))
    assert dispatched["attempt"].to_pylist() == [1] * 6
    assert dispatched["config/act"].to_pylist() == [config(i)["act"] for i in range(6)]
    results = reader.results()
    assert [r.trial_id for r in results] == list(range(6))
    assert results[2].config == config(2)
    assert results[2].metrics == {"f1": 3.0, "f2": -2.0, "g": g_of(2)}
    assert results[3].status == "FAILED" and results[3].metrics == {}
    assert results[5].metrics["late"] == 50.0


def test_front_and_hypervolume_of_a_written_store(written):
    reader = StoreReader(written)
    # f1 min, f2 max, g <= 0.5: trials 0, 1, 2, 4, 5 complete; 5 infeasible; g = 0.5 feasible
    assert reader.feasible_trials()["trial_id"].to_pylist() == [0, 1, 2, 4]
    # f1 grows and f2 falls with i: trial 0 dominates every other one
    assert reader.pareto_front()["trial_id"].to_pylist() == [0]
    assert reader.ref_point == {"f1": 9.0, "f2": -9.0}
    assert reader.hypervolume() == pytest.approx((9.0 - 0.0) * (0.0 - -9.0))
    assert reader.hypervolume({"f1": 1.0, "f2": -1.0}) == pytest.approx(1.0)


def test_metadata_in_study_json(written, problem):
    data = json.loads((written / "study.json").read_text())
    assert data["format"] == FORMAT_VERSION
    assert data["problem"] == problem.to_dict()
    assert data["config_types"] == problem.space.arrow_types()
    assert data["metric_order"] == ["f1", "f2", "g"]
    assert data["seed"] == 7
    assert data["ref_point"] == {"f1": 9.0, "f2": -9.0}
    reader = StoreReader(written)
    assert reader.metadata["problem"] == problem.to_dict()
    assert reader.problem.to_dict() == problem.to_dict()


def test_reopening_appends_and_keeps_the_definition(written, problem):
    before = StoreReader(written).trials()
    meta = metadata_for(problem, seed=7, created="later", run={"budget": 9})
    with StoreWriter(written, meta) as writer:
        writer.add_trials([row(6, {"f1": 0.0, "f2": 1.0, "g": 0.0})])
    reader = StoreReader(written)
    table = reader.trials()
    assert table.num_rows == 7
    assert table.slice(0, 6).select(before.column_names).equals(before)
    data = json.loads((written / "study.json").read_text())
    assert data["resumed"] == 1
    assert data["run"] == {"budget": 9}                       # run settings are replaced
    assert data["ref_point"] == {"f1": 9.0, "f2": -9.0}       # the recorded ref is kept
    assert "created" not in data or data["created"] != "later"
    assert reader.pareto_front()["trial_id"].to_pylist() == [6]


def test_empty_store_reads_empty_tables(tmp_path, problem):
    store = tmp_path / "empty"
    StoreWriter(store, metadata_for(problem)).close()
    reader = open_store(store)
    trials = reader.trials()
    assert trials.num_rows == 0
    assert trials.schema.field("config/flag").type == pa.bool_()
    assert {"f1", "f2", "g", "error", "node_id"} <= set(trials.column_names)
    assert reader.curves().num_rows == 0
    dispatched = reader.dispatched()  # a table with the study's columns, like trials()
    assert dispatched.num_rows == 0 and "config/flag" in dispatched.column_names
    assert reader.pareto_front().num_rows == 0
    assert reader.hypervolume() == 0.0
    assert reader.results() == []
    # the one-file copies exist too, with the same columns: a tool reading them by name
    # (README's polars line) found no curves.parquet after a search that never reported
    assert pq.read_table(store / "trials.parquet").schema == trials.schema
    assert pq.read_table(store / "curves.parquet").column_names == ["trial_id", "step", "time",
                                                                    "attempt"]


# -- Parquet snapshots ----------------------------------------------------------------------------

def test_pyarrow_pandas_duckdb_read_the_snapshot(written):
    import duckdb
    import pandas as pd

    trials = StoreReader(written).trials()
    path = written / "trials.parquet"
    snapshot = pq.read_table(path).sort_by("trial_id")
    assert snapshot.select(trials.column_names).to_pylist() == trials.to_pylist()

    frame = pd.read_parquet(path).sort_values("trial_id").reset_index(drop=True)
    expected = trials.to_pandas()
    pd.testing.assert_frame_equal(frame[expected.columns], expected)

    query = duckdb.sql(f"select * from '{path}' order by trial_id")
    assert query.columns == snapshot.column_names
    assert query.to_arrow_table().select(trials.column_names).to_pylist() == trials.to_pylist()
    counts = dict(duckdb.sql(f"select status, count(*) from '{path}' group by status").fetchall())
    assert counts == {"COMPLETE": 5, "FAILED": 1}
    assert duckdb.sql(f'select sum("config/n") from \'{path}\'').fetchall()[0][0] == \
        sum(config(i)["n"] for i in range(6))

    curves = pd.read_parquet(written / "curves.parquet")
    assert len(curves) == 4 and set(curves.columns) == {"trial_id", "step", "time", "attempt",
                                                        "loss", "acc"}


def test_parts_are_plain_parquet_files(written):
    rows = 0
    for path in sorted((written / "trials").glob("part-*.parquet")):
        rows += pq.read_table(path).num_rows
    assert rows == 6


def legacy_store(path: Path, problem: Problem, batches: list[list[dict]],
                 name: str = "part-00000.arrow") -> Path:
    """A store as distopt wrote it before Parquet parts: one Arrow IPC stream segment."""
    from distopt.store._metadata import write_metadata
    from distopt.store._schema import trial_batch

    (path / "trials").mkdir(parents=True, exist_ok=True)
    if not (path / "study.json").exists():
        write_metadata(path, metadata_for(problem))
    meta = metadata_for(problem)
    first = trial_batch(batches[0], meta["config_types"], meta["metric_order"])
    with pa.OSFile(str(path / "trials" / name), "wb") as sink:
        with pa.ipc.new_stream(sink, first.schema) as writer:
            for rows in batches:
                writer.write_batch(trial_batch(rows, meta["config_types"], meta["metric_order"]))
    return path


# -- damage ---------------------------------------------------------------------------------------

def test_torn_tail_keeps_complete_rows_and_warns(tmp_path, problem):
    """An old store's segment (Arrow IPC stream) cut by a crash: its complete rows read."""
    store = legacy_store(tmp_path / "torn", problem, [  # three batches of two rows
        [row(2 * i, {"f1": 1.0, "f2": 1.0, "g": 0.0}),
         row(2 * i + 1, {"f1": 2.0, "f2": 2.0, "g": 0.0})] for i in range(3)])
    [segment] = (store / "trials").glob("part-*.arrow")
    data = segment.read_bytes()
    segment.write_bytes(data[:-40])  # into the last batch, as a crash mid-write leaves it
    with pytest.warns(RuntimeWarning, match="torn tail"):
        table = StoreReader(store).trials()
    assert table["trial_id"].to_pylist() == [0, 1, 2, 3]


def test_unreadable_segment_is_skipped_with_a_warning(tmp_path, problem):
    written = legacy_store(tmp_path / "old", problem,
                           [[row(i, {"f1": 1.0, "f2": 1.0, "g": 0.0}) for i in range(6)]])
    (written / "trials" / "part-00099.arrow").write_bytes(b"not an arrow stream at all")
    with pytest.warns(RuntimeWarning, match="part-00099"):
        table = StoreReader(written).trials()
    assert table["trial_id"].to_pylist() == list(range(6))


@pytest.mark.parametrize("damage, match", [
    (lambda store: (store / "study.json").unlink(), "not a distopt store"),
    (lambda store: (store / "study.json").write_text("{not json"), "not valid JSON"),
    (lambda store: (store / "study.json").write_text('{"format": 99}'), "format"),
])
def test_bad_metadata_raises_store_error(written, damage, match):
    damage(written)
    with pytest.raises(distopt.StoreError, match=match):
        StoreReader(written)


def test_missing_store_raises_store_error(tmp_path):
    with pytest.raises(distopt.StoreError, match="not a distopt store"):
        open_store(tmp_path / "nowhere")


def test_store_path_that_is_a_file(tmp_path, problem):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(distopt.StoreError, match="is a file"):
        StoreWriter(path, metadata_for(problem))


# -- one writer, many readers ---------------------------------------------------------------------

WRITER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from distopt.store import StoreWriter

    path, n, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hold"
    metadata = json.loads(sys.argv[4])
    writer = StoreWriter(path, metadata)
    print("ready", flush=True)
    for i in range(n):
        metrics = {"f1": float(i), "f2": -float(i), "g": 0.0}
        if i >= n // 2:
            metrics["late"] = 2.0 * i  # widens the schema half way: a new segment
        # curves first, as the orchestrator does: a durable trial row has its curve on disk
        writer.add_curves([{"trial_id": i, "step": 0, "time": time.time(), "loss": float(i)}])
        writer.add_trials([{"trial_id": i, "status": "COMPLETE", "config": {"x": i / n},
                            "metrics": metrics, "error": None, "attempts": 1,
                            "start_time": time.time(), "end_time": time.time(),
                            "worker": "w", "node_id": None}])
        time.sleep(0.002)
    print("written", flush=True)
    if hold:
        sys.stdin.readline()
    writer.close()
""")


@pytest.fixture
def start_writer(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    problem = Problem({"x": Float(0, 1)}, {"f1": "min", "f2": "max"}, {"g": ("<=", 1.0)})
    started = []

    def start(store: Path, n: int, hold: bool = False) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(store), str(n), "hold" if hold else "go",
             json.dumps(metadata_for(problem))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            stream.close()


def test_reading_while_another_process_writes(tmp_path, start_writer):
    store = tmp_path / "live"
    n = 300
    proc = start_writer(store, n)
    counts = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reader of a live store must not even warn
        while True:
            done = proc.poll() is not None
            reader = StoreReader(store)
            table = reader.trials()
            ids = table["trial_id"].to_pylist()
            assert ids == list(range(len(ids)))  # always a prefix, never a torn row
            assert table["f1"].to_pylist() == [float(i) for i in ids]
            if "late" in table.column_names:
                assert table["late"].to_pylist() == [2.0 * i if i >= n // 2 else None
                                                     for i in ids]
            assert reader.curves().num_rows >= len(ids)  # curves are written first
            counts.append(len(ids))
            if done:
                break
    assert proc.returncode == 0
    assert counts == sorted(counts)          # the prefix only grows
    assert counts[-1] == n
    assert any(0 < c < n for c in counts)    # some reads really happened mid-write
    assert pq.read_table(store / "trials.parquet").num_rows == n


def test_second_writer_names_the_holder(tmp_path, problem):
    store = tmp_path / "locked"
    with StoreWriter(store, metadata_for(problem)):
        with pytest.raises(distopt.StoreError) as info:
            StoreWriter(store, metadata_for(problem))
        assert f'"pid": {os.getpid()}' in str(info.value)
    # released on close: a new writer gets it
    StoreWriter(store, metadata_for(problem)).close()


def test_lock_held_by_another_process_and_freed_by_its_death(tmp_path, start_writer, problem):
    store = tmp_path / "held"
    proc = start_writer(store, 5, hold=True)
    assert proc.stdout.readline().strip() == "written"
    other = Problem({"x": Float(0, 1)}, {"f1": "min", "f2": "max"}, {"g": ("<=", 1.0)})
    with pytest.raises(distopt.StoreError) as info:
        StoreWriter(store, metadata_for(other))
    message = str(info.value)
    assert f'"pid": {proc.pid}' in message and "\n" not in message
    # a reader needs no lock: the flushed rows are there while the writer holds it
    assert StoreReader(store).trials()["trial_id"].to_pylist() == [0, 1, 2, 3, 4]
    proc.send_signal(signal.SIGKILL)  # no clean-up at all
    proc.wait(timeout=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert StoreReader(store).trials()["trial_id"].to_pylist() == [0, 1, 2, 3, 4]
    with StoreWriter(store, metadata_for(other)) as writer:  # the kernel dropped the lock
        writer.add_trials([{"trial_id": 5, "status": "COMPLETE", "config": {"x": 0.5},
                            "metrics": {"f1": 5.0, "f2": -5.0, "g": 0.0}}])
    assert StoreReader(store).trials()["trial_id"].to_pylist() == list(range(6))


def test_mismatched_study_raises_and_changes_nothing(written):
    before = file_bytes(written)
    other = Problem({**SPACE, "x": Float(-2.0, 2.0)}, {"f1": "min", "f2": "max"},
                    {"g": ("<=", 0.5)})
    with pytest.raises(distopt.StoreError) as info:
        StoreWriter(written, metadata_for(other))
    message = str(info.value)
    assert "different study" in message and "space" in message and "\n" not in message
    assert file_bytes(written) == before
    # and the store still opens for writing with its own study
    reader = StoreReader(written)
    StoreWriter(written, reader.metadata).close()


def test_nan_metric_round_trips(tmp_path, problem):
    store = tmp_path / "nan"
    with StoreWriter(store, metadata_for(problem)) as writer:
        writer.add_trials([row(0, {"f1": math.nan, "f2": 1.0, "g": 0.0}, status="FAILED",
                               error="not finite")])
    [value] = StoreReader(store).trials()["f1"].to_pylist()
    assert math.isnan(value)


# -- a trial written twice ------------------------------------------------------------------------

@pytest.fixture
def rewritten(tmp_path, problem) -> Path:
    """Trial 1 recorded FAILED, then again COMPLETE by a later session (a re-run trial)."""
    store = tmp_path / "rewritten"
    with StoreWriter(store, metadata_for(problem)) as writer:
        writer.add_trials([row(0, {"f1": 0.0, "f2": 0.0, "g": 0.0}),
                           row(1, {}, status="FAILED", error="worker died")])
    with StoreWriter(store, metadata_for(problem)) as writer:
        writer.add_trials([row(1, {"f1": 1.0, "f2": 1.0, "g": 0.0})])
    return store


def test_reader_keeps_the_last_row_of_a_trial(rewritten):
    table = StoreReader(rewritten).trials()
    assert table["trial_id"].to_pylist() == [0, 1]
    assert table["status"].to_pylist() == ["COMPLETE", "COMPLETE"]
    assert table["f1"].to_pylist() == [0.0, 1.0]
    assert [r.status for r in StoreReader(rewritten).results()] == ["COMPLETE", "COMPLETE"]


def test_snapshot_has_the_readers_rows_for_a_trial_written_twice(rewritten):
    import pandas as pd

    frame = pd.read_parquet(rewritten / "trials.parquet").sort_values("trial_id")
    assert frame["trial_id"].tolist() == [0, 1]
    assert frame["status"].tolist() == ["COMPLETE", "COMPLETE"]


def test_reopened_store_keeps_the_declared_objective_order(tmp_path):
    """study.json must not sort keys: the first objective orders the front and the plots."""
    import distopt
    from distopt.store import StoreWriter

    problem = distopt.Problem({"x": distopt.Float(0, 1)}, {"zeta": "min", "alpha": "max"},
                              {"omega": ("<=", 1.0), "beta": (">=", 0.0)})
    StoreWriter(tmp_path / "s", {"problem": problem.to_dict(),
                                 "config_types": problem.space.arrow_types(),
                                 "metric_order": problem.metric_names}).close()
    reopened = distopt.open_store(tmp_path / "s").problem
    assert list(reopened.objectives) == ["zeta", "alpha"]
    assert reopened.maximize == [False, True]
    assert list(reopened.constraints) == ["omega", "beta"]


def test_curves_show_each_trials_last_attempt_unless_asked_for_all(tmp_path, problem):
    store = tmp_path / "attempts"
    with StoreWriter(store, metadata_for(problem)) as writer:
        writer.add_curves([{"trial_id": 0, "step": s, "time": T0 + s, "attempt": 1,
                            "loss": 10.0 + s} for s in range(3)])        # its worker was lost
        writer.add_curves([{"trial_id": 1, "step": 0, "time": T0, "loss": 5.0}])  # no attempt
        writer.add_curves([{"trial_id": 0, "step": s, "time": T0 + 9 + s, "attempt": 2,
                            "loss": 20.0 + s} for s in range(2)])        # and ran again
    reader = StoreReader(store)
    last = reader.curves()
    assert last.select(["trial_id", "step", "loss"]).to_pylist() == [
        {"trial_id": 0, "step": 0, "loss": 20.0}, {"trial_id": 0, "step": 1, "loss": 21.0},
        {"trial_id": 1, "step": 0, "loss": 5.0}]
    assert reader.curves(trial_id=0)["loss"].to_pylist() == [20.0, 21.0]
    every = reader.curves(all_attempts=True)
    assert every.select(["trial_id", "attempt", "step"]).to_pylist() == [
        {"trial_id": 0, "attempt": a, "step": s} for a, n in ((1, 3), (2, 2)) for s in range(n)
    ] + [{"trial_id": 1, "attempt": 1, "step": 0}]
    assert reader.curves(trial_id=0, all_attempts=True).num_rows == 5


def test_a_snapshot_reads_the_store_once_while_a_search_writes_it(tmp_path, problem):
    """``distopt show`` of a live store printed a front of 20 trials under "22 COMPLETE"."""
    store = tmp_path / "live"
    with StoreWriter(store, metadata_for(problem)) as writer:
        writer.add_trials([row(i, {"f1": 1.0 * i, "f2": 1.0 * i, "g": 0.0}) for i in range(3)])
        writer.publish()
        reader = open_store(store)
        snapshot = reader.snapshot()
        assert snapshot.trials().num_rows == 3
        front, hypervolume = snapshot.pareto_front(), snapshot.hypervolume()
        writer.add_trials([row(i, {"f1": -1.0 * i, "f2": 9.0, "g": 0.0}) for i in (3, 4)])
        writer.publish()
        assert snapshot.trials().num_rows == 3 and reader.trials().num_rows == 5
        assert snapshot.pareto_front() == front and snapshot.hypervolume() == hypervolume
        assert reader.pareto_front()["trial_id"].to_pylist() != front["trial_id"].to_pylist()
        assert snapshot.snapshot() is snapshot
        assert reader.snapshot().trials().num_rows == 5


def test_a_read_retries_a_listing_a_publication_changed(tmp_path, problem, monkeypatch):
    """A journal published (and removed) between listing and reading it is read from its part;
    the last of the retries no longer escapes as FileNotFoundError."""
    from distopt.store import _rows

    store = tmp_path / "racing"
    with StoreWriter(store, metadata_for(problem)) as writer:
        writer.add_trials([row(i, {"f1": 1.0, "f2": 1.0, "g": 0.0}) for i in range(4)])
    real, calls = _rows._read_once, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) < _rows._RETRIES:  # every listing but the last meets a vanished file
            raise FileNotFoundError("journal published meanwhile")
        return real(*args, **kwargs)

    monkeypatch.setattr(_rows, "_read_once", racing)
    assert open_store(store).trials().num_rows == 4
    calls.clear()
    monkeypatch.setattr(_rows, "_read_once", lambda *a, **k: (_ for _ in ()).throw(
        FileNotFoundError("gone")))
    with pytest.raises(FileNotFoundError):  # a store that keeps vanishing is not read as empty
        open_store(store).trials()


def test_settle_publishes_what_a_killed_search_left(tmp_path, problem):
    """A search killed outright leaves rows in its journal, which only open_store reads; settle
    (what a run or resume with nothing left to run does) publishes them for every tool."""
    import shutil

    import pyarrow.dataset as ds

    from distopt.store import settle

    source = tmp_path / "source"
    writer = StoreWriter(source, metadata_for(problem))
    writer.add_trials([row(i, {"f1": 1.0 * i, "f2": 1.0, "g": 0.0}) for i in range(3)])
    writer.publish()
    writer.add_trials([row(i, {"f1": 1.0 * i, "f2": 1.0, "g": 0.0}) for i in (3, 4)])
    killed = tmp_path / "killed"
    shutil.copytree(source, killed)  # the folder as a kill -9 leaves it: a journal, no snapshot
    writer.close()
    assert list((killed / "trials").glob(".journal-*")) and not (killed / "trials.parquet").exists()

    def parts(store):
        return ds.dataset(sorted((store / "trials").glob("part-*.parquet")),
                          format="parquet").count_rows()

    assert parts(killed) == 3 and open_store(killed).trials().num_rows == 5
    assert settle(killed) is True
    assert parts(killed) == 5 and not list((killed / "trials").glob(".journal-*"))
    assert pq.read_table(killed / "trials.parquet")["trial_id"].to_pylist() == list(range(5))
    before = file_bytes(killed)
    assert settle(killed) is False and file_bytes(killed) == before  # nothing left: untouched
    held = StoreWriter(tmp_path / "held", metadata_for(problem))
    try:
        (tmp_path / "held" / "trials.parquet").unlink(missing_ok=True)
        assert settle(tmp_path / "held") is False  # a search holds it: its own rows are its own
    finally:
        held.close()
