"""The installed ``distopt`` console script finds objectives in the working directory and in the
study file's folder, as ``python -m distopt`` does, for ``run`` and ``resume``.

A console script has its own bin folder as ``sys.path[0]``, not the working directory; the tests
run a script file of that kind from another folder, in a real process with its own Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import distopt
from distopt import open_store

ROOT = Path(distopt.__file__).resolve().parents[1]

MODULE = '''\
import distopt


def good(config):
    return {"f1": config["x"], "f2": (1 - config["x"]) ** 2}


def tune_habit(config):  # Ray Tune style: report the final metrics, return nothing
    distopt.report(f1=config["x"], f2=1 - config["x"])


def loud(config):
    print(f"objective says x={config['x']:.4f}")
    return {"f1": config["x"], "f2": (1 - config["x"]) ** 2}
'''

STUDY = '''\
objective: myobj:{function}
space: {{x: {{type: float, low: 0, high: 1}}}}
objectives: {{f1: min, f2: min}}
budget: 4
workers: 2
store: {store}
'''


def console_script(tmp_path: Path) -> Path:
    """A file like the one pip writes to bin/: it imports distopt and calls its main."""
    script = tmp_path / "bin" / "distopt"
    script.parent.mkdir()
    script.write_text("import sys\nfrom distopt.cli import main\nsys.exit(main())\n")
    return script


def distopt_command(script: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}   # distopt only: not the test's folders
    return subprocess.run([sys.executable, str(script), *argv, "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def project(folder: Path, function: str, store: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "myobj.py").write_text(MODULE)
    study = folder / "mystudy.yaml"
    study.write_text(STUDY.format(function=function, store=store))
    return study


@pytest.mark.slow
def test_an_objective_in_the_working_directory_and_its_failure_cause(tmp_path):
    script = console_script(tmp_path)
    project(tmp_path / "work", "tune_habit", "runs/s")
    result = distopt_command(script, tmp_path / "work", "run", "mystudy.yaml")
    assert "cannot import" not in result.stderr
    assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("distopt: error: no trial completed (4 FAILED); trial 0: objective "
                           "returned NoneType (nothing)"), result.stderr[-3000:]
    assert "distopt does not read metrics from report() calls" in last
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_objective_next_to_the_study_file_runs_and_resumes_from_elsewhere(tmp_path):
    script = console_script(tmp_path)
    store = tmp_path / "store"
    study = project(tmp_path / "project", "good", str(store))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = distopt_command(script, elsewhere, "run", str(study))
    assert result.returncode == 0, result.stderr[-3000:]
    assert open_store(store).trials()["status"].to_pylist() == ["COMPLETE"] * 4
    result = distopt_command(script, elsewhere, "resume", str(store), "--budget", "6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert open_store(store).trials()["status"].to_pylist() == ["COMPLETE"] * 6


@pytest.mark.slow
def test_the_objectives_last_prints_reach_the_screen(tmp_path):
    """Trials of a millisecond end the search before Ray's log monitor has forwarded what they
    printed; the embedded Ray is left up for ``LOG_FLUSH_S`` so that none is lost (without it,
    0 to 4 of these 4 lines arrived). One worker: Ray folds like lines of several workers."""
    script = console_script(tmp_path)
    project(tmp_path / "work", "loud", "runs/s")
    result = distopt_command(script, tmp_path / "work", "run", "mystudy.yaml", "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    xs = open_store(tmp_path / "work" / "runs" / "s").trials()["config/x"].to_pylist()
    said = [line.split("objective says ")[1] for line in (result.stdout + result.stderr)
            .splitlines() if "objective says " in line]
    assert sorted(said) == sorted(f"x={x:.4f}" for x in xs)
