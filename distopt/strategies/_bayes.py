"""Constrained multi-objective Bayesian optimisation with BoTorch (``strategy="bayes"``)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from .._checks import check_choice, check_int, check_ref_point, option_field
from .._errors import field_error
from .._problem import Problem, TrialResult
from ..pareto import hypervolume, is_non_dominated, reference_point
from ..space import point_keys
from ._base import Strategy
from ._bayes_effort import EFFORTS, Effort, choose, level
from ._observations import History
from ._points import pending_points, snap
from ._seeding import derive_seed
from ._sobol import SobolStart

log = logging.getLogger("distopt")

#: Failed or pruned trials fed to the acquisition as if still running (most recent first):
#: the acquisition then expects nothing new from their neighbourhood, which steers suggestions
#: away from regions that crash without inventing metric values for them.
MAX_FAILED_AS_PENDING = 8
#: The default Sobol start is BoTorch's tutorial size ``2 * (dim + 1)`` up to this many points
#: (Optuna's GPSampler starts from 10 at any size): with 5-7 inputs the tutorial's 12-16 points
#: of a 40-evaluation search leave the model too few (benchmarks/results/exp_effort.md,
#: "Session 27").
MAX_DEFAULT_INITIAL = 10
#: Observed points the acquisition's incumbent front is drawn from (the best by constrained
#: Pareto rank): qLogNEHVI's cost grows with the baseline, and past a few hundred observations
#: near a front the full baseline made its optimisation cost several GP fits
#: (benchmarks/bench_suggest.py).
MAX_BASELINE = 96
#: Expected hypervolume improvement, relative to the volume the observations span, below which
#: the acquisition counts as flat (see :func:`loosened_reference_point`); an acquisition that can
#: rank candidates is many orders of magnitude above it.
FLAT_IMPROVEMENT = 1e-12
#: The inferred reference point's margin beyond the observed box, a share of the range of every
#: observation (see :meth:`BayesStrategy._reference_point`).
BOX_MARGIN = 0.1
#: The margin where the front is open-ended, a share of the feasible points' range (see
#: :func:`open_end_margins`).
OPEN_END_MARGIN = 0.5


class BayesStrategy(Strategy):
    """Constrained multi-objective Bayesian optimisation (BoTorch).

    A scrambled Sobol start of ``n_initial`` points, then one GP per metric (objectives and
    constraint metrics) and qLogNEHVI (two or more objectives) or qLogNEI (one), with outcome
    constraints folded in as probabilities of feasibility and running trials as pending points.
    Integers and categoricals are optimised on their valid values (categoricals through a
    categorical kernel), so suggestions are valid and distinct without rounding tricks. Failed,
    timed-out and pruned trials are left out of the model and never proposed again.

    Args:
        seed: seed of the Sobol start, the MC samples and the acquisition optimiser.
        n_initial: Sobol points before the first model (default ``2 * (dim + 1)``, at most
            ``MAX_DEFAULT_INITIAL``).
        ref_point: reference point of the hypervolume, metric -> value in the metric's own
            units and direction (e.g. ``{"loss": 1.0, "accuracy": 0.5}``); every objective must
            be given (while no observation dominates it and the acquisition is flat there, it
            measures improvement from a loosened point: :func:`loosened_reference_point`). When
            omitted, it is inferred at each suggestion: the worst feasible observation, 10% of
            the range of every observation worse (see :meth:`_reference_point`), exposed as
            :attr:`ref_point`.
            ``Study(ref_point=...)`` passes the study's when this is omitted.
        effort: how much a suggestion spends (:mod:`._bayes_effort`): ``"fast"`` (a
            warm-started fit, 4 restarts from 128 raw samples, 64 MC samples: enough to keep
            many workers busy with cheap trials), ``"thorough"`` (BoTorch's tutorial settings:
            converged fits from the priors, 10 restarts from 512 raw samples, 128 MC samples,
            plus raw samples around the best points; a few times the cost, ahead of
            ``"fast"`` on some problems and behind on others), or ``"auto"`` (thorough
            while a thorough suggestion takes at most a tenth of the time between two results,
            mean trial seconds / trials running at once, as the orchestrator measures them;
            fast otherwise and whenever that pace is unknown, as in plain ``ask``/``tell``
            use). The next four options override the level's value when given.
        num_restarts: L-BFGS-B starts of the acquisition optimisation.
        raw_samples: points scored to choose those starts.
        mc_samples: quasi-MC samples of the acquisition.
        warm_start: start each GP fit from the previous hyperparameters with a short L-BFGS-B
            run (a cold fit from the priors otherwise).
        max_observations: at most this many observations train the GP (the best half by
            constrained Pareto rank plus a random subsample of the others); keeps a suggestion
            well under a second past several hundred trials.
        device: where the GP and the acquisition run: ``"auto"`` (the driver's first CUDA
            device when torch sees one, else the CPU), ``"cpu"`` or ``"cuda"``.

    Attributes:
        ref_point: metric -> value of the reference point in use (given or last inferred);
            None before the first model-based suggestion and for a single objective.
        acquisition_ref_point: the point the last acquisition measured improvement from: the
            reference point, or a given one loosened towards the observed front (see
            :func:`loosened_reference_point`).
        last_timing: seconds spent in the last model-based ``ask``: ``fit``, ``acquisition``,
            ``n_train`` (observations the GP saw) and ``thorough`` (1.0 when it ran at that
            effort), for benchmarks and logs.
    """

    name = "bayes"
    background_ask = True

    def __init__(self, *, seed: int | None = 0, n_initial: int | None = None,
                 ref_point: Mapping[str, float] | None = None, effort: str = "auto",
                 num_restarts: int | None = None, raw_samples: int | None = None,
                 mc_samples: int | None = None, warm_start: bool | None = None,
                 max_observations: int = 256, device: str = "auto"):
        super().__init__(seed=seed)
        check_int(option_field("strategy", "n_initial"), n_initial, 1, allow_none=True)
        for name, value, low in (("num_restarts", num_restarts, 1), ("raw_samples", raw_samples, 1),
                                 ("mc_samples", mc_samples, 1)):
            check_int(option_field("strategy", name), value, low, allow_none=True)
        check_int(option_field("strategy", "max_observations"), max_observations, 8)
        self.effort = check_choice(option_field("strategy", "effort"), effort, EFFORTS)
        if ref_point is not None and not isinstance(ref_point, Mapping):
            raise field_error(option_field("strategy", "ref_point"),
                              f"must be a mapping of objective to value; got {ref_point!r}",
                              'e.g. {"loss": 1.0}')
        self.n_initial = n_initial
        self.user_ref_point = None if ref_point is None else dict(ref_point)
        self.ref_point: dict[str, float] | None = self.user_ref_point
        # None: the effort level's value (see :meth:`_settings`)
        self.num_restarts, self.raw_samples = num_restarts, raw_samples
        self.mc_samples, self.max_observations = mc_samples, max_observations
        self.warm_start = None if warm_start is None else bool(warm_start)
        self._pace: tuple[float, int] | None = None
        self._seconds: dict[str, float] = {}  # effort level -> seconds per point, last ask
        self._level = "fast"  # of the last suggestion
        self.device = check_choice(option_field("strategy", "device"), device,
                                   ("auto", "cpu", "cuda"))
        self.last_timing: dict[str, float] = {}
        self.acquisition_ref_point: dict[str, float] | None = None

    def observe_pace(self, trial_seconds: float, concurrency: int) -> None:
        """Told by the orchestrator as trials finish; ``effort="auto"`` decides by it."""
        self._pace = (float(trial_seconds), int(concurrency))

    def _settings(self) -> tuple[str, Effort]:
        """The effort level of the next suggestion and its settings, given options applied."""
        name = choose(self.effort, self._pace, self._seconds)
        if self.effort == "auto" and name != self._level:  # a change needs a known pace
            log.info("bayes: trials take %.3g s, %d at once: %s suggestions (effort auto)",
                     *self._pace, name)
        self._level = name
        base = level(name)
        given = {key: value for key, value in (
            ("num_restarts", self.num_restarts), ("raw_samples", self.raw_samples),
            ("mc_samples", self.mc_samples), ("warm_start", self.warm_start))
            if value is not None}
        return name, replace(base, **given)

    def offer_ref_point(self, ref_point: dict[str, float]) -> None:
        """Use the study's reference point unless this strategy was given its own."""
        if self.user_ref_point is None:
            self.user_ref_point = self.ref_point = dict(ref_point)

    def check(self, problem: Problem) -> None:
        if self.user_ref_point is not None:
            _check_ref_point(problem, self.user_ref_point)
        if self.device == "cuda":  # the one case that imports torch this early
            from ._bayes_model import resolve_device

            try:
                resolve_device(self.device)
            except ValueError as error:
                raise field_error(option_field("strategy", "device"), f"is 'cuda' but {error}",
                                  "use 'auto' or 'cpu'") from None

    def _setup(self, problem: Problem) -> None:
        from ._bayes_model import InputDomain, resolve_device  # torch loads when a search starts

        self._device = resolve_device(self.device)  # a 'cuda' without CUDA failed ``check``
        self._entropy = self.seed if self.seed is not None else derive_seed(
            int(np.random.SeedSequence().entropy % 2**31))
        self._domain = InputDomain.of(problem, self._device)
        self._history = History(problem)
        self._sobol = SobolStart(problem.space.dim, self._entropy)
        self._n_initial = self.n_initial or min(2 * (problem.space.dim + 1),
                                                MAX_DEFAULT_INITIAL)
        # hyperparameters to warm start the next GP fit from, per model (warped inputs or not)
        self._fit_states: dict[bool, Any] = {}

    def _tell(self, results: list[TrialResult]) -> None:
        self._history.add(results)

    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        history = self._history
        running = pending_points(self.problem, pending)
        avoid, position = history.known(running)
        from ._bayes_model import is_valid_training_set

        if is_valid_training_set(history.values):
            n_sobol = min(n, max(0, self._n_initial - position))
        else:  # not enough observations (yet, or because trials fail) for a model
            n_sobol = n
        points = self._sobol.take(position, n_sobol, avoid, self.problem)
        if n_sobol < n:
            avoid = avoid | set(point_keys(points))
            running = np.concatenate([running, points])
            seed = derive_seed(self._entropy, len(history), position)
            points = np.concatenate([points, self._suggest(n - n_sobol, running, avoid, seed)])
        history.issue(points)
        return self.problem.space.decode(points)

    def _suggest(self, q: int, running: np.ndarray, avoid: set[tuple[float, ...]],
                 seed: int) -> np.ndarray:
        """``q x dim`` new snapped points from the model, none of them in ``avoid``."""
        import torch

        from ._bayes_acquisition import batch_mc_samples, build_acquisition, optimize
        from ._bayes_model import (
            constrained_order,
            fit_model,
            to_tensor,
            training_subset,
            warp_constraints,
        )

        history, problem = self._history, self.problem
        objectives, violation = history.objectives(), history.violation()
        ref = self._reference_point(objectives, violation)
        train = training_subset(objectives, violation, problem.maximize, self.max_observations,
                                seed)
        X = to_tensor(history.points[history.complete][train], self._device)
        warped, constraints = warp_constraints(problem, history.values[train])
        Y = to_tensor(warped, self._device)
        # The acquisition integrates the incumbent front over posterior samples of its points;
        # its cost grows with how many of them may be on the front, so past MAX_BASELINE it
        # sees only the best by constrained rank (the GP still learns from all of ``train``).
        best = constrained_order(objectives[train], violation[train], problem.maximize)
        X_baseline = X[np.sort(best[:MAX_BASELINE])]
        failed = history.points[~history.complete][-MAX_FAILED_AS_PENDING:]
        X_pending = to_tensor(np.concatenate([running, failed]), self._device) if len(
            running) + len(failed) else None
        name, effort = self._settings()
        search = {"num_restarts": effort.num_restarts, "raw_samples": effort.raw_samples,
                  "maxiter": effort.acq_maxiter}
        # seeded, without touching the caller's random state (the GPU's too when used)
        cuda = [self._device] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            start = time.perf_counter()
            # Batches keep the plain model: the warping stretches an input where a metric is
            # steep, so points close together there look far apart to the kernel and a batch's
            # fantasised points no longer keep it spread; cohorts of 16 piled up at the box's
            # edge and lost 0.08-0.24 of log10 gap on BraninCurrin and C2DTLZ2, at any effort
            # (benchmarks/results/exp_effort.md, "Session 25" and "Session 26"), where single
            # asks gained. Each model has its own warm start.
            warp = effort.input_warping and q == 1
            model, state, warm = fit_model(self._domain, X, Y,
                                           self._fit_states.get(warp) if effort.warm_start
                                           else None,
                                           cold_maxiter=effort.fit_maxiter,
                                           kernel=effort.kernel, input_warping=warp)
            self._fit_states[warp] = state
            fitted = time.perf_counter()

            def search_at(ref_point: Any) -> tuple[Any, Any]:
                acq = build_acquisition(model, problem, X_baseline, X_pending, ref_point,
                                        effort.mc_samples, seed, constraints)
                mc_later = batch_mc_samples(len(problem.objectives), effort.mc_samples)
                later = build_acquisition(model, problem, X_baseline, X_pending, ref_point,
                                          mc_later, seed, constraints) if (
                    q > 1 and mc_later != effort.mc_samples) else None
                return acq, optimize(acq, self._domain, q, later=later, **search)

            acq, candidates = search_at(ref)
            loose = self._loosened(objectives, violation, acq, candidates)
            if loose is not None:
                acq, candidates = search_at(loose)
            chosen = self._deduplicate(snap(problem, candidates.cpu().numpy()), avoid, acq,
                                       X_pending, seed, effort.raw_samples)
        end = time.perf_counter()
        self._seconds[name] = (end - start) / q
        self.last_timing = {"fit": fitted - start, "acquisition": end - fitted,
                            "n_train": float(len(X)), "warm": float(warm),
                            "thorough": float(name == "thorough")}
        return chosen

    def _deduplicate(self, candidates: np.ndarray, avoid: set[tuple[float, ...]], acq: Any,
                     X_pending: Any, seed: int, pool_size: int) -> np.ndarray:
        """Replace candidates that repeat a known configuration (or each other).

        A repeat happens when the acquisition peaks on an observed corner or, in small discrete
        spaces, on an observed configuration; the replacement is the best of a Sobol pool of
        unseen configurations under the same acquisition.
        """
        import torch

        from ._bayes_acquisition import best_of_pool
        from ._bayes_model import to_tensor

        avoid = set(avoid)
        chosen: list[np.ndarray] = []
        for point, key in zip(candidates, point_keys(candidates), strict=True):
            if key in avoid:
                pool = SobolStart(self.problem.space.dim, seed).take(
                    0, pool_size, avoid, self.problem)
                # In a nearly exhausted discrete space the pool is padded with repeats; the
                # acquisition may prefer one of them to the few configurations left.
                fresh = np.array([k not in avoid for k in point_keys(pool)])
                pool = pool[fresh] if fresh.any() else pool
                pending = [X_pending] if X_pending is not None else []
                pending += [to_tensor(np.array(chosen), self._device)] if chosen else []
                point = pool[best_of_pool(acq, to_tensor(pool, self._device),
                                          torch.cat(pending) if pending else None)]
                key = point_keys(point[None])[0]
            avoid.add(key)
            chosen.append(point)
        return np.array(chosen)

    def _reference_point(self, objectives: np.ndarray, violation: np.ndarray) -> Any:
        """The reference point in maximisation form, tensor of shape ``k`` (None for k = 1)."""
        from ._bayes_acquisition import objective_signs
        from ._bayes_model import to_tensor

        problem = self.problem
        if len(problem.objectives) == 1:
            return None
        if self.user_ref_point is None:
            # The box all feasible observations span, not the front's nadir (BoTorch's
            # ``infer_reference_point`` rule): as points gather near the front, the front's
            # nadir closes in on it, and with three or more objectives its box leaves out the
            # extremes, so the acquisition stops extending the front outwards. The observed
            # box only grows, is on each objective's own scale (an objective 1e4 times larger
            # gives the same suggestions), and is what the study records as its own point.
            # The margin is 10% of the range of every observation, infeasible ones too: under
            # constraints the first feasible points are few and close together, and a box
            # as narrow as they are leaves the rest of the front outside it, so the search
            # stays where it first found feasibility (SRN, OSY: benchmarks/results/
            # bench_quality_boxall.md). Without constraints both ranges are the same. Where
            # the front runs to the box's edge, the margin is wider: see open_end_margins.
            feasible = _feasible(objectives, violation)
            margins = open_end_margins(feasible, objectives, problem.maximize, self._n_initial)
            raw = reference_point(feasible, maximize=problem.maximize, front_only=False,
                                  scale=objectives, margin=margins)
            self.ref_point = _by_objective(problem, raw)
        raw = _as_array(problem, self.ref_point)
        self.acquisition_ref_point = dict(self.ref_point)
        return objective_signs(problem, self._device) * to_tensor(raw, self._device)

    def _loosened(self, objectives: np.ndarray, violation: np.ndarray, acq: Any,
                  candidates: Any) -> Any:
        """A loosened reference point (tensor, maximisation form) when a given one left the
        acquisition flat, else None: see :func:`loosened_reference_point`."""
        import torch

        from ._bayes_acquisition import objective_signs
        from ._bayes_model import to_tensor

        problem = self.problem
        if self.user_ref_point is None or len(problem.objectives) == 1:
            return None
        base = _feasible(objectives, violation)
        given = _as_array(problem, self.user_ref_point)
        loose = loosened_reference_point(given, base, problem.maximize)
        if np.array_equal(loose, given):
            return None
        with torch.no_grad():
            log_value = float(acq(candidates.unsqueeze(0)).max())
        span = np.ptp(base, axis=0)
        volume = float(np.prod(np.where(span > 0, span, 1.0)))
        if log_value >= math.log(volume * FLAT_IMPROVEMENT):
            return None
        self.acquisition_ref_point = _by_objective(problem, loose)
        return objective_signs(problem, self._device) * to_tensor(loose, self._device)


