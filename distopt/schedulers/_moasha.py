r"""MO-ASHA: asynchronous successive halving that ranks trials by non-dominated sorting.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020) puts rungs at
steps ``grace_period * reduction_factor**k``. When a trial reaches a rung, it is compared with every
trial that reached the same rung before it, and goes on only if it is in the best
``1 / reduction_factor`` of them; otherwise it stops there. No trial ever waits for others (the
first trial at a rung always continues), so workers never idle.

With several objectives "best" is not a number. As in MO-ASHA (Schmucker et al., "Multi-objective
Asynchronous Successive Halving", 2021) the trials at a rung are ordered by non-dominated sorting
(:func:`distopt.pareto.pareto_rank`: the rung's front first, then the front of the rest, ...) and,
within one front, by NSGA-II crowding distance (spread-out points first) or by exclusive hypervolume
contribution. A trial continues when fewer than ``ceil(n / reduction_factor)`` of the ``n``
trials at the rung are strictly better than it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import pareto
from .._checks import check_choice, check_int, option_field
from .._errors import field_error
from .._problem import DIRECTIONS, Problem
from ..trial import Status
from ._base import Scheduler

TIE_BREAKS = ("crowding", "hypervolume")


class MOASHA(Scheduler):
    """Multi-objective asynchronous successive halving over ``distopt.report`` rows.

    Args:
        metrics: the reported metrics to rank on: a mapping metric -> ``"min"`` / ``"max"``, or a
            list of the problem's objectives. Default: the problem's objectives. Use a mapping when
            the objective reports proxies per epoch (e.g. ``{"val_mse": "min",
            "equiv_err.rotation": "min"}`` for a study minimising ``test_mse``).
        grace_period: the first rung, in ``step`` units of ``distopt.report`` (no trial stops
            before reporting this step).
        reduction_factor: ``eta``: rungs are ``grace_period * eta**k`` and about ``1/eta`` of the
            trials reaching a rung go on to the next.
        max_step: no rung at or beyond this step (e.g. the number of epochs); None: unbounded.
        tie_break: order within one non-dominated front: ``"crowding"`` (NSGA-II crowding
            distance) or ``"hypervolume"`` (exclusive hypervolume contribution).
    """

    name = "moasha"

    def __init__(self, metrics: Mapping[str, str] | Sequence[str] | None = None, *,
                 grace_period: int = 1, reduction_factor: float = 3, max_step: int | None = None,
                 tie_break: str = "crowding"):
        super().__init__()
        # rungs sit at grace_period * reduction_factor**k: a grace period of 0 puts every rung
        # at step 0, where no trial could ever pass one
        check_int(option_field("scheduler", "grace_period"), grace_period, 1)
        if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, (int, float)) \
                or not reduction_factor > 1:
            raise field_error(option_field("scheduler", "reduction_factor"),
                              f"must be a number > 1; got {reduction_factor!r}", "3 is usual")
        if max_step is not None and (isinstance(max_step, bool) or not isinstance(max_step, int)
                                     or max_step <= grace_period):
            raise field_error(option_field("scheduler", "max_step"),
                              f"must be an int > grace_period ({grace_period}) or None; "
                              f"got {max_step!r}")
        check_choice(option_field("scheduler", "tie_break"), tie_break, TIE_BREAKS)
        if metrics is not None and not isinstance(metrics, (Mapping, list, tuple)):
            raise field_error(option_field("scheduler", "metrics"),
                              f"must be a mapping of metric to min/max or a list of objectives; "
                              f"got {metrics!r}")
        if isinstance(metrics, Mapping):
            for name, direction in metrics.items():
                if direction not in DIRECTIONS:
                    raise field_error(f"{option_field('scheduler', 'metrics')}.{name}",
                                      f"must be 'min' or 'max'; got {direction!r}")
        self.metrics_spec = metrics
        self.grace_period = grace_period
        self.reduction_factor = float(reduction_factor)
        self.max_step = max_step
        self.tie_break = tie_break
        self.metrics: dict[str, str] = dict(metrics) if isinstance(metrics, Mapping) else {}
        self._rungs: list[dict[int, np.ndarray]] = []   # rung index -> trial id -> vector
        self._next_rung: dict[int, int] = {}             # trial id -> next rung index
        self._stopped: dict[int, int] = {}               # trial id -> milestone it stopped at
        self._latest: dict[int, dict[str, float]] = {}   # trial id -> latest value per metric
        self._replaying = False
        self._ranked_once = False   # whether any report had a metric to rank on
        self._warned = False
        self._warned_partial = False

    def _setup(self, problem: Problem) -> None:
        if self.metrics_spec is None:
            self.metrics = dict(problem.objectives)
        elif not isinstance(self.metrics_spec, Mapping):
            unknown = [m for m in self.metrics_spec if m not in problem.objectives]
            if unknown or not self.metrics_spec:
                raise field_error("scheduler.metrics",
                                  f"{unknown or '[]'} are not objectives of the study",
                                  "give a mapping {metric: min|max} for other reported metrics")
            self.metrics = {m: problem.objectives[m] for m in self.metrics_spec}
        if not self.metrics:
            raise field_error("scheduler.metrics", "is empty", "name at least one metric")
        self._maximize = [d == "max" for d in self.metrics.values()]

    # -- rungs ------------------------------------------------------------------------------------

    def milestone(self, k: int) -> int | None:
        """The step of rung ``k`` (None past ``max_step``)."""
        step = int(math.ceil(self.grace_period * self.reduction_factor ** k - 1e-9))
        if self.max_step is not None and step >= self.max_step:
            return None
        return step

    @property
    def milestones(self) -> list[int]:
        """Steps of the rungs reached so far (and of the next one)."""
        out = []
        for k in range(len(self._rungs) + 1):
            step = self.milestone(k)
            if step is None:
                break
            out.append(step)
        return out

    @property
    def rung_sizes(self) -> dict[int, int]:
        """Milestone -> number of trials recorded at it."""
        return {self.milestone(k): len(rung) for k, rung in enumerate(self._rungs)}

    @property
    def stopped(self) -> dict[int, int]:
        """Trial id -> the milestone at which this scheduler stopped it."""
        return dict(self._stopped)

    # -- decisions --------------------------------------------------------------------------------

    def on_report(self, trial_id: int, step: int, metrics: Mapping[str, float]) -> bool:
        if trial_id in self._stopped:
            return True
        if not any(m in metrics for m in self.metrics):
            self._warn_unranked(trial_id, step, metrics)
            return False  # a row of other metrics (e.g. train_loss only): nothing to rank on
        self._ranked_once = True
        # Metrics may come in different report() calls (val_mse every epoch, an expensive one
        # every few): a trial's point is the latest value of each.
        latest = self._latest.setdefault(trial_id, {})
        latest.update({m: _float(metrics[m]) for m in self.metrics if m in metrics})
        vector = np.array([latest.get(m, math.nan) for m in self.metrics], dtype=float)
        k = self._next_rung.get(trial_id, 0)
        while True:
            milestone = self.milestone(k)
            if milestone is None or step < milestone:
                break
            while len(self._rungs) <= k:
                self._rungs.append({})
            if np.isnan(vector).any():
                self._warn_partial(trial_id, milestone, latest)
            self._rungs[k][trial_id] = vector
            k += 1
            if not self._replaying and not self._goes_on(self._rungs[k - 1], trial_id):
                self._next_rung[trial_id] = k
                self._stopped[trial_id] = milestone
                return True
        self._next_rung[trial_id] = k
        return False

    def _warn_partial(self, trial_id: int, milestone: int, latest: Mapping[str, float]) -> None:
        """Say once when a trial reaches a rung without some ranked metric: no point with a
        missing value dominates or is dominated, so such a trial is never stopped (the benchmark's
        ``equiv_err.*`` every few epochs is fine; one reported only at the end is not)."""
        if self._warned_partial or self._replaying:
            return
        self._warned_partial = True
        missing = [m for m in self.metrics if m not in latest]
        logging.getLogger("distopt").warning(
            "distopt: moasha ranks trials on %s, but trial %d reached the rung at step %d "
            "without reporting %s, so it cannot be ranked there and goes on; report it at least "
            "once per rung, or leave it out of the scheduler's metrics", sorted(self.metrics),
            trial_id, milestone, ", ".join(missing))

    def _warn_unranked(self, trial_id: int, step: int, metrics: Mapping[str, float]) -> None:
        """Say once when reports reach the first milestone without any metric to rank on: the
        default metrics are the study's objectives, which an objective often returns only at the
        end, and then nothing is ever stopped."""
        first = self.milestone(0)
        if self._ranked_once or self._warned or self._replaying or first is None or step < first:
            return
        self._warned = True
        logging.getLogger("distopt").warning(
            "distopt: moasha ranks trials on %s, but trial %d reported up to step %d without "
            "them (%s), so no trial can be stopped; set the scheduler's metrics to what is "
            "reported each step, e.g. metrics={%r: 'min'}", sorted(self.metrics), trial_id,
            step, ", ".join(sorted(metrics)) or "nothing", next(iter(sorted(metrics)), "val_loss"))

    def replay(self, rows: Any, ended: Mapping[int, str]) -> None:
        """Rebuild the rungs from stored rows: each ended trial is recorded at every rung its
        reports reached (no decisions), and its PRUNED status marks it stopped."""
        self._replaying = True
        try:
            super().replay(rows, ended)
        finally:
            self._replaying = False

    def on_trial_end(self, trial_id: int, status: str) -> None:
        self._latest.pop(trial_id, None)
        if status != Status.PRUNED:  # the decision came after the trial had ended: it did not stop
            self._stopped.pop(trial_id, None)
        elif trial_id not in self._stopped:  # replayed history: stopped at its last rung
            self._stopped[trial_id] = self.milestone(max(0, self._next_rung.get(trial_id, 1) - 1))

    def _goes_on(self, rung: dict[int, np.ndarray], trial_id: int) -> bool:
        ids = list(rung)
        points = np.stack([rung[t] for t in ids])
        me = ids.index(trial_id)
        quota = math.ceil(len(ids) / self.reduction_factor)
        better = number_better(points, me, maximize=self._maximize, tie_break=self.tie_break)
        return better < quota

    def to_dict(self) -> dict[str, Any]:
        metrics = self.metrics_spec
        if isinstance(metrics, Mapping):
            metrics = dict(metrics)
        elif metrics is not None:
            metrics = list(metrics)
        return {"name": self.name, "options": {
            "metrics": metrics, "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor, "max_step": self.max_step,
            "tie_break": self.tie_break}}

    def __repr__(self) -> str:
        return (f"MOASHA(metrics={self.metrics or self.metrics_spec}, grace_period="
                f"{self.grace_period}, reduction_factor={self.reduction_factor:g}, "
                f"max_step={self.max_step}, tie_break={self.tie_break!r})")


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row (``inf`` at each objective's extremes)."""
    points = np.asarray(points, dtype=float)
    n, m = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        column = points[order, j]
        span = column[-1] - column[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def number_better(points: np.ndarray, index: int, *, maximize: bool | Sequence[bool] = False,
                  tie_break: str = "crowding") -> int:
    """How many rows are strictly better than row ``index``: a lower non-dominated rank, or the
    same rank and a larger tie-break score (crowding distance or hypervolume contribution)."""
    ranks = pareto.pareto_rank(points, maximize=maximize)
    mine = ranks[index]
    better = int(np.sum(ranks < mine))
    group = np.flatnonzero(ranks == mine)
    if len(group) == 1 or not np.isfinite(points[index]).all():
        return better
    scores = _tie_scores(points, group, maximize, tie_break)
    return better + int(np.sum(scores > scores[list(group).index(index)]))


def _tie_scores(points: np.ndarray, group: np.ndarray, maximize: Any, tie_break: str) -> np.ndarray:
    members = points[group]
    if tie_break == "crowding":
        return crowding_distance(members)
    finite = points[np.all(np.isfinite(points), axis=1)]
    ref = pareto.reference_point(finite, maximize=maximize, front_only=False)
    import moocore

    flags = pareto._maximize_vector(maximize, points.shape[1])
    return np.asarray(moocore.hv_contributions(members, ref=ref, maximise=flags), dtype=float)
