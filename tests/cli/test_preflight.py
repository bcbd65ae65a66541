"""Checks before anything is written: the store path, and which one field of a study changed."""

from __future__ import annotations

from pathlib import Path

import pytest

import distopt
from distopt import ConfigError, Float, Int, Problem
from distopt._preflight import check_store_path, study_difference
from distopt.store import StoreWriter


def metadata(problem: Problem) -> dict:
    return {"problem": problem.to_dict(), "config_types": problem.space.arrow_types(),
            "metric_order": problem.metric_names}


def test_usable_store_paths_pass(tmp_path):
    check_store_path(tmp_path)                       # an existing folder
    check_store_path(tmp_path / "new" / "deeper")   # folders to create
    assert not (tmp_path / "new").exists()           # and nothing was made


def test_a_path_under_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"^store: .*afile.txt/sub is under .*afile.txt, which "
                                          r"is a file; give a folder path that is not inside a "
                                          r"file$"):
        check_store_path(afile / "sub")
    with pytest.raises(ConfigError, match=r"^store: .*afile.txt is a file, not a folder; give a "
                                          r"folder path$"):
        check_store_path(afile)


def test_an_unwritable_parent_is_refused(tmp_path, monkeypatch):
    """os.access stands in for permissions: the tests may run as root, who may write anywhere."""
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr("distopt._preflight.os.access", lambda path, mode: Path(path) != locked)
    with pytest.raises(ConfigError, match=r"^store: cannot create .*locked/store/deeper: "
                                          r".*locked is not writable by this user; choose a "
                                          r"folder you can write$"):
        check_store_path(locked / "store" / "deeper")
    with pytest.raises(ConfigError, match=r"^store: .*locked is not writable by this user"):
        check_store_path(locked)
    check_store_path(tmp_path / "open")


def test_a_nul_byte_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^store: .* is not a usable path"):
        check_store_path(str(tmp_path / "a\0b"))


def test_study_difference_names_one_field():
    space = {"lr": Float(1e-4, 0.1, log=True), "width": Int(8, 64)}
    old = Problem(space, {"loss": "min", "params": "min"}, {"g": ("<=", 1.0)})
    assert study_difference(metadata(old), metadata(old)) is None
    high = Problem({**space, "lr": Float(1e-4, 0.2, log=True)}, {"loss": "min", "params": "min"},
                   {"g": ("<=", 1.0)})
    assert study_difference(metadata(old), metadata(high)) == "space.lr.high: stored 0.1, given 0.2"
    direction = Problem(space, {"loss": "min", "params": "max"}, {"g": ("<=", 1.0)})
    assert study_difference(old.to_dict(), direction.to_dict()) == \
        "objectives.params: stored 'min', given 'max'"
    bound = Problem(space, {"loss": "min", "params": "min"}, {"g": ("<=", 2.0)})
    assert study_difference(old.to_dict(), bound.to_dict()) == \
        "constraints.g[1]: stored 1.0, given 2.0"
    more = Problem({**space, "drop": Float(0, 0.5)}, {"loss": "min", "params": "min"},
                   {"g": ("<=", 1.0)})
    assert study_difference(old.to_dict(), more.to_dict()).startswith(
        "space.drop: not in the stored study, given ")


def test_the_store_refusal_names_the_one_difference(tmp_path):
    old = Problem({"x": Float(0, 1), "y": Float(0, 1)}, {"f1": "min", "f2": "min"})
    new = Problem({"x": Float(0, 1), "y": Float(0, 2)}, {"f1": "min", "f2": "min"})
    StoreWriter(tmp_path / "s", metadata(old)).close()
    with pytest.raises(distopt.StoreError) as info:
        StoreWriter(tmp_path / "s", metadata(new))
    message = str(info.value)
    assert "holds a different study: space.y.high: stored 1.0, given 2.0; use a new store" \
        in message
    assert "\n" not in message and "'x'" not in message   # not the whole space


def test_a_folder_of_other_files_is_not_a_store(tmp_path):
    """The store is never written in among a user's files (an empty --store was the working
    directory); a store's own folder, even one cut short before its study.json, is fine."""
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match=r"^store: .* holds other files \(data, notes.txt\) and "
                                          r"no study; give a new or empty folder"):
        check_store_path(tmp_path)
    StoreWriter(tmp_path / "s", metadata(Problem({"x": Float(0, 1)}, {"f": "min"}))).close()
    (tmp_path / "s" / "notes.txt").write_text("a store may hold a user's notes")
    check_store_path(tmp_path / "s")
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "LOCK").write_text("")
    (cut / "trials").mkdir()
    check_store_path(cut)
    # a store whose study.json is gone: its trials would be taken for whatever study runs next
    lost = tmp_path / "lost"
    StoreWriter(lost, metadata(Problem({"x": Float(0, 1)}, {"f": "min"}))).close()
    (lost / "dispatched").mkdir(exist_ok=True)
    (lost / "dispatched" / "part-00000000-00000000-0.parquet").write_bytes(b"rows")
    (lost / "study.json").unlink()
    with pytest.raises(ConfigError, match=r"^store: .*lost holds trial data but no study\.json "
                                          r"\(the definition of the study that wrote it\); "
                                          r"restore study\.json, or give a new folder$"):
        check_store_path(lost)
    for empty in ("", "  "):
        with pytest.raises(ConfigError, match=r"^store: must be a folder path; got"):
            distopt.Study({"x": Float(0, 1)}, {"f": "min"}, store=empty)


