"""Parameter types: unit-cube encoding, fair shares, bad specs and Arrow types."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import distopt
from distopt.space import OFF_BAND, Categorical, Float, Int

UNIT = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)
BOUND = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
SETTINGS = settings(max_examples=200, deadline=None)


@st.composite
def float_params(draw) -> Float:
    log = draw(st.booleans())
    if log:
        low = draw(st.floats(1e-8, 1e5))
        high = draw(st.floats(1e-8, 1e6))
        assume(high > low * (1 + 1e-6))
    else:
        low, high = draw(BOUND), draw(BOUND)
        assume(high - low > 1e-6 * max(1.0, abs(low), abs(high)))
    off = draw(st.one_of(st.none(), st.sampled_from([0.0, -1.0]), BOUND))
    return Float(low, high, log=log, off=off)


@st.composite
def int_params(draw) -> Int:
    if draw(st.booleans()):
        low = draw(st.integers(1, 10**6))
        return Int(low, draw(st.integers(low + 1, 10**7)), log=True)
    low = draw(st.integers(-10**9, 10**9))
    return Int(low, draw(st.integers(low + 1, low + 10**9)))


def _value_in(param: Float, u: float) -> float:
    """A value of ``param``'s range, chosen by ``u`` (not by the code under test)."""
    if param.log:
        return math.exp(math.log(param.low) + u * (math.log(param.high) - math.log(param.low)))
    return param.low + u * (param.high - param.low)


# -- Float ----------------------------------------------------------------------------------------

@SETTINGS
@given(float_params(), UNIT)
def test_float_decode_lands_in_domain(param, u):
    value = param.from_unit(u)
    assert isinstance(value, float)
    assert param.low <= value <= param.high or value == param.off
    assert param.contains(value)


@SETTINGS
@given(float_params(), UNIT)
def test_float_round_trip(param, u):
    value = min(max(_value_in(param, u), param.low), param.high)
    encoded = param.to_unit(value)
    assert 0.0 <= encoded <= 1.0
    decoded = param.from_unit(encoded)
    assert math.isclose(decoded, value, rel_tol=1e-9, abs_tol=1e-9 * (param.high - param.low))


@SETTINGS
@given(float_params())
def test_float_off_value_round_trips_exactly(param):
    assume(param.off is not None)
    decoded = param.from_unit(param.to_unit(param.off))
    if param.low <= param.off <= param.high:  # an off inside the range is an ordinary value
        assert math.isclose(decoded, param.off, rel_tol=1e-9,
                            abs_tol=1e-9 * (param.high - param.low))
    else:
        assert param.to_unit(param.off) < OFF_BAND
        assert decoded == param.off


def test_float_off_owns_the_bottom_band():
    param = Float(1e-4, 1e-1, log=True, off=0.0)
    grid = (np.arange(10_000) + 0.5) / 10_000
    values = [param.from_unit(u) for u in grid]
    share_off = sum(v == 0.0 for v in values) / len(values)
    assert share_off == pytest.approx(OFF_BAND, abs=1e-4)
    assert param.from_unit(OFF_BAND) == pytest.approx(1e-4)
    assert param.from_unit(1.0) == pytest.approx(1e-1)
    assert all(v == 0.0 or 1e-4 <= v <= 1e-1 for v in values)
    assert param.contains(0.0) and not param.contains(0.5) and not param.contains(1e-5)


def test_float_linear_and_log_scales():
    assert Float(0.0, 10.0).from_unit(0.25) == pytest.approx(2.5)
    assert Float(1e-4, 1.0, log=True).from_unit(0.5) == pytest.approx(1e-2)
    assert Float(1e-4, 1.0, log=True).to_unit(1e-3) == pytest.approx(0.25)
    # the ends are exact and out-of-cube coordinates are clipped
    param = Float(-3.0, 7.0)
    assert param.from_unit(0.0) == -3.0 and param.from_unit(1.0) == 7.0
    assert param.from_unit(-0.5) == -3.0 and param.from_unit(1.5) == 7.0


def test_float_contains_rejects_other_types():
    param = Float(0.0, 1.0)
    assert param.contains(0.5) and param.contains(np.float32(0.5)) and param.contains(1)
    assert not param.contains(True)
    assert not param.contains("0.5")
    assert not param.contains(1.5)


# -- Int ------------------------------------------------------------------------------------------

@SETTINGS
@given(int_params(), UNIT)
def test_int_decode_lands_in_domain(param, u):
    value = param.from_unit(u)
    assert type(value) is int
    assert param.low <= value <= param.high
    assert param.contains(value)


@SETTINGS
@given(int_params(), UNIT)
def test_int_round_trip_is_exact(param, u):
    value = param.low + int(u * (param.high - param.low))
    encoded = param.to_unit(value)
    assert 0.0 <= encoded <= 1.0
    assert param.from_unit(encoded) == value
    assert param.from_unit(param.to_unit(param.low)) == param.low
    assert param.from_unit(param.to_unit(param.high)) == param.high


def _fair_shares(low: int, high: int, log: bool) -> dict[int, float]:
    """Each integer's share of the coordinate: its cell [k-0.5, k+0.5], in log space if log."""
    if not log:
        return {k: 1.0 / (high - low + 1) for k in range(low, high + 1)}
    total = math.log((high + 0.5) / (low - 0.5))
    return {k: math.log((k + 0.5) / (k - 0.5)) / total for k in range(low, high + 1)}