def open_end_margins(feasible: np.ndarray, observed: np.ndarray, maximize: list[bool],
                     n_min: int) -> np.ndarray:
    """Per objective, the inferred reference point's margin as a share of the range of every
    observation (``observed``, ``n x k``): ``BOX_MARGIN``, or, where the front is open-ended,
    ``OPEN_END_MARGIN`` of the feasible points' range when that is wider.

    The front is open-ended in an objective when the worst feasible value there is a front
    point's (``feasible``, ``m x k``; counted from ``n_min`` feasible points on, before which
    nearly every point of a small design is an extreme): the front may go on past the box.
    Why: a new point past the front's end adds hypervolume only up to the reference point, so
    with a margin of a tenth of the range the acquisition extends the end by little at each
    step, and on BNH the search stopped at f1 = 84-100 of a front that runs to 136 (log10 gap
    2.09 against the tutorial loop's 1.79; 1.83 with this rule, 1.81 given the measurement's
    point: benchmarks/results/exp_effort.md, "Session 22"). Where dominated points set the
    box nothing changes. Two objectives only: with three or more most observations are on the
    front, so an extreme there says little about where the front ends, and the wider margin
    cost `thorough` 0.11 on DTLZ2 with three objectives and 0.12 on VehicleSafety (5 seeds).
    """
    margins = np.full(feasible.shape[1], BOX_MARGIN)
    if len(feasible) < n_min or feasible.shape[1] != 2:
        return margins
    flags = np.asarray(maximize)
    front = feasible[is_non_dominated(feasible, maximize=maximize)]
    worst = np.where(flags, feasible.min(axis=0), feasible.max(axis=0))
    front_worst = np.where(flags, front.min(axis=0), front.max(axis=0))
    observed_span, feasible_span = np.ptp(observed, axis=0), np.ptp(feasible, axis=0)
    wider = OPEN_END_MARGIN * feasible_span / np.where(observed_span > 0, observed_span, 1.0)
    return np.where(front_worst == worst, np.maximum(margins, wider), margins)


