"""A live Optuna copy of a store: ``sync_store`` adds each finished trial once, ``follow`` keeps
up with a search that is writing, and optuna-dashboard serves the copy as it grows."""

from __future__ import annotations

import json
import math
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


def finished_row(i: int, status: str | None = None) -> dict:
    """Trial ``i``'s row (FAILED when ``i % 7 == 6``, else COMPLETE, unless ``status``)."""
    x = (i * 0.37) % 1.0
    status = status or ("FAILED" if i % 7 == 6 else "COMPLETE")
    metrics = {} if status == "FAILED" else {"f1": x, "f2": (1 - x) ** 2, "g": x}
    return {"trial_id": i, "status": status, "config": {"x": x, "n": 1 + i % 4},
            "metrics": metrics, "error": "boom" if metrics == {} else None,
            "attempts": 1, "start_time": 1.7e9 + i, "end_time": 1.7e9 + i + 2.5,
            "worker": "w", "node_id": None}


def write(writer: StoreWriter, ids) -> None:
    """Finished trials ``ids`` as the orchestrator writes them: curve first, then the row."""
    rows = [finished_row(i) for i in ids]
    writer.add_curves([{"trial_id": i, "step": s, "time": 1.7e9 + i + s,
                        "f1": (i * 0.37) % 1.0 + 1 / (s + 1)} for i in ids for s in range(3)])
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
    assert "5 new trials synced to sqlite:///" in out and f"127.0.0.1:{port}" in out
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
    assert out == [f"4 new trials synced to {url}", f"0 new trials synced to {url}"]
    study = optuna.load_study(storage=url, study_name="store")
    assert distopt_ids(study) == [0, 1, 2, 3]
    for argv, field in [(["dashboard", str(tmp_path / "nowhere"), "--once"], ""),
                        (["dashboard", str(tmp_path / "store"), "--port", "70000"], "--port"),
                        (["dashboard", str(tmp_path / "store"), "--interval", "-1"],
                         "--interval"),
                        (["dashboard", str(tmp_path / "store"), "--once", "--storage",
                          "bogus://x"], "--storage: Optuna cannot open bogus://x"),
                        (["dashboard", str(tmp_path / "store"), "--once", "--storage",
                          f"sqlite:///{tmp_path / 'no' / 'such.db'}"], "--storage"),
                        (["dashboard", str(tmp_path / "nowhere"), "--once", "--storage",
                          f"sqlite:///{tmp_path / 'nowhere.db'}"], "")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"distopt: error: {field}") and err.count("\n") == 1, err
    assert not (tmp_path / "nowhere.db").exists()   # a bad store creates no storage


def test_dashboard_of_the_working_folder_and_syncs_that_repeat(tmp_path, capsys, caplog,
                                                              monkeypatch):
    """``distopt dashboard .`` inside the store names the storage and the study after the store
    (it wrote ``.optuna.db`` and a study named ''), and a sync that finds its study says nothing
    (Optuna's "Using an existing study" came once a second)."""
    from distopt.cli import main

    writer = new_writer(tmp_path / "store")
    write(writer, range(3))
    writer.close()
    monkeypatch.chdir(tmp_path / "store")
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level("INFO", logger="optuna"):
            assert main(["dashboard", ".", "--once"]) == 0
            caplog.clear()
            assert main(["dashboard", ".", "--once"]) == 0
    finally:
        optuna.logging.disable_propagation()
        optuna.logging.set_verbosity(level)
    assert not [r.getMessage() for r in caplog.records], "a repeated sync logged"
    url = f"sqlite:///{tmp_path / 'store.optuna.db'}"
    assert capsys.readouterr().out.splitlines() == [f"3 new trials synced to {url}",
                                                    f"0 new trials synced to {url}"]
    assert distopt_ids(optuna.load_study(storage=url, study_name="store")) == [0, 1, 2]


def test_dashboard_takes_quiet_like_every_command(tmp_path, capfd, monkeypatch):
    """-q after the command's own arguments, as README says every command takes it; errors only,
    so not Optuna's "A new study created" line either."""
    import logging

    from distopt import _logging
    from distopt.cli import main

    monkeypatch.delenv(_logging.ENV, raising=False)
    writer = new_writer(tmp_path / "store")
    write(writer, range(2))
    writer.close()
    url = f"sqlite:///{tmp_path / 'quiet.db'}"
    optuna_level, distopt_level = optuna.logging.get_verbosity(), logging.getLogger("distopt").level
    try:
        assert main(["dashboard", str(tmp_path / "store"), "--storage", url, "--once", "-q"]) == 0
    finally:
        optuna.logging.set_verbosity(optuna_level)
        _logging.set_verbosity(0)
        logging.getLogger("distopt").setLevel(distopt_level)
    assert capfd.readouterr() == (f"2 new trials synced to {url}\n", "")


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
    assert lines[0] == f"2 new trials synced to {url}\n", (lines, err)
    assert "pip install optuna-dashboard" in lines[1]
    assert lines[2].strip() == f"optuna-dashboard {url} --host 127.0.0.1 --port 8080"
    assert ids == list(range(5)), err
    assert process.returncode == 0, err


