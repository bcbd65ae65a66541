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
   :meth:`JacobianStrategy._aggregate`), so ``J d >= 0``: the step ``x - t d`` worsens no row to
   first order. Coordinates at a bound that ``d`` would push out are frozen and ``d``
   recomputed; ``t = min(lr, distance to the box along d)``.
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

**Key scheme (hypergradient source).** An objective that can differentiate its metrics returns,
beside them, ``grad/<metric>/<param>`` = d metric / d param in the parameter's *raw* units
(``objectives.mixed_symmetry`` does with ``hypergrad: true``; see :mod:`objectives.hypergrad`).
The strategy converts with ``d/du = d/dx * dx/du``: ``dx/du = (high - low)`` for a linear
``Float``, ``x * log(high / low)`` for a log one, both divided by ``1 - OFF_BAND`` when the
``Float`` has ``off``. Columns with a key for every row use it; the others fall back to central
differences. Non-finite values count as missing.

**Rebuilt from data.** A member's path is a pure function of the seed, its index, the results of
the initial design (which picks its first start and the front a trace measures room against) and
the results at the points it visits: its later Sobol starts are fixed points of the sequence (see
:meth:`JacobianStrategy._start`) and every other point follows from results looked up by the
rounded encoded point. A fresh strategy told a store's
results replays every member to where it stood; ``pending`` configurations are never proposed twice.
When several trials of one configuration exist, a COMPLETE one with the lowest trial id counts.

When every member waits on running trials, ``ask`` hands out speculative trials (differences around
a center still running, both outcomes of a running step), then points of a second Sobol sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import field_error
from .._problem import Problem, TrialResult
from ..gradients import GRAD_PREFIX, grad_key
from ..space import OFF_BAND, Float, point_keys
from ._base import Strategy

SOURCES = ("auto", "hypergrad", "fd")
RESEEDS = ("trace", "sobol")
DIFFERENCES = ("central", "forward")
#: Grid of the continuous coordinates of every proposed point: far above encode/decode round-off,
#: so a point's key (rounded to 9 decimals) survives the round trip through a config.
_GRID = 1e-7
#: Margin kept above a ``Float``'s off band, so that a moving coordinate never switches it off.
_OFF_MARGIN = 1e-6
_AT_BOUND = 1e-9

WAIT, CENTER, GRADIENT, STEP = "wait", "center", "gradient", "step"


@dataclass
class _Observation:
    trial_id: int
    ok: bool
    metrics: dict[str, float]
    config: dict[str, Any]


@dataclass
class _Member:
    """One walker. Everything here is derived from the results it consumed (see module
    docstring)."""

    index: int
    restarts: int = 0   # walks ended so far (Sobol starts and trace hops)
    sobol: int = 0      # Sobol starts used so far
    trace: int = -1     # objective the current walk traces the front towards (-1: none)
    trace_ref: float = math.nan  # that objective's row value at the trace's origin
    trace_origin: np.ndarray = field(default_factory=lambda: np.empty(0))  # the last end improved
    trace_dir: np.ndarray = field(default_factory=lambda: np.empty(0))  # unit predictor direction
    trace_len: float = 0.0  # current predictor length
    start: np.ndarray = field(default_factory=lambda: np.empty(0))
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    cont: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    lo: np.ndarray = field(default_factory=lambda: np.empty(0))
    hi: np.ndarray = field(default_factory=lambda: np.empty(0))
    lr: float = 0.0
    phase: str = CENTER
    center: _Observation | None = None
    # Every row (objectives, then every constraint) at the center, and the active ones.
    all_rows: list[tuple[str, str]] = field(default_factory=list)  # (kind, metric)
    all_fx: np.ndarray = field(default_factory=lambda: np.empty(0))
    all_jacobian: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # NaN: unknown
    active: list[int] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)
    fx: np.ndarray = field(default_factory=lambda: np.empty(0))
    jacobian: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    direction: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray | None = None
    t: float = 0.0
    steps: int = 0      # accepted steps since the last start
    trials: int = 0     # results consumed since the last start
    consumed: int = 0   # results consumed in all (orders the asks, so members take turns)
    slow: bool = False  # the last accepted step improved no row by more than ptol
    # The last center before this one (x, every row's value, its Jacobian): the Broyden update's
    # basis when differences would otherwise be re-run (None: a fresh start, or a refresh).
    basis: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    updates: int = 0    # Jacobians in a row that came from a Broyden update


