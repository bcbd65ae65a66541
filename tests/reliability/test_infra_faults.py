"""Faults of the machine or of Ray, injected for real into a ``distopt run`` subprocess: SIGTERM,
a disk that fills up mid-run (a small tmpfs), the embedded Ray's GCS or raylet SIGKILLed, a
double Ctrl-C, and joining a ``ray start --head`` cluster that uses token authentication.

Each ends with one distopt line naming the cause and ``distopt resume STORE``, the exit status
(2; 130 for Ctrl-C, 143 for SIGTERM), a closed store (lock released, segments readable, rows
intact) and no Ray process left; resuming then completes the budget without running a completed
trial twice.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import distopt
from distopt.store._lock import StoreLock

from ._util import (
    assert_budget_reached,
    kill_session,
    n_rows,
    raw_ids,
    raw_rows,
    session_processes,
    sleepy_study_file,
    start_cli,
    subprocess_env,
    wait_for,
)

pytestmark = pytest.mark.slow

BUDGET = 12


def _study_file(folder: Path, store: Path, budget: int = 200, sleep: float = 0.2) -> Path:
    return sleepy_study_file(folder, store, budget, sleep)


def _start_and_wait(study: Path, store: Path, cwd: Path, rows: int = 4) -> subprocess.Popen:
    driver = start_cli("run", str(study), "--no-progress", cwd=cwd)
    wait_for(lambda: n_rows(store) >= rows or driver.poll() is not None, 180,
             f"{rows} finished trials")
    assert driver.poll() is None, driver.communicate()
    return driver


def _ended(driver: subprocess.Popen, store: Path, status: int, *cause: str,
           torn_ok: bool = False) -> list[int]:
    """The driver ended with ``status`` and the resume line, its Ray is gone, the store is
    closed; returns the trial ids on disk. ``torn_ok``: a full disk may leave a torn tail (a
    batch cut short), which readers drop with a warning."""
    try:
        _, stderr = driver.communicate(timeout=120)
        wait_for(lambda: not session_processes(driver.pid), 30, "the embedded Ray to stop")
    finally:
        leaked = kill_session(driver.pid)
    assert leaked == [], f"Ray processes outlived the driver: {leaked}"
    assert driver.returncode == status, stderr
    assert "Traceback" not in stderr, stderr
    assert f"distopt resume {store}" in stderr, stderr
    for text in cause:
        assert text in stderr, stderr
    if status == 2:
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("distopt: error: ") and last.endswith(f"distopt resume {store}")
    assert not StoreLock.is_held(store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a torn or unreadable segment would warn
        finished = distopt.open_store(store).trials()
    assert [str(w.message) for w in caught if not (torn_ok and "torn tail" in str(w.message))] \
        == []
    ids = raw_ids(store)
    assert len(ids) == len(set(ids)) == finished.num_rows >= 4
    assert set(finished["status"].to_pylist()) == {"COMPLETE"}
    return ids


def _resume_completes(store: Path, cwd: Path, before: list[int], budget: int = BUDGET) -> None:
    rows = {r["trial_id"]: r for r in raw_rows(store).to_pylist()}
    resumed = start_cli("resume", str(store), "--no-progress", "--budget", str(budget), cwd=cwd)
    try:
        _, stderr = resumed.communicate(timeout=240)
    finally:
        kill_session(resumed.pid)
    assert resumed.returncode == 0, stderr
    table = assert_budget_reached(store, max(budget, len(before)))
    final = {r["trial_id"]: r for r in table.to_pylist()}
    for trial_id in before:  # completed trials neither re-ran nor were rewritten
        assert final[trial_id] == rows[trial_id]


@pytest.mark.parametrize("target", ["driver", "group"])
def test_sigterm_closes_the_store_and_exits_143(tmp_path, target):
    """``driver``: ``kill PID``; ``group``: a batch scheduler's time limit, which reaches the
    embedded Ray's processes as well (before: exit status 1 and Ray's stack dumps)."""
    store = tmp_path / "store"
    driver = _start_and_wait(_study_file(tmp_path, store), store, tmp_path)
    if target == "driver":
        driver.send_signal(signal.SIGTERM)
    else:
        os.killpg(driver.pid, signal.SIGTERM)
    ids = _ended(driver, store, 143, "terminated (SIGTERM)")
    if target == "driver":  # the resume path is the same for both
        _resume_completes(store, tmp_path, ids)


def test_a_second_ctrl_c_while_stopping_leaves_no_ray_process(tmp_path):
    store = tmp_path / "store"
    driver = _start_and_wait(_study_file(tmp_path, store), store, tmp_path)
    os.killpg(driver.pid, signal.SIGINT)
    time.sleep(0.3)
    os.kill(driver.pid, signal.SIGINT)  # impatient: while the store closes and Ray stops
    _ended(driver, store, 130)


@pytest.mark.parametrize("daemon", ["gcs_server", "raylet"])
def test_the_embedded_ray_dying_ends_with_a_resumable_store(tmp_path, daemon):
    """Before: the driver was ended by Ray's core 15-61 s later with exit status 1, one Ray log
    line, the store left open and agents left running."""
    store = tmp_path / "store"
    driver = _start_and_wait(_study_file(tmp_path, store), store, tmp_path)
    victims = [pid for pid in session_processes(driver.pid)
               if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(
                   daemon.encode())]
    assert len(victims) == 1, victims
    started = time.monotonic()
    os.kill(victims[0], signal.SIGKILL)
    ids = _ended(driver, store, 2, f"the embedded Ray's {daemon} (pid {victims[0]}) died")
    assert time.monotonic() - started < 14  # before Ray's core would have ended the driver
    if daemon == "gcs_server":  # the resume path is the same for both
        _resume_completes(store, tmp_path, ids)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (needs root, or CAP_SYS_ADMIN, to mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_ends_with_one_line_and_resumes_once_space_is_freed(tmp_path, small_disk):
    store = small_disk / "store"
    driver = _start_and_wait(_study_file(tmp_path, store, sleep=0.1), store, tmp_path)
    filler = small_disk / "filler"
    with open(filler, "wb") as handle, pytest.raises(OSError, match="No space left"):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    ids = _ended(driver, store, 2, "the disk is full", "free some space, then", torn_ok=True)
    filler.unlink()
    _resume_completes(store, tmp_path, ids, budget=max(BUDGET, len(ids) + 4))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """A ``ray start --head`` node with token authentication on (Ray's default when a token
    exists: here ``$HOME/.ray/auth_token`` of a fresh HOME); yields its port and environment."""
    root = tmp_path_factory.mktemp("cluster")
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(16))
    env = {**subprocess_env(), "HOME": str(home)}
    env.pop("RAY_AUTH_MODE", None)
    port = _free_port()
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats"], env=env, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: _answers(port) or head.poll() is not None, 120, "the head node")
        assert head.poll() is None, "ray start --head ended"
        yield port, env, head
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        kill_session(head.pid)


def _join(study: Path, port: int, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distopt", "run", str(study), "--no-progress",
                             "--address", f"127.0.0.1:{port}", *args], cwd=study.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_address_of_a_token_protected_cluster_works_as_ray_documents(tmp_path, token_cluster):
    """A driver with the cluster's token joins without setting RAY_AUTH_MODE (before: 20 lines
    of InvalidAuthToken and "start one with 'ray start --head'"); one without it is told
    exactly what to set, in one line, without Ray's 20 refusals (one a second) before it."""
    port, env, _ = token_cluster
    store = tmp_path / "store"
    joined = _join(_study_file(tmp_path, store, budget=6, sleep=0.0), port, env)
    _, stderr = joined.communicate(timeout=240)
    assert joined.returncode == 0, stderr
    assert_budget_reached(store, 6)

    stranger = {**env, "HOME": str(tmp_path / "elsewhere")}  # no token on this "machine"
    refused = _join(tmp_path / "study.yaml", port, stranger, "--store", str(tmp_path / "no"))
    _, stderr = refused.communicate(timeout=240)
    assert refused.returncode == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("distopt: error: address: cannot join"), stderr
    assert "RAY_AUTH_MODE=token" in last and "RAY_AUTH_TOKEN" in last
    assert "Traceback" not in stderr
    assert "InvalidAuthToken" not in stderr  # Ray's own retries never started
    assert not (tmp_path / "elsewhere" / ".ray" / "auth_token").exists()
    assert not (tmp_path / "no").exists()  # refused before a store folder was made


def test_the_head_node_dying_ends_with_a_resumable_store(tmp_path, token_cluster):
    """Runs last: it kills the cluster. Before, the driver was ended by Ray's core 15-61 s
    later with exit status 1 and one Ray log line."""
    port, env, head = token_cluster
    store = tmp_path / "store"
    driver = _join(_study_file(tmp_path, store), port, env)
    wait_for(lambda: n_rows(store) >= 4 or driver.poll() is not None, 180, "4 finished trials")
    assert driver.poll() is None, driver.communicate()
    os.killpg(head.pid, signal.SIGKILL)  # the whole head node at once
    started = time.monotonic()
    ids = _ended(driver, store, 2, "the Ray cluster", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 14  # before Ray's core would have ended the driver
    assert len(ids) >= 4


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
