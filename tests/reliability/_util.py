"""Helpers of the reliability tests: raw store reads, subprocess drivers, process clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

import distopt

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent


def raw_rows(store: Path, table: str = "trials") -> pa.Table | None:
    """Every row of every part and journal exactly as on disk (no de-duplication of trials, no
    warning)."""
    from distopt.store._rows import read_rows

    return read_rows(Path(store) / table, live=True, report=lambda message: None)


def raw_ids(store: Path, table: str = "trials") -> list[int]:
    """Trial ids of every row on disk, duplicates kept."""
    rows = raw_rows(store, table)
    return [] if rows is None else rows["trial_id"].to_pylist()


def n_rows(store: Path) -> int:
    """Finished trials in a store being written (0 while it has no metadata yet)."""
    if not (Path(store) / "study.json").exists():
        return 0
    try:
        return distopt.open_store(store).trials().num_rows
    except distopt.StoreError:
        return 0


def assert_budget_reached(store: Path, budget: int) -> pa.Table:
    """The store holds exactly ``budget`` trials, with unique ids on disk; returns them."""
    ids = raw_ids(store)
    assert len(ids) == len(set(ids)), f"duplicate trial ids on disk: {sorted(ids)}"
    assert len(ids) == budget, f"{len(ids)} trial rows on disk; budget {budget}"
    table = distopt.open_store(store).trials()
    assert table.num_rows == budget
    return table


def subprocess_env() -> dict[str, str]:
    """Environment of a driver subprocess: ``reliability.faulty`` importable, quiet Ray."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(REPO),
                                                    env.get("PYTHONPATH", "")) if p)
    env.pop("RAY_ADDRESS", None)  # the driver must start its own embedded Ray
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """``python -m distopt ARGS`` in a new session (its embedded Ray shares that session id)."""
    return subprocess.Popen([sys.executable, "-m", "distopt", *args], cwd=cwd,
                            env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def session_processes(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``: the driver and the Ray it started."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != sid:
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (ProcessLookupError, FileNotFoundError, PermissionError, OSError):
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.append(pid)
    return out


def kill_session(sid: int, sig: int = signal.SIGKILL, timeout: float = 20.0) -> list[int]:
    """SIGKILL every process of session ``sid`` until none is left; return the pids that had
    survived the driver's own death (Ray processes a SIGKILLed driver cannot stop)."""
    try:
        os.killpg(sid, sig)
    except ProcessLookupError:
        pass
    leaked: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = session_processes(sid)
        if not alive:
            return leaked
        for pid in alive:
            if pid not in leaked:
                leaked.append(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"processes of session {sid} survive SIGKILL: {session_processes(sid)}")


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.1) -> None:
    """Poll ``predicate()`` until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sleepy_study_file(folder: Path, store: Path, budget: int = 200,
                      sleep: float = 0.2) -> Path:
    """A study file of ``reliability.faulty:sleepy`` trials (random, 2 workers) into ``store``."""
    study = folder / "study.yaml"
    study.write_text(textwrap.dedent(f"""
        objective: "reliability.faulty:sleepy"
        space:
          x: {{type: float, low: 0.0, high: 1.0}}
          sleep: {sleep}
        objectives: {{f1: min, f2: min}}
        strategy: random
        budget: {budget}
        workers: 2
        store: {store}
    """))
    return study
