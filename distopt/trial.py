"""The trial vocabulary, defined once: statuses, the trial row, reserved names, the config prefix.

Every module that writes, reads or reasons about a trial imports its words from here: the worker
and the orchestrator build rows with :func:`trial_row`, the store lays them out as columns, the
strategies and the analysis read ``status`` against :class:`Status`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any


class Status(str, Enum):
    """How a trial ended. A ``str`` subclass: ``Status.COMPLETE == "COMPLETE"`` and it is stored
    as its plain text."""

    #: The objective returned every metric, all finite.
    COMPLETE = "COMPLETE"
    #: The objective raised, returned something unusable, or its worker died too often.
    FAILED = "FAILED"
    #: Stopped after ``trial_timeout`` seconds.
    TIMEOUT = "TIMEOUT"
    #: Stopped early by a scheduler; its metrics are those of its last report.
    PRUNED = "PRUNED"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @property
    def counts_as_failure(self) -> bool:
        """FAILED and TIMEOUT: the trial gave no usable result through no decision of ours."""
        return self in (Status.FAILED, Status.TIMEOUT)


COMPLETE, FAILED, TIMEOUT, PRUNED = Status.COMPLETE, Status.FAILED, Status.TIMEOUT, Status.PRUNED


def status_counts(statuses: Iterable[str]) -> str:
    """``"6 COMPLETE, 2 FAILED"``: how many trials ended each way, in :class:`Status` order (the
    same order in every summary); empty for no trials."""
    counts = Counter(Status(s) for s in statuses)
    return ", ".join(f"{counts[s]} {s}" for s in Status if counts[s])

#: Prefix of a parameter's column in the store's tables (``config/lr``), so that a metric may
#: share a parameter's name without a clash.
CONFIG_PREFIX = "config/"

#: The fixed columns of the trial table, in order, around the ``config/`` and metric columns.
TRIAL_HEAD_COLUMNS = ("trial_id", "status")
TRIAL_TAIL_COLUMNS = ("error", "attempts", "start_time", "end_time", "worker", "node_id")
#: The fixed columns of the curve table (``distopt.report`` rows) before its metrics.
CURVE_COLUMNS = ("trial_id", "step", "time", "attempt")
#: The fixed columns of the dispatch log.
DISPATCH_COLUMNS = ("trial_id", "attempt", "time")

#: Names a returned or reported metric may not take (they are columns of their own).
RESERVED = frozenset(TRIAL_HEAD_COLUMNS + TRIAL_TAIL_COLUMNS + CURVE_COLUMNS + DISPATCH_COLUMNS)


def is_reserved(name: str) -> bool:
    """Whether ``name`` cannot be a metric: a fixed column or a ``config/`` column."""
    return name in RESERVED or name.startswith(CONFIG_PREFIX)


def trial_row(trial_id: int, status: Status | str, config: Mapping[str, Any],
              metrics: Mapping[str, float] | None = None, *, error: str | None = None,
              attempts: int = 1, start_time: float | None = None, end_time: float | None = None,
              worker: str | None = None, node_id: str | None = None) -> dict[str, Any]:
    """The one shape of a finished trial as it travels from worker to orchestrator to store.

    Times are seconds since the epoch; ``end_time`` defaults to now and ``start_time`` to it.
    """
    end = time.time() if end_time is None else end_time
    return {"trial_id": int(trial_id), "status": Status(status), "config": dict(config),
            "metrics": dict(metrics or {}), "error": error, "attempts": int(attempts),
            "start_time": end if start_time is None else start_time, "end_time": end,
            "worker": worker, "node_id": node_id}


def is_device_fault(error: BaseException) -> bool:
    """Whether an objective's exception leaves this process's device unusable (CUDA out of
    memory, a sticky CUDA error): such a trial is retried in a fresh worker, like a dead one,
    instead of being recorded FAILED at once."""
    text = str(error)
    return (type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text
            or "CUDA error" in text)


__all__ = [
    "COMPLETE",
    "CONFIG_PREFIX",
    "CURVE_COLUMNS",
    "DISPATCH_COLUMNS",
    "FAILED",
    "PRUNED",
    "RESERVED",
    "TIMEOUT",
    "Status",
    "TRIAL_HEAD_COLUMNS",
    "TRIAL_TAIL_COLUMNS",
    "is_device_fault",
    "is_reserved",
    "trial_row",
]