def test_cohort_size_is_for_batched_objectives(tmp_path):
    study = distopt.Study({"x": Float(0, 1)}, {"f": "min"}, store=tmp_path / "s")
    with pytest.raises(ConfigError, match=r"^cohort_size: is for a batched objective.*"
                                          r"@distopt.batched"):
        study.optimize(lambda c: {"f": c["x"]}, budget=2, workers=2, cohort_size=4)
    assert not (tmp_path / "s").exists()


def test_misspelled_names_get_the_closest_and_the_choices(tmp_path, monkeypatch):
    from distopt._studyfile import resolve_objective
    from distopt.schedulers import make_scheduler
    from distopt.strategies import make_strategy

    with pytest.raises(ConfigError, match=r"^strategy\.options\.n_init: is not an option \(did "
                                          r"you mean 'n_initial'\?\); the options are seed, "):
        make_strategy({"name": "bayes", "options": {"n_init": 3}})
    assert make_strategy({"name": "random", "options": {"seed": 3}}, seed=0).seed == 3
    with pytest.raises(ConfigError, match=r"^scheduler\.options\.grace: is not an option \(did "
                                          r"you mean 'grace_period'\?\)"):
        make_scheduler({"name": "moasha", "options": {"grace": 2}})
    (tmp_path / "myobj.py").write_text("import math\n\ndef objective(config):\n    return {}\n\n"
                                       "def make(scale=1.0):\n    return objective\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^objective: 'myobj' has no 'objectiv' \(did you mean "
                                          r"'objective'\?\); name one of its functions: make, "
                                          r"objective$"):
        resolve_objective("myobj:objectiv")
    with pytest.raises(ConfigError, match=r"^objective: 'myobj:math' does not give a callable "
                                          r"objective \(it gives a module\); name a function "
                                          r"config -> "):
        resolve_objective("myobj:math")
    with pytest.raises(ConfigError, match=r"^objective\.with\.scal: is not an option \(did you "
                                          r"mean 'scale'\?\)"):
        resolve_objective({"call": "myobj:make", "with": {"scal": 2.0}})
    with pytest.raises(ConfigError, match=r"^resources_per_trial\.cpus: is not a resource \(did "
                                          r"you mean 'cpu'\?\)"):
        distopt.Study({"x": Float(0, 1)}, {"f": "min"}, store=tmp_path / "r").optimize(
            lambda c: {"f": 0.0}, budget=1, resources_per_trial={"cpus": 1})


def test_a_strategy_class_beside_the_study_file_is_found(tmp_path, monkeypatch):
    """strategy: module:Class finds its module where the objective's is found (the study file's
    folder), and is recorded by that path, so a resume in a fresh process rebuilds it."""
    import sys

    from distopt import _codepath
    from distopt._studyfile import load_study_file

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(_codepath, "_added", [])
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "mystrat.py").write_text(
        "from distopt.strategies import RandomStrategy\n\n"
        "class Mine(RandomStrategy):\n    pass\n\n"
        "def objective(config):\n    return {'f': config['x']}\n")
    (folder / "study.yaml").write_text(
        "objective: mystrat:objective\nspace: {x: {type: float, low: 0, high: 1}}\n"
        "objectives: {f: min}\nstrategy: {name: 'mystrat:Mine'}\nstore: runs/s\n")
    monkeypatch.chdir(tmp_path)   # not the study file's folder
    study = load_study_file(folder / "study.yaml").study
    assert type(study.strategy).__name__ == "Mine"
    assert study.strategy.to_dict() == {"name": "mystrat:Mine", "options": {}}


def test_an_objective_the_workers_cannot_receive_is_one_line(tmp_path, monkeypatch):
    import threading

    def ray_session(*args, **kwargs):
        raise AssertionError("refused before Ray starts")

    monkeypatch.setattr("distopt._ray.ray_session", ray_session)
    lock = threading.Lock()

    def objective(config):
        with lock:
            return {"f": config["x"]}

    study = distopt.Study({"x": Float(0, 1)}, {"f": "min"}, store=tmp_path / "s")
    with pytest.raises(ConfigError, match=r"^objective: cannot be sent to the workers \("
                                          r"TypeError: cannot pickle '_thread.lock' object\); "
                                          r"create locks"):
        study.optimize(objective, budget=2)
    assert not (tmp_path / "s").exists()
