"""A live Optuna copy of a store: ``sync_store`` adds each finished trial once, ``follow`` keeps
up with a search that is writing, and optuna-dashboard serves the copy as it grows."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import distopt
from distopt.store import StoreWriter

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]


def new_writer(path) -> StoreWriter:
    study = distopt.Study({"x": distopt.Float(0.0, 1.0), "n": distopt.Int(1, 4)},
                          {"f1": "min", "f2": "min"}, {"g": ("<=", 0.8)})
    return StoreWriter(path, study.metadata({}))


def write(writer: StoreWriter, ids) -> None:
    """Finished trials ``ids`` as the orchestrator writes them: curve first, then the row."""
    curves, rows = [], []
    for i in ids:
        x = (i * 0.37) % 1.0
        status = "FAILED" if i % 7 == 6 else "COMPLETE"
        metrics = {} if status == "FAILED" else {"f1": x, "f2": (1 - x) ** 2, "g": x}
        curves += [{"trial_id": i, "step": s, "time": 1.7e9 + i + s, "f1": x + 1 / (s + 1)}
                   for s in range(3)]
        rows.append({"trial_id": i, "status": status, "config": {"x": x, "n": 1 + i % 4},
                     "metrics": metrics, "error": "boom" if metrics == {} else None,
                     "attempts": 1, "start_time": 1.7e9 + i, "end_time": 1.7e9 + i + 2.5,
                     "worker": "w", "node_id": None})
    writer.add_curves(curves)
    writer.add_trials(rows)


def distopt_ids(study) -> list[int]:
    from distopt.interop.optuna import TRIAL_ID

    return sorted(t.user_attrs[TRIAL_ID] for t in study.get_trials(deepcopy=False))


def test_sync_adds_each_finished_trial_once(tmp_path):
    from distopt.interop.optuna import export_store, sync_store

    url = f"sqlite:///{tmp_path / 'live.db'}"
    writer = new_writer(tmp_path / "store")
    try:
        assert sync_store(tmp_path / "store", url) == 0        # the study exists, empty
        write(writer, range(10))
        assert sync_store(tmp_path / "store", url) == 10
        assert sync_store(tmp_path / "store", url) == 0        # idempotent
        write(writer, range(10, 27))
        assert sync_store(tmp_path / "store", url, study_name="store") == 17
        # export with load_if_exists no longer appends every trial again (27 -> 51 before)
        study = export_store(tmp_path / "store", url, load_if_exists=True)
    finally:
        writer.close()
    assert distopt_ids(study) == list(range(27))
    trials = sorted(study.trials, key=lambda t: t.number)
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in trials)
    assert [t.state.name for t in trials].count("FAIL") == 3          # ids 6, 13, 20
    assert study.metric_names == ["f1", "f2"]
    front = {t.user_attrs["distopt.trial_id"] for t in study.best_trials}
    assert front == set(distopt.open_store(tmp_path / "store").pareto_front()["trial_id"]
                        .to_pylist())
    study = distopt.Study({"z": distopt.Float(0.0, 1.0)}, {"f1": "min", "f2": "min"})
    StoreWriter(tmp_path / "another", study.metadata({})).close()
    with pytest.raises(distopt.ConfigError, match="study_name: .*holds another distopt study"):
        sync_store(tmp_path / "another", url, study_name="store")
    other = optuna.create_study(storage=url, study_name="other", direction="maximize")
    with pytest.raises(distopt.ConfigError, match="study_name: .*directions"):
        sync_store(tmp_path / "store", url, study_name=other.study_name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def dashboard_trials(port: int, name: str) -> list[dict] | None:
    """The trials optuna-dashboard's API lists for study ``name`` (None before it exists)."""
    studies = get(port, "/api/studies")["study_summaries"]
    ids = [s["study_id"] for s in studies if s["study_name"] == name]
    return get(port, f"/api/studies/{ids[0]}")["trials"] if ids else None


