"""The one owner of the running front and of the hypervolume reference point.

The reference point is either the user's (given to the study, offered to the strategy, recorded as
``ref_point_source: user``) or inferred once from the initial design (recorded as ``inferred``,
never offered to the strategy as if the user had given it). A resumed search takes it back
exactly as recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import pareto
from ._problem import Problem
from .trial import COMPLETE, Status

#: ``ref_point_source`` values recorded in a store's metadata.
USER, INFERRED = "user", "inferred"


class FrontTracker:
    """The feasible points seen so far, pruned to the front, and the reference point.

    Args:
        problem: what is optimised.
        budget: the run's budget (a budget smaller than the initial design fixes the point
            sooner).
        ref_point: the recorded or user-given point (metric -> value), if any.
        record: called once with the metadata fields to store when the point is inferred.
    """

    def __init__(self, problem: Problem, budget: int, *, ref_point: Mapping[str, float] | None,
                 record: Callable[..., None]):
        self.problem = problem
        self.budget = budget
        self.ref_point = None if ref_point is None else dict(ref_point)
        self._record = record
        self._points: list[list[float]] = []   # feasible points, pruned to the front
        self._pruned = 0                          # its length after the last pruning
        self._initial: list[list[float]] = []    # feasible points until the point is fixed

    def note(self, status: Status | str, metrics: Mapping[str, float]) -> None:
        """Take one finished trial into account."""
        if status != COMPLETE or not self.problem.feasible([metrics])[0]:
            return
        point = [metrics[m] for m in self.problem.objectives]
        self._points.append(point)
        if len(self._points) > 2 * max(self._pruned, 256):
            self._prune()  # memory stays O(front), not O(trials)
        if self.ref_point is None:
            self._initial.append(point)
            self._infer()

    def _prune(self) -> None:
        mask = pareto.is_non_dominated(self._points, maximize=self.problem.maximize)
        self._points = [p for p, keep in zip(self._points, mask, strict=True) if keep]
        self._pruned = len(self._points)

    def _infer(self) -> None:
        """Fix the point once the initial design has run: the nadir of the first 2(d+1)
        feasible trials pushed out by 10% of their range. Fixed early so that hypervolume over
        time is comparable; generous so that later fronts lie inside it."""
        needed = min(self.budget, 2 * (self.problem.space.dim + 1))
        if len(self._initial) < needed:
            return
        ref = pareto.reference_point(self._initial, maximize=self.problem.maximize,
                                     front_only=False)
        self.ref_point = dict(zip(self.problem.objectives, map(float, ref), strict=True))
        self._record(ref_point=self.ref_point, ref_point_source=INFERRED)
        self._initial = []

    def summary(self) -> tuple[int, float | None]:
        """``(front size, hypervolume)``; the hypervolume is None until the point is fixed."""
        if not self._points:
            return 0, None
        self._prune()
        if self.ref_point is None:
            return len(self._points), None
        ref = [self.ref_point[m] for m in self.problem.objectives]
        return len(self._points), pareto.hypervolume(self._points, ref,
                                                     maximize=self.problem.maximize)


def user_ref_point(metadata: Mapping[str, Any]) -> dict[str, float] | None:
    """The reference point a store records as the user's (what a resume passes on as given)."""
    if metadata.get("ref_point_source", INFERRED) == USER:
        return metadata.get("ref_point")
    return None
