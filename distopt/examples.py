"""Small analytic objectives: the README's first example, the tests and the overhead benchmark.

They are importable by ``module:function`` (``distopt.examples:two_bowls``) on every Ray node,
unlike functions defined in ``__main__`` or a notebook.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ._context import report


def two_bowls(config: dict[str, Any]) -> dict[str, float]:
    """Two conflicting quadratic bowls in ``x`` (and ``y``), with a per-epoch curve.

    Minimising ``f1 = x^2 + y^2`` and ``f2 = (x - 1)^2 + y^2``: the Pareto set is ``y = 0``,
    ``x in [0, 1]`` and the front is ``sqrt(f1) + sqrt(f2) = 1``. ``g = x`` serves as a
    constraint metric. Optional ``epochs`` reports that many curve rows and ``sleep`` seconds
    of pretend training per epoch.
    """
    x, y = float(config["x"]), float(config.get("y", 0.0))
    epochs = int(config.get("epochs", 3))
    for epoch in range(epochs):
        report(step=epoch, train_loss=(x**2 + y**2) * (1 + 1 / (epoch + 1)))
        if config.get("sleep"):
            time.sleep(float(config["sleep"]))
    return {"f1": x**2 + y**2, "f2": (x - 1) ** 2 + y**2, "g": x}


def instant(config: dict[str, Any]) -> dict[str, float]:
    """Returns at once: isolates the orchestration overhead in benchmarks."""
    x = float(config["x"])
    return {"f1": x, "f2": 1.0 - x}


def flaky(config: dict[str, Any]) -> dict[str, Any]:
    """Misbehaves on purpose, by ``config['mode']``: raise, nan, missing, text, none or ok."""
    mode = config.get("mode", "ok")
    x = float(config.get("x", 0.5))
    if mode == "raise":
        raise ValueError(f"objective failed on purpose at x={x:.3f}")
    if mode == "nan":
        return {"f1": math.nan, "f2": x}
    if mode == "missing":
        return {"f1": x}
    if mode == "text":
        return {"f1": "high", "f2": x}
    if mode == "none":
        return None  # type: ignore[return-value]
    return {"f1": x, "f2": 1 - x}