T0 = 1.7e9 + 100   # dispatch times of the running trials below


def dispatch(writer: StoreWriter, ids, attempt: int = 1) -> None:
    """Hand trials ``ids`` to workers as the orchestrator does (config as ``write`` gives it)."""
    writer.add_dispatched([{"trial_id": i, "attempt": attempt, "time": T0 + i,
                            "config": {"x": (i * 0.37) % 1.0, "n": 1 + i % 4}} for i in ids])


def report(writer: StoreWriter, trial_id: int, steps, attempt: int = 1) -> None:
    writer.add_curves([{"trial_id": trial_id, "step": s, "time": T0 + s, "attempt": attempt,
                        "f1": 10 * attempt + s + 0.5} for s in steps])


def by_distopt_id(study) -> dict[int, object]:
    from distopt.interop.optuna import TRIAL_ID

    trials = study.get_trials(deepcopy=False)
    ids = [t.user_attrs[TRIAL_ID] for t in trials]
    assert len(ids) == len(set(ids)), ids            # one Optuna trial per distopt trial
    return dict(zip(ids, trials, strict=True))


def test_a_running_trial_is_running_with_its_curve_then_finished_in_place(tmp_path):
    from distopt.interop.optuna import ATTEMPT, TRIAL_ID, export_store, sync_store

    url = f"sqlite:///{tmp_path / 'live.db'}"
    writer = new_writer(tmp_path / "store")
    try:
        write(writer, range(2))
        dispatch(writer, [2, 3])
        report(writer, 2, range(2))
        assert sync_store(tmp_path / "store", url) == 4     # 2 finished, 2 running
        trials = by_distopt_id(optuna.load_study(storage=url, study_name="store"))
        running = trials[2]
        assert running.state.name == "RUNNING" and trials[3].state.name == "RUNNING"
        assert running.params == {"x": pytest.approx(0.74), "n": 3}
        assert running.intermediate_values == {0: 10.5, 1: 11.5}
        assert trials[3].intermediate_values == {}
        assert running.values is None and running.user_attrs[ATTEMPT] == 1
        assert running.datetime_start.timestamp() == pytest.approx(T0 + 2)
        assert [trials[i].state.name for i in (0, 1)] == ["COMPLETE", "COMPLETE"]

        report(writer, 2, range(2, 4))                      # the curve grows
        assert sync_store(tmp_path / "store", url) == 0
        assert sync_store(tmp_path / "store", url) == 0
        trials = by_distopt_id(optuna.load_study(storage=url, study_name="store"))
        assert trials[2].number == running.number and trials[2].state.name == "RUNNING"
        assert trials[2].intermediate_values == {0: 10.5, 1: 11.5, 2: 12.5, 3: 13.5}

        writer.add_trials([finished_row(2), finished_row(3, "FAILED")])   # both finish
        assert sync_store(tmp_path / "store", url) == 0
        study = optuna.load_study(storage=url, study_name="store")
        trials = by_distopt_id(study)
        assert sorted(trials) == [0, 1, 2, 3] and len(study.trials) == 4
        done, failed = trials[2], trials[3]
        assert done.number == running.number and done.state.name == "COMPLETE"
        assert failed.state.name == "FAIL" and failed.user_attrs["distopt.error"] == "boom"
        assert done.datetime_complete is not None
        # The trials added finished straight away carry the same fields.
        exported = by_distopt_id(export_store(tmp_path / "store", url, "batch"))
        assert all(t.user_attrs[TRIAL_ID] == i for i, t in exported.items())
        for i in (2, 3):
            shown, batch = trials[i], exported[i]
            assert shown.values == batch.values and shown.params == batch.params
            assert shown.system_attrs == batch.system_attrs
            assert {k: v for k, v in shown.user_attrs.items() if k != ATTEMPT} == \
                batch.user_attrs
        assert done.intermediate_values == exported[2].intermediate_values == {
            0: 10.5, 1: 11.5, 2: 12.5, 3: 13.5}
        assert done.values == [pytest.approx(0.74), pytest.approx(0.26**2)]
        assert done.system_attrs["constraints"] == [pytest.approx(0.74 - 0.8)]
    finally:
        writer.close()