def loosened_reference_point(given: np.ndarray, points: np.ndarray,
                             maximize: list[bool]) -> np.ndarray:
    """``given``, or, while no point strictly dominates it, ``given`` loosened per objective to
    the points' own reference point (the front's nadir, 10% of its range out) where that is
    worse.

    Why: while no observation is inside the given point's box, every candidate's hypervolume
    improvement is all or nothing, and far from the box qLogNEHVI's estimate underflows to the
    same value everywhere, so a run may propose one point over and over without ever entering
    the box. Measured from the loosened point, approaching the box counts as improvement. The
    strategy switches only when the acquisition at its best candidates is below
    ``FLAT_IMPROVEMENT`` times the volume the observations span: elsewhere the box is reached
    without help, and sooner.
    """
    if hypervolume(points, given, maximize=maximize) > 0:
        return given
    inferred = reference_point(points, maximize=maximize)
    return np.where(np.asarray(maximize), np.minimum(given, inferred),
                    np.maximum(given, inferred))


def _by_objective(problem: Problem, values: np.ndarray) -> dict[str, float]:
    """A point as objective name -> value."""
    return {name: float(v) for name, v in zip(problem.objectives, values, strict=True)}


def _as_array(problem: Problem, point: Mapping[str, float]) -> np.ndarray:
    """A point given by objective name, in the problem's objective order."""
    return np.array([point[name] for name in problem.objectives], dtype=float)


def _feasible(objectives: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """The feasible rows, or all of them when none is."""
    feasible = violation <= 0
    return objectives[feasible] if feasible.any() else objectives


def _check_ref_point(problem: Problem, ref_point: dict[str, float]) -> None:
    if len(problem.objectives) < 2:
        raise field_error(option_field("strategy", "ref_point"),
                          "only applies to two or more objectives",
                          "remove it for a single-objective study")
    check_ref_point(option_field("strategy", "ref_point"), ref_point, problem.objectives)
