"""Early stopping: schedulers that stop running trials from their ``distopt.report`` rows.

``Study.optimize(objective, budget, scheduler=MOASHA(...))`` (or ``scheduler:`` in a study file)
works with any strategy. Stopped trials are recorded ``PRUNED`` with the metrics of their last
report; strategies and the Pareto front only use ``COMPLETE`` trials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._checks import check_keywords
from .._errors import field_error
from .._plugin import split_spec
from ._base import Scheduler
from ._moasha import MOASHA, crowding_distance, number_better

#: name -> class of every built-in scheduler.
REGISTRY: dict[str, type[Scheduler]] = {"moasha": MOASHA}


def make_scheduler(spec: str | Mapping[str, Any] | Scheduler | None) -> Scheduler | None:
    """A scheduler from a name, a ``{name: ..., options: {...}}`` mapping, or an instance."""
    if spec is None or isinstance(spec, Scheduler):
        return spec
    spec, options = split_spec(spec, "scheduler", "{name: moasha}")
    if not isinstance(spec, str) or spec not in REGISTRY:
        raise field_error("scheduler", f"unknown scheduler {spec!r}",
                          f"choose one of {', '.join(REGISTRY)}")
    check_keywords("scheduler.options", REGISTRY[spec], options)
    try:
        return REGISTRY[spec](**options)
    except TypeError as error:
        raise field_error("scheduler.options", f"{spec}: {error}") from None


__all__ = ["MOASHA", "REGISTRY", "Scheduler", "crowding_distance", "make_scheduler",
           "number_better"]