class JacobianStrategy(Strategy):
    """Jacobian descent on the continuous hyperparameters, with torchjd's UPGrad.

    Args:
        seed: seed of the Sobol starts.
        population: members walking at once (each from its own start in the design).
        n_initial: Sobol points run before any walk; the walks then start from the best of them
            (non-dominated and feasible first, spread along the front). None: ``2 * population``,
            so that walks start from the better half of a design (``population``: every member
            starts at its own point at once).
        source: ``"auto"`` (hypergradients where trials return them, central differences for the
            rest; differences are run speculatively beside a center unless the space has a truthy
            ``hypergrad`` constant or a trial already returned ``grad/`` keys), ``"hypergrad"`` (the
            same, never speculating) or ``"fd"`` (central differences only, keys ignored).
        h: difference step in the encoded cube.
        differences: ``"central"`` (``x +- h e_j``: ``2 d`` trials per Jacobian, second-order
            accurate) or ``"forward"`` (``x + h e_j``, backward at an upper bound: ``d`` trials
            beside the center, first-order accurate; with a shared training seed the bias is
            the curvature times ``h / 2``). On the mixed-symmetry benchmark (3 strengths, 8
            members, 20 seeds) central differences draw level with ``random`` at about 100 trials
            and stay within noise of it at 120; forward ones are ahead from 80 (+0.006 at 120):
            forward suits small budgets.
        broyden: how many centers in a row may take their difference Jacobian from a Broyden
            update of the previous center's instead of new difference trials (0: never). The
            update makes the Jacobian agree with the change measured along the step that reached
            the center (an accepted step or a trace's predictor) and keeps the rest; a step
            that an updated Jacobian proposed and the trial rejected re-runs the differences
            before the step is shortened. Used only where no column has hypergradients. The
            default 3 took forward differences on the mixed-symmetry benchmark from 0.929 to
            0.943 of the pooled hypervolume at 80 trials (central: 0.926 to 0.933); 6 did no
            better.
        precondition: the most a Jacobian column may be scaled up, relative to the largest,
            before UPGrad aggregates (1: off). A hyperparameter whose metrics respond an order of
            magnitude more weakly than another's otherwise gets a direction component as small
            as its column, and walks end "stationary" far from its best value; scaling columns
            towards equal norms gives it a say, and ``J d >= 0`` still holds (see
            :meth:`_aggregate`). On two bowls whose second coordinate weighs 1/100, 10 brought
            walk ends from a median 0.12 off that coordinate's Pareto value to 0.03. Off by
            default: on the mixed-symmetry benchmark (10 seeds x 80 trials), whose rough metrics
            punish the longer steps in weak coordinates, 10 changed hypergradients from 0.943 to
            0.944 of the pooled hypervolume and forward differences from 0.943 to 0.940.
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

    def __init__(self, *, seed: int | None = 0, population: int = 8, source: str = "auto",
                 h: float = 0.05, lr: float = 0.2, lr_max: float = 0.4, lr_min: float = 0.1,
                 grow: float = 1.5, tol: float = 0.02, armijo: float = 0.01, rtol: float = 1e-3,
                 atol: float = 0.0, normalize: bool = True, max_steps: int | None = None,
                 reseed: str = "trace", trace_step: float = 0.05, ftol: float = 1e-2,
                 ptol: float = 1e-3, n_initial: int | None = None,
                 differences: str = "central", broyden: int = 3, precondition: float = 1.0):
        super().__init__(seed=seed)
        if isinstance(population, bool) or not isinstance(population, int) or population < 1:
            raise field_error("strategy.options.population",
                              f"must be an int >= 1; got {population!r}")
        if source not in SOURCES:
            raise field_error("strategy.options.source", f"must be one of {', '.join(SOURCES)}; "
                                                         f"got {source!r}")
        for name, value, low, high in (("h", h, 0.0, 0.5), ("lr", lr, 0.0, 1.0),
                                       ("lr_max", lr_max, 0.0, 1.0), ("lr_min", lr_min, 0.0, 1.0),
                                       ("tol", tol, 0.0, math.inf)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not low < value <= high):
                raise field_error(f"strategy.options.{name}",
                                  f"must be a number > {low:g} and <= {high:g}; got {value!r}")
        for name, value in (("armijo", armijo), ("rtol", rtol), ("atol", atol), ("ftol", ftol),
                            ("ptol", ptol)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0 <= value < math.inf):
                raise field_error(f"strategy.options.{name}",
                                  f"must be a finite number >= 0; got {value!r}")
        if isinstance(grow, bool) or not isinstance(grow, (int, float)) or grow < 1:
            raise field_error("strategy.options.grow", f"must be a number >= 1; got {grow!r}")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                      or max_steps < 1):
            raise field_error("strategy.options.max_steps",
                              f"must be an int >= 1 or None; got {max_steps!r}")
        if n_initial is not None and (isinstance(n_initial, bool) or not isinstance(n_initial, int)
                                      or n_initial < population):
            raise field_error("strategy.options.n_initial",
                              f"must be an int >= population "
                              f"({population}) or None; got {n_initial!r}")
        self.n_initial = 2 * population if n_initial is None else n_initial
        if differences not in DIFFERENCES:
            raise field_error("strategy.options.differences",
                              f"must be one of {', '.join(DIFFERENCES)}; got {differences!r}")
        self.differences = differences
        if isinstance(broyden, bool) or not isinstance(broyden, int) or broyden < 0:
            raise field_error("strategy.options.broyden",
                              f"must be an int >= 0 (0: always run differences); got {broyden!r}")
        self.broyden = broyden
        if (isinstance(precondition, bool) or not isinstance(precondition, (int, float))
                or not 1 <= precondition < math.inf):
            raise field_error("strategy.options.precondition",
                              f"must be a finite number >= 1 (1: off); got {precondition!r}")
        self.precondition = float(precondition)
        if reseed not in RESEEDS:
            raise field_error("strategy.options.reseed", f"must be one of {', '.join(RESEEDS)}; "
                                                         f"got {reseed!r}")
        if isinstance(trace_step, bool) or not isinstance(trace_step, (int, float)) or \
                not 0 < trace_step <= 1:
            raise field_error("strategy.options.trace_step", f"must be a number > 0 and <= 1; "
                                                             f"got {trace_step!r}")
        self.population = population
        self.source = source
        self.reseed, self.trace_step = reseed, float(trace_step)
        self.ftol, self.ptol = float(ftol), float(ptol)
        self.h, self.lr0, self.lr_max, self.lr_min = (float(h), float(lr), float(lr_max),
                                                      float(lr_min))
        self.grow, self.tol, self.armijo = float(grow), float(tol), float(armijo)
        self.rtol, self.atol, self.normalize, self.max_steps = (float(rtol), float(atol),
                                                                bool(normalize), max_steps)

    # -- set-up ---------------------------------------------------------------------------------

    def _setup(self, problem: Problem) -> None:
        import torch  # noqa: F401 - fail early, at bind, when torch/torchjd are missing
        from torchjd.aggregation import UPGrad
        from torchjd.linalg import QuadprogProjector

        # torchjd regularises the Gramian by 1e-4 by default, which lets J d dip below 0 by about
        # that much when rows are nearly dependent; a tiny regularisation keeps J d >= 0 to
        # round-off, the default is the fallback when the QP is too singular for it.
        self._upgrads = [UPGrad(projector=QuadprogProjector(reg_eps=eps)) for eps in (1e-9, 1e-6)]
        self._upgrads.append(UPGrad())
        space = problem.space
        self._names = list(space.names)
        self._signs = {m: (-1.0 if d == "max" else 1.0) for m, d in problem.objectives.items()}
        self._floats = {j: p for j, p in enumerate(space.params.values()) if isinstance(p, Float)}
        self._engines: dict[int, Any] = {}
        self._starts: list[np.ndarray] = []
        self._fillers: list[np.ndarray] = []
        self._filler_cursor = 0
        self._table: dict[tuple[float, ...], _Observation] = {}
        self._outstanding: set[tuple[float, ...]] = set()
        self._expect_grads = self.source == "hypergrad" or (
            self.source == "auto" and bool(space.constants.get("hypergrad", False)))
        #: Every decision: member, start count, center, Jacobian rows, direction, step, accepted,
        #: and whether the Jacobian was a Broyden update (``updated``) rather than measured.
        self.history: list[dict[str, Any]] = []
        #: Members' end points: ``{"x", "values", "reason", "member", "restart", "updated"}``
        #: (``updated``: judged on a Broyden-updated Jacobian, an estimate), reason one of
        #: ``"stationary"``, ``"infeasible"`` (a violated constraint cannot be reduced),
        #: ``"stalled"``, ``"max_steps"``, ``"failed"``, ``"fixed"`` (nothing continuous to move).
        self.stationary: list[dict[str, Any]] = []
        # The initial design: the first n_initial points of the Sobol sequence. With more points
        # than members, walks start once all have run, from the best-spread non-dominated ones.
        self._design = [self._sobol(self._starts, i, 0) for i in range(self.n_initial)]
        self._assigned = self.n_initial == self.population
        # Lowest value and span of each objective row over the design's front (set once the
        # design has run; None when walks start at once): where a trace has most room to go.
        self._front_low: np.ndarray | None = None
        self._front_span: np.ndarray | None = None
        self.members = [_Member(index=i, phase=WAIT) for i in range(self.population)]
        if self._assigned:
            for member in self.members:
                self._place(member, self._design[member.index])
                member.sobol = 1

    def _sobol(self, cache: list[np.ndarray], index: int, stream: int) -> np.ndarray:
        from scipy.stats import qmc

        if index >= len(cache):
            if stream not in self._engines:
                seed = None if self.seed is None else int(np.random.SeedSequence(
                    [int(self.seed), stream]).generate_state(1)[0])
                self._engines[stream] = qmc.Sobol(d=len(self._names), scramble=True, seed=seed)
            engine = self._engines[stream]
            while index >= len(cache):
                cache.extend(engine.random(64))
        return cache[index]

    def _start(self, member: _Member) -> _Member:
        """Place ``member`` at its next Sobol start: point
        ``n_initial + index + population * (k - 1)`` of the sequence for its ``k``-th start after
        the initial design."""
        raw = self._sobol(self._starts,
                          self.n_initial + member.index + self.population * (member.sobol - 1), 0)
        member.sobol += 1
        return self._place(member, raw)

    def _place(self, member: _Member, raw: np.ndarray) -> _Member:
        """Start a fresh walk at ``raw``: its Floats move, everything else stays."""
        member.trace, member.trace_ref, member.trace_len = -1, math.nan, 0.0
        member.basis, member.updates = None, 0
        start = self._snap(raw)
        cont, lo, hi = [], [], []
        for j, param in self._floats.items():
            if param.off is not None and start[j] < OFF_BAND:
                continue  # starts off, stays off
            cont.append(j)
            lo.append(OFF_BAND + _OFF_MARGIN if param.off is not None else 0.0)
            hi.append(1.0)
        member.cont = np.array(cont, dtype=int)
        member.lo, member.hi = np.array(lo, dtype=float), np.array(hi, dtype=float)
        if len(cont):
            start[member.cont] = np.clip(start[member.cont], member.lo, member.hi)
            start = self._snap(start)
        return self._walk_from(member, start)

    def _assign_starts(self) -> None:
        """Once the whole design has run: one start per member, the non-dominated feasible points
        first, spread out (farthest-point order in normalised objective space), then the next
        ranks; failed points last."""
        from .. import pareto

        design = [self._snap(p) for p in self._design]
        observations = [self._lookup(p) for p in design]
        if any(o is None for o in observations):
            return
        self._assigned = True
        good = [i for i, o in enumerate(observations) if o.ok]
        rows = [("objective", m) for m in self.problem.objectives]
        values = np.array([self._row_values(rows, observations[i].metrics) for i in good]).reshape(
            len(good), len(rows))
        slack = self.problem.constraint_slack([observations[i].metrics for i in good])
        violation = np.clip(slack, 0.0, None).sum(axis=1) if slack.shape[1] else np.zeros(len(good))
        feasible = violation <= 0
        rank = np.zeros(len(good), dtype=int)
        if feasible.any():
            rank[feasible] = pareto.pareto_rank(values[feasible])
        rank[~feasible] = rank.max(initial=0) + 1 + np.argsort(np.argsort(violation[~feasible]))
        low = values.min(axis=0) if len(good) else np.zeros(len(rows))
        span = values.max(axis=0) - low if len(good) else np.ones(len(rows))
        scaled = (values - low) / np.where(span > 0, span, 1.0)
        if len(good):
            front = values[rank == 0] if (rank == 0).any() else values
            self._front_low = front.min(axis=0)
            self._front_span = front.max(axis=0) - self._front_low
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
        starts = [good[c] for c in order] + [i for i in range(len(design)) if i not in good]
        for member, index in zip(self.members, starts, strict=False):
            self._place(member, self._design[index])
            member.sobol = 1

    def _walk_from(self, member: _Member, start: np.ndarray) -> _Member:
        member.start, member.x = start, start
        member.lr, member.phase, member.center, member.y = self.lr0, CENTER, None, None
        member.steps = member.trials = 0
        member.slow = False
        return member

    def _trace_point(self, member: _Member, reason: str) -> np.ndarray | None:
        """Where a walk that ended at a front point continues, or None for a fresh Sobol start.

        From a stationary (or stalled) feasible end, the next walk starts a predictor step away
        along the descent direction of one objective alone (giving up the others), and its UPGrad
        steps correct back onto the front, better in that objective. A walk that ends better in it
        than the previous end becomes the new origin and the predictor grows by 1.5 (up to twice
        ``trace_step``); one that does not is retried from the same origin with half the step,
        and the trace ends below half of ``trace_step``. No trace starts towards an objective
        whose descent the box holds for the most part (its row keeps less than half its norm once
        the components pointing out of the box are dropped): that end of the front is on the box.
        """
        if self.reseed != "trace" or member.center is None:
            return None
        n_objectives = len(self.problem.objectives)
        feasible_end = (reason in ("stationary", "stalled")
                        and not np.any(member.all_fx[n_objectives:] > 0))
        if member.trace >= 0:
            k, ref = member.trace, member.trace_ref
            if feasible_end and member.all_fx[k] < ref - self.rtol * abs(ref) - self.atol:
                member.trace_len = min(1.5 * member.trace_len, 2.0 * self.trace_step)
            else:  # no progress towards objective k: a shorter predictor from the same origin
                member.trace_len *= 0.5
                if member.trace_len < 0.5 * self.trace_step - 1e-12:
                    return None
                return self._predict(member, member.trace_origin, member.trace_dir)
        elif not feasible_end:
            return None
        else:
            k = self._trace_objective(member)
            member.trace_len = self.trace_step
        row = member.all_jacobian[k]
        if not np.all(np.isfinite(row)):
            return None
        xc = member.x[member.cont]
        full = float(np.linalg.norm(row))
        row = np.where(((xc <= member.lo + _AT_BOUND) & (row > 0)) |
                       ((xc >= member.hi - _AT_BOUND) & (row < 0)), 0.0, row)
        norm = float(np.linalg.norm(row))
        if norm <= 0.5 * full or norm <= 1e-300:
            # The box holds most of objective k's descent: that end of the front lies on the box,
            # and hops along the bound's face would only chase what is left.
            return None
        member.trace, member.trace_ref = k, float(member.all_fx[k])
        member.trace_origin, member.trace_dir = member.x.copy(), row / norm
        return self._predict(member, member.trace_origin, member.trace_dir)

    def _trace_objective(self, member: _Member) -> int:
        """The objective a new trace heads for: the one in which the end is farthest from the
        best the design's front reached (relative to that front's span), so that an end near
        one extreme of the front traces towards the other instead of crowding its own extreme,
        where the front is flat and extra points add little hypervolume. Without a design
        (walks started at once), members alternate."""
        n_objectives = len(self.problem.objectives)
        if self._front_low is None or self._front_span is None:
            return (member.index + member.sobol) % n_objectives
        span = np.where(self._front_span > 0, self._front_span, 1.0)
        room = (member.all_fx[:n_objectives] - self._front_low) / span
        return int(np.argmax(room))

    def _predict(self, member: _Member, origin: np.ndarray,
                 direction: np.ndarray) -> np.ndarray | None:
        point = origin.copy()
        point[member.cont] = np.clip(origin[member.cont] - member.trace_len * direction,
                                     member.lo, member.hi)
        point = self._snap(point)
        return None if self._key(point) == self._key(origin) else point

    # -- points and the table -------------------------------------------------------------------

    def _snap(self, point: np.ndarray) -> np.ndarray:
        """Quantise continuous coordinates to the grid and round-trip through a config."""
        point = np.asarray(point, dtype=float).copy()
        floats = list(self._floats)
        if floats:
            point[floats] = np.round(point[floats] / _GRID) * _GRID
        space = self.problem.space
        return space.encode(space.decode(point[None]))[0]

    @staticmethod
    def _key(point: np.ndarray) -> tuple[float, ...]:
        return point_keys(point[None])[0]

    def _lookup(self, point: np.ndarray) -> _Observation | None:
        return self._table.get(self._key(point))

    def _record(self, result: TrialResult) -> None:
        try:
            point = self.problem.space.encode([result.config])[0]
        except (KeyError, ValueError, TypeError):
            return  # not a configuration of this space
        key = self._key(point)
        names = self.problem.metric_names
        metrics = {k: float(v) for k, v in result.metrics.items() if _is_number(v)}
        ok = (result.status == "COMPLETE"
              and all(math.isfinite(metrics.get(m, math.nan)) for m in names))
        new = _Observation(result.trial_id, ok, metrics, dict(result.config))
        old = self._table.get(key)
        if old is None or (new.ok, -new.trial_id) > (old.ok, -old.trial_id):
            self._table[key] = new
        self._outstanding.discard(key)
        if ok and not self._expect_grads and self.source == "auto" and any(
                k.startswith(GRAD_PREFIX) for k in metrics):
            self._expect_grads = True

    # -- tell: advance every member as far as the table allows ----------------------------------

    def _tell(self, results: list[TrialResult]) -> None:
        for result in sorted(results, key=lambda r: r.trial_id):
            self._record(result)
        if not self._assigned:
            self._assign_starts()
        for member in self.members:
            self._advance(member)

    def _advance(self, member: _Member) -> None:
        for _ in range(4 * len(self._table) + 100):  # every pass or two consumes a result
            if member.phase == WAIT:
                return
            if member.phase == CENTER:
                obs = self._lookup(member.x)
                if obs is None:
                    return
                member.trials += 1
                member.consumed += 1
                if not obs.ok:
                    self._finish(member, "failed")
                    continue
                self._set_center(member, obs)
                if len(member.cont) == 0:
                    self._finish(member, "fixed")
                    continue
            if member.phase == GRADIENT:
                jacobian = self._updated_jacobian(member)
                if jacobian is not None:
                    member.updates += 1
                else:
                    jacobian = self._jacobian(member)
                    if jacobian is None:
                        return
                    member.updates = 0
                member.all_jacobian = jacobian
                self._activate(member, member.active)
                if not self._plan_step(member):
                    continue
            if member.phase == STEP:
                assert member.y is not None
                obs = self._lookup(member.y)
                if obs is None:
                    return
                member.trials += 1
                member.consumed += 1
                accepted, crossed = self._accept(member, obs)
                self._log(member, accepted, obs)
                if accepted:
                    gained = (member.fx - self._row_values(member.rows, obs.metrics)) / \
                        np.maximum(np.abs(member.fx), 1e-12)
                    member.slow = bool(np.all(gained < self.ptol))
                    member.basis = self._center_basis(member)
                    member.x, member.y = member.y, None
                    member.lr = min(member.lr * self.grow, self.lr_max)
                    member.steps += 1
                    self._set_center(member, obs)
                    if self.max_steps is not None and member.steps >= self.max_steps:
                        self._finish(member, "max_steps")
                elif crossed:
                    # The step left a constraint that held: it joins the rows, so that the next
                    # direction slides along its boundary instead of crossing it.
                    self._activate(member, sorted(member.active + crossed))
                    self._plan_step(member)
                elif member.updates > 0:
                    # The direction came from an updated Jacobian, which the trial contradicts:
                    # measure the Jacobian here before blaming the step's length.
                    member.basis, member.y = None, None
                    member.phase = GRADIENT
                else:
                    member.lr *= 0.5
                    if member.lr < self.lr_min:
                        self._finish(member, "stalled")
                    else:
                        self._propose(member)
        raise RuntimeError("jacobian strategy: a member did not settle; please report this")

    def _set_center(self, member: _Member, obs: _Observation) -> None:
        member.center = obs
        member.all_rows = [("objective", m) for m in self.problem.objectives]
        member.all_rows += [("constraint", c) for c in self.problem.constraints]
        member.all_fx = self._row_values(member.all_rows, obs.metrics)
        n_objectives = len(self.problem.objectives)
        violated = [i for i in range(n_objectives, len(member.all_rows)) if member.all_fx[i] > 0]
        member.all_jacobian = np.full((len(member.all_rows), len(member.cont)), np.nan)
        self._activate(member, list(range(n_objectives)) + violated)
        member.phase = GRADIENT

    def _activate(self, member: _Member, active: list[int]) -> None:
        member.active = list(active)
        member.rows = [member.all_rows[i] for i in active]
        member.fx = member.all_fx[active]
        member.jacobian = member.all_jacobian[active]

    def _row_values(self, rows: Sequence[tuple[str, str]],
                    metrics: Mapping[str, float]) -> np.ndarray:
        values = []
        for kind, name in rows:
            if kind == "objective":
                values.append(self._signs[name] * metrics[name])
            else:
                op, threshold = self.problem.constraints[name]
                values.append(metrics[name] - threshold if op == "<="
                              else threshold - metrics[name])
        return np.array(values, dtype=float)

    def _row_signs(self, rows: Sequence[tuple[str, str]]) -> np.ndarray:
        """d row / d metric for every row (+1 or -1)."""
        return np.array([self._signs[n] if k == "objective" else
                         (1.0 if self.problem.constraints[n][0] == "<=" else -1.0)
                         for k, n in rows])

    # -- the Jacobian ----------------------------------------------------------------------------

    def _hypergradient_columns(self, member: _Member) -> dict[int, np.ndarray]:
        """Columns (position in ``member.cont`` -> all rows, NaN where no key) that the center's
        ``grad/`` keys give for every active row."""
        if self.source == "fd":
            return {}
        assert member.center is not None
        metrics, config = member.center.metrics, member.center.config
        signs = self._row_signs(member.all_rows)
        columns = {}
        for c, j in enumerate(member.cont):
            name = self._names[j]
            raw = np.array([metrics.get(grad_key(metric, name), math.nan)
                            for _, metric in member.all_rows], dtype=float)
            if not np.all(np.isfinite(raw[member.active])):
                continue
            columns[c] = signs * raw * _dx_du(self._floats[j], float(config[name]))
        return columns

    def _difference_points(self, member: _Member, x: np.ndarray,
                           c: int) -> tuple[np.ndarray, np.ndarray]:
        """The two points whose difference estimates column ``c`` at ``x`` (with forward
        differences one of them is ``x`` itself, which the walk has already run)."""
        j = member.cont[c]
        up, down = x.copy(), x.copy()
        if self.differences == "forward" and x[j] + self.h <= member.hi[c]:
            up[j] = x[j] + self.h
        elif self.differences == "forward":
            down[j] = max(x[j] - self.h, member.lo[c])  # at the upper bound: backward
        else:
            up[j] = min(x[j] + self.h, member.hi[c])
            down[j] = max(x[j] - self.h, member.lo[c])
        return self._snap(up), self._snap(down)

    def _jacobian(self, member: _Member) -> np.ndarray | None:
        """All rows x continuous coordinates at the center (NaN: unknown), or None while
        differences are missing."""
        columns = self._hypergradient_columns(member)
        jacobian = np.full((len(member.all_rows), len(member.cont)), np.nan)
        missing = False
        for c in range(len(member.cont)):
            if c in columns:
                jacobian[:, c] = columns[c]
                continue
            up, down = self._difference_points(member, member.x, c)
            j = member.cont[c]
            span = up[j] - down[j]
            if span <= 0:
                # a range too narrow for the grid: the coordinate does not move
                jacobian[:, c] = 0.0
                continue
            sides = []
            for point in (up, down):
                obs = (member.center if self._key(point) == self._key(member.x)
                       else self._lookup(point))
                if obs is None:
                    missing = True
                sides.append(obs)
            if missing:
                continue
            f_up, f_down = self._side_values(member, sides[0]), self._side_values(member, sides[1])
            if f_up is not None and f_down is not None:
                jacobian[:, c] = (f_up - f_down) / span
            elif f_up is not None:  # one side failed: one-sided difference from the center
                jacobian[:, c] = (f_up - member.all_fx) / max(up[j] - member.x[j], _GRID)
            elif f_down is not None:
                jacobian[:, c] = (member.all_fx - f_down) / max(member.x[j] - down[j], _GRID)
            else:
                jacobian[:, c] = 0.0  # both sides failed: leave the coordinate where it is
        return None if missing else jacobian

    def _may_update(self, member: _Member, *, after_step: bool = False) -> bool:
        """Whether the member's next Jacobian may come from a Broyden update (no differences):
        at the current center, or (``after_step``) at the end of the step it is running."""
        return (self.broyden > 0 and member.updates < self.broyden
                and (after_step or member.basis is not None))

    @staticmethod
    def _center_basis(member: _Member) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The current center as the next center's Broyden basis (None before it has run)."""
        if member.center is None:
            return None
        return member.x, member.all_fx, member.all_jacobian

    def _updated_jacobian(self, member: _Member) -> np.ndarray | None:
        r"""Broyden's update of the previous center's Jacobian, or None where differences must run.

        With the step ``s = x - x_0`` and the measured change ``\Delta f = f(x) - f(x_0)``,
        ``J = J_0 + (\Delta f - J_0 s) s^T / (s^T s)``: the least change to ``J_0`` (in the
        Frobenius norm) that agrees with the change along ``s`` (Broyden, 1965). A trace or a
        walk visits points a step apart, so ``J_0`` is close; its other directions age, which
        ``broyden`` bounds, and a rejected step refreshes it.

        Written here rather than taken from a library: it is one rank-one formula on arrays the
        strategy already holds (SciPy's Broyden solvers hide it inside root finding).
        """
        if not self._may_update(member) or self._hypergradient_columns(member):
            return None
        assert member.basis is not None
        x0, f0, j0 = member.basis
        if j0.shape != (len(member.all_rows), len(member.cont)) or not np.all(np.isfinite(j0)):
            return None
        s = (member.x - x0)[member.cont]
        norm2 = float(s @ s)
        if norm2 <= 0:
            return j0.copy()
        residual = member.all_fx - f0 - j0 @ s
        return j0 + np.outer(residual, s) / norm2

    def _side_values(self, member: _Member, obs: _Observation | None) -> np.ndarray | None:
        if obs is None or not obs.ok:
            return None
        return self._row_values(member.all_rows, obs.metrics)

    # -- the step --------------------------------------------------------------------------------

    def _aggregate(self, jacobian: np.ndarray) -> np.ndarray:
        r"""UPGrad of the (row-normalised) Jacobian, its columns equalised up to ``precondition``.

        With column norms ``c_j``, ``s_j = min(max_k c_k / c_j, precondition)`` and
        ``S = diag(s)``, UPGrad runs on ``J S``: ``u = UPGrad(J S)``, and the direction is
        ``d = S u |u| / |S u|``. Since ``(J S) u >= 0``, ``J d >= 0`` still: ``d`` conflicts with
        no row. ``|d| = |u|``, so the step length and ``tol`` read the equalised problem, whose
        Pareto-stationary points are those of ``J`` (``S`` is positive and diagonal).
        """
        matrix = _unit_rows(np.nan_to_num(jacobian.copy(), nan=0.0), self.normalize)
        if not np.any(matrix):
            return np.zeros(matrix.shape[1])
        if self.precondition <= 1:
            return self._upgrad(matrix)
        columns = np.linalg.norm(matrix, axis=0)
        top = float(columns.max())
        scale = top / np.maximum(columns, top / self.precondition)  # in [1, precondition]
        u = self._upgrad(_unit_rows(matrix * scale, self.normalize))
        d = u * scale
        size = float(np.linalg.norm(d))
        return d * (float(np.linalg.norm(u)) / size) if size > 0 else d

    def _upgrad(self, matrix: np.ndarray) -> np.ndarray:
        import torch

        tensor = torch.as_tensor(matrix, dtype=torch.float64)
        for upgrad in self._upgrads:
            try:
                with torch.no_grad():
                    d = upgrad(tensor).numpy().astype(float)
            except Exception:  # quadprog: "matrix G is not positive definite"
                continue
            if np.all(np.isfinite(d)):
                return d
        return np.zeros(matrix.shape[1])

    def _direction(self, member: _Member) -> np.ndarray:
        """UPGrad of the active rows, with coordinates a step would push out of the box frozen."""
        jacobian = member.jacobian
        free = np.ones(len(member.cont), dtype=bool)
        xc = member.x[member.cont]
        d = np.zeros(len(member.cont))
        for _ in range(len(member.cont) + 1):
            d = np.zeros(len(member.cont))
            if free.any():
                d[free] = self._aggregate(jacobian[:, free])
            blocked = free & (((xc <= member.lo + _AT_BOUND) & (d > 0)) |
                              ((xc >= member.hi - _AT_BOUND) & (d < 0)))
            if not blocked.any():
                break
            free &= ~blocked
        return d

    def _plan_step(self, member: _Member) -> bool:
        """Aggregate the active rows into a direction and propose a step; False when the member
        finished instead.

        When objectives and violated constraints are stationary together (no direction reduces a
        violation without worsening an objective), feasibility comes first: the step then follows
        the violated constraints' rows alone.
        """
        member.direction = self._direction(member)
        if self._stationary(member):
            reason = "stationary"
            violated = [i for i in member.active if member.all_rows[i][0] == "constraint"
                        and member.all_fx[i] > 0]
            if violated and len(violated) < len(member.active):
                self._log(member, None, None)
                self._activate(member, violated)
                member.direction = self._direction(member)
                reason = "infeasible"
            if self._stationary(member):
                self._log(member, None, None)
                self._finish(member, reason)
                return False
        self._propose(member)
        return member.phase == STEP

    def _stationary(self, member: _Member) -> bool:
        """No direction improves every row (``|d| < tol``), or none by enough to be worth a trial:
        a full ``lr_max`` step is predicted to improve no row by more than ``ftol`` relative, or the
        last accepted step improved none by more than ``ptol``."""
        d = member.direction
        if float(np.linalg.norm(d)) < self.tol or member.slow:
            return True
        if self.ftol <= 0:
            return False
        gain = (member.jacobian @ d) * self.lr_max / np.maximum(np.abs(member.fx), 1e-12)
        return bool(np.all(gain < self.ftol))

    def _propose(self, member: _Member) -> None:
        d, xc = member.direction, member.x[member.cont]
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(d > 0, (xc - member.lo) / d,
                            np.where(d < 0, (member.hi - xc) / -d, np.inf))
        t = float(min(member.lr, float(np.min(room)) if len(room) else member.lr))
        y = member.x.copy()
        y[member.cont] = np.clip(xc - t * d, member.lo, member.hi)
        y = self._snap(y)
        if self._key(y) == self._key(member.x):  # the step vanished on the grid
            member.lr = 0.0
            self._finish(member, "stalled")
            return
        member.y, member.t, member.phase = y, t, STEP

    def _accept(self, member: _Member, obs: _Observation) -> tuple[bool, list[int]]:
        """Whether the step's result is accepted, and the held constraints it crossed (whose
        Jacobian row is known)."""
        if not obs.ok:
            return False, []
        fy = self._row_values(member.all_rows, obs.metrics)
        predicted = member.jacobian @ member.direction * member.t  # first-order decrease, >= 0
        allowance = self.rtol * np.abs(member.all_fx) + self.atol
        active = np.array(member.active, dtype=int)
        better = np.all(fy[active] <= member.fx - self.armijo * predicted + allowance[active])
        crossed = [i for i, (kind, _) in enumerate(member.all_rows)
                   if kind == "constraint" and i not in member.active and member.all_fx[i] <= 0
                   and fy[i] > self.atol]
        guardable = [i for i in crossed if np.all(np.isfinite(member.all_jacobian[i]))]
        return bool(better) and not crossed, guardable

    def _finish(self, member: _Member, reason: str) -> None:
        """Record where the member ended and re-seed it at its next start."""
        center = member.center  # None when the walk's first center failed
        if center is not None or reason == "failed":
            self.stationary.append({"member": member.index, "restart": member.restarts,
                                    "reason": reason, "x": member.x.copy(), "trace": member.trace,
                                    "values": {} if center is None else dict(center.metrics),
                                    "updated": center is not None and member.updates > 0})
        member.restarts += 1
        point = self._trace_point(member, reason)
        if point is None:
            self._start(member)
        else:
            end = self._center_basis(member)
            self._walk_from(member, point)
            member.basis = end

    def _log(self, member: _Member, accepted: bool | None, obs: _Observation | None) -> None:
        full = np.zeros((len(member.rows), len(self._names)))
        full[:, member.cont] = member.jacobian
        direction = np.zeros(len(self._names))
        direction[member.cont] = member.direction
        entry = {"member": member.index, "restart": member.restarts, "x": member.x.copy(),
                 "rows": [n for _, n in member.rows], "jacobian": full, "direction": direction,
                 "accepted": accepted, "updated": member.updates > 0}
        if member.y is not None and accepted is not None:
            entry["step"] = member.y - member.x
            entry["t"] = member.t
        self.history.append(entry)

    # -- ask ---------------------------------------------------------------------------------------

    def _wanted(self, member: _Member, tier: int) -> list[np.ndarray]:
        """Points ``member`` needs: tier 0 surely, tier 1 likely, tier 2 on one of two outcomes."""
        speculate = not self._expect_grads
        if member.phase == WAIT:
            if tier != 0:
                return []
            return [self._snap(p) for p in self._design[member.index::self.population]]
        if member.phase == CENTER:
            if tier == 0:
                return [member.x]
            if tier == 1 and speculate and not self._may_update(member):
                return self._all_differences(member, member.x)
            return []
        if member.phase == GRADIENT:
            if tier != 0 or self._updated_jacobian(member) is not None:
                return []
            columns = self._hypergradient_columns(member)
            points = []
            for c in range(len(member.cont)):
                if c not in columns:
                    points += list(self._difference_points(member, member.x, c))
            return points
        if member.phase == STEP and member.y is not None:
            if tier == 0:
                return [member.y]
            if tier == 2:
                shorter = member.x.copy()
                shorter[member.cont] = member.x[member.cont] - 0.5 * member.t * member.direction
                points = [self._snap(shorter)] if member.lr * 0.5 >= self.lr_min else []
                if speculate and not self._may_update(member, after_step=True):
                    points += self._all_differences(member, member.y)
                return points
        return []

    def _all_differences(self, member: _Member, x: np.ndarray) -> list[np.ndarray]:
        points = []
        for c in range(len(member.cont)):
            points += list(self._difference_points(member, x, c))
        return points

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        avoid = set(self._table) | self._outstanding
        for config in pending:
            try:
                avoid.add(self._key(self.problem.space.encode([config])[0]))
            except (KeyError, ValueError, TypeError):
                continue
        chosen: list[np.ndarray] = []
        # Members take turns, the one that consumed fewest results first: the order follows from
        # the data, so a rebuilt strategy asks what the live one would have asked.
        order = sorted(self.members, key=lambda m: (m.consumed, m.index))
        for tier in (0, 1, 2):
            queues = [list(self._wanted(member, tier)) for member in order]
            while len(chosen) < n and any(queues):
                for queue in queues:
                    while queue:
                        point = queue.pop(0)
                        key = self._key(point)
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
            point = self._snap(self._sobol(self._fillers, self._filler_cursor, 1))
            self._filler_cursor += 1
            key = self._key(point)
            if key not in avoid or self._filler_cursor > 64 * (len(self._table) + n + 1):
                avoid.add(key)
                chosen.append(point)
        self._outstanding.update(self._key(p) for p in chosen)
        return self.problem.space.decode(np.array(chosen))

    # -- inspection --------------------------------------------------------------------------------

    def centers(self) -> np.ndarray:
        """Current center of every member, shape ``(population, dim)``."""
        return np.array([m.x for m in self.members])

    def state(self) -> list[dict[str, Any]]:
        """A plain summary of every member (equal for a live strategy and one rebuilt from data)."""
        return [{"index": m.index, "restarts": m.restarts, "sobol": m.sobol, "trace": m.trace,
                 "trace_len": m.trace_len,
                 "phase": m.phase,
                 "x": [round(v, 9) for v in m.x.tolist()], "lr": m.lr, "steps": m.steps,
                 "updates": m.updates,
                 "y": None if m.y is None else [round(v, 9) for v in m.y.tolist()]}
                for m in self.members]


def _unit_rows(matrix: np.ndarray, normalize: bool) -> np.ndarray:
    """``matrix`` with every nonzero row scaled to norm 1 (unchanged when not ``normalize``)."""
    if not normalize:
        return matrix
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.where(norms > 1e-300, matrix / np.where(norms > 1e-300, norms, 1.0), 0.0)


def _dx_du(param: Float, value: float) -> float:
    """Derivative of a Float's raw value with respect to its encoded coordinate, at ``value``."""
    scale = 1.0 / (1.0 - OFF_BAND) if param.off is not None else 1.0
    if param.log:
        return value * (math.log(param.high) - math.log(param.low)) * scale
    return (param.high - param.low) * scale


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