class CountingStorage(optuna.storages.InMemoryStorage):
    """Counts the writes to trials."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def create_new_trial(self, study_id, template_trial=None):
        self.writes += 1
        return super().create_new_trial(study_id, template_trial)

    def set_trial_intermediate_value(self, trial_id, step, intermediate_value):
        self.writes += 1
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id, key, value):
        self.writes += 1
        super().set_trial_user_attr(trial_id, key, value)

    def set_trial_state_values(self, trial_id, state, values=None):
        self.writes += 1
        return super().set_trial_state_values(trial_id, state, values)


def test_a_sync_writes_only_what_changed(tmp_path):
    from distopt.interop.optuna import sync_store

    storage = CountingStorage()
    writer = new_writer(tmp_path / "store")
    try:
        write(writer, range(3))
        dispatch(writer, [3])
        report(writer, 3, range(5))
        assert sync_store(tmp_path / "store", storage) == 4
        assert storage.writes == 4                           # one new trial each
        storage.writes = 0
        assert sync_store(tmp_path / "store", storage) == 0
        assert storage.writes == 0
        report(writer, 3, [5])
        assert sync_store(tmp_path / "store", storage) == 0
        assert storage.writes == 1                           # the new step
    finally:
        writer.close()


def test_trials_in_flight_when_a_search_stopped_wait_for_its_resume(tmp_path, capsys):
    from distopt.cli import main
    from distopt.interop.optuna import ATTEMPT, INTERRUPTED, sync_store

    url = f"sqlite:///{tmp_path / 'live.db'}"
    writer = new_writer(tmp_path / "store")
    write(writer, [0])
    dispatch(writer, [1, 2])
    report(writer, 1, range(3))
    assert sync_store(tmp_path / "store", url) == 3
    running = by_distopt_id(optuna.load_study(storage=url, study_name="store"))[1]
    assert running.state.name == "RUNNING"
    writer.close()          # the search stops (Ctrl-C, or a crash: the kernel drops the lock)

    assert sync_store(tmp_path / "store", url) == 0
    trials = by_distopt_id(optuna.load_study(storage=url, study_name="store"))
    assert [trials[i].state.name for i in (0, 1, 2)] == ["COMPLETE", "WAITING", "WAITING"]
    assert trials[1].number == running.number and trials[1].user_attrs[INTERRUPTED] is True
    assert trials[1].intermediate_values == {0: 10.5, 1: 11.5, 2: 12.5}   # what it reported
    # A dashboard started on the stopped search never shows them running either.
    once = f"sqlite:///{tmp_path / 'once.db'}"
    assert main(["dashboard", str(tmp_path / "store"), "--storage", once, "--once"]) == 0
    assert capsys.readouterr().out == f"3 new trials synced to {once}\n"
    fresh = by_distopt_id(optuna.load_study(storage=once, study_name="store"))
    assert {i: t.state.name for i, t in fresh.items()} == {0: "COMPLETE", 1: "WAITING",
                                                           2: "WAITING"}
    assert fresh[2].user_attrs[INTERRUPTED] is True and fresh[2].intermediate_values == {}

    writer = new_writer(tmp_path / "store")     # resumed: the in-flight trials run again
    try:
        dispatch(writer, [1, 2], attempt=2)
        report(writer, 1, [0], attempt=2)       # the second attempt restarts the curve
        assert sync_store(tmp_path / "store", url) == 0
        trials = by_distopt_id(optuna.load_study(storage=url, study_name="store"))
        again = trials[1]
        assert again.number == running.number and again.state.name == "RUNNING"
        assert again.user_attrs[INTERRUPTED] is False and again.user_attrs[ATTEMPT] == 2
        assert again.intermediate_values[0] == 20.5
        assert all(math.isnan(again.intermediate_values[s]) for s in (1, 2))
        report(writer, 1, [1], attempt=2)
        writer.add_trials([finished_row(1), finished_row(2, "PRUNED")])
        assert sync_store(tmp_path / "store", url) == 0
        assert sync_store(tmp_path / "store", once) == 0
    finally:
        writer.close()
    for storage in (url, once):
        study = optuna.load_study(storage=storage, study_name="store")
        trials = by_distopt_id(study)
        assert len(study.trials) == 3
        assert [trials[i].state.name for i in (0, 1, 2)] == ["COMPLETE", "COMPLETE", "PRUNED"]
        assert trials[1].values == [pytest.approx(0.37), pytest.approx(0.63**2)]
        assert trials[1].user_attrs[INTERRUPTED] is False
        # the last attempt's curve; the first attempt's step 2, which it did not reach, is NaN
        curve = trials[1].intermediate_values
        assert curve[0] == 20.5 and curve[1] == 21.5 and math.isnan(curve[2])
    # Imported back, the blank is not a curve row: the trial's curve is its last attempt's.
    from distopt.interop.optuna import import_study

    back = import_study(url, "store", tmp_path / "back")
    curve = back.curves(1)
    assert curve["step"].to_pylist() == [0, 1] and curve["f1"].to_pylist() == [20.5, 21.5]


def test_the_dashboard_lists_a_running_trial_with_its_curve(tmp_path):
    pytest.importorskip("optuna_dashboard")
    from distopt.interop.optuna import dashboard_server, sync_store

    url = f"sqlite:///{tmp_path / 'live.db'}"
    writer = new_writer(tmp_path / "store")
    server = dashboard_server(url, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        write(writer, [0])
        dispatch(writer, [1])
        report(writer, 1, range(3))
        sync_store(tmp_path / "store", url)
        trials = dashboard_trials(server.server_port, "store")
        assert [t["state"] for t in trials] == ["Complete", "Running"]
        assert [v["value"] for v in trials[1]["intermediate_values"]] == [10.5, 11.5, 12.5]
        assert {p["name"]: p["param_internal_value"] for p in trials[1]["params"]} == \
            {"x": pytest.approx(0.37), "n": 2}
    finally:
        writer.close()
        server.shutdown()
        server.server_close()
        thread.join(30)
