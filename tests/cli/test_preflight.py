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
