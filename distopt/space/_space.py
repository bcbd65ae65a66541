"""A search space: named parameters plus constants, encoded to and from the unit cube."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._checks import LARGE_DATA_FIX, MAX_SCALAR_CHARS
from .._errors import ConfigError, field_error
from ._params import Categorical, Float, Int, Param, arrow_type_of

_SPEC_KEYS = {
    "float": ({"type", "low", "high", "log", "off"}, Float),
    "int": ({"type", "low", "high", "log"}, Int),
    "categorical": ({"type", "choices"}, Categorical),
}


#: Decimals kept when comparing encoded points: far below any meaningful step of a parameter,
#: far above the round-off of an encode/decode round trip.
KEY_DECIMALS = 9


def point_keys(points: np.ndarray | Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    """The one "same configuration" rule: hashable identities of encoded points, shape
    ``(n_points, dim)`` -> ``n_points`` tuples (two points with one key are one configuration)."""
    rounded = np.round(np.asarray(points, dtype=float), KEY_DECIMALS) + 0.0  # -0.0 -> 0.0
    return [tuple(row) for row in rounded.tolist()]


def param_from_spec(name: str, spec: Any) -> Param | Any:
    """A Param from its declarative spec (the YAML form), or the constant itself for a scalar."""
    if isinstance(spec, Param):
        return spec
    field = f"space.{name}"
    if isinstance(spec, str) and len(spec) > MAX_SCALAR_CHARS:
        raise field_error(field, f"is a constant of {len(spec):,} characters, over the "
                                 f"{MAX_SCALAR_CHARS:,} copied into every trial's row",
                          LARGE_DATA_FIX)
    if isinstance(spec, (str, int, float, bool)):
        return spec
    if type(spec).__module__.startswith(("ray.tune", "optuna")):  # a Tune or Optuna habit
        library = "Ray Tune" if type(spec).__module__.startswith("ray") else "Optuna"
        raise field_error(field, f"is a {library} {type(spec).__name__}, not a distopt "
                                 f"parameter",
                          "use distopt.Float(low, high, log=...), distopt.Int(low, high) or "
                          "distopt.Categorical([...])")
    if isinstance(spec, (list, tuple)):
        raise field_error(field, f"is a list ({spec!r}), not a constant (one str, int, float "
                                 f"or bool)", "to search among these values, use "
                                              "{type: categorical, choices: [...]}")
    if not isinstance(spec, Mapping):
        raise field_error(field, f"must be a mapping like {{type: float, low: 0, high: 1}} or a "
                                 f"constant; got {spec!r}")
    if "type" not in spec:
        raise field_error(f"{field}.type", f"is missing (got {dict(spec)!r}): a parameter is "
                                           f"{{type: float, int or categorical, ...}}, and a "
                                           f"constant one str, int, float or bool")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _SPEC_KEYS:
        raise field_error(f"{field}.type", f"must be one of float, int, categorical; got {kind!r}")
    allowed, cls = _SPEC_KEYS[kind]
    if False in spec and "off" not in spec:
        # YAML 1.1 (PyYAML) reads an unquoted `off:` key as the boolean false: it meant "off".
        spec = {("off" if k is False else k): v for k, v in spec.items()}
    unknown = set(spec) - allowed
    if unknown:
        raise field_error(field, f"unknown key(s) {sorted(unknown, key=str)} for type {kind}",
                          f"allowed: {sorted(allowed)}")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    if not isinstance(kwargs.get("log", False), bool):
        raise field_error(f"{field}.log", f"must be true or false; got {kwargs['log']!r}")
    try:
        if cls is Categorical:
            if "choices" not in kwargs:
                raise field_error(f"{field}.choices", "is missing", "list the choices")
            return Categorical(kwargs["choices"])
        for key in ("low", "high"):
            if key not in kwargs:
                raise field_error(f"{field}.{key}", "is missing", f"set {key}")
        low, high = kwargs.pop("low"), kwargs.pop("high")
        return cls(low, high, **kwargs)
    except Exception as error:  # re-label the message with the full field path
        message = str(error)
        head, sep, rest = message.partition(": ")
        if not isinstance(error, ConfigError) or not sep:
            where, rest = field, message
        elif head.startswith(field):
            where = head                                 # raised above: already the full path
        elif "." in head:
            where = f"{field}.{head.split('.', 1)[1]}"   # "Float.low" -> "space.x.low"
        else:
            where = field                                # "Float: needs low < high"
        raise field_error(where, rest) from None


class Space:
    """Named parameters (searched) and constants (passed to every trial unchanged).

    Encoded points have shape ``(n_points, dim)`` with one coordinate per searched parameter in
    the order of :attr:`names`.
    """

    def __init__(self, params: Mapping[str, Any]):
        if not isinstance(params, Mapping):
            raise field_error("space", f"must be a mapping of name to parameter; got {params!r}")
        self.params: dict[str, Param] = {}
        self.constants: dict[str, Any] = {}
        for name, spec in params.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise field_error("space", f"parameter names must be non-empty strings without "
                                           f"'/'; got {name!r}",
                                  "quote it: YAML 1.1 reads on, off, yes and no as booleans"
                                  if isinstance(name, bool) else None)
            value = param_from_spec(name, spec)
            if isinstance(value, Param):
                self.params[name] = value
            else:
                self.constants[name] = value
        if not self.params:
            raise field_error("space", "has no searched parameter",
                              "add at least one Float, Int or Categorical")
        self.names: list[str] = list(self.params)

    @property
    def dim(self) -> int:
        """Number of encoded coordinates."""
        return len(self.names)

    def decode(self, points: np.ndarray | Sequence[Sequence[float]]) -> list[dict[str, Any]]:
        """Configurations for unit-cube ``points`` of shape ``(n_points, dim)``."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        if points.shape[1] != self.dim:
            raise ValueError(f"points must have {self.dim} columns; got shape {points.shape}")
        configs = []
        for row in points:
            config = {name: self.params[name].from_unit(u)
                      for name, u in zip(self.names, row, strict=True)}
            config.update(self.constants)
            configs.append(config)
        return configs

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Unit-cube points of shape ``(n_points, dim)`` for configurations."""
        out = np.empty((len(configs), self.dim))
        for i, config in enumerate(configs):
            for j, name in enumerate(self.names):
                out[i, j] = self.params[name].to_unit(config[name])
        return out

    def config_keys(self, configs: Sequence[Mapping[str, Any]]) -> list[tuple[float, ...]]:
        """:func:`point_keys` of configurations: equal keys mean the same configuration."""
        return point_keys(self.encode(configs)) if len(configs) else []

    def gives_every_param(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` has a value for every searched parameter (a trial imported from a
        define-by-run Optuna study may lack one: distopt's spaces are not conditional)."""
        return all(config.get(name) is not None for name in self.names)

    def validate(self, config: Mapping[str, Any], *, where: str = "config") -> None:
        """Raise a ConfigError naming the first parameter whose value is outside its domain."""
        for name, param in self.params.items():
            if name not in config:
                raise field_error(f"{where}.{name}", "is missing")
            if not param.contains(config[name]):
                raise field_error(f"{where}.{name}", f"{config[name]!r} is outside {param!r}")

    def arrow_types(self) -> dict[str, str]:
        """Arrow type name of each ``config/<name>`` column, constants included."""
        types = {name: p.arrow_type for name, p in self.params.items()}
        for name, value in self.constants.items():
            types[name] = arrow_type_of([value], f"space.{name}")
        return types

    def to_dict(self) -> dict[str, Any]:
        """The declarative form (round-trips through :class:`Space`)."""
        spec: dict[str, Any] = {name: p.to_dict() for name, p in self.params.items()}
        spec.update(self.constants)
        return spec

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Space({self.to_dict()!r})"
