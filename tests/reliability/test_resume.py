"""Resuming from the store in-process (``Study(..., store=existing).optimize``): the crash state
is built exactly (which trials finished, which were only dispatched), so the checks are
deterministic; the real SIGKILL of a driver is in ``test_driver_faults``."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

import distopt
from distopt.examples import instant
from distopt.store import StoreWriter
from distopt.strategies import RandomStrategy

from . import faulty
from ._util import assert_budget_reached, raw_rows

SPACE = {"x": distopt.Float(0.0, 1.0)}
OBJECTIVES = {"f1": "min", "f2": "min"}


def _crashed_store(path: Path, *, dispatched: int, finished: int) -> list[dict]:
    """A store as a driver killed mid-search leaves it: ``dispatched`` trials handed out by the
    study's own strategy (seed 0), the first ``finished`` of them written."""
    study = distopt.Study(SPACE, OBJECTIVES, store=path, seed=0)
    strategy = RandomStrategy(seed=0)
    strategy.bind(study.problem)
    configs = strategy.ask(dispatched)
    now = time.time()
    with StoreWriter(path, study.metadata({"budget": 99})) as writer:
        writer.add_dispatched([{"trial_id": t, "attempt": 1, "time": now, "config": c}
                               for t, c in enumerate(configs)])
        writer.add_trials([{"trial_id": t, "status": "COMPLETE", "config": c,
                            "metrics": instant(c), "start_time": now, "end_time": now}
                           for t, c in enumerate(configs[:finished])])
    return configs


def test_resume_reruns_in_flight_trials_and_never_duplicates_finished_ones(ray_local, tmp_path):
    path = tmp_path / "store"
    configs = _crashed_store(path, dispatched=12, finished=9)
    before = raw_rows(path).to_pylist()

    reader = distopt.Study(SPACE, OBJECTIVES, store=path, seed=0).optimize(
        instant, budget=15, workers=2)

    table = assert_budget_reached(path, 15)
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == list(range(15))
    for row in before:  # untouched
        assert rows[row["trial_id"]] == row
    for trial_id in (9, 10, 11):  # in flight at the crash: re-run with their configurations
        assert rows[trial_id]["config/x"] == configs[trial_id]["x"]
        assert rows[trial_id]["status"] == "COMPLETE"
    assert reader.metadata["resumed"] == 1
    assert reader.metadata["run"]["budget"] == 15


def test_resume_of_a_finished_study_runs_nothing(ray_local, tmp_path):
    path = tmp_path / "store"
    _crashed_store(path, dispatched=6, finished=6)
    before = raw_rows(path).to_pylist()
    distopt.Study(SPACE, OBJECTIVES, store=path, seed=0).optimize(instant, budget=6)
    assert raw_rows(path).to_pylist() == before
    assert raw_rows(path, "dispatched").num_rows == 6


def test_resume_does_not_hand_out_the_points_of_in_flight_trials_again(ray_local, tmp_path):
    path = tmp_path / "store"
    _crashed_store(path, dispatched=12, finished=9)
    distopt.Study(SPACE, OBJECTIVES, store=path, seed=0).optimize(instant, budget=15, workers=2)
    xs = distopt.open_store(path).trials()["config/x"].to_pylist()
    assert len(set(xs)) == len(xs), sorted(xs)


def test_python_api_resume_with_a_metric_that_first_appears_late(ray_local, tmp_path):
    path = tmp_path / "store"
    space = {**SPACE, "from_trial": 4}
    distopt.Study(space, OBJECTIVES, store=path, seed=0).optimize(
        faulty.late_metric, budget=6, workers=2)
    reader = distopt.Study(space, OBJECTIVES, store=path, seed=0).optimize(
        faulty.late_metric, budget=10, workers=2)

    table = assert_budget_reached(path, 10)
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    assert all(rows[t]["aux"] is None for t in range(4))
    assert all(rows[t]["aux"] == pytest.approx(2 * rows[t]["config/x"]) for t in range(4, 10))
    assert table.schema.field("aux").nullable
    assert reader.pareto_front().num_rows >= 1
    assert reader.metadata["resumed"] == 1


def test_resume_after_a_torn_tail_reruns_the_dropped_trials(ray_local, tmp_path):
    """A crash mid-append (here: the trials segment cut inside its last batch) loses at most
    the rows being written; resuming warns, repairs the segment and runs them again."""
    path = tmp_path / "store"
    study = distopt.Study(SPACE, OBJECTIVES, store=path, seed=0)
    study.optimize(instant, budget=8, workers=2)
    # The trials as a store of the earlier format kept them (an Arrow IPC stream, one batch per
    # trial), the format whose appends a crash can tear: the next writer migrates it.
    rows = distopt.open_store(path).trials()
    for part in (path / "trials").glob("part-*.parquet"):
        part.unlink()
    segment = path / "trials" / "part-00000.arrow"
    with pa.OSFile(str(segment), "wb") as sink, pa.ipc.new_stream(sink, rows.schema) as log:
        for batch in rows.to_batches(max_chunksize=1):
            log.write_batch(batch)
    with pa.OSFile(str(segment)) as source:  # where the last batch starts
        reader = pa.ipc.open_stream(source)
        starts = [source.tell()]
        while True:
            try:
                reader.read_next_batch()
            except StopIteration:
                break
            starts.append(source.tell())
    kept = pa.ipc.open_stream(pa.BufferReader(segment.read_bytes()[:starts[-2]])).read_all()
    segment.write_bytes(segment.read_bytes()[:starts[-2] + 40])
    dropped = 8 - kept.num_rows
    assert dropped >= 1

    with pytest.warns(RuntimeWarning, match=rf"kept {kept.num_rows} complete rows"):
        distopt.Study(SPACE, OBJECTIVES, store=path, seed=0).optimize(instant, budget=8,
                                                                       workers=2)
    table = assert_budget_reached(path, 8)
    assert sorted(table["trial_id"].to_pylist()) == list(range(8))
    assert (path / "damaged" / "trials" / "part-00000.arrow.torn").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distopt.open_store(path).trials()  # repaired: reads cleanly from now on
