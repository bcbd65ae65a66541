"""The worker: runs one trial at a time in a Ray actor and returns its row to the driver.

The worker never writes the store. It returns the finished trial (and any report rows not yet
collected) as the value of ``run``; for long trials the driver also calls ``drain`` about once a
second to stream learning curves while the trial runs. ``drain`` and ``stop`` (a scheduler
stopping the trial early) run beside ``run`` because the actor gives them their own ``control``
concurrency group, while ``run`` calls (one trial or a batch each) run one at a time.

Everything a user's objective can do wrong (raise, return a non-dict, NaN, a missing or
non-numeric metric) becomes a FAILED row with the reason; a trial stopped by a scheduler becomes a
PRUNED row with the metrics of its last report; only the worker process dying, and a device
fault (CUDA out of memory: ``run`` raises it), are left to the orchestrator, which retries them.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._codepath import ShippedObjective
from ._context import (
    TrialContext,
    TrialPruned,
    _set_context,
    install_cohort,
    running_contexts,
)
from .cohort import Cohort, is_batched
from .trial import COMPLETE, FAILED, PRUNED, is_device_fault, is_reserved, trial_row

#: Longest error text kept per trial: the head (where it started) and the tail (the exception).
MAX_ERROR_CHARS = 4000


def _number(value: Any) -> float | None:
    if isinstance(value, (str, bytes)):  # float("0.5") would pass a text metric as a number
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)  # int, float, numpy scalars, 0-d tensors
    except (TypeError, ValueError, RuntimeError):
        return None


def check_metrics(returned: Any, required: Sequence[str],
                  reserved: frozenset[str]) -> tuple[dict[str, float], str | None]:
    """Validate an objective's return value: ``(metrics, None)`` or ``({...}, reason)``."""
    example = f"{{'{required[0] if required else 'loss'}': 0.1}}"
    if returned is None:  # the Ray Tune habit: report the final metrics, return nothing
        return {}, (f"objective returned NoneType (nothing); return a dict of the metrics, "
                    f"e.g. {example}; distopt does not read metrics from report() calls")
    if not isinstance(returned, Mapping):
        factory = (" (a factory's product? name the factory as objective: {call: "
                   "module:factory} in a study file)") if callable(returned) else ""
        return {}, (f"objective returned {type(returned).__name__}{factory}; return a dict of "
                    f"metric name to number, e.g. {example}")
    metrics: dict[str, float] = {}
    problems = []
    for name, value in returned.items():
        if not isinstance(name, str):
            problems.append(f"metric name {name!r} is not a string "
                            f"({type(name).__name__}); name metrics with strings")
            continue
        if name in reserved or is_reserved(name):
            problems.append(f"metric name {name!r} is reserved; rename it")
            continue
        number = _number(value)
        if number is None:
            problems.append(f"metric {name!r} is not a number: {value!r}")
            continue
        metrics[name] = number
    missing = [m for m in required if m not in returned]
    if missing:
        problems.append(f"objective did not return metric(s) {missing}; returned "
                        f"{sorted(map(str, returned))}; return every objective and constraint "
                        f"metric in the dict")
    bad = [m for m in required if m in metrics and not math.isfinite(metrics[m])]
    if bad:
        problems.append(f"metric(s) {bad} are not finite: "
                        + ", ".join(f"{m}={metrics[m]}" for m in bad))
    return metrics, "; ".join(problems) or None


