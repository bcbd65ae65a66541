"""Property-based tests of bad input: every malformed study file, space or argument gives a
``distopt.ConfigError`` whose single line starts with the offending field's path and says what
is expected, never another exception (no traceback from Ray, BoTorch, YAML or pyarrow).

Each example starts from a valid study and breaks exactly one field, so the error must name
that field. Nothing here starts Ray: validation happens before any search does.
"""

from __future__ import annotations

import copy
import datetime
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import distopt
from distopt._studyfile import load_study_file, study_from_dict

from ._util import subprocess_env

BASE: dict[str, Any] = {
    "objective": "distopt.examples:two_bowls",
    "space": {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "y": {"type": "float", "low": 1e-3, "high": 1.0, "log": True, "off": 0.0},
        "n": {"type": "int", "low": 1, "high": 8},
        "act": {"type": "categorical", "choices": ["relu", "gelu"]},
        "epochs": 2,
    },
    "objectives": {"f1": "min", "f2": "min"},
    "constraints": {"g": ["<=", 0.5]},
    "strategy": "random",
    "budget": 8,
    "workers": 2,
    "seed": 0,
    "store": "runs/bad-input",
    "resources_per_trial": {"cpu": 1, "gpu": 0},
    "max_retries": 2,
    "trial_timeout": 60,
    "ref_point": {"f1": 2.0, "f2": 2.0},
    "name": "bad input",
}

EXPLAINS = re.compile(r"must|needs|missing|unknown|not |cannot|empty|duplicates|share one type|"
                      r"refused|asks|are also|is a file|no searched|invalid|unexpected|check|"
                      r"has no|rejected|reserved|does not", re.I)

# -- values of the wrong kind ---------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.dates(), st.just(datetime.datetime(2001, 2, 3, 4, 5, 6)))
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
not_int = junk.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
bad_count = st.one_of(st.integers(-10**6, 0), not_int)
bad_seconds = st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.integers(-10, 0),
                        junk.filter(lambda v: isinstance(v, bool) or
                                    not isinstance(v, (int, float)) and v is not None))
not_number = junk.filter(lambda v: isinstance(v, bool) or not isinstance(v, (int, float)))
not_finite = st.sampled_from([math.nan, math.inf, -math.inf])
not_str = junk.filter(lambda v: not isinstance(v, str))
not_mapping = junk.filter(lambda v: not isinstance(v, dict))
names = st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s)


def _set(path: str, value: Any) -> tuple[dict[str, Any], str]:
    data = copy.deepcopy(BASE)
    keys = path.split(".")
    target = data
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return data, path


def _drop(path: str) -> tuple[dict[str, Any], str]:
    data = copy.deepcopy(BASE)
    keys = path.split(".")
    target = data
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]
    return data, path


def _field(path: str, values: st.SearchStrategy, where: str | None = None) -> st.SearchStrategy:
    return values.map(lambda v: (_set(path, v)[0], where or path))


# -- one broken field per example ---------------------------------------------------------------

run_settings = st.one_of(
    _field("budget", bad_count), _field("workers", bad_count),
    _field("max_retries", st.one_of(st.integers(-100, -1), not_int)),
    _field("trial_timeout", bad_seconds), _field("seed", not_int.filter(lambda v: v is not None)),
    _field("store", not_str.filter(lambda v: v is not None)),
    _field("address", not_str.filter(lambda v: v is not None)),
    _field("name", not_str.filter(lambda v: v is not None)),
    _field("description", not_str.filter(lambda v: v is not None)),
    _field("resources_per_trial", not_mapping.filter(lambda v: v is not None)),
    _field("resources_per_trial.cpu", st.one_of(st.floats(max_value=-1e-9), not_finite, not_number),
           "resources_per_trial.cpu"),
    _field("resources_per_trial.gpu", st.one_of(st.floats(1.01, 99).filter(
        lambda v: v != int(v)), st.integers(-5, -1)), "resources_per_trial.gpu"),
)

objectives = st.one_of(
    _field("objectives", st.one_of(st.just({}), not_mapping.filter(
        lambda v: not isinstance(v, str)))),
    _field("objectives.f1", junk.filter(lambda v: v not in ("min", "max"))),
    _field("objectives", st.sampled_from([{"": "min"}, {1: "min"}, {None: "max"},
                                          {"status": "min"}, {"trial_id": "max"},
                                          {"config/x": "min"}, {"x": "min"}])),
)

constraints = st.one_of(
    _field("constraints", not_mapping.filter(lambda v: v is not None)),
    _field("constraints.g", junk.filter(lambda v: not (isinstance(v, list) and len(v) == 2))),
    _field("constraints.g", st.tuples(junk.filter(lambda v: v not in ("<=", ">=")),
                                      st.floats(-1, 1)).map(list)),
    _field("constraints.g", st.tuples(st.sampled_from(["<=", ">="]),
                                      st.one_of(not_finite, not_number)).map(list)),
    _field("constraints", st.sampled_from([{1: ["<=", 0.5]}, {"": ["<=", 0.5]},
                                           {"error": [">=", 0.0]}]), "constraints"),
)

