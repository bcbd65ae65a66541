"""Hostile or damaged input, run for real: YAML alias bombs and huge constants in study files, a
``study.json`` of the wrong shape, and a YAML 1.1 number spelling.

The command-line cases run ``distopt`` in a subprocess whose memory and file sizes are capped
(``resource.setrlimit``), so a regression fails the test instead of swapping the machine or
filling its disk: before the bounded loader, a 1 KB bomb took 2.2 GB and 25 s to fail, and one
inside ``objective.with`` wrote a 4.7 GB ``study.json.tmp``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import distopt
from distopt._studyfile import load_study_file
from distopt.store._metadata import read_metadata

from ._util import subprocess_env

MEMORY_CAP = 1536 * 2**20  # bytes of address space: the bomb needed 2.2 GB
FILE_CAP = 8 * 2**20  # bytes any one file may grow to: the bomb wrote 4.7 GB


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_CAP, FILE_CAP))


def _distopt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distopt", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120, preexec_fn=_capped)


def _one_error_line(result: subprocess.CompletedProcess, where: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and len(lines[0]) < 600, result.stderr[:2000]
    assert lines[0].startswith(f"distopt: error: {where}"), lines[0]
    return lines[0]


def _laughs(indent: str, levels: int = 9) -> str:
    """A billion laughs: ``levels`` anchors, each a list of 9 aliases of the one before."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"{n}: &{n} [" + ", ".join([f"*{p}"] * 9) + "]" 
              for p, n in zip(names, names[1:], strict=False)]
    return "\n".join(indent + line for line in lines)


def _study(tmp_path: Path, *, space: str = "  x: {type: float, low: 0.0, high: 1.0}",
           objective: str = "objective: distopt.examples:two_bowls") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(f"{objective}\nspace:\n{space}\nobjectives: {{f1: min, f2: min}}\n"
                    f"budget: 2\nworkers: 1\nstore: {tmp_path / 'store'}\n")
    return path


@pytest.mark.parametrize("where", ["objective.with", "space", "name"])
def test_a_yaml_alias_bomb_is_refused_before_anything_is_written(tmp_path, where):
    if where == "objective.with":
        study = _study(tmp_path, objective="objective:\n  call: distopt.examples:two_bowls\n"
                                           "  with:\n" + _laughs("    "))
        field = "objective.with.f"
    elif where == "space":
        study = _study(tmp_path, space="  x: {type: float, low: 0.0, high: 1.0}\n"
                                       + _laughs("  "))
        field = "space.f"
    else:
        study = _study(tmp_path)
        study.write_text(study.read_text() + "laughs:\n" + _laughs("  "))
        field = "laughs.f"
    assert study.stat().st_size < 2000
    started = time.monotonic()
    result = _distopt("run", str(study), "--no-progress", cwd=tmp_path)
    line = _one_error_line(result, field)
    assert "aliases" in line and "expands to" in line
    assert time.monotonic() - started < 60
    assert not (tmp_path / "store").exists()


def test_a_recursive_alias_is_refused(tmp_path):
    study = _study(tmp_path, space="  x: {type: float, low: 0.0, high: 1.0}\n  loop: &l [*l]")
    with pytest.raises(distopt.ConfigError, match=r"^space\.loop\[0\]: is a YAML alias that "
                                                  r"contains itself"):
        load_study_file(study)


@pytest.mark.parametrize("where, yaml_field", [
    ("space.big", "space"),
    ("objective.with.data", "objective"),
])
def test_a_huge_constant_is_refused_with_where_to_put_it(tmp_path, where, yaml_field):
    big = "x" * (10 * 2**20)  # 10 MB: copied into every trial row before the limit
    if yaml_field == "space":
        study = _study(tmp_path, space=f"  x: {{type: float, low: 0.0, high: 1.0}}\n  big: {big}")
    else:
        study = _study(tmp_path, objective=f"objective:\n  call: distopt.examples:two_bowls\n"
                                           f"  with: {{data: {big}}}")
    result = _distopt("run", str(study), "--no-progress", cwd=tmp_path)
    line = _one_error_line(result, where)
    assert "10,485,760 characters" in line and "file and pass its path" in line
    assert not (tmp_path / "store").exists()


