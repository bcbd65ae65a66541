"""Worker faults injected for real: a worker process SIGKILLed mid-trial (by itself, and by
``ray.kill`` from the driver's side), a worker that always dies, and a trial past its timeout.

Every test checks the rows on disk (raw segments, duplicates kept), unique trial ids, the
statuses, and that the search reached its budget.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import distopt
from distopt import _pool
from distopt.schedulers import Scheduler

from . import faulty
from ._util import assert_budget_reached, raw_rows, wait_for

SPACE = {"x": distopt.Float(0.0, 1.0)}
OBJECTIVES = {"f1": "min", "f2": "min"}


def _study(tmp_path: Path, **constants) -> distopt.Study:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    space = {**SPACE, "markers": str(markers), **constants}
    return distopt.Study(space, OBJECTIVES, store=tmp_path / "store", seed=0)


class EndRecorder(Scheduler):
    """Never stops a trial; records how each one ended."""

    name = "end-recorder"

    def __init__(self) -> None:
        self.ends: dict[int, str] = {}

    def on_report(self, trial_id: int, step: int, metrics) -> bool:
        return False

    def on_trial_end(self, trial_id: int, status: str) -> None:
        self.ends[trial_id] = status


def _by_id(table) -> dict[int, dict]:
    return {row["trial_id"]: row for row in table.to_pylist()}


def test_worker_sigkilled_mid_trial_is_retried_on_a_fresh_worker(ray_local, tmp_path):
    """os.kill(SIGKILL) of the worker process on the first attempt of trials 1 and 4."""
    budget = 8
    study = _study(tmp_path, die="1,4", sleep=0.05)  # 50 ms: one trial per actor call
    reader = study.optimize(faulty.die_once, budget=budget, workers=2, max_retries=2)

    table = assert_budget_reached(reader.path, budget)
    rows = _by_id(table)
    assert sorted(rows) == list(range(budget))
    assert all(r["status"] == "COMPLETE" for r in rows.values()), table.to_pylist()
    assert rows[1]["attempts"] == 2 and rows[4]["attempts"] == 2
    # A trial queued behind a dying one is handed out again too (attempt 2), never FAILED.
    assert all(rows[t]["attempts"] <= 2 for t in rows)
    # Both runs were handed out and recorded; the retry kept the trial's configuration.
    dispatched = raw_rows(reader.path, "dispatched").to_pylist()
    for trial_id in (1, 4):
        runs = [d for d in dispatched if d["trial_id"] == trial_id]
        assert sorted(d["attempt"] for d in runs) == [1, 2]
        assert {d["config/x"] for d in runs} == {rows[trial_id]["config/x"]}
    # The retry ran in another process than the one that died.
    markers = tmp_path / "markers"
    for trial_id in (1, 4):
        died_pid = (markers / f"died-{trial_id}").read_text()
        ran = {p.name.split("-")[2] for p in markers.glob(f"ran-{trial_id}-*")}
        assert died_pid in ran and len(ran) == 2, ran


def test_worker_that_always_dies_is_failed_after_max_retries(ray_local, tmp_path):
    budget, max_retries = 6, 1
    study = _study(tmp_path, die="2")
    reader = study.optimize(faulty.always_die, budget=budget, workers=2, max_retries=max_retries)

    table = assert_budget_reached(reader.path, budget)
    rows = _by_id(table)
    failed = rows[2]
    assert failed["status"] == "FAILED"
    # max_retries + 1 charged deaths; one more hand-out if a death was ambiguous (a trial was
    # queued behind it on the same worker, so neither was charged).
    assert failed["attempts"] in (max_retries + 1, max_retries + 2)
    assert f"worker died {max_retries + 1} times" in failed["error"]
    assert "last cause:" in failed["error"] and len(failed["error"]) > len(
        "worker died 2 times; last cause: ")
    assert [t for t, r in rows.items() if r["status"] != "COMPLETE"] == [2]
    # One worker process died per charged attempt, plus at most one uncharged death while a
    # trial was queued behind it; every other trial completed on replacement actors.
    deaths = len(list((tmp_path / "markers").glob("died-2-*")))
    assert max_retries + 1 <= deaths <= max_retries + 2


def test_a_trial_that_kills_its_worker_never_fails_its_neighbours(ray_local, tmp_path):
    """Instant trials share actor calls (batches) and queue behind each other; trial 25 always
    kills its worker. Only trial 25 is charged and FAILED; its batch- and queue-mates re-run."""
    budget, max_retries = 40, 1
    study = _study(tmp_path, die="25")
    reader = study.optimize(faulty.always_die, budget=budget, workers=2, max_retries=max_retries)

    table = assert_budget_reached(reader.path, budget)
    rows = _by_id(table)
    assert sorted(rows) == list(range(budget))
    assert rows[25]["status"] == "FAILED"
    assert f"worker died {max_retries + 1} times" in rows[25]["error"]
    assert all(r["status"] == "COMPLETE" for t, r in rows.items() if t != 25), table.to_pylist()
    # Charged deaths, plus at most one uncharged death while it shared a batch.
    deaths = len(list((tmp_path / "markers").glob("died-25-*")))
    assert max_retries + 1 <= deaths <= max_retries + 2


def test_cuda_out_of_memory_is_retried_in_a_fresh_worker(ray_local, tmp_path):
    budget = 5
    study = _study(tmp_path, die="2")
    reader = study.optimize(faulty.oom_once, budget=budget, workers=2, max_retries=2)

    table = assert_budget_reached(reader.path, budget)
    rows = _by_id(table)
    assert all(r["status"] == "COMPLETE" for r in rows.values()), table.to_pylist()
    assert rows[2]["attempts"] == 2
    dispatched = raw_rows(reader.path, "dispatched").to_pylist()
    assert sorted(d["attempt"] for d in dispatched if d["trial_id"] == 2) == [1, 2]
    assert (tmp_path / "markers" / "oom-2").exists()


def test_cuda_out_of_memory_every_time_is_failed_with_the_cause(ray_local, tmp_path):
    budget = 4
    study = _study(tmp_path, die="1")
    reader = study.optimize(faulty.oom_always, budget=budget, workers=2, max_retries=1)

    rows = _by_id(assert_budget_reached(reader.path, budget))
    assert rows[1]["status"] == "FAILED" and rows[1]["attempts"] in (2, 3)
    assert "worker died 2 times" in rows[1]["error"] and "CUDA out of memory" in rows[1]["error"]
    assert [t for t, r in rows.items() if r["status"] != "COMPLETE"] == [1]


def test_ray_kill_of_a_busy_actor_from_outside(ray_local, tmp_path, monkeypatch):
    """The driver side kills the actor running trial 1 (as a lost node would); it is retried."""
    import ray

    actors: dict[str, object] = {}
    spawn = _pool.WorkerPool._spawn

    def recording_spawn(self, slot):
        actor = spawn(self, slot)
        actors[actor._actor_id.hex()] = actor
        return actor

    monkeypatch.setattr(_pool.WorkerPool, "_spawn", recording_spawn)
    budget = 6
    study = _study(tmp_path, sleep=0.5)
    markers = tmp_path / "markers"
    killed: list[str] = []

    def killer():
        wait_for(lambda: (markers / "running-1-0").exists(), 60, "trial 1 to start")
        actor_id = (markers / "running-1-0").read_text().split()[0]
        ray.kill(actors[actor_id])
        killed.append(actor_id)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    reader = study.optimize(faulty.announce_and_sleep, budget=budget, workers=2)
    thread.join(timeout=10)

    assert killed, "the killer thread never found trial 1 running"
    table = assert_budget_reached(reader.path, budget)
    rows = _by_id(table)
    assert all(r["status"] == "COMPLETE" for r in rows.values())
    assert rows[1]["attempts"] == 2
    assert (markers / "running-1-1").exists()  # the second attempt ran
    second_actor = (markers / "running-1-1").read_text().split()[0]
    assert second_actor != killed[0]  # ... on a replacement actor
    assert len(actors) >= 3  # two workers plus the replacement


def test_trial_past_its_timeout_is_stopped_and_its_slot_reused(ray_local, tmp_path):
    budget, timeout = 12, 2.5
    # Trial 0 would sleep 120 s; the others take 0.5 s, so they are still running when the
    # replacement of the stopped actor is up and takes its share. (The timeout clock of a trial
    # starts when a started actor takes it: a replacement's start-up never counts.)
    study = _study(tmp_path, slow="0", long=120.0, short=0.5)
    start = time.monotonic()
    reader = study.optimize(faulty.slow_for, budget=budget, workers=2, trial_timeout=timeout)
    elapsed = time.monotonic() - start

    assert elapsed < 60, f"the search waited for the slow trial ({elapsed:.0f} s)"
    table = assert_budget_reached(reader.path, budget)
    rows = _by_id(table)
    assert rows[0]["status"] == "TIMEOUT"
    assert f"trial_timeout={timeout}" in rows[0]["error"]
    assert all(r["status"] == "COMPLETE" for t, r in rows.items() if t != 0)
    # The slot of the stopped trial ran later trials (on a replacement actor).
    slot = rows[0]["worker"]
    later = [r for r in rows.values() if r["worker"] == slot and r["start_time"] > rows[0][
        "end_time"]]
    assert later, f"slot {slot} was not reused: {table.to_pylist()}"


def test_an_early_stopping_scheduler_hears_of_a_timeout(ray_local, tmp_path):
    study = _study(tmp_path, slow="0", long=120.0, short=0.2)
    ended = EndRecorder()
    reader = study.optimize(faulty.slow_for, budget=4, workers=2, trial_timeout=2.0,
                            scheduler=ended)
    rows = _by_id(assert_budget_reached(reader.path, 4))
    assert rows[0]["status"] == "TIMEOUT"
    # it forgets a trial's reports only when told the trial ended: every end, timeouts included
    assert ended.ends == {t: r["status"] for t, r in rows.items()}
