"""Driver faults injected for real: ``distopt run`` SIGKILLed mid-search and resumed with
``distopt resume``, and Ctrl-C (SIGINT to the process group, as a terminal sends it).

Each driver runs in its own session, so the embedded Ray it starts can be found (same session
id) and is checked for leaks: a SIGKILLed driver cannot stop its Ray, the test must; after Ctrl-C
or a normal end nothing may be left.
"""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path

import pytest

import distopt
from distopt.store import StoreWriter
from distopt.store._lock import StoreLock
from distopt.store._metadata import read_metadata

from ._util import (
    assert_budget_reached,
    kill_session,
    n_rows,
    raw_ids,
    raw_rows,
    session_processes,
    sleepy_study_file,
    start_cli,
    wait_for,
)

pytestmark = pytest.mark.slow


def _study_file(tmp_path: Path, budget: int, sleep: float = 0.2) -> tuple[Path, Path]:
    store = tmp_path / "store"
    return sleepy_study_file(tmp_path, store, budget, sleep), store


def _finish(process, timeout: float = 240) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    finally:
        kill_session(process.pid)


def _read_cleanly(store: Path) -> distopt.StoreReader:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn or unreadable segment would warn
        reader = distopt.open_store(store)
        reader.trials()
        reader.dispatched()
    return reader


def test_sigkill_of_the_driver_then_resume_completes_the_budget_exactly(tmp_path):
    budget = 30
    study, store = _study_file(tmp_path, budget)
    driver = start_cli("run", str(study), "--no-progress", cwd=tmp_path)
    try:
        wait_for(lambda: n_rows(store) >= 8 or driver.poll() is not None, 180,
                 "8 finished trials")
        assert driver.poll() is None, driver.communicate()
        # While it runs, a second writer is refused and told who holds the store.
        with pytest.raises(distopt.StoreError, match=rf'"pid": {driver.pid}'):
            StoreWriter(store, read_metadata(store))
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        kill_session(driver.pid)  # the Ray processes a SIGKILLed driver leaves behind
    assert session_processes(driver.pid) == []

    # The store as the crash left it.
    crashed = {r["trial_id"]: r for r in raw_rows(store).to_pylist()}
    dispatched = raw_rows(store, "dispatched").to_pylist()
    configs = {d["trial_id"]: d["config/x"] for d in dispatched}
    in_flight = set(configs) - set(crashed)
    assert 8 <= len(crashed) < budget
    assert in_flight, "nothing was in flight at the crash"
    assert not StoreLock.is_held(store)  # flock died with the driver

    resumed = start_cli("resume", str(store), "--no-progress", cwd=tmp_path)
    stdout, stderr = _finish(resumed)
    assert resumed.returncode == 0, stderr
    assert "Pareto front" in stdout
    assert session_processes(resumed.pid) == []  # a clean end stops its Ray

    table = assert_budget_reached(store, budget)
    final = {r["trial_id"]: r for r in table.to_pylist()}
    assert all(r["status"] == "COMPLETE" for r in final.values())
    # Completed trials were neither re-run nor rewritten ...
    for trial_id, row in crashed.items():
        assert final[trial_id] == row
    assert raw_ids(store).count(min(crashed)) == 1
    redispatched = [d["trial_id"] for d in raw_rows(store, "dispatched").to_pylist()]
    assert not set(crashed) & {t for t in redispatched if redispatched.count(t) > 1}
    # ... the trials in flight at the crash ran again, with their configurations ...
    for trial_id in in_flight:
        assert final[trial_id]["config/x"] == configs[trial_id]
        assert redispatched.count(trial_id) == 2
    # ... and new trials continue the Sobol sequence instead of repeating completed points.
    before = {r["config/x"] for r in crashed.values()}
    new = [r for t, r in final.items() if t > max(configs)]
    assert new and not {r["config/x"] for r in new} & before
    metadata = read_metadata(store)
    assert metadata["resumed"] == 1
    _read_cleanly(store)


@pytest.mark.parametrize("target", ["group", "driver"])
def test_ctrl_c_cancels_running_trials_closes_the_store_and_prints_how_to_resume(
        tmp_path, target):
    """``group``: what a terminal's Ctrl-C does (the driver and the Ray it started get SIGINT);
    ``driver``: ``kill -INT`` of the driver alone."""
    budget = 40
    study, store = _study_file(tmp_path, budget)
    driver = start_cli("run", str(study), "--no-progress", cwd=tmp_path)
    try:
        wait_for(lambda: n_rows(store) >= 4 or driver.poll() is not None, 180,
                 "4 finished trials")
        assert driver.poll() is None, driver.communicate()
        if target == "group":
            os.killpg(driver.pid, signal.SIGINT)
        else:
            os.kill(driver.pid, signal.SIGINT)
        _, stderr = driver.communicate(timeout=90)
        # Nothing of the search or its embedded Ray outlives the command.
        wait_for(lambda: not session_processes(driver.pid), 30, "the embedded Ray to stop")
    finally:
        leaked = kill_session(driver.pid)
    assert leaked == []

    assert driver.returncode == 130, stderr
    assert f"distopt resume {store}" in stderr
    assert "Traceback" not in stderr
    # Closed cleanly: every segment ends with the end-of-stream marker, no warning on open,
    # the snapshot is written and the lock is free.
    for segment in store.glob("*/part-*.arrow"):
        assert segment.read_bytes().endswith(b"\xff\xff\xff\xff\x00\x00\x00\x00"), segment
    reader = _read_cleanly(store)
    finished = reader.trials()
    assert 4 <= finished.num_rows < budget
    # Running trials were cancelled, not recorded as failures.
    assert set(finished["status"].to_pylist()) == {"COMPLETE"}
    assert (store / "trials.parquet").exists()
    assert not StoreLock.is_held(store)
    assert json.loads((store / "study.json").read_text())["run"]["budget"] == budget
    if target != "group":
        return
    resumed = start_cli("resume", str(store), "--no-progress", cwd=tmp_path)
    _, stderr = _finish(resumed)
    assert resumed.returncode == 0, stderr
    assert_budget_reached(store, budget)
