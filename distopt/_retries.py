"""What happens to trials whose worker died: run again (as their next attempt), or FAILED.

Only a death that can be pinned on one trial is *charged* to it (counts toward
``max_retries``): when the worker held that trial alone. When it held several (a cohort, a
batched call, or calls queued behind the running one) the culprit is unknown, so none is charged
and each may go out again with at most half as many trials per call until it ends: a trial that
kills its worker is isolated in log2(K) rounds and cannot make its neighbours FAILED.
"""

from __future__ import annotations

from collections.abc import Sequence


class RetryPolicy:
    """Per-trial bookkeeping of worker deaths and of the call size lost trials may share."""

    def __init__(self, max_retries: int):
        self.max_retries = max_retries
        self._limit: dict[int, int] = {}    # trial id -> most trials per call until it ends
        self._charged: dict[int, int] = {}  # trial id -> worker deaths charged to it

    @property
    def active(self) -> bool:
        """Whether some lost trial has not ended yet (calls then stay small and unqueued)."""
        return bool(self._limit)

    def limit(self, trial_id: int, default: int) -> int:
        """The most trials a call carrying ``trial_id`` may hold."""
        return self._limit.get(trial_id, default)

    def lost(self, trial_ids: Sequence[int]) -> int | None:
        """Worker death with ``trial_ids`` on it: None to run them again, else the number of
        deaths charged to the one trial, which is past ``max_retries`` (it is FAILED)."""
        if len(trial_ids) > 1:
            for trial_id in trial_ids:
                self._limit[trial_id] = max(1, min(self._limit.get(trial_id, len(trial_ids)),
                                                   len(trial_ids) // 2))
            return None
        (trial_id,) = trial_ids
        deaths = self._charged[trial_id] = self._charged.get(trial_id, 0) + 1
        if deaths <= self.max_retries:
            self._limit[trial_id] = 1
            return None
        return deaths

    def ended(self, trial_id: int) -> None:
        """The trial has a row: forget it."""
        self._limit.pop(trial_id, None)
        self._charged.pop(trial_id, None)
