"""The one owner of the budget: how many trials the store should hold, and what is left."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Budget:
    """``total`` finished trials wanted in the store (any status), counting ``stored`` ones that
    were there before this run."""

    total: int
    stored: int = 0
    finished: int = 0  # every finished trial, stored ones included

    def __post_init__(self) -> None:
        self.finished = max(self.finished, self.stored)

    @property
    def remaining(self) -> int:
        """Trials still to finish."""
        return max(0, self.total - self.finished)

    @property
    def done(self) -> bool:
        """Whether the store holds the budget."""
        return self.finished >= self.total

    def room(self, in_flight: int) -> int:
        """How many more trials may be handed out while ``in_flight`` are out."""
        return max(0, self.total - self.finished - in_flight)

    def nothing_to_run(self) -> str:
        """The message of a run with nothing left to do."""
        return (f"nothing to run ({self.finished}/{self.total} done; raise --budget to "
                f"continue)")


def useful_workers(workers: int, remaining: int, per_call: int = 1) -> int:
    """Workers worth starting: no more than the remaining trials can keep busy."""
    return max(1, min(workers, -(-remaining // max(1, per_call))))
