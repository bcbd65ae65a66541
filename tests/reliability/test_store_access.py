"""Access faults injected for real, without Ray: a store on a read-only mount (reading, showing,
plotting and exporting need no write access), readers hammering the lock while a writer opens
(never refused), and a writer SIGKILLed mid-compaction (its temporary file removed on open)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pyarrow.compute as pc
import pytest

import distopt
from distopt.store import StoreWriter
from distopt.store._lock import StoreLock

from ._util import subprocess_env

SPACE = {"x": distopt.Float(0.0, 1.0)}
OBJECTIVES = {"f1": "min", "f2": "min"}


def _metadata() -> dict:
    return distopt.Study(SPACE, OBJECTIVES, store="unused").metadata({})


def _row(trial_id: int) -> dict:
    return {"trial_id": trial_id, "status": "COMPLETE", "config": {"x": trial_id / 10},
            "metrics": {"f1": trial_id / 10, "f2": 1 - trial_id / 10},
            "start_time": 1.0 + trial_id, "end_time": 2.0 + trial_id}


def _curve(trial_id: int, step: int, attempt: int) -> dict:
    return {"trial_id": trial_id, "step": step, "time": 1.0 + step, "attempt": attempt,
            "f1": trial_id + step / 10}


def _write(path: Path, n: int, writer: StoreWriter | None = None) -> StoreWriter:
    writer = writer or StoreWriter(path, _metadata())
    for i in range(n):
        writer.add_curves([_curve(i, 0, 1), _curve(i, 1, 1)])
        writer.add_trials([_row(i)])
    return writer


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@contextlib.contextmanager
def read_only_mount(source: Path, target: Path):
    """``source`` mounted read-only at ``target`` (refused even to root); skip where mounting
    is not allowed."""
    target.mkdir()
    bind = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(target)],
                                 capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        with pytest.raises(OSError):
            (target / "probe").write_text("x")
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("state", ["closed", "being written"])
def test_a_read_only_store_is_read_shown_plotted_and_exported(tmp_path, state, capsys):
    """``being written``: a copy taken while a writer held the store (parts, a journal, and a
    LOCK naming a live process)."""
    source = tmp_path / "store"
    writer = _write(source, 6)
    writer.add_curves([_curve(2, 0, 2)])  # trial 2 ran again: its second attempt's curve
    if state == "closed":
        writer.close()
    else:
        writer.add_trials([_row(6)])  # in the journal, not yet published
        assert list(source.glob("trials/.journal-*"))
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    before = _files(copy)
    if state != "closed":
        writer.close()
    expected = 6 if state == "closed" else 7
    with read_only_mount(copy, tmp_path / "ro") as store, warnings.catch_warnings():
        warnings.simplefilter("error")
        reader = distopt.open_store(store)
        assert reader.trials()["trial_id"].to_pylist() == list(range(expected))
        curves = reader.curves()
        assert curves.filter(pc.equal(curves["trial_id"], 2)).num_rows == 1  # attempt 2's row
        assert reader.curves(all_attempts=True).num_rows == curves.num_rows + 2
        assert reader.dispatched().num_rows == 0  # none: like trials() and curves(), a table
        assert reader.pareto_front().num_rows >= 1 and reader.hypervolume() >= 0.0
        assert StoreLock.is_held(store) == (state != "closed")

        from distopt.cli import main
        assert main(["show", str(store), "--format", "json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown  # the front, as JSON

        from distopt import plot
        written = plot.save_all(store, tmp_path / "plots")
        assert written and all(p.stat().st_size > 0 for p in written)

        import optuna

        from distopt.interop.optuna import export_store
        study = export_store(store, optuna.storages.InMemoryStorage())
        assert len(study.trials) == expected
    assert _files(copy) == before  # and nothing changed under the mount


def test_readers_never_take_the_lock(tmp_path, monkeypatch):
    """A reader that called ``flock`` could make a writer opening at that moment be refused."""
    path = tmp_path / "store"
    _write(path, 3).close()
    writer = StoreWriter(path, _metadata())

    def no_flock(*args, **kwargs):
        raise AssertionError("a reader took the lock")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    reader = distopt.open_store(path)
    assert StoreLock.is_held(path)
    assert reader.trials().num_rows == 3 and reader.curves().num_rows == 6
    monkeypatch.undo()
    writer.close()
    assert not StoreLock.is_held(path)


HAMMER = textwrap.dedent("""
    import sys, time, distopt
    from pathlib import Path
    from distopt.store._lock import StoreLock
    path = Path(sys.argv[1])
    print("ready", flush=True)
    deadline = time.monotonic() + 300  # bounded; killed as soon as the writer is done
    while time.monotonic() < deadline:
        if sys.argv[2] == "probe":  # as tight as it gets
            StoreLock.is_held(path)
        else:
            distopt.open_store(path).trials()
