"""The scheduler interface: decide, from a running trial's reports, whether it should stop early.

A scheduler sees every ``distopt.report`` row of every trial, in the order the driver receives
them (about every ``drain_interval`` seconds while a trial runs, then the rest when it ends), and
answers "stop this trial?". The orchestrator then asks the trial's worker to stop it: the next
``distopt.report`` call of that trial raises :class:`distopt.TrialPruned`, and the trial is recorded
``PRUNED`` with the metrics of its last report. Like a strategy, a scheduler is plain, picklable
and knows nothing about Ray or the store; on resume its state is rebuilt by replaying the stored
learning curves (:meth:`Scheduler.replay`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from .._plugin import ProblemBound
from ..trial import CURVE_COLUMNS


class Scheduler(ProblemBound, ABC):
    """Early-stopping rule over per-step reports (subclasses implement :meth:`on_report`)."""

    #: Name used by ``scheduler="..."`` in the API and ``scheduler:`` in a study file.
    name: str = ""
    #: Seconds between two collections of a running trial's reports while this scheduler is set
    #: (the default orchestrator interval is 1 s; decisions want fresher rows).
    drain_interval: float = 0.2

    @abstractmethod
    def on_report(self, trial_id: int, step: int, metrics: Mapping[str, float]) -> bool:
        """Record one report row of a trial; return True when the trial should stop now."""

    def on_trial_end(self, trial_id: int, status: str) -> None:  # noqa: B027 - optional hook
        """A trial finished (any status); the default does nothing."""

    def replay(self, rows: Iterable[Mapping[str, Any]], ended: Mapping[int, str]) -> None:
        """Rebuild state from stored report rows (``trial_id``, ``step``, metrics) on resume.

        Decisions are ignored (those trials have ended); ``ended`` maps trial id -> status. Rows
        of trials not in ``ended`` (in flight when the search stopped; they run again) are skipped.
        """
        rows = sorted(rows, key=lambda row: (row.get("time") is None, row.get("time") or 0))
        for row in rows:  # in the order they were reported, as the search saw them
            if row["trial_id"] not in ended:
                continue
            metrics = {k: v for k, v in row.items()
                       if k not in CURVE_COLUMNS and v is not None}
            self.on_report(int(row["trial_id"]), int(row["step"]), metrics)
        for trial_id, status in ended.items():
            self.on_trial_end(trial_id, status)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"name": ..., "options": {...}}`` (kept in the store's metadata)."""
        return {"name": self.name, "options": {}}
