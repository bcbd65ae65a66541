"""Search strategies behind one ``ask(n, pending)`` / ``tell(results)`` interface.

Strategies are looked up by name lazily, so choosing ``random`` never imports BoTorch or Optuna.
Users add their own with :func:`register`, or pass an instance; either way ``to_dict`` records
what ran, so ``distopt resume`` rebuilds it with the same options.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from .._checks import check_keywords, did_you_mean
from .._errors import field_error
from .._plugin import split_spec
from ._base import Strategy
from ._random import RandomStrategy

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
#: name -> "module:class" (imported on first use) or a class, for every known strategy.
REGISTRY: dict[str, str | type[Strategy]] = {
    "random": "distopt.strategies._random:RandomStrategy",
    "bayes": "distopt.strategies._bayes:BayesStrategy",
    "pareto": "distopt.strategies._nsga2:NSGA2Strategy",
    "tpe": "distopt.strategies._tpe:TPEStrategy",
    "jacobian": "distopt.strategies._jacobian:JacobianStrategy",
}


def register(name: str, strategy: type[Strategy] | str) -> None:
    """Make ``strategy`` (a ``Strategy`` subclass, or its ``"module:Class"`` path) available as
    ``strategy=name`` in the API, study files and ``--strategy``."""
    if not isinstance(name, str) or not name or ":" in name:
        raise field_error("register.name", f"must be a non-empty name without ':'; got {name!r}")
    if isinstance(strategy, str):
        if strategy.count(":") != 1:
            raise field_error("register.strategy", f"must be a Strategy subclass or "
                                                   f"'module:Class'; got {strategy!r}")
    elif not (isinstance(strategy, type) and issubclass(strategy, Strategy)):
        raise field_error("register.strategy", f"must be a Strategy subclass; got {strategy!r}")
    REGISTRY[name] = strategy


#: The names every process knows; a name registered at run time is known only where it was.
BUILTIN: dict[str, str] = dict(REGISTRY)  # type: ignore[arg-type]


def registered_name(cls: type[Strategy]) -> str:
    """The built-in name of ``cls``, else its import path ``module:Class`` (what a later
    process, ``distopt resume`` say, can rebuild it from without the ``register`` call)."""
    path = f"{cls.__module__}:{cls.__qualname__}"
    for name, entry in BUILTIN.items():
        if entry == path:
            return name
    return path


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name`` (or at the import path ``module:Class``)."""
    entry = REGISTRY.get(name)
    if entry is None and not _IMPORT_PATH.match(name):
        raise field_error("strategy", f"unknown strategy {name!r}"
                                      f"{did_you_mean(str(name), REGISTRY)}",
                          f"choose one of {', '.join(REGISTRY)}, or register your own with "
                          f"distopt.strategies.register")
    if isinstance(entry, type):
        return entry
    module_name, _, class_name = (entry or name).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if entry is not None and error.name == module_name:
            raise field_error("strategy", f"{name!r} is not available in this version") from None
        if entry is None:
            raise field_error("strategy", f"cannot import module {module_name!r} of {name!r}",
                              "put it in the working directory or the study file's folder, or "
                              "install it") from None
        raise
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise field_error("strategy", f"{name!r} is not a Strategy subclass")
    return cls


def make_strategy(spec: str | Strategy | Mapping[str, Any], *, seed: int | None = 0) -> Strategy:
    """Build a strategy from a name, a ``{name: ..., options: {...}}`` mapping, or an instance."""
    if isinstance(spec, Strategy):
        return spec
    spec, options = split_spec(spec, "strategy", "{name: bayes, options: {seed: 1}}")
    if not isinstance(spec, str):
        raise field_error("strategy", f"must be a name, a mapping or a Strategy; got {spec!r}")
    cls = strategy_class(spec)
    check_keywords("strategy.options", cls, options)
    try:  # a seed among the options is the strategy's own and wins over the study's
        return cls(**{"seed": seed, **options})
    except TypeError as error:
        raise field_error("strategy.options", f"{spec}: {error}",
                          "check the option names in the strategy's docstring") from None


__all__ = ["REGISTRY", "RandomStrategy", "Strategy", "make_strategy", "register",
           "registered_name", "strategy_class"]