""")


def test_readers_hammering_the_lock_never_refuse_a_writer(tmp_path):
    """Probing by taking the lock for an instant (as readers did) had about half of these
    openings refused on the development machine."""
    path = tmp_path / "store"
    _write(path, 3).close()
    script = tmp_path / "hammer.py"
    script.write_text(HAMMER)
    readers = [subprocess.Popen([sys.executable, str(script), str(path), mode],
                                env=subprocess_env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for mode in ("probe", "read")]
    try:
        for reader in readers:
            assert reader.stdout.readline().strip() == "ready"
        refused = 0
        for _ in range(150):  # bounded: each open and close races the readers' probes
            try:
                StoreWriter(path, _metadata()).close()
            except distopt.StoreError:
                refused += 1
        for reader in readers:
            assert reader.poll() is None, reader.communicate()
    finally:
        for reader in readers:
            reader.kill()
            reader.wait(timeout=30)
            reader.stdin.close()
            reader.stdout.close()
    assert refused == 0


KILLED_COMPACTION = textwrap.dedent("""
    import os, signal, sys
    import distopt
    from distopt.store import StoreWriter, _parts, _table

    _table.PUBLISH_INTERVAL = 0.0
    import distopt.store._writer as writer_module
    writer_module.PUBLISH_INTERVAL = 0.0
    real_replace = os.replace

    def replace(src, dst):  # die as the merged part of the closing compaction is renamed in
        name = os.path.basename(str(dst))
        if name.startswith("part-") and name[5:13] != name[14:22]:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    _parts.os.replace = replace
    study = distopt.Study({"x": distopt.Float(0.0, 1.0)}, {"f1": "min", "f2": "min"},
                          store=sys.argv[1])
    writer = StoreWriter(sys.argv[1], study.metadata({}))
    for i in range(20):
        writer.add_trials([{"trial_id": i, "status": "COMPLETE", "config": {"x": i / 20},
                            "metrics": {"f1": i / 20, "f2": 1 - i / 20}}])
    writer.close()
""")


def test_a_compaction_killed_midway_leaves_a_temporary_file_the_next_writer_removes(tmp_path):
    path = tmp_path / "store"
    script = tmp_path / "killed.py"
    script.write_text(KILLED_COMPACTION)
    process = subprocess.run([sys.executable, str(script), str(path)], env=subprocess_env(),
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr
    [tmp] = list((path / "trials").glob(".*.tmp"))
    assert tmp.name.startswith(".part-00000000-00000019-")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert distopt.open_store(path).trials()["trial_id"].to_pylist() == list(range(20))
        StoreWriter(path, _metadata()).close()
    assert not [p for p in path.rglob("*.tmp")]
    assert [p.name[:22] for p in (path / "trials").iterdir()] == ["part-00000000-00000019"]
    assert distopt.open_store(path).trials()["trial_id"].to_pylist() == list(range(20))
    assert os.listdir(path / "dispatched") == []