class TrialWorker:
    """Runs trials of one objective; created once per worker slot as a Ray actor."""

    def __init__(self, objective: Callable[[dict[str, Any]], Any] | ShippedObjective,
                 required: Sequence[str], reserved: frozenset[str], name: str):
        self._objective = objective.load() if isinstance(objective, ShippedObjective) \
            else objective
        self._required = list(required)
        self._reserved = reserved
        self._name = name
        self._node_id = _node_id()
        self._device = _assigned_device()

    def ready(self) -> dict[str, Any]:
        """Where this worker runs (answers once the actor has started)."""
        return {"worker": self._name, "node_id": self._node_id, "pid": os.getpid(),
                "device": self._device, "free_memory": _free_device_memory(self._device)}

    def run(self, trials: list[tuple[int, dict[str, Any], int]]) -> list[dict[str, Any]]:
        """Run ``(trial_id, config, attempt)`` trials (one after another, or as one cohort when
        the objective is batched); return their rows."""
        if is_batched(self._objective):
            return self.run_cohort(trials)
        return [self.run_one(*trial) for trial in trials]

    def run_cohort(self, trials: list[tuple[int, dict[str, Any], int]]) -> list[dict[str, Any]]:
        """Run the trials as one call of a batched objective; one row per member.

        A member whose result is an exception, or whose metrics are unusable, fails alone; a
        member stopped by a scheduler is PRUNED with its last reported metrics; an exception
        from the call itself fails every member (a device fault is raised for a retry).
        """
        members = [TrialContext(trial_id=t, device=self._device, attempt=a) for t, _, a in trials]
        install_cohort(Cohort(members))
        start = time.time()
        try:
            # a wrong number of results, or not a list, raises here: every member fails once
            results: Any = self._objective.batch([config for _, config, _ in trials])
            shared = None
        except (Exception, SystemExit) as exc:  # as in run_one
            if is_device_fault(exc):
                raise
            results, shared = [None] * len(trials), _clip(
                "".join(traceback.format_exception(exc)).strip())
        finally:
            install_cohort(None)
        rows = []
        for (trial_id, config, attempt), member, result in zip(trials, members, results,
                                                               strict=True):
            if member.stop_requested:
                status, metrics, error = PRUNED, dict(member.latest_metrics), (
                    f"trial {trial_id} stopped early by the scheduler")
            elif shared is not None:
                status, metrics, error = FAILED, {}, shared
            elif isinstance(result, BaseException):
                status, metrics, error = FAILED, {}, _clip(
                    "".join(traceback.format_exception(result)).strip())
            else:
                metrics, error = check_metrics(result, self._required, self._reserved)
                status = FAILED if error else COMPLETE
            row = trial_row(trial_id, status, config, metrics, error=error, attempts=attempt,
                            start_time=start, worker=self._name, node_id=self._node_id)
            row["curves"] = _tag(member, member.take_rows())
            rows.append(row)
        return rows

    def run_one(self, trial_id: int, config: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
        """Run the objective on ``config``; return the trial row plus undrained report rows."""
        context = TrialContext(trial_id=trial_id, device=self._device, attempt=attempt)
        _set_context(context)
        start = time.time()
        error = None
        metrics: dict[str, float] = {}
        status = COMPLETE
        try:
            returned = self._objective(dict(config))
            metrics, error = check_metrics(returned, self._required, self._reserved)
        except TrialPruned as exc:  # a scheduler stopped it: keep its latest reported metrics
            status, error = PRUNED, str(exc)
            metrics = dict(context.latest_metrics)
        except (Exception, SystemExit) as exc:  # the objective failed (sys.exit too, which
            # would end this worker and be retried as a dead one): recorded, the study goes on
            if is_device_fault(exc):
                raise  # the driver replaces this process and retries the trial (max_retries)
            error = _clip("".join(traceback.format_exception(exc)).strip())
        finally:
            _set_context(None)
        if error and status == COMPLETE:
            status = FAILED
        row = trial_row(trial_id, status, config, metrics, error=error, attempts=attempt,
                        start_time=start, worker=self._name, node_id=self._node_id)
        row["curves"] = _tag(context, context.take_rows())
        return row

    def drain(self) -> list[dict[str, Any]]:
        """Report rows of the running trial or cohort not yet sent (empty when idle)."""
        return [row for context in running_contexts()
                for row in _tag(context, context.take_rows())]

    def stop(self, trial_id: int) -> bool:
        """Ask trial ``trial_id`` to stop: its next ``distopt.report`` raises ``TrialPruned``.

        Returns False when that trial is not the one running (it has already ended).
        """
        for context in running_contexts():
            if context.trial_id == trial_id:
                context.stop_requested = True
                return True
        return False


def _clip(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    half = (MAX_ERROR_CHARS - 60) // 2  # room for the marker line
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters cut] ...\n{text[-half:]}"


def _tag(context: TrialContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["trial_id"], row["attempt"] = context.trial_id, context.attempt
    return rows


def _node_id() -> str | None:
    try:
        import ray

        if not ray.is_initialized():  # asking the runtime context would start a local Ray
            return None
        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (unit tests call the worker directly)
        return None


def _free_device_memory(device: str) -> int | None:
    """Free bytes on this worker's GPU (sizes automatic cohorts); None on a CPU."""
    if device != "cuda":
        return None
    try:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    except Exception:  # no usable CUDA after all: size cohorts as on a CPU
        return None


def _assigned_device() -> str:
    try:
        import ray

        if not ray.is_initialized():
            return "cpu"
        return "cuda" if ray.get_gpu_ids() else "cpu"
    except Exception:
        return "cpu"
