"""The distopt command: run, show, resume in-process on the session's Ray; one real subprocess run;
bad input ends with exit status 2 and exactly one 'distopt: error:' line naming the field."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_util import run_main

from distopt import Float, Study, open_store
from distopt.cli import main
from distopt.examples import two_bowls
from distopt.strategies import RandomStrategy

BUDGET = 8

STUDY_YAML = """\
name: cli-two-bowls
objective: distopt.examples:two_bowls
space:
  x: {{type: float, low: -0.5, high: 1.5}}
  y: {{type: float, low: -1.0, high: 1.0}}
  width: {{type: int, low: 1, high: 4}}
  epochs: 2
objectives: {{f1: min, f2: min}}
constraints: {{g: ["<=", 1.2]}}
strategy: random
budget: {budget}
workers: 2
seed: 0
store: {store}
"""


def write_study(folder: Path, store: Path, budget: int = BUDGET, **replace: str) -> Path:
    text = STUDY_YAML.format(store=store, budget=budget)
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = folder / "study.yaml"
    path.write_text(text)
    return path


def parse_table(text: str) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and summary line of the printed front table."""
    lines = text.rstrip("\n").split("\n")
    blank = lines.index("")
    return lines[0].split(), [line.split() for line in lines[1:blank]], lines[blank + 1]


@pytest.fixture(scope="module")
def ran(ray_local, tmp_path_factory):
    """``distopt run STUDY.yaml`` in this process: (study file, store, exit code, stdout)."""
    folder = tmp_path_factory.mktemp("cli")
    store = folder / "store"
    study = write_study(folder, store)
    code, out, err = run_main(["run", str(study), "--no-progress"])
    assert err == ""
    return study, store, code, out


def test_run_prints_the_front(ran):
    study, store, code, out = ran
    assert code == 0
    reader = open_store(store)
    assert reader.trials().num_rows == BUDGET
    header, rows, summary = parse_table(out)
    assert header == ["trial_id", "x", "y", "width", "epochs", "f1", "f2", "g"]
    front = reader.pareto_front()
    assert [int(r[0]) for r in rows] == front["trial_id"].to_pylist()
    assert [float(r[5]) for r in rows] == pytest.approx(front["f1"].to_pylist(), rel=1e-4)
    assert summary.startswith(f"Pareto front: {front.num_rows} rows  |  trials: {BUDGET} COMPLETE")
    assert f"hypervolume: {reader.hypervolume():.6g}" in summary


def test_a_front_without_a_recorded_reference_point_says_where_its_point_comes_from(
        ray_local, tmp_path):
    store = tmp_path / "store"
    code, out, _ = run_main(["run", str(write_study(tmp_path, store, budget=3)), "--no-progress"])
    reader = open_store(store)
    assert code == 0 and reader.ref_point is None   # 3 trials: too few to fix one
    inferred = reader.ref_point_in_use()
    assert inferred is not None and set(inferred) == {"f1", "f2"}
    assert f"ref_point {inferred}, inferred from this front: none recorded yet" in out
    assert reader.hypervolume() == pytest.approx(reader.hypervolume(inferred))
    code, out, _ = run_main(["show", str(store), "--format", "json"])
    data = json.loads(out)
    assert data["ref_point"] == inferred and data["ref_point_recorded"] is False


def test_run_records_the_study_file(ran):
    study, store, _, _ = ran
    data = json.loads((store / "study.json").read_text())
    assert data["objective"] == "distopt.examples:two_bowls"
    assert data["study_file"] == str(study.resolve())
    assert data["problem"]["constraints"] == {"g": ["<=", 1.2]}
    assert data["run"]["budget"] == BUDGET and data["run"]["workers"] == 2


def test_show_table(ran, capsys):
    _, store, _, _ = ran
    assert main(["show", str(store)]) == 0
    out = capsys.readouterr().out
    assert parse_table(out) == parse_table(ran[3])  # the same as `run` printed

    assert main(["show", str(store), "--all"]) == 0
    header, rows, summary = parse_table(capsys.readouterr().out)
    assert header[:2] == ["trial_id", "status"]
    assert [int(r[0]) for r in rows] == list(range(BUDGET))
    assert summary.startswith(f"trials: {BUDGET} rows ({BUDGET} COMPLETE)  |  hypervolume")


