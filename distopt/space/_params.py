"""Parameter types and their encoding to one coordinate of the unit cube.

Every strategy works on encoded points ``u`` in ``[0, 1]^d`` (one coordinate per searched
parameter) and decodes them back to typed values, so log scales, integers, categoricals and
"off" switches are handled in exactly one place.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .._errors import field_error

#: Width of the band at the bottom of a Float's coordinate that decodes to its ``off`` value.
OFF_BAND = 0.1

Scalar = str | int | float | bool


class Param(ABC):
    """One searched parameter: a typed domain with a bijection-ish map to ``[0, 1]``."""

    #: Arrow type name of the stored ``config/<name>`` column.
    arrow_type: str = "float64"

    @abstractmethod
    def from_unit(self, u: float) -> Any:
        """Decode a coordinate in ``[0, 1]`` to a value of the domain."""

    @abstractmethod
    def to_unit(self, value: Any) -> float:
        """Encode a value of the domain to the coordinate that decodes back to it."""

    @abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the domain (type included)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The declarative spec (the same form a space YAML uses)."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({fields})"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _yaml_number_fix(text: str) -> str:
    """How to write ``text`` so that YAML 1.1 reads a number: its exponent needs a dot in the
    mantissa and a sign (``1.0e+308``, ``1.0e-3``), which ``1e-3`` and ``1.0e308`` lack."""
    if not math.isfinite(float(text)):
        return "write a finite number"
    mantissa, e, exponent = text.strip().lower().replace("_", "").partition("e")
    if not e:
        return f"write it unquoted, e.g. {float(text)!r}"
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[:1] not in "+-":
        exponent = "+" + exponent
    return (f"YAML 1.1 reads an exponent without a dot and a sign as text: write "
            f"{mantissa}e{exponent}")


def _check_bounds(kind: str, low: Any, high: Any, log: bool) -> None:
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, str) and _looks_numeric(value):
            raise field_error(f"{kind}.{name}", f"must be a number; got the text {value!r}",
                              _yaml_number_fix(value))
        if (isinstance(value, (bool, np.bool_))
                or not isinstance(value, (int, float, np.integer, np.floating))
                or not math.isfinite(value)):
            raise field_error(f"{kind}.{name}", f"must be a finite number; got {value!r}")
    if not isinstance(log, (bool, np.bool_)):  # bool("false") is True
        raise field_error(f"{kind}.log", f"must be True or False; got {log!r}")
    if not low < high:
        raise field_error(f"{kind}", f"needs low < high; got low={low!r}, high={high!r}",
                          "swap them or widen the range")
    if log and low <= 0:
        raise field_error(f"{kind}.low", f"must be > 0 with log=True; got {low!r}",
                          "use a positive lower bound, or log=False (add off=0.0 to allow zero)")


def _clip_unit(u: float) -> float:
    return min(max(float(u), 0.0), 1.0)


class Float(Param):
    """A real number in ``[low, high]``, uniform or log-uniform.

    ``off`` adds one exact extra value outside the range (typically ``0.0``: "regulariser off").
    It owns the band ``u < 0.1`` of the coordinate, so a uniform draw picks it with probability 0.1
    and continuous strategies can still move through the range.
    """

    arrow_type = "float64"

    def __init__(self, low: float, high: float, *, log: bool = False, off: float | None = None):
        _check_bounds("Float", low, high, log)
        if off is not None and (isinstance(off, (bool, np.bool_))
                                or not isinstance(off, (int, float, np.integer, np.floating))):
            raise field_error("Float.off", f"must be a number or None; got {off!r}")
        self.low, self.high, self.log = float(low), float(high), bool(log)
        self.off = None if off is None else float(off)

    def _span(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.low), math.log(self.high)
        return self.low, self.high

    def from_unit(self, u: float) -> float:
        u = _clip_unit(u)
        if self.off is not None:
            if u < OFF_BAND:
                return self.off
            u = (u - OFF_BAND) / (1.0 - OFF_BAND)
        a, b = self._span()
        x = a + u * (b - a)
        value = math.exp(x) if self.log else x
        return min(max(value, self.low), self.high)  # exp/log round-off must not leave the range

    def to_unit(self, value: Any) -> float:
        value = float(value)
        if self.off is not None and value == self.off and not (self.low <= value <= self.high):
            return OFF_BAND / 2
        a, b = self._span()
        x = math.log(min(max(value, self.low), self.high)) if self.log else value
        u = (x - a) / (b - a)
        if self.off is not None:
            u = OFF_BAND + u * (1.0 - OFF_BAND)
        return _clip_unit(u)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            return False
        value = float(value)
        return (self.low <= value <= self.high) or (self.off is not None and value == self.off)

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": "float", "low": self.low, "high": self.high,
                                "log": self.log}
        if self.off is not None:
            spec["off"] = self.off
        return spec


class Int(Param):
    """An integer in ``[low, high]`` (both included), uniform or log-uniform.

    Decoding treats the integer ``k`` as the interval ``[k - 0.5, k + 0.5)`` of a continuous
    variable, so every integer gets its fair share of the coordinate, endpoints included.
    """

    arrow_type = "int64"

    def __init__(self, low: int, high: int, *, log: bool = False):
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise field_error(f"Int.{name}", f"must be an int; got {value!r}",
                                  "use Float for real-valued ranges")
        _check_bounds("Int", int(low), int(high), log)
        self.low, self.high, self.log = int(low), int(high), bool(log)

    def _span(self) -> tuple[float, float]:
        a, b = self.low - 0.5, self.high + 0.5
        if self.log:
            return math.log(max(a, 1e-12)), math.log(b)
        return a, b

    def from_unit(self, u: float) -> int:
        a, b = self._span()
        x = a + _clip_unit(u) * (b - a)
        value = math.exp(x) if self.log else x
        return int(min(max(round(value), self.low), self.high))

    def to_unit(self, value: Any) -> float:
        a, b = self._span()
        v = float(min(max(int(value), self.low), self.high))
        if self.log:
            # centre of the integer's cell in log space
            lo, hi = math.log(max(v - 0.5, 1e-12)), math.log(v + 0.5)
            lo, hi = max(lo, a), min(hi, b)
            return _clip_unit(((lo + hi) / 2 - a) / (b - a))
        return _clip_unit((v - a) / (b - a))

    def contains(self, value: Any) -> bool:
        return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                and self.low <= int(value) <= self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


def arrow_type_of(values: list[Any], field: str) -> str:
    """The single Arrow type for a list of scalars; mixed kinds are an error naming ``field``."""
    kinds = set()
    for value in values:
        if isinstance(value, bool) or isinstance(value, np.bool_):
            kinds.add("bool")
        elif isinstance(value, (int, np.integer)):
            kinds.add("int64")
        elif isinstance(value, (float, np.floating)):
            kinds.add("float64")
        elif isinstance(value, str):
            kinds.add("string")
        else:
            raise field_error(field, f"values must be str, int, float or bool; got {value!r}")
    if kinds == {"int64", "float64"}:
        return "float64"
    if len(kinds) != 1:
        raise field_error(field, f"values must share one type; got {sorted(kinds)}",
                          "quote them all as strings or make them all numbers")
    return kinds.pop()


class Categorical(Param):
    """One of a fixed list of choices (str, int, float or bool, all of one type).

    The coordinate is cut into ``len(choices)`` equal bins; model-based strategies that need a
    one-hot view read :attr:`choices` and :meth:`index` instead.
    """

    def __init__(self, choices: list[Scalar] | tuple[Scalar, ...]):
        if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)):
            raise field_error("Categorical.choices", f"must be a list; got {choices!r}",
                              'e.g. Categorical(["relu", "gelu"])')
        # numpy scalars (list(np.arange(3))) as Python's: what the store records and compares
        choices = [c.item() if isinstance(c, np.generic) else c for c in choices]
        if len(choices) == 0:
            raise field_error("Categorical.choices", "is empty", "give at least one choice")
        self.arrow_type = arrow_type_of(list(choices), "Categorical.choices")
        if len(set(choices)) != len(choices):
            raise field_error("Categorical.choices", f"has duplicates: {list(choices)!r}")
        self.choices = list(choices)

    def index(self, value: Any) -> int:
        """Position of ``value`` among the choices."""
        return self.choices.index(value)

    def from_unit(self, u: float) -> Any:
        k = min(int(_clip_unit(u) * len(self.choices)), len(self.choices) - 1)
        return self.choices[k]

    def to_unit(self, value: Any) -> float:
        return (self.index(value) + 0.5) / len(self.choices)

    def contains(self, value: Any) -> bool:
        if isinstance(value, np.generic):  # np.int64(2) is the choice 2, as for Int
            value = value.item()
        return any(value == c and type(value) is type(c) for c in self.choices) or (
            self.arrow_type == "float64" and value in self.choices)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)}
