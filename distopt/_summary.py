"""What a user sees of failed trials: one line per new cause, a stop on a repeating one, a summary.

A failed trial's ``error`` is a whole traceback; its *cause* is the last non-empty line (the
exception line, e.g. ``ZeroDivisionError: division by zero``). Causes that differ only in numbers
(``x=0.31 too large`` and ``x=0.77 too large``) are folded into one, so an objective that fails on
every configuration prints one line, not one per trial.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from ._errors import DistoptError
from .trial import Status, status_counts

#: Repeats of one cause between two "(same cause ...)" reminder lines.
REMIND_EVERY = 10

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def error_cause(error: str | None) -> str | None:
    """The exception line of a traceback (``ValueError: bad things``), else the last non-empty
    line of an error text.

    The exception line is the first unindented line after the last frame (``  File ...``): a
    message can go on over several lines, and notes (``add_note``, PyTorch's CUDA hints)
    follow it, so the text's last line is often not the cause.
    """
    if not error:
        return None
    lines = str(error).splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if frames:
        cause = next((line.strip() for line in lines[frames[-1] + 1:]
                      if line.strip() and not line[0].isspace()), None)
        if cause is not None:
            return cause
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else None


def cause_key(cause: str) -> str:
    """The cause with its numbers blanked: trials failing "the same way" share this key."""
    return _NUMBER.sub("#", cause)


def resume_command(store: Any, finished: int, more: int | None = None) -> str:
    """The command that continues a search after its objective is fixed, with why it names a
    budget: failed trials count towards the budget (``--budget`` is the total wanted), so a plain
    ``distopt resume`` of a store that holds its budget would run nothing.

    Args:
        store: the store's path (``STORE`` when unknown).
        finished: trials in the store, any status.
        more: trials to run on top (the run's budget; as many again as are stored when None).
    """
    budget = finished + max(1, more if more is not None else finished)
    return (f"`distopt resume {store if store is not None else 'STORE'} --budget {budget}` "
            f"(failed trials count towards the budget)")


def _cause_of(row: Mapping[str, Any]) -> str:
    return error_cause(row.get("error")) or f"{row['status']} with no error message"


@dataclass
class _Cause:
    cause: str      # the first occurrence's text
    example: int    # the first trial that failed this way
    count: int = 0


class RunReport:
    """Follows finished trials as they arrive and reports failures without flooding the screen.

    Args:
        out: where failure lines go (None: nowhere, e.g. to build a summary from a store).
        max_consecutive_failures: stop the search (raise :class:`DistoptError`) after this many
            consecutive trials failed with the same cause; None never stops.
        store: the store's path, for the command the stop names.
        stored: trials in the store before this run; ``budget``: this run's budget.
    """

    def __init__(self, out: TextIO | None = sys.stderr,
                 max_consecutive_failures: int | None = 20, *, store: Any = None,
                 stored: int = 0, budget: int | None = None):
        self.out = out
        self.max_consecutive_failures = max_consecutive_failures
        self.store, self.stored, self.budget = store, stored, budget
        self.counts: Counter[str] = Counter()
        self.causes: dict[str, _Cause] = {}
        self._streak_key: str | None = None
        self._streak = 0

    def trial_ended(self, row: Mapping[str, Any]) -> None:
        """Count one finished trial row (``distopt.trial.trial_row`` or a store row).

        Prints a line for the first trial of each failure cause and a reminder every
        ``REMIND_EVERY`` repeats; raises DistoptError on a long run of the same cause.
        """
        status = Status(row["status"])
        self.counts[status.value] += 1
        if not status.counts_as_failure:
            self._streak_key, self._streak = None, 0
            return
        cause = _cause_of(row)
        key = cause_key(cause)
        seen = self.causes.get(key)
        if seen is None:
            seen = self.causes[key] = _Cause(cause, int(row["trial_id"]))
            self._print(f"trial {row['trial_id']} {status.value}: {cause}")
        seen.count += 1
        if seen.count > 1 and seen.count % REMIND_EVERY == 0:
            self._print(f"  (same cause: {seen.count} trials so far)")
        self._streak = self._streak + 1 if key == self._streak_key else 1
        self._streak_key = key
        limit = self.max_consecutive_failures
        if limit is not None and self._streak >= limit:
            finished = self.stored + sum(self.counts.values())
            raise DistoptError(f"stopping: {self._streak} consecutive trials failed with the same "
                               f"cause: {seen.cause}; fix the objective, then "
                               f"{resume_command(self.store, finished, self.budget)}")

    def _print(self, line: str) -> None:
        if self.out is not None:
            print(line, file=self.out, flush=True)

    @property
    def n_failed(self) -> int:
        """FAILED and TIMEOUT trials counted so far."""
        return sum(c.count for c in self.causes.values())

    def summary(self) -> str:
        """Counts by status, then each distinct failure cause with its count and one trial id."""
        counts = status_counts(self.counts.elements())
        lines = [f"trials: {counts or 'none'}"]
        for cause in sorted(self.causes.values(), key=lambda c: -c.count):
            lines.append(f"  {cause.count} failed (e.g. trial {cause.example}): {cause.cause}")
        return "\n".join(lines)


def _rows(reader_or_rows: Any) -> list[Mapping[str, Any]]:
    if hasattr(reader_or_rows, "trials"):
        return reader_or_rows.trials().select(["trial_id", "status", "error"]).to_pylist()
    return list(reader_or_rows)


def report_of(reader_or_rows: Any) -> RunReport:
    """A silent :class:`RunReport` fed with every row of a store (or of a list of rows)."""
    report = RunReport(out=None, max_consecutive_failures=None)
    for row in _rows(reader_or_rows):
        report.trial_ended(row)
    return report


def no_trial_completed_error(reader_or_rows: Any, budget: int | None = None, *,
                             before: Iterable[int] = ()) -> DistoptError | None:
    """An error naming the first failure's cause when every trial that ran failed (FAILED or
    TIMEOUT; a PRUNED trial has its metrics), else None.

    ``reader_or_rows``: a :class:`~distopt.store.StoreReader` or finished-trial rows;
    ``budget``: the run's, which the resume command it names asks for again; ``before``: the
    ids of trials stored before this run, which are not this run's (a resume whose every trial
    failed exited 0 because the store held earlier COMPLETE ones).
    """
    rows: Iterable[Mapping[str, Any]] = _rows(reader_or_rows)
    rows = list(rows)
    earlier = set(before)
    ran = [r for r in rows if r["trial_id"] not in earlier]
    # a PRUNED trial was stopped by a scheduler with its metrics: not a failure
    if not ran or not all(Status(r["status"]).counts_as_failure for r in ran):
        return None
    first = min(ran, key=lambda r: r["trial_id"])
    resume = resume_command(getattr(reader_or_rows, "path", None), len(rows), budget)
    statuses = status_counts(r["status"] for r in ran)
    which = f"no trial of this run completed ({statuses}; the {len(rows) - len(ran)} " \
            f"stored before are kept)" if len(ran) < len(rows) else \
        f"no trial completed ({statuses})"
    return DistoptError(f"{which}; trial {first['trial_id']}: {_cause_of(first)}; fix the "
                        f"objective, then {resume}")