strategies_ = st.one_of(
    _field("strategy", st.text(max_size=10).filter(
        lambda s: s not in distopt.strategies.REGISTRY)),
    _field("strategy", junk.filter(lambda v: not isinstance(v, (str, dict)))),
    _field("strategy", st.sampled_from([{}, {"options": {}}, {"name": "random", "extra": 1},
                                        {"name": 3}, {"name": "random", "options": [1, 2]},
                                        {"name": "random", "options": "abc"},
                                        {"name": "random", "options": {"nope": 1}}])),
)

ref_points = st.one_of(
    _field("ref_point", not_mapping.filter(lambda v: v is not None)),
    _field("ref_point.f1", st.one_of(not_finite, not_number), "ref_point"),
    st.just((_drop("ref_point.f2")[0], "ref_point")),
)

objective_specs = st.one_of(
    _field("objective", not_str.filter(lambda v: not isinstance(v, dict))),
    _field("objective", st.text(max_size=30)),
    _field("objective", st.sampled_from([
        "no_such_module_xyz:f", "distopt.examples:nope", "distopt.examples", ":f", "a..b:c",
        "distopt.examples:two_bowls.nope", "distopt:__version__", "os:system",
        "subprocess:run", "builtins:eval", "distopt.examples:__builtins__.eval",
        "distopt.examples:math.sqrt", "__import__('os').system('true')", "lambda c: 0",
        "distopt.examples:instant; import os"])),
    _field("objective", st.sampled_from([
        {"call": "distopt.examples:two_bowls", "with": [1]}, {"with": {}}, {"call": 3},
        {"call": "os:system", "with": {"command": "true"}},
        {"call": "distopt.examples:__builtins__.open", "with": {"file": "x", "mode": "w"}},
        {"call": "distopt.examples:two_bowls", "extra": 1},
        {"call": "distopt.examples:instant", "with": {"nope": 1}}]), "objective"),
)


def _space_param(name: str, spec: Any) -> tuple[dict[str, Any], str]:
    data = copy.deepcopy(BASE)
    data["space"][name] = spec
    return data, f"space.{name}"


float_specs = st.one_of(
    st.fixed_dictionaries({"type": st.just("float"), "low": st.one_of(not_finite, not_number),
                           "high": st.just(1.0)}),
    st.fixed_dictionaries({"type": st.just("float"), "low": st.floats(0, 10),
                           "high": st.floats(-10, 0)}),
    st.fixed_dictionaries({"type": st.just("float"), "low": st.floats(-10, 0),
                           "high": st.just(1.0), "log": st.just(True)}),
    st.fixed_dictionaries({"type": st.just("float"), "low": st.just(0.1), "high": st.just(1.0),
                           "log": junk.filter(lambda v: not isinstance(v, bool))}),
    st.fixed_dictionaries({"type": st.just("float"), "low": st.just(0.0), "high": st.just(1.0),
                           "off": not_number.filter(lambda v: v is not None)}),
    st.fixed_dictionaries({"type": st.just("float"), "high": st.just(1.0)}),
    st.fixed_dictionaries({"type": st.just("float"), "low": st.just(0.0), "high": st.just(1.0),
                           "step": junk}),
)
int_specs = st.one_of(
    st.fixed_dictionaries({"type": st.just("int"), "low": st.floats(0.1, 0.9),
                           "high": st.just(5)}),
    st.fixed_dictionaries({"type": st.just("int"), "low": st.integers(5, 9),
                           "high": st.integers(-3, 5)}),
    st.fixed_dictionaries({"type": st.just("int"), "low": st.just(1), "high": st.just(4),
                           "choices": junk}),
)
categorical_specs = st.one_of(
    st.fixed_dictionaries({"type": st.just("categorical"), "choices": st.one_of(
        st.just([]), st.just(["a", "a"]), st.just([1, "a"]), st.just([[1], [2]]),
        st.just([None]), st.just([{"a": 1}]), not_str.filter(lambda v: not isinstance(v, list)),
        st.text(max_size=5))}),
    st.just({"type": "categorical"}),
)
other_specs = st.one_of(
    st.fixed_dictionaries({"type": junk.filter(
        lambda v: v not in ("float", "int", "categorical"))}),
    st.just({}), st.just(None), st.lists(st.integers(), max_size=3), st.just({"low": 0, "high": 1}),
)

spaces = st.one_of(
    st.tuples(st.sampled_from(["x", "new"]),
              st.one_of(float_specs, int_specs, categorical_specs, other_specs)).map(
        lambda t: _space_param(*t)),
    _field("space", st.one_of(st.just({}), st.just({"c": 1}),
                              not_mapping.filter(lambda v: not isinstance(v, str)))),
    st.sampled_from([("", {"type": "float", "low": 0, "high": 1}),
                     ("a/b", {"type": "float", "low": 0, "high": 1})]).map(
        lambda t: (_space_param(*t)[0], "space")),
    _field("space", st.text(alphabet="abc/.", min_size=1, max_size=10).map(
        lambda s: f"no-such-dir/{s}.yaml")),
)

