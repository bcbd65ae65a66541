"""Search strategies behind one ``ask(n, pending)`` / ``tell(results)`` interface.

Strategies are looked up by name lazily, so choosing ``random`` never imports BoTorch or Optuna.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from .._errors import field_error
from .._plugin import split_spec
from ._base import Strategy
from ._random import RandomStrategy

#: name -> "module:class" of every built-in strategy (modules are imported on first use).
REGISTRY: dict[str, str] = {
    "random": "distopt.strategies._random:RandomStrategy",
    "bayes": "distopt.strategies._bayes:BayesStrategy",
    "pareto": "distopt.strategies._pareto:ParetoStrategy",
    "tpe": "distopt.strategies._tpe:TPEStrategy",
    "jacobian": "distopt.strategies._jacobian:JacobianStrategy",
}


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name``; a clear error lists the known names."""
    if name not in REGISTRY:
        raise field_error("strategy", f"unknown strategy {name!r}",
                          f"choose one of {', '.join(REGISTRY)}")
    module_name, class_name = REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise field_error("strategy", f"{name!r} is not available in this version") from None
        raise
    return getattr(module, class_name)


def make_strategy(spec: str | Strategy | Mapping[str, Any], *, seed: int | None = 0) -> Strategy:
    """Build a strategy from a name, a ``{name: ..., options: {...}}`` mapping, or an instance."""
    if isinstance(spec, Strategy):
        return spec
    spec, options = split_spec(spec, "strategy", "{name: bayes, options: {seed: 1}}")
    if not isinstance(spec, str):
        raise field_error("strategy", f"must be a name, a mapping or a Strategy; got {spec!r}")
    cls = strategy_class(spec)
    try:
        return cls(seed=seed, **options)
    except TypeError as error:
        raise field_error("strategy.options", f"{spec}: {error}",
                          "check the option names in the strategy's docstring") from None


__all__ = ["REGISTRY", "RandomStrategy", "Strategy", "make_strategy", "strategy_class"]
