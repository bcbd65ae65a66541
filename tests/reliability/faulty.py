"""Objectives that misbehave on purpose, importable by Ray workers as ``reliability.faulty``.

``tests/`` is on the workers' PYTHONPATH (the ``ray_local`` fixture's runtime_env) and on the
subprocess drivers' (the tests set it), so ``reliability.faulty:<name>`` imports everywhere.
Every fault is chosen by constants of the space (a comma-separated list of trial ids, a folder
for marker files), so the tests share nothing with the workers beyond the filesystem.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from distopt._context import current_context


def _trial_id() -> int:
    context = current_context()
    return -1 if context is None else context.trial_id


def _ids(text: Any) -> set[int]:
    return {int(t) for t in str(text).split(",") if t.strip()}


def _metrics(config: dict[str, Any]) -> dict[str, float]:
    x = float(config["x"])
    return {"f1": x, "f2": 1.0 - x}


def _mark(folder: Any, name: str, text: str = "") -> Path:
    path = Path(str(folder)) / name
    path.write_text(text)
    return path


def die_once(config: dict[str, Any]) -> dict[str, float]:
    """SIGKILL the worker process on the first attempt of the trials in ``config['die']``.

    A marker file ``died-<trial_id>`` in ``config['markers']`` remembers the first attempt, so the
    retry (on a fresh actor) succeeds. Every attempt leaves ``ran-<trial_id>-<pid>``.
    """
    trial_id = _trial_id()
    _mark(config["markers"], f"ran-{trial_id}-{os.getpid()}")
    marker = Path(str(config["markers"])) / f"died-{trial_id}"
    if trial_id in _ids(config["die"]) and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # not reached: SIGKILL cannot be caught
    time.sleep(float(config.get("sleep", 0.0)))
    return _metrics(config)


class OutOfMemoryError(RuntimeError):
    """Stands in for ``torch.cuda.OutOfMemoryError`` (same name and message; no torch import)."""


def oom_once(config: dict[str, Any]) -> dict[str, float]:
    """Raise CUDA out of memory on the first attempt of the trials in ``config['die']``."""
    trial_id = _trial_id()
    marker = Path(str(config["markers"])) / f"oom-{trial_id}"
    if trial_id in _ids(config["die"]) and not marker.exists():
        marker.write_text(str(os.getpid()))
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB "
                               "total capacity; 14.92 GiB already allocated)")
    return _metrics(config)


def always_die(config: dict[str, Any]) -> dict[str, float]:
    """SIGKILL the worker process on every attempt of the trials in ``config['die']``."""
    trial_id = _trial_id()
    if trial_id in _ids(config["die"]):
        _mark(config["markers"], f"died-{trial_id}-{os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    return _metrics(config)


def announce_and_sleep(config: dict[str, Any]) -> dict[str, float]:
    """Write ``running-<trial_id>-<n>`` (holding the Ray actor id), then sleep ``config['sleep']``.

    ``n`` counts the attempts seen so far, so a test can find the actor of a trial's first
    attempt and ``ray.kill`` it from outside.
    """
    import ray

    trial_id = _trial_id()
    folder = Path(str(config["markers"]))
    n = len(list(folder.glob(f"running-{trial_id}-*")))
    actor_id = ray.get_runtime_context().get_actor_id()
    tmp = folder / f".running-{trial_id}-{n}"
    tmp.write_text(f"{actor_id}\n{os.getpid()}")
    tmp.rename(folder / f"running-{trial_id}-{n}")  # atomic: the test never reads half a file
    time.sleep(float(config["sleep"]))
    return _metrics(config)


def slow_for(config: dict[str, Any]) -> dict[str, float]:
    """Sleep ``config['long']`` s for the trials in ``config['slow']``, else ``config['short']``."""
    seconds = config["long"] if _trial_id() in _ids(config["slow"]) else config["short"]
    time.sleep(float(seconds))
    return _metrics(config)


def sleepy(config: dict[str, Any]) -> dict[str, float]:
    """Sleep ``config['sleep']`` seconds (default 0.2): a search slow enough to interrupt."""
    time.sleep(float(config.get("sleep", 0.2)))
    return _metrics(config)


def late_metric(config: dict[str, Any]) -> dict[str, float]:
    """Also return ``aux`` from trial ``config['from_trial']`` on: a metric that appears late."""
    metrics = _metrics(config)
    if _trial_id() >= int(config["from_trial"]):
        metrics["aux"] = 2.0 * float(config["x"])
    return metrics


def oom_always(config: dict[str, Any]) -> dict[str, float]:
    """Raise CUDA out of memory on every attempt of the trials in ``config['die']``."""
    if _trial_id() in _ids(config["die"]):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return _metrics(config)