def test_show_csv(ran, capsys):
    _, store, _, _ = ran
    assert main(["show", str(store), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    front = open_store(store).pareto_front()
    assert list(rows[0]) == ["trial_id", "config/x", "config/y", "config/width", "config/epochs",
                             "f1", "f2", "g"]
    assert [int(r["trial_id"]) for r in rows] == front["trial_id"].to_pylist()
    for name in ("config/x", "f1", "f2", "g"):
        assert [float(r[name]) for r in rows] == pytest.approx(front[name].to_pylist(), rel=1e-12)
    assert [int(r["config/width"]) for r in rows] == front["config/width"].to_pylist()


def test_show_json(ran, capsys):
    _, store, _, _ = ran
    assert main(["show", str(store), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    reader = open_store(store)
    assert data["hypervolume"] == pytest.approx(reader.hypervolume())
    assert data["ref_point"] == reader.ref_point_in_use()
    assert data["ref_point_recorded"] == (reader.ref_point is not None)
    assert data["trials"] == {"COMPLETE": BUDGET}
    columns = list(data["front"][0])
    assert data["front"] == reader.pareto_front().select(columns).to_pylist()

    assert main(["show", str(store), "--format", "json", "--all"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["trial_id"] for r in data["rows"]] == list(range(BUDGET))
    assert {r["status"] for r in data["rows"]} == {"COMPLETE"}


def test_resume_to_a_larger_budget(ray_local, tmp_path):
    store = tmp_path / "store"
    study = write_study(tmp_path, store, budget=4)
    assert run_main(["run", str(study), "--no-progress"])[0] == 0
    first = open_store(store).trials()
    code, out, err = run_main(["resume", str(store), "--budget", "7", "--no-progress"])
    assert (code, err) == (0, "")
    reader = open_store(store)
    table = reader.trials()
    assert table["trial_id"].to_pylist() == list(range(7))
    assert table.slice(0, 4).equals(first)
    assert parse_table(out)[2].startswith(f"Pareto front: {reader.pareto_front().num_rows} rows")
    data = json.loads((store / "study.json").read_text())
    assert data["resumed"] == 1 and data["run"]["budget"] == 7
    # options given on the command line override the file's
    code, _, _ = run_main(["run", str(study), "--budget", "8", "--no-progress"])
    assert code == 0 and open_store(store).trials().num_rows == 8


def test_resume_a_store_made_with_a_strategy_instance(ray_local, tmp_path):
    store = tmp_path / "store"
    study = Study({"x": Float(0, 1), "y": 0.0, "epochs": 1}, {"f1": "min", "f2": "min"},
                  strategy=RandomStrategy(seed=0), store=store)
    study.optimize(two_bowls, budget=2, workers=2)
    code, _, err = run_main(["resume", str(store), "--budget", "3", "--no-progress"])
    assert (code, err) == (0, "")
    assert open_store(store).trials().num_rows == 3


# -- bad input ------------------------------------------------------------------------------------

def bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """argv and the field its error line must name, for each kind of bad input."""
    store = tmp / "store"
    cases = {}

    def study(name: str, **replace: str) -> str:
        folder = tmp / name
        folder.mkdir()
        return str(write_study(folder, store, **replace))

    cases["missing file"] = (["run", str(tmp / "nope.yaml")], "study file: cannot read")
    invalid = tmp / "invalid.yaml"
    invalid.write_text("objective: [distopt.examples:two_bowls\nspace: {x: 1\n")
    cases["invalid yaml"] = (["run", str(invalid)], "study file: ")
    cases["unknown key"] = (["run", study("unknown", **{"seed: 0": "sed: 0"})], "sed: ")
    cases["bad import"] = (["run", study("import", **{"distopt.examples:two_bowls":
                                                      "distopt.nosuch:two_bowls"})],
                           "objective: cannot import module 'distopt.nosuch'")
    inner = study("inner", **{"distopt.examples:two_bowls": "inner_mod_zz:objective"})
    Path(inner).with_name("inner_mod_zz.py").write_text("import nonexistent_pkg_zz\n")
    cases["import inside"] = (["run", inner], "objective: importing module 'inner_mod_zz' "
                              "failed: ModuleNotFoundError: No module named 'nonexistent_pkg_zz'"
                              "; install nonexistent_pkg_zz")
    cases["no attribute"] = (["run", study("attr", **{"distopt.examples:two_bowls":
                                                      "distopt.examples:three_bowls"})],
                             "objective: ")
    cases["not an import path"] = (["run", study("path", **{"distopt.examples:two_bowls":
                                                            "two_bowls"})], "objective: ")
    cases["bad direction"] = (["run", study("direction", **{"f2: min": "f2: minimise"})],
                              "objectives.f2: ")
    cases["bad operator"] = (["run", study("operator", **{'"<="': '"<"'})], "constraints.g: ")
    cases["bad space"] = (["run", study("space", **{"high: 1.5": "high: -1.5"})], "space.x: ")
    cases["unknown strategy"] = (["run", study("strategy", **{"strategy: random":
                                                              "strategy: annealing"})],
                                 "strategy: ")
    cases["workers 0"] = (["run", study("workers"), "--workers", "0"], "workers: ")
    cases["budget 0"] = (["run", study("budget"), "--budget", "0"], "budget: ")
    cases["show no store"] = (["show", str(tmp / "nowhere")], "")
    cases["resume no store"] = (["resume", str(tmp / "nowhere"), "--budget", "3"], "")
    return cases


CASES = [
    "missing file", "invalid yaml", "unknown key", "bad import", "no attribute",
    "not an import path", "bad direction", "bad operator", "bad space", "unknown strategy",
    "workers 0", "budget 0", "show no store", "resume no store"]


def check_error(code: int, err: str, field: str) -> None:
    assert code == 2
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert err.startswith(f"distopt: error: {field}"), err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", CASES)
def test_bad_input_in_process(tmp_path, case):
    argv, field = bad_cases(tmp_path)[case]
    code, out, err = run_main(argv)
    check_error(code, err, field)
    assert out == ""
    assert not (tmp_path / "store").exists()  # nothing was written


def test_invalid_yaml_names_the_line(tmp_path):
    argv, _ = bad_cases(tmp_path)["invalid yaml"]
    _, _, err = run_main(argv)
    assert "is not valid YAML at line " in err


@pytest.mark.parametrize("case", ["missing file", "bad import", "workers 0", "resume no store"])
def test_bad_input_in_a_real_process(tmp_path, case):
    argv, field = bad_cases(tmp_path)[case]
    result = subprocess.run([sys.executable, "-m", "distopt", *argv], capture_output=True,
                            text=True, timeout=60)
    check_error(result.returncode, result.stderr, field)
    assert result.stdout == ""


# -- the real console script ----------------------------------------------------------------------

def test_console_script_runs_a_study(tmp_path):
    """One real ``distopt run`` in its own process, with its own embedded Ray."""
    store = tmp_path / "store"
    study = write_study(tmp_path, store, budget=6)
    result = subprocess.run([sys.executable, "-m", "distopt", "run", str(study), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    reader = open_store(store)
    assert reader.trials().num_rows == 6
    header, rows, summary = parse_table(result.stdout)
    assert header == ["trial_id", "x", "y", "width", "epochs", "f1", "f2", "g"]
    front = reader.pareto_front()
    assert [int(r[0]) for r in rows] == front["trial_id"].to_pylist()
    assert [float(r[1]) for r in rows] == pytest.approx(front["config/x"].to_pylist(), rel=1e-4)
    assert summary.startswith(f"Pareto front: {front.num_rows} rows  |  trials: 6 COMPLETE")
    assert f"hypervolume: {reader.hypervolume():.6g}" in summary
