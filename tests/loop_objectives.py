"""Objectives and a strategy for tests/test_orchestrator.py, importable by Ray workers
(``tests/`` is on their PYTHONPATH: see the ``ray_local`` fixture)."""

from __future__ import annotations

import time
from typing import Any

import distopt
from distopt.strategies import RandomStrategy


@distopt.batched(max_size=64)
def bowls_cohort(configs: list[dict[str, Any]]) -> list[Any]:
    """Two bowls per member; a member with ``x > fail_above`` fails alone; ``steps`` report
    rows per member, ``pause`` seconds apart; stopped members are masked."""
    cohort = distopt.cohort()
    steps = int(configs[0].get("steps", 3))
    seen = [0] * len(configs)
    for step in range(steps):
        cohort.report(step=step, loss=[c["x"] / (step + 1) for c in configs])
        seen = [n + int(active) for n, active in zip(seen, cohort.active, strict=True)]
        time.sleep(float(configs[0].get("pause", 0.0)))
    out: list[Any] = []
    for config, reported in zip(configs, seen, strict=True):
        x = float(config["x"])
        if x > float(config.get("fail_above", 2.0)):
            out.append(ValueError(f"member with x={x:.3f} diverged"))
        else:
            out.append({"f1": x * x, "f2": (1.0 - x) ** 2, "steps_seen": reported})
    return out


def quick(config: dict[str, Any]) -> dict[str, float]:
    """A fast two-objective trial (``sleep`` seconds)."""
    time.sleep(float(config.get("sleep", 0.0)))
    x = float(config["x"])
    return {"f1": x, "f2": 1.0 - x}


class Paced(RandomStrategy):
    """Sobol points; records the pace the orchestrator tells it."""

    def __init__(self, *, seed: int | None = 0):
        super().__init__(seed=seed)
        self.paces: list[tuple[float, int]] = []

    def observe_pace(self, trial_seconds: float, concurrency: int) -> None:
        self.paces.append((trial_seconds, concurrency))


class SlowAsk(Paced):
    """Sobol points that take ``delay`` seconds each ask, computed in the background; records
    when each ask ran (driver side)."""

    background_ask = True
    queue_depth = 1  # nothing queued on a worker: a trial starts only when the loop sends it

    def __init__(self, *, seed: int | None = 0, delay: float = 0.5):
        super().__init__(seed=seed)
        self.delay = delay
        self.asks: list[tuple[float, float]] = []

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        began = time.time()
        time.sleep(self.delay)
        configs = super()._ask(n, pending)
        self.asks.append((began, time.time()))
        return configs


class Scaled(RandomStrategy):
    """A user's strategy with an option (for resume tests)."""

    def __init__(self, *, seed: int | None = 0, scale: float = 1.0):
        super().__init__(seed=seed)
        self.scale = scale

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        configs = super()._ask(n, pending)
        return [{**c, "x": c["x"] * self.scale} for c in configs]