def test_ordinary_aliases_and_merge_keys_still_load(tmp_path):
    study = _study(tmp_path, space="  x: &unit {type: float, low: 0.0, high: 1.0}\n  y: *unit\n"
                                   "  z: {<<: *unit, high: 2.0}")
    space = load_study_file(study).study.space
    assert space.to_dict()["z"]["high"] == 2.0 and space.to_dict()["y"] == space.to_dict()["x"]


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    """PyYAML keeps the last silently: a second budget ran, a second space block replaced the
    first and every trial failed with KeyError."""
    study = _study(tmp_path)
    study.write_text(study.read_text() + "budget: 5\n")
    with pytest.raises(distopt.ConfigError, match=r"^budget: is given twice \(lines 5 and 8\); "
                                                  r"keep one$"):
        load_study_file(study)
    study = _study(tmp_path, space="  x: {type: float, low: 0.0, high: 1.0}\n"
                                   "  x: {type: float, low: 0.0, high: 2.0}")
    with pytest.raises(distopt.ConfigError, match=r"^space\.x: is given twice \(lines 3 and 4\)"):
        load_study_file(study)
    assert not (tmp_path / "store").exists()


def test_study_file_slips_say_what_was_meant(tmp_path):
    study = _study(tmp_path)
    text = study.read_text()
    for changed, says in [
        (text.replace("  x:", "\tx:"), r"is not valid YAML at line 3 \(found character '\\t' "
                                        r".*\); fix the syntax there \(indent with spaces"),
        (text.replace("objectives:", "objetives:"), r"^objetives: is not a study setting \(did "
                                                     r"you mean 'objectives'\?\)"),
        ("", r"study\.yaml must be a mapping of settings; got nothing \(an empty file\)"),
        (text + "strategy: baye\n", r"^strategy: unknown strategy 'baye' \(did you mean "
                                     r"'bayes'\?\)"),
    ]:
        study.write_text(changed)
        with pytest.raises(distopt.ConfigError, match=says):
            load_study_file(study)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("content, says", [
    ("[]", "holds list JSON"),
    ("null", "holds NoneType JSON"),
    ('"text"', "holds str JSON"),
    ('{"format": 1}', "problem is missing"),
    ('{"format": 1, "problem": [], "config_types": {}}', "problem is [], not a JSON object"),
    ('{"format": 1, "problem": {"space": {}}, "config_types": {}}',
     "problem.objectives is missing"),
    ('{"format": 1, "problem": {"space": {}, "objectives": {}}}', "config_types is missing"),
    ('{"format": [' + "1," * 10000 + "1]}", "store format <list of 10001 items>"),
])
def test_a_study_json_of_the_wrong_shape_is_one_store_error(tmp_path, content, says):
    store = tmp_path / "store"
    store.mkdir()
    (store / "study.json").write_text(content)
    with pytest.raises(distopt.StoreError, match="study.json") as caught:
        read_metadata(store)
    assert says in str(caught.value) and "\n" not in str(caught.value)
    for command in ("resume", "show"):
        result = _distopt(command, str(store), cwd=tmp_path)
        assert says in _one_error_line(result, str(store))
    assert (store / "study.json").read_text() == content  # never rewritten


def test_an_exponent_yaml_reads_as_text_gets_its_yaml_spelling(tmp_path):
    study = _study(tmp_path, space="  x: {type: float, low: 0.0, high: 1.0e308}")
    with pytest.raises(distopt.ConfigError) as caught:
        load_study_file(study)
    message = str(caught.value)
    assert message.startswith("space.x") and "write 1.0e+308" in message, message
    fixed = _study(tmp_path, space="  x: {type: float, low: 0.0, high: 1.0e+308}")
    assert json.loads(json.dumps(load_study_file(fixed).study.space.to_dict()))["x"]["high"] \
        == 1.0e308


def test_bomb_text_is_small_and_really_explodes():
    """The fixtures above are real bombs: plain ``yaml.safe_load`` builds a value whose JSON
    would be gigabytes (measured without rendering it)."""
    import yaml

    text = _laughs("")
    data = yaml.safe_load(text)

    def count(value):
        return 1 + sum(count(v) for v in value) if isinstance(value, list) else 1

    assert len(text) < 1000
    assert count(data["f"]) > 500_000