def test_follow_and_the_dashboard_show_a_growing_search(tmp_path):
    pytest.importorskip("optuna_dashboard")
    from distopt.interop.optuna import dashboard_server, follow

    url = f"sqlite:///{tmp_path / 'live.db'}"
    writer = new_writer(tmp_path / "store")
    write(writer, range(3))
    done, watched = threading.Event(), threading.Event()

    def search() -> None:   # once the dashboard shows its start, 3 more trials every 0.8 s
        watched.wait(60)
        for start in range(3, 15, 3):
            time.sleep(0.8)
            write(writer, range(start, start + 3))
        writer.close()
        done.set()

    stop = threading.Event()
    added: list[int] = []
    server = dashboard_server(url, "127.0.0.1", 0)
    threads = [threading.Thread(target=search),
               threading.Thread(target=lambda: added.append(follow(tmp_path / "store", url, 0.1,
                                                                   stop))),
               threading.Thread(target=server.serve_forever)]
    for thread in threads:
        thread.start()
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            trials = dashboard_trials(server.server_port, "store")
            if trials:
                seen.append(len(trials))
                watched.set()
                numbers = [t["number"] for t in trials]
                assert len(set(numbers)) == len(numbers)
                if done.is_set() and len(trials) == 15:
                    break
            time.sleep(0.5)
    finally:
        stop.set()
        done.wait(30)
        server.shutdown()
        server.server_close()
        for thread in threads:
            thread.join(30)
    assert seen and seen[-1] == 15, seen
    assert seen == sorted(seen) and len(set(seen)) >= 2, seen   # grew while it was watched
    assert added == [15]
    study = optuna.load_study(storage=url, study_name="store")
    assert distopt_ids(study) == list(range(15))
    assert all(len(t["intermediate_values"]) == 3 for t in trials)


def run_cli(*args: str, pythonpath: str | None = None) -> subprocess.Popen:
    """``python -m distopt ARGS`` with this checkout (and ``pythonpath`` first) importable."""
    paths = [p for p in (pythonpath, str(ROOT), os.environ.get("PYTHONPATH")) if p]
    # Ctrl-C must reach it as it does from a terminal, even when the suite itself was started
    # in the background by a shell without job control, which starts it with SIGINT ignored
    # (a disposition children inherit, and Python then keeps).
    return subprocess.Popen([sys.executable, "-m", "distopt", *args], text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_distopt_dashboard_command(tmp_path):
    pytest.importorskip("optuna_dashboard")
    writer = new_writer(tmp_path / "store")
    write(writer, range(5))
    port = free_port()
    process = run_cli("dashboard", str(tmp_path / "store"), "--port", str(port),
                      "--interval", "0.2")
    try:
        trials, wrote, deadline = None, False, time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                trials = dashboard_trials(port, "store")
            except OSError:
                trials = None   # not listening yet
            if trials is not None and len(trials) == 5 and not wrote:
                write(writer, range(5, 8))   # the search goes on while the dashboard runs
                wrote = True
            if trials is not None and len(trials) == 8:
                break
            time.sleep(0.5)
    finally:
        writer.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert trials is not None and len(trials) == 8, (out, err)
    assert process.returncode == 0, err
    assert "5 trials synced to sqlite:///" in out and f"127.0.0.1:{port}" in out
    assert (tmp_path / "store.optuna.db").exists()


def test_dashboard_once_and_bad_input(tmp_path, capsys):
    from distopt.cli import main

    writer = new_writer(tmp_path / "store")
    write(writer, range(4))
    writer.close()
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert main(["dashboard", str(tmp_path / "store"), "--storage", url, "--once"]) == 0
    assert main(["dashboard", str(tmp_path / "store"), "--storage", url, "--once"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"4 trials synced to {url}", f"0 trials synced to {url}"]
    study = optuna.load_study(storage=url, study_name="store")
    assert distopt_ids(study) == [0, 1, 2, 3]
    for argv, field in [(["dashboard", str(tmp_path / "nowhere"), "--once"], ""),
                        (["dashboard", str(tmp_path / "store"), "--port", "70000"], "--port"),
                        (["dashboard", str(tmp_path / "store"), "--interval", "-1"],
                         "--interval")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"distopt: error: {field}") and err.count("\n") == 1, err


def test_dashboard_without_optuna_dashboard_says_how_to_start_it(tmp_path):
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "optuna_dashboard.py").write_text(
        "raise ImportError('not installed, for this test')\n")
    writer = new_writer(tmp_path / "store")
    write(writer, range(2))
    process = run_cli("dashboard", str(tmp_path / "store"), "--interval", "0.2",
                      pythonpath=str(tmp_path / "shadow"))
    url = f"sqlite:///{tmp_path / 'store.optuna.db'}"
    try:
        lines = [process.stdout.readline() for _ in range(3)]   # bounded: 3 lines, then follows
        write(writer, range(2, 5))
        ids, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None and len(ids) < 5:
            time.sleep(0.3)
            ids = distopt_ids(optuna.load_study(storage=url, study_name="store"))
    finally:
        writer.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert lines[0] == f"2 trials synced to {url}\n", (lines, err)
    assert "pip install optuna-dashboard" in lines[1]
    assert lines[2].strip() == f"optuna-dashboard {url} --host 127.0.0.1 --port 8080"
    assert ids == list(range(5)), err
    assert process.returncode == 0, err
