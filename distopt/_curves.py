"""Following running trials' learning curves: collect their report rows about once a second,
show them to an early-stopping scheduler, and ask the workers of the trials it stops to stop."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from ._pool import CONTROL
from .trial import CURVE_COLUMNS

#: Seconds between two collections of report rows from a running trial.
DRAIN_INTERVAL = 1.0


class CurveFollower:
    """The loop's view of report rows while trials run.

    Args:
        scheduler: early stopping (``distopt.schedulers.Scheduler``) or None; with one, running
            trials are drained as often as it asks.
    """

    def __init__(self, scheduler: Any = None):
        self.scheduler = scheduler
        self.interval = DRAIN_INTERVAL if scheduler is None else min(
            DRAIN_INTERVAL, scheduler.drain_interval)
        self._draining: dict[Any, int] = {}   # drain ref -> its worker's slot index
        self._stop_sent: set[int] = set()

    def refs(self) -> list[Any]:
        """Drain calls in flight (for the loop's ``ray.wait``)."""
        return list(self._draining)

    def owns(self, ref: Any) -> bool:
        """Whether ``ref`` is one of this follower's drain calls."""
        return ref in self._draining

    def collected(self, ref: Any) -> list[dict[str, Any]]:
        """The report rows a finished drain call brought."""
        import ray

        self._draining.pop(ref)
        try:
            return ray.get(ref)
        except ray.exceptions.RayError:
            return []  # the run call of the same actor reports the failure

    def drain(self, calls: Iterable[Any]) -> None:
        """Ask each busy worker (a running call: ``slot``, ``actor``, ``trials``) for its new
        report rows, at most once per ``interval``."""
        now = time.monotonic()
        draining = set(self._draining.values())
        for call in calls:
            first = call.trials[0]
            if now - first.drained >= self.interval and call.slot.index not in draining:
                first.drained = now
                draining.add(call.slot.index)
                drain = call.actor.drain.options(concurrency_group=CONTROL)
                self._draining[drain.remote()] = call.slot.index

    def schedule(self, curves: list[dict[str, Any]], rows: list[dict[str, Any]],
                 running: Mapping[int, Any]) -> None:
        """Show new report rows to the scheduler; stop the trials it stops (``running``: trial
        id -> its call). Ended ``rows`` let it forget their trials."""
        if self.scheduler is None:
            return
        for row in curves:
            trial_id = row["trial_id"]
            metrics = {k: v for k, v in row.items() if k not in CURVE_COLUMNS}
            stop = self.scheduler.on_report(trial_id, row["step"], metrics)
            if stop and trial_id in running and trial_id not in self._stop_sent:
                self._stop_sent.add(trial_id)
                running[trial_id].actor.stop.options(concurrency_group=CONTROL).remote(trial_id)
        for row in rows:
            self.scheduler.on_trial_end(row["trial_id"], row["status"])
            self._stop_sent.discard(row["trial_id"])
