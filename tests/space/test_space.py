"""Space: parameters plus constants, encode/decode of points, specs and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import distopt
from distopt.space import Categorical, Float, Int, Space, param_from_spec

SPEC = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "wd": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True, "off": 0.0},
    "layers": {"type": "int", "low": 1, "high": 6},
    "width": {"type": "int", "low": 8, "high": 512, "log": True},
    "act": {"type": "categorical", "choices": ["relu", "gelu"]},
    "bias": {"type": "categorical", "choices": [True, False]},
    "epochs": 3,
    "dataset": "qm9",
    "augment": False,
    "dropout": 0.1,
}


@pytest.fixture(scope="module")
def space() -> Space:
    return Space(SPEC)


def test_spec_builds_params_and_constants(space):
    assert space.names == ["lr", "wd", "layers", "width", "act", "bias"]
    assert space.dim == 6
    assert space.params["lr"] == Float(1e-4, 1e-1, log=True)
    assert space.params["wd"] == Float(1e-6, 1e-2, log=True, off=0.0)
    assert space.params["layers"] == Int(1, 6)
    assert space.params["width"] == Int(8, 512, log=True)
    assert space.params["act"] == Categorical(["relu", "gelu"])
    assert space.constants == {"epochs": 3, "dataset": "qm9", "augment": False, "dropout": 0.1}


def test_a_huge_constant_is_refused_with_the_field_and_the_fix(tmp_path):
    """A constant is copied into every row of the store: 10 MB of it would be 10 MB a trial."""
    Space({"x": Float(0, 1), "note": "n" * 10_000})  # at the limit: kept
    with pytest.raises(distopt.ConfigError) as info:
        distopt.Study({"x": Float(0, 1), "blob": "b" * 10_000_000}, {"loss": "min"},
                      store=tmp_path / "runs")
    message = str(info.value)
    assert message.startswith("space.blob: is a constant of 10,000,000 characters")
    assert "pass its path instead" in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


def test_params_instances_are_accepted_as_is():
    param = Float(0, 1)
    assert param_from_spec("x", param) is param
    assert Space({"x": param, "n": Int(0, 2)}).params["x"] is param


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_decode_lands_in_domain_and_keeps_constants(space, u):
    [config] = space.decode([u])
    space.validate(config)  # raises on any value outside its parameter
    assert set(config) == set(SPEC)
    assert config["epochs"] == 3 and config["dataset"] == "qm9" and config["augment"] is False
    assert type(config["layers"]) is int and type(config["bias"]) is bool
    assert isinstance(config["lr"], float) and 1e-4 <= config["lr"] <= 1e-1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_encode_decode_round_trip(space, u):
    [config] = space.decode([u])
    encoded = space.encode([config])
    assert encoded.shape == (1, 6)
    assert np.all((encoded >= 0) & (encoded <= 1))
    [again] = space.decode(encoded)
    for name in ("layers", "width", "act", "bias"):
        assert again[name] == config[name]
    for name in ("lr", "wd"):
        assert math.isclose(again[name], config[name], rel_tol=1e-9)


def test_decode_many_points_and_shape_errors(space):
    rng = np.random.default_rng(0)
    points = rng.random((50, 6))
    configs = space.decode(points)
    assert len(configs) == 50
    assert space.encode(configs).shape == (50, 6)
    with pytest.raises(ValueError):
        space.decode(rng.random((3, 5)))


def test_to_dict_round_trips(space):
    again = Space(space.to_dict())
    assert again == space
    assert again.to_dict() == space.to_dict()
    assert again.constants == space.constants


def test_arrow_types_include_constants(space):
    assert space.arrow_types() == {
        "lr": "float64", "wd": "float64", "layers": "int64", "width": "int64", "act": "string",
        "bias": "bool", "epochs": "int64", "dataset": "string", "augment": "bool",
        "dropout": "float64"}


def test_validate_names_the_parameter(space):
    [config] = space.decode([[0.5] * 6])
    space.validate(config)
    with pytest.raises(distopt.ConfigError, match=r"^config\.layers: "):
        space.validate({**config, "layers": 7})
    with pytest.raises(distopt.ConfigError, match=r"^trial\.act: "):
        space.validate({**config, "act": "tanh"}, where="trial")
    missing = dict(config)
    del missing["lr"]
    with pytest.raises(distopt.ConfigError, match=r"^config\.lr: is missing"):
        space.validate(missing)


@pytest.mark.parametrize("spec, field", [
    ({"type": "floaty"}, "space.lr.type"),
    ({"low": 0, "high": 1}, "space.lr.type"),
    ({"type": "float", "low": 0, "high": 1, "step": 0.1}, "space.lr"),
    ({"type": "float", "low": 1, "high": 0}, "space.lr"),
    ([1e-4, 1e-1], "space.lr"),
    (None, "space.lr"),
    ({"type": "float", "low": "a", "high": 1}, "space.lr.low"),
    ({"type": "float", "high": 1}, "space.lr.low"),
    ({"type": "float", "low": 0}, "space.lr.high"),
    ({"type": "float", "low": 0, "high": 1, "log": True}, "space.lr.low"),
    ({"type": "float", "low": 0, "high": 1, "off": "no"}, "space.lr.off"),
    ({"type": "int", "low": 0.5, "high": 3}, "space.lr.low"),
    ({"type": "categorical"}, "space.lr.choices"),
    ({"type": "categorical", "choices": []}, "space.lr.choices"),
    ({"optimizer": "adam", "beta": 0.9}, "space.lr.type"),   # a dict constant
])
def test_bad_spec_names_the_field(spec, field):
    with pytest.raises(distopt.ConfigError) as info:
        Space({"lr": spec, "n": {"type": "int", "low": 0, "high": 3}})
    message = str(info.value)
    assert message.startswith(f"{field}: "), message
    assert "\n" not in message


def test_a_parameter_named_on_in_yaml_is_told_to_quote_it():
    import yaml

    with pytest.raises(distopt.ConfigError, match=r"got True; quote it: YAML 1\.1 reads on, "):
        Space(yaml.safe_load("on: {type: float, low: 0.0, high: 1.0}"))


def test_a_list_or_a_tune_distribution_says_what_to_write_instead():
    with pytest.raises(distopt.ConfigError, match=r"^space\.lr: is a list \(\[16, 32\]\), not "
                                                  r"a constant \(one str, int, float or bool\); "
                                                  r"to search among these values, use \{type: "
                                                  r"categorical"):
        Space({"lr": [16, 32]})
    tune = pytest.importorskip("ray.tune")
    with pytest.raises(distopt.ConfigError, match=r"^space\.lr: is a Ray Tune Float, not a distopt "
                                                  r"parameter; use distopt\.Float\(low, high, "
                                                  r"log=\.\.\.\)"):
        Space({"lr": tune.loguniform(1e-4, 1e-1)})


@pytest.mark.parametrize("params", [
    {},
    {"epochs": 3, "name": "x"},          # constants only: nothing to search
    {"a/b": Float(0, 1)},
    {"": Float(0, 1)},
    [("x", Float(0, 1))],
])
def test_bad_space_names_space(params):
    with pytest.raises(distopt.ConfigError, match=r"^space: "):
        Space(params)


def test_yaml_off_key_and_exponent_text_are_understood_or_explained():
    """PyYAML (YAML 1.1) reads `off:` as False and `1e-3` as text; both are common in spaces."""
    import yaml

    from distopt import ConfigError, Space

    spec = yaml.safe_load("lam: {type: float, low: 1.0e-3, high: 10.0, log: true, off: 0.0}")
    assert False in spec["lam"]  # the pitfall is real
    space = Space(spec)
    assert space.params["lam"].off == 0.0
    with pytest.raises(ConfigError, match=r"space\.lam.*1\.0e-3"):
        Space(yaml.safe_load("lam: {type: float, low: 1e-3, high: 10.0, log: true}"))