@pytest.mark.parametrize("low, high, log", [
    (0, 4, False), (-3, 3, False), (5, 6, False), (1, 100, False),
    (1, 8, True), (2, 100, True), (10, 12, True),
])
def test_int_every_value_gets_its_fair_share(low, high, log):
    n = 40_000
    grid = (np.arange(n) + 0.5) / n
    param = Int(low, high, log=log)
    counts = Counter(param.from_unit(u) for u in grid)
    shares = _fair_shares(low, high, log)
    assert set(counts) == set(shares)  # every value reachable, nothing else
    for value, share in shares.items():
        # n midpoints in a cell of width `share` number share*n, give or take one per edge
        assert abs(counts[value] - share * n) <= 2, (value, counts[value], share * n)


def test_int_contains():
    param = Int(1, 4)
    assert param.contains(1) and param.contains(4) and param.contains(np.int64(2))
    assert not param.contains(0) and not param.contains(5)
    assert not param.contains(2.0) and not param.contains(True)


# -- Categorical ----------------------------------------------------------------------------------

CHOICE_LISTS = st.one_of(
    st.lists(st.text(max_size=5), min_size=1, max_size=8, unique=True),
    st.lists(st.integers(-100, 100), min_size=1, max_size=8, unique=True),
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=8, unique=True),
    st.sampled_from([[True, False], [False], [True]]),
)


@SETTINGS
@given(CHOICE_LISTS, UNIT)
def test_categorical_decode_and_round_trip(choices, u):
    param = Categorical(choices)
    value = param.from_unit(u)
    assert param.contains(value)
    for choice in choices:
        back = param.from_unit(param.to_unit(choice))
        assert back == choice and type(back) is type(choice)


@pytest.mark.parametrize("choices", [["relu", "gelu", "silu"], [1, 2, 4, 8, 16], [True, False]])
def test_categorical_equal_shares(choices):
    n = 30_000
    param = Categorical(choices)
    counts = Counter(param.from_unit(u) for u in (np.arange(n) + 0.5) / n)
    assert set(counts) == set(choices)
    for choice in choices:
        assert abs(counts[choice] - n / len(choices)) <= 1


def test_categorical_contains_checks_type():
    assert not Categorical([True, False]).contains(1)
    assert not Categorical([1, 2]).contains(True)
    assert not Categorical(["1", "2"]).contains(1)
    assert Categorical([0.5, 1.0]).contains(0.5)
    assert not Categorical(["a"]).contains("b")


# -- Arrow types ----------------------------------------------------------------------------------

@pytest.mark.parametrize("param, arrow_type", [
    (Float(0, 1), "float64"),
    (Float(1e-3, 1, log=True, off=0.0), "float64"),
    (Int(0, 3), "int64"),
    (Categorical(["a", "b"]), "string"),
    (Categorical([1, 2]), "int64"),
    (Categorical([1, 2.5]), "float64"),
    (Categorical([True, False]), "bool"),
])
def test_arrow_types(param, arrow_type):
    assert param.arrow_type == arrow_type


# -- bad specs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, field", [
    (lambda: Float("a", 1), "Float.low"),
    (lambda: Float(0, "b"), "Float.high"),
    (lambda: Float(True, 2), "Float.low"),
    (lambda: Float(math.nan, 1), "Float.low"),
    (lambda: Float(0, math.inf), "Float.high"),
    (lambda: Float(1, 0), "Float"),
    (lambda: Float(2, 2), "Float"),
    (lambda: Float(0, 1, log=True), "Float.low"),
    (lambda: Float(-1, 1, log=True), "Float.low"),
    (lambda: Float(0, 1, off="none"), "Float.off"),
    (lambda: Float(1e-3, 1, log="false"), "Float.log"),   # bool("false") was True
    (lambda: Int(1, 8, log=None), "Int.log"),
    (lambda: Int(0.5, 3), "Int.low"),
    (lambda: Int(0, 3.0), "Int.high"),
    (lambda: Int(3, 3), "Int"),
    (lambda: Int(0, 5, log=True), "Int.low"),
    (lambda: Categorical("abc"), "Categorical.choices"),
    (lambda: Categorical([]), "Categorical.choices"),
    (lambda: Categorical([1, "a"]), "Categorical.choices"),
    (lambda: Categorical([1, 1]), "Categorical.choices"),
    (lambda: Categorical([None]), "Categorical.choices"),
    (lambda: Categorical([[1], [2]]), "Categorical.choices"),
])
def test_bad_params_name_the_field(make, field):
    with pytest.raises(distopt.ConfigError) as info:
        make()
    message = str(info.value)
    assert message.startswith(f"{field}: ")
    assert "\n" not in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, distopt.DistoptError)


def test_numpy_bounds_and_choices_are_python_values():
    """``Float(np.float32(0), 1)`` was refused as "not a finite number"; numpy choices were
    recorded as text ("1") while the store held ints, so the study could not be resumed."""
    import json

    assert Float(np.float32(0.0), np.float32(1.0), off=np.float32(-1.0)) == Float(0.0, 1.0,
                                                                                   off=-1.0)
    param = Categorical(list(np.arange(1, 4)))
    assert param.choices == [1, 2, 3] and all(type(c) is int for c in param.choices)
    assert param.arrow_type == "int64" and param.contains(2) and param.contains(np.int64(2))
    again = json.loads(json.dumps(param.to_dict()))  # as the store records it
    assert Categorical(again["choices"]) == param
