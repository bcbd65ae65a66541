r"""Jacobian descent across trials: a population moves along the Pareto front with UPGrad steps.

Each population member walks the *continuous* coordinates of the encoded space (every ``Float``;
a ``Float`` with ``off`` moves in its range band, or stays off when it starts off); its ``Int`` and
``Categorical`` coordinates stay fixed at its start. One iteration of a member:

1. **center**: evaluate the center ``x``.
2. **Jacobian** ``J`` of the row vector (objectives, signed so that every row is minimised, plus the
   slack of each constraint violated at ``x``) with respect to the member's continuous coordinates,
   column by column from whichever source is there:

   (a) *hypergradients* returned by the trial itself under the key scheme below, converted from raw
       parameter units to the encoded coordinate by the chain rule;
   (b) *central differences* from the trials ``x +- h e_j`` (clipped to the coordinate's range,
       one-sided at a bound), or with ``differences="forward"`` from ``x + h e_j`` and the center
       (half the trials, first-order accurate). They run in parallel on the workers and share
       everything but the moved coordinate, a ``seed`` parameter or constant included, so that
       training noise cancels. With ``broyden=k`` up to ``k`` centers in a row skip them: a
       Broyden update of the previous center's Jacobian, exact along the step between the two,
       stands in (a step it proposes that the trial rejects re-runs the differences).

3. **step**: ``d = UPGrad(J')`` (torchjd; ``J'`` has unit rows when ``normalize``; with
   ``precondition`` its columns are scaled towards equal norms first and ``d`` scaled back, see
   :meth:`~._jacobian_estimate.Aggregator.aggregate`), so ``J d >= 0``: the step ``x - t d``
   worsens no row to first order. Coordinates at a bound that ``d`` would push out are frozen
   and ``d`` recomputed; ``t = min(lr, distance to the box along d)``.
4. **accept** the trial point ``y = x - t d`` when no row got worse beyond noise,
   ``f_i(y) <= f_i(x) - armijo * t * (J d)_i + rtol * |f_i(x)| + atol``: ``y`` becomes the
   center and ``lr`` grows by ``grow`` (up to ``lr_max``); else ``lr`` halves and a shorter step
   is tried.

A violated constraint joins the rows until it holds; if objectives and violated constraints are
stationary together, feasibility comes first and the step follows the violated constraints' rows
alone (the one kind of step that may worsen an objective). A step that crosses a constraint that
held is rejected and that constraint joins the rows, so the next direction slides along its
boundary.

A member with ``|d| < tol`` is Pareto-stationary (no direction improves every row), and so is one
whose full step is predicted to improve no row by more than ``ftol`` or whose last accepted step
improved none by more than ``ptol`` (relative: progress too small to be worth trials); one whose
``lr`` fell below ``lr_min`` stalls. Both end the walk (recorded in
:attr:`JacobianStrategy.stationary`), and the member moves on so that the population keeps tracing
new parts of the front: with ``reseed="trace"`` (default) a predictor step (first ``trace_step``)
along one objective's own descent direction (the objective in which the end is farthest from the
best of the initial design's front, so that the trace heads for the other end of the front) starts
the next walk, whose UPGrad steps correct back onto the front further towards that objective's end;
a walk that does not end better in it is retried with half the predictor, and once that falls below
half of ``trace_step``, or after any other end, the member re-seeds at its next Sobol start. It
re-seeds too rather than trace towards an objective whose descent the box holds for the most part:
that end of the front lies on the box, and hops along the bound's face would only chase what is
left (on noisy objectives, mostly noise).

**Key scheme (hypergradient source**, :mod:`distopt.gradients`). An objective that can
differentiate its metrics returns, beside them, ``grad/<metric>/<param>`` = d metric / d param in
the parameter's *raw* units
(``objectives.mixed_symmetry`` does with ``hypergrad: true``; see :mod:`objectives.hypergrad`).
The strategy converts with ``d/du = d/dx * dx/du``: ``dx/du = (high - low)`` for a linear
``Float``, ``x * log(high / low)`` for a log one, both divided by ``1 - OFF_BAND`` when the
``Float`` has ``off``. Columns with a key for every row use it; the others fall back to central
differences. Non-finite values count as missing.

**Rebuilt from data.** A member's path is a pure function of the seed, its index, the results of
the initial design (which picks its first start and the front a trace measures room against) and
the results at the points it visits: its later Sobol starts are fixed points of the sequence (see
:meth:`~._jacobian_walk.Walk.start_next`) and every other point follows from results looked up by
the rounded encoded point. A fresh strategy told a store's results replays every member to where
it stood; ``pending`` configurations are never proposed twice.
When several trials of one configuration exist, a COMPLETE one with the lowest trial id counts.

When every member waits on running trials, ``ask`` hands out speculative trials (differences around
a center still running, both outcomes of a running step), then points of a second Sobol sequence.

**The parts.** This module holds the strategy: options, the population and the initial design,
``ask`` and ``tell``. One member's walk and its step logic are a :class:`~._jacobian_walk.Walk`;
the rows, the Jacobian estimate and the UPGrad direction live in :mod:`._jacobian_estimate`, the
trace along the front in :mod:`._jacobian_trace`, the point grid and the results table in
:mod:`._jacobian_table`, the options' checks in :mod:`._jacobian_options`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .._problem import Problem, TrialResult
from ._base import Strategy
from ._jacobian_estimate import Aggregator, Estimator
from ._jacobian_options import JacobianOptions
from ._jacobian_rows import Rows
from ._jacobian_table import Grid, Key, Table
from ._jacobian_walk import WAIT, Terrain, Walk
from ._seeding import stream_seed
from ._sobol import SobolPoints

#: Sobol streams: the design and every start; the fillers handed out while every member waits.
_STARTS, _FILLERS = 0, 1

log = logging.getLogger("distopt")


class JacobianStrategy(Strategy):
    """Jacobian descent on the continuous hyperparameters, with torchjd's UPGrad.

    Args:
        seed: seed of the Sobol starts.
        population: members walking at once (each from its own start in the design).
        n_initial: Sobol points run before any walk; the walks then start from the best of them
            (non-dominated and feasible first, spread along the front). None: ``2 * population``,
            so that walks start from the better half of a design (``population``: every member
            starts at its own point at once).
        source: ``"auto"`` (hypergradients where trials return them, differences (as
            ``differences`` says) for the rest; differences are run speculatively beside a center
            unless the space has a truthy ``hypergrad`` constant or a trial already returned
            ``grad/`` keys), ``"hypergrad"`` (the same, never speculating) or ``"fd"``
            (differences only, keys ignored).
        h: difference step in the encoded cube.
        differences: ``"central"`` (``x +- h e_j``: ``2 d`` trials per Jacobian, second-order
            accurate) or ``"forward"`` (``x + h e_j``, backward at an upper bound: ``d`` trials
            beside the center, first-order accurate; with a shared training seed the bias is
            the curvature times ``h / 2``). Forward differences buy twice the Jacobians per
            trial, which tends to pay at small budgets (measured comparisons: README.md and
            ``benchmarks/results/bench_jacobian.md``).
        broyden: how many centers in a row may take their difference Jacobian from a Broyden
            update of the previous center's instead of new difference trials (0: never). The
            update makes the Jacobian agree with the change measured along the step that reached
            the center (an accepted step or a trace's predictor) and keeps the rest; a step
            that an updated Jacobian proposed and the trial rejected re-runs the differences
            before the step is shortened. Used only where no column has hypergradients.
        precondition: the most a Jacobian column may be scaled up, relative to the largest,
            before UPGrad aggregates (1: off). A hyperparameter whose metrics respond an order of
            magnitude more weakly than another's otherwise gets a direction component as small
            as its column, and walks end "stationary" far from its best value; scaling columns
            towards equal norms gives it a say, and ``J d >= 0`` still holds (see
            :meth:`~._jacobian_estimate.Aggregator.aggregate`). Off by default: on rough metrics
            the longer steps it takes in weak coordinates can cost as much as they gain.
        lr: first step length of a walk (in cube units, for a direction of norm 1).
        lr_max: longest step.
        lr_min: a walk whose step length halves below this stalls. The default (half of
            ``lr``) allows one shorter retry: on objectives rough at the scale of a step (a
            trained model's metrics are), further halvings mostly buy near-duplicate trials.
        grow: factor on ``lr`` after an accepted step.
        armijo: fraction of the first-order decrease every row must show (0: "not worse").
        rtol: noise allowance, relative to ``|f_i(x)|``, before a row counts as worse.
        atol: absolute noise allowance.
        tol: a walk whose direction norm is below ``tol`` is Pareto-stationary and ends.
        ftol: a walk also ends when a full ``lr_max`` step is predicted to improve no row by more
            than ``ftol`` relative to its value (0: off) ...
        ptol: ... or when its last accepted step improved no row by more than ``ptol`` relative
            (0: off); with noisy objectives, walks then stop instead of dithering.
        normalize: scale every Jacobian row to norm 1 before aggregating (objectives on different
            scales then count alike, and ``tol`` is an angle-like, scale-free threshold).
        max_steps: accepted steps after which a walk ends anyway (None: no limit).
        reseed: where a member goes when its walk ends: ``"trace"`` (on along the front from a
            stationary or stalled feasible end: a predictor step towards one objective, then
            UPGrad corrector steps; a fresh Sobol start when the trace ends) or ``"sobol"``
            (always a fresh Sobol start).
        trace_step: first predictor length in the cube: the spacing of the front points a
            trace visits, so smaller traces the front more densely (and more slowly).
    """

    name = "jacobian"
    queue_depth = 1
    #: A strategy rebuilt by replaying the told results asks exactly what the live one asks.
    replays_exactly = True

    def __init__(self, *, seed: int | None = 0, population: int = 8, source: str = "auto",
                 h: float = 0.05, lr: float = 0.2, lr_max: float = 0.4, lr_min: float = 0.1,
                 grow: float = 1.5, tol: float = 0.02, armijo: float = 0.01, rtol: float = 1e-3,
                 atol: float = 0.0, normalize: bool = True, max_steps: int | None = None,
                 reseed: str = "trace", trace_step: float = 0.05, ftol: float = 1e-2,
                 ptol: float = 1e-3, n_initial: int | None = None,
                 differences: str = "central", broyden: int = 3, precondition: float = 1.0):
        super().__init__(seed=seed)
        self.options = JacobianOptions(
            population=population, n_initial=n_initial, source=source, h=h,
            differences=differences, broyden=broyden, precondition=precondition, lr=lr,
            lr_max=lr_max, lr_min=lr_min, grow=grow, armijo=armijo, rtol=rtol, atol=atol, tol=tol,
            ftol=ftol, ptol=ptol, normalize=normalize, max_steps=max_steps, reseed=reseed,
            trace_step=trace_step)

    @property
    def population(self) -> int:
        """Members walking at once."""
        return self.options.population

    @property
    def n_initial(self) -> int:
        """Points of the initial design."""
        assert self.options.n_initial is not None
        return self.options.n_initial

    # -- set-up ---------------------------------------------------------------------------------

    def _setup(self, problem: Problem) -> None:
        options, dim = self.options, problem.space.dim
        grid, table, rows = Grid(problem), Table(problem), Rows(problem)
        if not grid.floats:  # searchable (test_jacobian), but the user likely wants another
            log.warning("distopt: jacobian walks Float parameters and this space has none, so "
                        "every trial is a Sobol point; strategy random, pareto or bayes suits it")
        self._terrain = Terrain(
            options=options, rows=rows, grid=grid, table=table,
            estimator=Estimator(rows, grid, table.lookup, source=options.source, h=options.h,
                                forward=options.forward),
            aggregator=Aggregator(normalize=options.normalize, precondition=options.precondition),
            starts=SobolPoints(dim, stream_seed(self.seed, _STARTS)))
        self._fillers = SobolPoints(dim, stream_seed(self.seed, _FILLERS))
        self._filler_cursor = 0
        self._hypergrad_constant = bool(problem.space.constants.get("hypergrad", False))
        #: Every decision: member, start count, center, Jacobian rows, direction, step, accepted,
        #: and whether the Jacobian was a Broyden update (``updated``) rather than measured.
        self.history = self._terrain.history
        #: Members' end points: ``{"x", "values", "reason", "member", "restart", "updated"}``
        #: (``updated``: judged on a Broyden-updated Jacobian, an estimate), reason one of
        #: ``"stationary"``, ``"infeasible"`` (a violated constraint cannot be reduced),
        #: ``"stalled"``, ``"max_steps"``, ``"failed"``, ``"fixed"`` (nothing continuous to move).
        self.stationary = self._terrain.stationary
        # The initial design: the first n_initial points of the Sobol sequence. With more points
        # than members, walks start once all have run, from the best-spread non-dominated ones.
        self._design = [self._terrain.starts[i] for i in range(self.n_initial)]
        self._assigned = self.n_initial == self.population
        self.members = [Walk(i, self._terrain) for i in range(self.population)]
        if self._assigned:
            for walk in self.members:
                walk.place(self._design[walk.index])
                walk.sobol = 1

    def _expect_gradients(self) -> bool:
        """Whether trials return hypergradients (then differences are not run speculatively)."""
        source = self.options.source
        return source == "hypergrad" or (source == "auto" and (
            self._hypergrad_constant or self._terrain.table.has_gradients))

    def _assign_starts(self) -> None:
        """Once the whole design has run: one start per member, the non-dominated feasible points
        first, spread out (farthest-point order in normalised objective space), then the next
        ranks; failed points last."""
        from .. import pareto

        terrain = self._terrain
        observations = [terrain.table.lookup(terrain.grid.snap(p)) for p in self._design]
        if any(o is None for o in observations):
            return
        self._assigned = True
        good = [i for i, o in enumerate(observations) if o.ok]
        metrics = [observations[i].metrics for i in good]
        n_objectives = terrain.rows.n_objectives
        values = np.array([terrain.rows.values(m)[:n_objectives] for m in metrics]).reshape(
            len(good), n_objectives)
        slack = self.problem.constraint_slack(metrics)
        violation = np.clip(slack, 0.0, None).sum(axis=1) if slack.shape[1] else np.zeros(len(good))
        feasible = self.problem.feasible(metrics)
        rank = np.zeros(len(good), dtype=int)
        if feasible.any():
            rank[feasible] = pareto.pareto_rank(values[feasible])
        rank[~feasible] = rank.max(initial=0) + 1 + np.argsort(np.argsort(violation[~feasible]))
        low = values.min(axis=0) if len(good) else np.zeros(n_objectives)
        span = values.max(axis=0) - low if len(good) else np.ones(n_objectives)
        scaled = (values - low) / np.where(span > 0, span, 1.0)
        if len(good):
            front = values[rank == 0] if (rank == 0).any() else values
            terrain.front = (front.min(axis=0), front.max(axis=0) - front.min(axis=0))
        order: list[int] = []
        for level in sorted(set(rank.tolist())):
            candidates = [c for c in range(len(good)) if rank[c] == level]
            while candidates:
                if not order:
                    pick = min(candidates, key=lambda c: (values[c, 0], good[c]))
                else:
                    chosen = scaled[order]
                    pick = max(candidates, key=lambda c: (
                        float(np.min(np.linalg.norm(chosen - scaled[c], axis=1))), -good[c]))
                order.append(pick)
                candidates.remove(pick)
        starts = [good[c] for c in order] + [i for i in range(len(self._design)) if i not in good]
        for walk, index in zip(self.members, starts, strict=False):
            walk.place(self._design[index])
            walk.sobol = 1

    # -- tell: advance every member as far as the table allows ----------------------------------

    def _tell(self, results: list[TrialResult]) -> None:
        for result in sorted(results, key=lambda r: r.trial_id):
            self._terrain.table.record(result)
        if not self._assigned:
            self._assign_starts()
        for walk in self.members:
            walk.advance()

    # -- ask ---------------------------------------------------------------------------------------

    def _wanted(self, walk: Walk, tier: int) -> list[np.ndarray]:
        """Points ``walk`` needs at ``tier`` (see :meth:`Walk.wanted`); while the design runs, its
        share of the design."""
        if walk.phase != WAIT:
            return walk.wanted(tier, speculate=not self._expect_gradients())
        if tier != 0:
            return []
        return [self._terrain.grid.snap(p) for p in self._design[walk.index::self.population]]

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        table, grid = self._terrain.table, self._terrain.grid
        avoid: set[Key] = table.keys() | table.outstanding
        for config in pending:
            try:
                avoid.add(grid.key(self.problem.space.encode([config])[0]))
            except (KeyError, ValueError, TypeError):
                continue
        chosen: list[np.ndarray] = []
        # Members take turns, the one that consumed fewest results first: the order follows from
        # the data, so a rebuilt strategy asks what the live one would have asked.
        order = sorted(self.members, key=lambda m: (m.consumed, m.index))
        for tier in (0, 1, 2):
            queues = [list(self._wanted(walk, tier)) for walk in order]
            while len(chosen) < n and any(queues):
                for queue in queues:
                    while queue:
                        point = queue.pop(0)
                        key = grid.key(point)
                        if key in avoid:
                            continue
                        avoid.add(key)
                        chosen.append(point)
                        break
                    if len(chosen) == n:
                        break
            if len(chosen) == n:
                break
        while len(chosen) < n:  # every member waits on running trials: explore meanwhile
            point = grid.snap(self._fillers[self._filler_cursor])
            self._filler_cursor += 1
            key = grid.key(point)
            if key not in avoid or self._filler_cursor > 64 * (len(table) + n + 1):
                avoid.add(key)
                chosen.append(point)
        table.outstanding.update(grid.key(p) for p in chosen)
        return self.problem.space.decode(np.array(chosen))

    # -- inspection --------------------------------------------------------------------------------

    def centers(self) -> np.ndarray:
        """Current center of every member, shape ``(population, dim)``."""
        return np.array([m.x for m in self.members])

    def state(self) -> list[dict[str, Any]]:
        """A plain summary of every member (equal for a live strategy and one rebuilt from data)."""
        return [m.summary() for m in self.members]
