"""One member of the ``jacobian`` population: its walk's state and the steps that advance it.

A walk goes through its phases as results arrive: ``center`` (its center is running), ``gradient``
(the Jacobian's difference trials are running), ``step`` (the proposed step is running); ``wait``
means the initial design has not finished; ``rest`` that the walk has nothing left to move (see
:meth:`Walk.advance`). Every field follows from the results the walk consumed,
so replaying the same results rebuilds it (see :mod:`._jacobian`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._jacobian_estimate import Aggregator, Box, Broyden, Estimator
from ._jacobian_options import JacobianOptions
from ._jacobian_rows import LocalModel, Rows
from ._jacobian_table import Grid, Key, Observation, Table
from ._jacobian_trace import Trace, heading
from ._sobol import SobolPoints

WAIT, CENTER, GRADIENT, STEP, REST = "wait", "center", "gradient", "step", "rest"


@dataclass
class Terrain:
    """What the walks of one strategy share. The strategy fills the table and sets ``front``;
    walks read the rest and append to the logs ``history`` and ``stationary`` (see
    :class:`~distopt.strategies._jacobian.JacobianStrategy`)."""

    options: JacobianOptions
    rows: Rows
    grid: Grid
    table: Table
    estimator: Estimator
    aggregator: Aggregator
    #: The Sobol sequence of the design and of every later start.
    starts: SobolPoints
    history: list[dict[str, Any]] = field(default_factory=list)
    stationary: list[dict[str, Any]] = field(default_factory=list)
    #: ``(low, span)`` of each objective row over the design's front, once it has run.
    front: tuple[np.ndarray, np.ndarray] | None = None


class Walk:
    """One walker and its current walk (the population's member number ``index``)."""

    def __init__(self, index: int, terrain: Terrain):
        self.index, self.terrain = index, terrain
        self.restarts = 0   # walks ended so far (Sobol starts and trace hops)
        self.sobol = 0      # Sobol starts used so far
        self.consumed = 0   # results consumed in all (orders the asks, so members take turns)
        self.fixed_at: set[Key] = set()  # where walks ended with nothing to move
        self.trace = Trace()
        self.phase = WAIT
        self.box = Box()
        self.start = self.x = np.empty(0)
        self.y: np.ndarray | None = None  # the step being tried
        self.t = self.lr = 0.0
        self.center: Observation | None = None
        self.model = LocalModel(terrain.rows, np.empty(0), np.empty((0, 0)), [])
        self.direction = np.empty(0)
        self.steps = 0      # accepted steps since the last start
        self.trials = 0     # results consumed since the last start
        self.slow = False   # the last accepted step improved no row by more than ptol
        self.broyden = Broyden(terrain.options.broyden)

    # -- starts ------------------------------------------------------------------------------

    def start_next(self) -> None:
        """Start at the walk's next Sobol start: point
        ``n_initial + index + population * (k - 1)`` of the sequence for its ``k``-th start after
        the initial design."""
        options = self.terrain.options
        assert options.n_initial is not None
        self.place(self.terrain.starts[options.n_initial + self.index
                                       + options.population * (self.sobol - 1)])
        self.sobol += 1

    def place(self, raw: np.ndarray) -> None:
        """Start a fresh walk at ``raw``: its Floats move, everything else stays."""
        self.trace.reset()
        self.broyden = Broyden(self.terrain.options.broyden)
        grid = self.terrain.grid
        start = grid.snap(raw)
        self.box = Box.at(grid.floats, start)
        self._walk_from(grid.snap(self.box.moved(start)) if len(self.box) else start)

    def _walk_from(self, start: np.ndarray) -> None:
        self.start, self.x = start, start
        self.lr, self.phase, self.center, self.y = self.terrain.options.lr, CENTER, None, None
        self.steps = self.trials = 0
        self.slow = False

    # -- tell ----------------------------------------------------------------------------------

    def advance(self) -> None:
        """Consume every result of the table this walk is waiting for, as far as they go."""
        for _ in range(4 * len(self.terrain.table) + 100):  # every pass or two consumes a result
            if self.phase in (WAIT, REST):
                return
            if self.phase == CENTER:
                obs = self._consume(self.x)
                if obs is None:
                    return
                if not obs.ok:
                    self._finish("failed")
                    continue
                self._set_center(obs)
                if len(self.box) == 0:
                    # Nothing continuous to move (a space of Ints and Categoricals): the walk
                    # ends where it starts. Once a start repeats such an end, the starts are
                    # cycling through known configurations (in a small space, all of them), so
                    # the member rests and the strategy's fillers explore instead.
                    key = self.terrain.grid.key(self.x)
                    repeated = key in self.fixed_at
                    self.fixed_at.add(key)
                    self._finish("fixed")
                    if repeated:
                        self.phase = REST
                        return
                    continue
            if self.phase == GRADIENT:
                if not self._estimate():
                    return
                if not self._plan_step():
                    continue
            if self.phase == STEP:
                assert self.y is not None
                obs = self._consume(self.y)
                if obs is None:
                    return
                self._judge(obs)
        raise RuntimeError("jacobian strategy: a member did not settle; please report this")

    def _consume(self, point: np.ndarray) -> Observation | None:
        """The result at ``point``, counted as consumed; None while it has not run."""
        obs = self.terrain.table.lookup(point)
        if obs is not None:
            self.trials += 1
            self.consumed += 1
        return obs

    def _set_center(self, obs: Observation) -> None:
        self.center = obs
        self.model = LocalModel.at(self.terrain.rows, obs.metrics, len(self.box))
        self.phase = GRADIENT

    def _estimate(self) -> bool:
        """Take the center's Jacobian: a Broyden update where allowed, else measured (False while
        differences are missing)."""
        jacobian = self._updated()
        if jacobian is not None:
            self.broyden.updates += 1
        else:
            assert self.center is not None
            jacobian = self.terrain.estimator.measure(self.x, self.center, self.model.values,
                                                      self.box, self.model.active)
            if jacobian is None:
                return False
            self.broyden.updates = 0
        self.model.jacobian = jacobian
        return True

    def _updated(self) -> np.ndarray | None:
        """The Broyden update of the previous center's Jacobian, or None where differences must
        run (no update allowed, hypergradients there, or no usable basis)."""
        estimator = self.terrain.estimator
        if not self.broyden.allows():
            return None
        assert self.center is not None and self.broyden.basis is not None
        if estimator.hypergradients(self.center, self.box, self.model.active):
            return None
        return estimator.update(self.broyden.basis, self.x, self.model.values, self.box)

    def _center_basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The current center as the next center's Broyden basis (None before it has run)."""
        return None if self.center is None else (self.x, self.model.values, self.model.jacobian)

    # -- the step -------------------------------------------------------------------------------

    def _plan_step(self) -> bool:
        """Aggregate the active rows into a direction and propose a step; False when the walk
        finished instead.

        When objectives and violated constraints are stationary together (no direction reduces a
        violation without worsening an objective), feasibility comes first: the step then follows
        the violated constraints' rows alone.
        """
        self._aim()
        if self._stationary():
            reason = "stationary"
            violated = self.model.violated()
            if violated and len(violated) < len(self.model.active):
                self._log(None)
                self.model.active = violated
                self._aim()
                reason = "infeasible"
            if self._stationary():
                self._log(None)
                self._finish(reason)
                return False
        self._propose()
        return self.phase == STEP

    def _aim(self) -> None:
        self.direction = self.terrain.aggregator.direction(self.model.active_jacobian, self.box,
                                                           self.x[self.box.cont])

    def _stationary(self) -> bool:
        """No direction improves every row (``|d| < tol``), or none by enough to be worth a trial:
        a full ``lr_max`` step is predicted to improve no row by more than ``ftol`` relative, or the
        last accepted step improved none by more than ``ptol``."""
        options, d = self.terrain.options, self.direction
        if float(np.linalg.norm(d)) < options.tol or self.slow:
            return True
        if options.ftol <= 0:
            return False
        return bool(np.all(self.model.predicted_gain(d, options.lr_max) < options.ftol))

    def _propose(self) -> None:
        box, d, xc = self.box, self.direction, self.x[self.box.cont]
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(d > 0, (xc - box.lo) / d, np.where(d < 0, (box.hi - xc) / -d, np.inf))
        t = float(min(self.lr, float(np.min(room)) if len(room) else self.lr))
        y = self.terrain.grid.snap(box.moved(self.x, -t * d))
        if Grid.key(y) == Grid.key(self.x):  # the step vanished on the grid
            self.lr = 0.0
            self._finish("stalled")
            return
        self.y, self.t, self.phase = y, t, STEP

    def _judge(self, obs: Observation) -> None:
        """Move on from the step's result: accept it, guard a crossed constraint, measure an
        updated Jacobian afresh, or try a shorter step."""
        options = self.terrain.options
        accepted, crossed = False, []
        if obs.ok:
            accepted, crossed = self.model.judge(obs.metrics, self.direction, self.t,
                                                 armijo=options.armijo, rtol=options.rtol,
                                                 atol=options.atol)
        self._log(accepted)
        if accepted:
            self.slow = bool(np.all(self.model.gain(obs.metrics) < options.ptol))
            self.broyden.basis = self._center_basis()
            assert self.y is not None
            self.x, self.y = self.y, None
            self.lr = min(self.lr * options.grow, options.lr_max)
            self.steps += 1
            self._set_center(obs)
            if options.max_steps is not None and self.steps >= options.max_steps:
                self._finish("max_steps")
        elif crossed:
            # The step left a constraint that held: it joins the rows, so that the next direction
            # slides along its boundary instead of crossing it.
            self.model.active = sorted(self.model.active + crossed)
            self._plan_step()
        elif self.broyden.updates > 0:
            # The direction came from an updated Jacobian, which the trial contradicts: measure
            # the Jacobian here before blaming the step's length.
            self.broyden.basis, self.y = None, None
            self.phase = GRADIENT
        else:
            self.lr *= 0.5
            if self.lr < options.lr_min:
                self._finish("stalled")
            else:
                self._propose()

    # -- the end of a walk ------------------------------------------------------------------------

    def _finish(self, reason: str) -> None:
        """Record where the walk ended and go on: along the front, or from the next start."""
        terrain = self.terrain
        center = self.center  # None when the walk's first center failed
        if center is not None or reason == "failed":
            terrain.stationary.append({
                "member": self.index, "restart": self.restarts, "reason": reason,
                "x": self.x.copy(), "trace": self.trace.objective,
                "values": {} if center is None else dict(center.metrics),
                "updated": center is not None and self.broyden.updates > 0})
        self.restarts += 1
        point = None
        if terrain.options.reseed == "trace" and center is not None:
            point = self.trace.next_point(
                self.x, self.model.values, self.model.jacobian, self.box,
                feasible_end=(reason in ("stationary", "stalled")
                              and bool(terrain.rows.problem.feasible([center.metrics])[0])),
                heading=heading(self.model.values, terrain.rows.n_objectives, terrain.front,
                                self.index + self.sobol),
                options=terrain.options, grid=terrain.grid)
        if point is None:
            self.start_next()
        else:
            end = self._center_basis()
            self._walk_from(point)
            self.broyden.basis = end

    def _log(self, accepted: bool | None) -> None:
        n = len(self.terrain.grid.names)
        full = np.zeros((len(self.model.active), n))
        full[:, self.box.cont] = self.model.active_jacobian
        direction = np.zeros(n)
        direction[self.box.cont] = self.direction
        entry = {"member": self.index, "restart": self.restarts, "x": self.x.copy(),
                 "rows": self.model.names, "jacobian": full,
                 "direction": direction, "accepted": accepted, "updated": self.broyden.updates > 0}
        if self.y is not None and accepted is not None:
            entry["step"] = self.y - self.x
            entry["t"] = self.t
        self.terrain.history.append(entry)

    # -- ask -------------------------------------------------------------------------------------

    def wanted(self, tier: int, *, speculate: bool) -> list[np.ndarray]:
        """Points the walk needs: tier 0 surely, tier 1 likely, tier 2 on one of two outcomes
        (``speculate``: also the differences it may need, before it knows it needs them)."""
        estimator = self.terrain.estimator
        if self.phase == CENTER:
            if tier == 0:
                return [self.x]
            if tier == 1 and speculate and not self.broyden.allows():
                return estimator.differences(self.x, self.box)
            return []
        if self.phase == GRADIENT:
            if tier != 0 or self._updated() is not None:
                return []
            assert self.center is not None
            skip = estimator.hypergradients(self.center, self.box, self.model.active)
            return estimator.differences(self.x, self.box, skip)
        if self.phase == STEP and self.y is not None:
            if tier == 0:
                return [self.y]
            if tier == 2:
                shorter = self.x.copy()
                shorter[self.box.cont] = self.x[self.box.cont] - 0.5 * self.t * self.direction
                points = ([self.terrain.grid.snap(shorter)]
                          if self.lr * 0.5 >= self.terrain.options.lr_min else [])
                if speculate and not self.broyden.allows(after_step=True):
                    points += estimator.differences(self.y, self.box)
                return points
        return []

    def summary(self) -> dict[str, Any]:
        """A plain summary (equal for a live walk and one rebuilt from data)."""
        return {"index": self.index, "restarts": self.restarts, "sobol": self.sobol,
                "trace": self.trace.objective, "trace_len": self.trace.length,
                "phase": self.phase, "x": [round(v, 9) for v in self.x.tolist()], "lr": self.lr,
                "steps": self.steps, "updates": self.broyden.updates,
                "y": None if self.y is None else [round(v, 9) for v in self.y.tolist()]}
