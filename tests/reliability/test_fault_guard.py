"""The fault guard without Ray: which errors become one resumable line, SIGTERM as a clean stop,
and the signal handlers left as they were found. (The faults injected for real, with Ray and a
full disk, are in ``test_infra_faults.py``.)"""

from __future__ import annotations

import errno
import os
import signal
import threading

import pytest

from distopt import DistoptError
from distopt._faults import (
    InfrastructureError,
    Terminated,
    disk_full,
    guard,
    ray_lost,
    shielded,
)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """``runs/s`` is a store (it has a study.json) inside the test's own folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "study.json").write_text("{}")


def _raise_while_closing(first: OSError, second: OSError) -> None:
    try:
        raise first
    finally:
        raise second  # a close that fails too, as a full disk does


def test_a_full_disk_anywhere_in_the_chain_is_one_resumable_line():
    full = OSError(errno.ENOSPC, "No space left on device", "runs/s/trials/part-00000.arrow")
    with pytest.raises(InfrastructureError) as caught, guard("runs/s"):
        _raise_while_closing(full, OSError(errno.EBADF, "Bad file descriptor"))
    message = str(caught.value)
    assert isinstance(caught.value, DistoptError) and "\n" not in message
    assert message.startswith("the disk is full (No space left on device writing runs/s/trials")
    assert message.endswith("free some space, then continue with: distopt resume runs/s")
    assert caught.value.__suppress_context__  # no chained traceback


@pytest.mark.parametrize("error, full", [
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError("IOError: No space left on device"), True),  # pyarrow: no errno, the text says it
    (OSError(errno.EACCES, "Permission denied"), False),
    (FileNotFoundError(errno.ENOENT, "No such file"), False),
])
def test_which_os_errors_mean_a_full_disk(error, full):
    assert (disk_full(error) is error) is full


def test_other_errors_pass_through_unchanged():
    denied = PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(PermissionError) as caught, guard("runs/s"):
        raise denied
    assert caught.value is denied
    with pytest.raises(ValueError, match="user"), guard("runs/s"):
        raise ValueError("user")


def test_sigterm_inside_the_guard_is_a_keyboard_interrupt_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(Terminated) as caught, guard("runs/s"):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes of the main thread
                pass
        finally:
            cleaned.append(True)  # the finally blocks of the search run, as for Ctrl-C
    assert isinstance(caught.value, KeyboardInterrupt) and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_lost_ray_reported_from_another_thread_ends_as_one_line():
    with pytest.raises(InfrastructureError) as caught, guard("runs/s"):
        thread = threading.Thread(target=ray_lost, args=("the embedded Ray's raylet died",))
        thread.start()
        thread.join()
        for _ in range(100000):
            pass
    assert str(caught.value) == ("the embedded Ray's raylet died; finished trials are safe in "
                                 "runs/s; continue with: distopt resume runs/s")
    assert ray_lost("again, outside any guard") is False  # nothing to interrupt


def test_ray_turning_the_interrupt_into_a_plain_keyboard_interrupt_keeps_the_cause():
    """Ray's ``ray.wait`` re-raises a handler's exception as a bare KeyboardInterrupt."""
    with pytest.raises(Terminated), guard("runs/s"):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        except Terminated:
            raise KeyboardInterrupt from None


def test_shielded_ignores_ctrl_c_and_sigterm_then_restores_them():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with shielded():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize("mode, sends", [("token", True), ("disabled", False)])
def test_an_explicit_ray_auth_mode_is_respected_when_joining(monkeypatch, mode, sends):
    from distopt._ray import use_cluster_token

    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    assert use_cluster_token("127.0.0.1:6379") is sends  # not asked: the mode decides
    assert os.environ["RAY_AUTH_MODE"] == mode


def test_a_cluster_that_answers_without_a_token_is_joined_without_one(monkeypatch):
    """A driver in token mode refuses a token-less cluster's calls back to it (every worker's
    creation cancelled): this machine's token goes only to a cluster that asks for one."""
    import distopt._ray as ray_setup

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a" * 64)  # a token this machine would send
    monkeypatch.setattr(ray_setup, "_probe", lambda address: True)  # it answers without one
    assert ray_setup.use_cluster_token("10.0.0.1:6379") is False
    assert "RAY_AUTH_MODE" not in os.environ


def test_a_fault_before_the_store_exists_says_to_run_again():
    with pytest.raises(InfrastructureError) as caught, guard("runs/new"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value).endswith("nothing was stored in runs/new yet; free some space, then "
                                      "run the study again")


def test_ray_failing_itself_is_one_resumable_line():
    from ray.exceptions import RayTaskError, RpcError

    with pytest.raises(InfrastructureError) as caught, guard("runs/s"):
        try:
            raise RpcError("Timed out while waiting for GCS to become available.\nmore")
        except RpcError as error:
            raise RuntimeError("while creating an actor") from error
    assert str(caught.value) == ("the Ray cluster failed (RpcError: Timed out while waiting for "
                                 "GCS to become available.); finished trials are safe in runs/s; "
                                 "continue with: distopt resume runs/s")
    with pytest.raises(RayTaskError), guard("runs/s"):  # an objective's error is not Ray's
        raise RayTaskError("f", "traceback", ValueError("bad"))


def test_ctrl_c_that_also_stops_the_embedded_ray_is_not_reported_as_a_fault():
    """A terminal's Ctrl-C reaches Ray's GCS and raylet too; their death is then no fault."""
    with pytest.raises(KeyboardInterrupt) as caught, guard("runs/s"):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        finally:
            assert ray_lost("the embedded Ray's gcs_server (pid 1) died") is False
    assert type(caught.value) is KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("stop", [SystemExit(signal.SIGTERM), Terminated()])
def test_a_sigterm_while_ray_starts_is_a_clean_terminated(monkeypatch, stop):
    """Ray's handler, installed inside ray.init, exits 15 without a word; distopt's raises
    Terminated. Either way what Ray started is stopped and the CLI gets Terminated (exit 143)."""
    import ray

    from distopt import _ray

    def init(**kwargs):
        raise stop

    stopped = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(_ray, "bounded_shutdown", lambda: stopped.append(True))
    with pytest.raises(Terminated), _ray.ray_session(None, workers=1, resources={"cpu": 1}):
        pass
    assert stopped == [True]


def test_the_cli_names_no_resume_for_a_store_never_made(tmp_path, monkeypatch, capsys):
    from distopt import _studyfile, cli

    (tmp_path / "study.yaml").write_text(
        "objective: distopt.examples:two_bowls\nspace: {x: {type: float, low: 0, high: 1}}\n"
        "objectives: {f1: min, f2: min}\nstore: runs/new\nbudget: 2\n")

    def optimize(self, **overrides):
        raise Terminated

    monkeypatch.setattr(_studyfile.StudyFile, "optimize", optimize)
    assert cli.main(["run", str(tmp_path / "study.yaml"), "--no-progress"]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        "terminated (SIGTERM): nothing was stored in runs/new yet; run the study again"]