structure = st.one_of(
    st.sampled_from(["objective", "space", "objectives"]).map(_drop),
    st.text(min_size=1, max_size=10).filter(lambda k: k not in BASE and k not in (
        "address", "description", "scheduler")).map(
        lambda k: ({**BASE, k: 1}, k if k.isprintable() else repr(k))),
    st.sampled_from([({**BASE, 3: 1}, "3"), ({**BASE, None: 1}, "None")]),
)

broken_studies = st.one_of(run_settings, objectives, constraints, strategies_, ref_points,
                           objective_specs, spaces, structure)


def _check_error(error: BaseException, where: str) -> None:
    assert type(error) is distopt.ConfigError, f"{type(error).__name__}: {error}"
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith(where), f"expected the field {where!r} first: {message!r}"
    assert EXPLAINS.search(message[len(where):]), f"no explanation: {message!r}"


def test_the_base_study_is_valid():
    loaded = study_from_dict(copy.deepcopy(BASE))
    distopt._study.check_run_settings(**loaded.run)
    assert loaded.study.problem.metric_names == ["f1", "f2", "g"]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_studies)
@example(({**BASE, "budget": True}, "budget"))
@example(({**BASE, "space": {"x": {"type": "float", "low": 0, "high": 1, "log": "no"}}},
          "space.x"))
def test_a_broken_study_dict_names_its_field(case):
    data, where = case
    with pytest.raises(Exception) as caught:
        loaded = study_from_dict(data)
        distopt._study.check_run_settings(**loaded.run)
    _check_error(caught.value, where)


API_KEYS = ("space", "objectives", "constraints", "strategy", "store", "seed", "ref_point")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(objectives, constraints, strategies_, ref_points, spaces,
                 _field("seed", not_int.filter(lambda v: v is not None)),
                 _field("store", not_str.filter(lambda v: v is not None))))
def test_a_broken_study_argument_names_its_field(case):
    data, where = case
    assume(not isinstance(data["space"], str))  # a path is a study-file feature
    kwargs = {k: data[k] for k in API_KEYS if k in data}
    with pytest.raises(Exception) as caught:
        distopt.Study(kwargs.pop("space"), kwargs.pop("objectives"), kwargs.pop("constraints"),
                      **kwargs)
    _check_error(caught.value, where)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
@example(text="a: 2001-13-45")
@example(text="[" * 5000)
@example(text="a: !!python/object/apply:os.system ['true']")
@example(text="objective: !!int abc")
@example(text="\x00")
def test_arbitrary_yaml_text_gives_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "study.yaml"
    path.write_text(text, errors="surrogatepass") if False else path.write_bytes(
        text.encode("utf-8", "surrogatepass"))
    with pytest.raises(Exception) as caught:
        load_study_file(path)
    error = caught.value
    assert isinstance(error, distopt.ConfigError), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error)


def test_bad_run_arguments_name_their_field():
    study = distopt.Study({"x": distopt.Float(0, 1)}, {"f1": "min"}, store="runs/unused")
    for kwargs, where in [({"budget": 0}, "budget"), ({"workers": 1.5}, "workers"),
                          ({"max_retries": -1}, "max_retries"), ({"trial_timeout": 0},
                                                                 "trial_timeout"),
                          ({"resources_per_trial": {"gpu": -1}}, "resources_per_trial.gpu"),
                          ({"address": 5}, "address")]:
        with pytest.raises(distopt.ConfigError) as caught:
            study.optimize(lambda c: {"f1": 0.0}, **{"budget": 2, **kwargs})
        _check_error(caught.value, where)
    assert not Path("runs/unused").exists()  # rejected before the store was touched


@pytest.mark.parametrize("yaml_text, where", [
    ("objective: distopt.examples:two_bowls\nspace: {x: {type: float, low: 1, high: 0}}\n"
     "objectives: {f1: min}\n", "space.x"),
    ("objective: 'os:system'\nspace: {x: {type: float, low: 0, high: 1}}\n"
     "objectives: {f1: min}\n", "objective"),
    ("objective: distopt.examples:two_bowls\nspace: {x: {type: float, low: 0, high: 1}}\n"
     "objectives: {f1: min}\nbudget: -3\n", "budget"),
    ("objective: distopt.examples:two_bowls\nspace: {x: {type: float, low: 0, high: 1}}\n"
     "objectives: {f1: min}\nstrategy: {name: random, options: [1]}\n", "strategy.options"),
])
def test_the_command_line_prints_one_line_and_exits_2(tmp_path, yaml_text, where):
    study = tmp_path / "study.yaml"
    study.write_text(yaml_text + f"store: {tmp_path / 'store'}\n")
    result = subprocess.run([sys.executable, "-m", "distopt", "run", str(study)], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"distopt: error: {where}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()
