"""Acquisition of the ``bayes`` strategy: qLogNEHVI (2+ objectives) or qLogNEI (one objective).

The GP models raw metrics (objectives and constraint metrics, ``problem.metric_names`` order).
The acquisition sees them through a linear objective that flips minimised objectives
(BoTorch maximises) and through one constraint callable per outcome constraint, which BoTorch
folds in as a smooth probability of feasibility.

Optimisation is lean on purpose (few restarts and raw samples, starting points drawn partly
around the current best points): most of the quality comes from the model, and the wall-clock
cost of a suggestion is what limits how many trials a study can afford.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import WeightedMCMultiOutputObjective
from botorch.acquisition.multi_objective.utils import get_default_partitioning_alpha
from botorch.acquisition.objective import LinearMCObjective
from botorch.exceptions.warnings import OptimizationWarning
from botorch.models.model import Model
from botorch.optim import optimize_acqf
from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
from botorch.sampling import SobolQMCNormalSampler
from linear_operator.utils.warnings import NumericalWarning
from torch import Tensor

from .._problem import Problem
from ._bayes_model import DTYPE, InputDomain

#: Raw samples scored per acquisition call (no gradients): one call per few hundred points
#: instead of BoTorch's default of ``batch_limit`` points, which dominated the cost.
INIT_BATCH_LIMIT = 512
#: L-BFGS-B of the acquisition: each iteration is one posterior and gradient evaluation whose
#: cost is mostly fixed overhead, so the number of iterations is what a suggestion costs.
ACQ_MAXITER = 50
ACQ_FTOL = 1e-6
#: Effort for the second and later points of a batch: L-BFGS-B iterations, and restarts and
#: raw samples divided by these. Each later point's acquisition also fantasises every point
#: chosen before it, so its evaluations cost more as the batch grows; at this effort cohorts
#: of 16 found fronts as good as at twice the effort (20 iterations, half the restarts, a
#: quarter of the raw samples) on four of five problems of the quality suite (DiscBrake 0.2
#: behind at 40-60 evaluations), at about half its CPU
#: (benchmarks/results/bench_quality_cohort.md).
BATCH_MAXITER = 8
BATCH_RESTART_DIVISOR = 4
BATCH_RAW_DIVISOR = 8
#: With three or more objectives the later points' acquisition draws this many times fewer MC
#: samples: each point added to the batch makes BoTorch recompute the fantasised front's box
#: decomposition under every sample, one sample at a time on the CPU (with two objectives it
#: batches them), which was most of a batch's CPU on DTLZ2 with three objectives. A cohort of
#: 16 found fronts as good with a quarter of the samples on DTLZ2 (3 objectives) and
#: VehicleSafety at half the CPU (benchmarks/results/bench_quality_cohort.md).
BATCH_MC_DIVISOR = 4
#: Score as many raw samples again, drawn around the best observed points, in a continuous
#: space (BoTorch's ``sample_around_best``), at every effort. The tutorial loop does not; with
#: them its settings reach the end of ZDT2's front (on a face of the box) on 2 of 5 seeds instead
#: of none and gain on ZDT1, at some cost on SRN (benchmarks/results/exp_effort.md, session 18).
SAMPLE_AROUND_BEST = True


class OutcomeConstraint:
    """``metric <= t`` or ``metric >= t`` on model samples, as BoTorch wants it (``<= 0`` ok).

    The slack is measured in standard deviations of the metric's observations (``scale``):
    BoTorch smooths each constraint's feasibility indicator with a sigmoid of temperature
    ``eta`` (1e-3) in the units of the slack, so on raw units a constraint measured in
    thousands got a step (the MC estimate of its probability of feasibility then has almost no
    gradient to guide the optimiser) and one measured in tenths a smooth ramp. In standard
    deviations, the scale the GP standardises the metric to, every constraint gets the same
    smoothing (benchmarks/results/exp_effort.md, session 19).

    Args:
        index: the metric's output of the model.
        threshold: ``t``, in the output's units (the metric's raw units, or 0 for a warped
            constraint: :func:`~._bayes_model.warp_constraints`).
        upper: True for ``<=``, False for ``>=``.
        scale: the output's spread in those units (> 0).
    """

    def __init__(self, index: int, threshold: float, upper: bool, scale: float):
        self.index, self.threshold, self.upper, self.scale = index, threshold, upper, scale

    def __call__(self, samples: Tensor) -> Tensor:
        """``sample_shape x batch_shape x q x m`` samples -> ``sample_shape x batch_shape x q``."""
        slack = (samples[..., self.index] - self.threshold) / self.scale
        return slack if self.upper else -slack


def outcome_constraints(problem: Problem, scales: Tensor,
                        constraints: Mapping[str, tuple[str, float]] | None = None
                        ) -> list[OutcomeConstraint]:
    """One callable per constraint of ``problem``, indexing the model's outputs.

    Args:
        scales: ``m`` spread of each output in its units (the model's outcome standardisation).
        constraints: the constraints on the model's outputs (``op``, threshold) by metric name,
            when some outputs are warped (:func:`~._bayes_model.warp_constraints`);
            ``problem.constraints`` by default.
    """
    names = problem.metric_names
    return [OutcomeConstraint(names.index(name), threshold, op == "<=",
                              float(scales[names.index(name)]))
            for name, (op, threshold) in (constraints or problem.constraints).items()]


def objective_signs(problem: Problem, device: torch.device | str = "cpu") -> Tensor:
    """``+1`` per maximised and ``-1`` per minimised objective, shape ``k``."""
    return torch.tensor([1.0 if up else -1.0 for up in problem.maximize], dtype=DTYPE,
                        device=device)


def build_acquisition(model: Model, problem: Problem, X_baseline: Tensor,
                      X_pending: Tensor | None, ref_point: Tensor | None, mc_samples: int,
                      seed: int, constraints: Mapping[str, tuple[str, float]] | None = None
                      ) -> AcquisitionFunction:
    """qLogNEHVI (with ``ref_point``) or qLogNEI (one objective) with outcome constraints.

    Args:
        X_baseline: ``n x d`` observed inputs; the noisy incumbent (front) is integrated over
            their posterior and pruned to the points that may be on it.
        X_pending: ``p x d`` running inputs, fantasised jointly with each candidate so that
            asynchronous workers get distinct suggestions.
        ref_point: ``k`` reference point in maximisation form (``signs * raw``); None for a
            single objective.
        constraints: the constraints on the model's outputs (see :func:`outcome_constraints`).
    """
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([mc_samples]), seed=seed)
    # the spread the model standardises each metric by (Standardize's, floored above zero)
    feasibility = outcome_constraints(problem, model.outcome_transform.stdvs.reshape(-1),
                                      constraints) or None
    device = X_baseline.device
    signs = objective_signs(problem, device)
    n_objectives, n_outputs = len(signs), len(problem.metric_names)
    if n_objectives == 1:
        weights = torch.zeros(n_outputs, dtype=DTYPE, device=device)
        weights[0] = signs[0]
        return qLogNoisyExpectedImprovement(
            model=model, X_baseline=X_baseline, sampler=sampler,
            objective=LinearMCObjective(weights), constraints=feasibility,
            X_pending=X_pending, prune_baseline=True, cache_root=True)
    if ref_point is None:
        raise ValueError("a reference point is needed with two or more objectives")
    objective = WeightedMCMultiOutputObjective(signs, outcomes=list(range(n_objectives)),
                                               num_outcomes=n_outputs)
    # Exact box decompositions up to four objectives; beyond, their size explodes and BoTorch's
    # approximate partitioning (its default level for that many objectives) keeps a suggestion
    # affordable.
    return qLogNoisyExpectedHypervolumeImprovement(
        model=model, ref_point=ref_point, X_baseline=X_baseline, sampler=sampler,
        objective=objective, constraints=feasibility, X_pending=X_pending,
        prune_baseline=True, cache_root=True, alpha=get_default_partitioning_alpha(n_objectives))


def batch_mc_samples(n_objectives: int, mc_samples: int) -> int:
    """MC samples of the acquisition for the second and later points of a batch."""
    return max(1, mc_samples // BATCH_MC_DIVISOR) if n_objectives >= 3 else mc_samples


def optimize(acq: AcquisitionFunction, domain: InputDomain, q: int, *, num_restarts: int,
             raw_samples: int, maxiter: int = ACQ_MAXITER,
             later: AcquisitionFunction | None = None) -> Tensor:
    """Maximise ``acq`` over the domain; returns ``q x d`` candidates, a batch chosen jointly by
    sequential greedy (each point given the previous ones as pending, :func:`_optimize`).

    Continuous spaces use multi-start L-BFGS-B from Sobol and near-best starting points.
    Spaces with Int or Categorical parameters use BoTorch's mixed alternating optimiser:
    continuous steps on Floats alternate with neighbourhood search over the discrete values, so
    every candidate is a valid configuration without rounding a relaxed optimum.

    Args:
        maxiter: L-BFGS-B iterations for the first point of the batch.
        later: the acquisition for the second and later points (the same as ``acq``, with
            fewer MC samples: :func:`batch_mc_samples`); ``acq`` when None.
    """
    with warnings.catch_warnings():
        # L-BFGS-B line searches sometimes end "ABNORMAL" on the flat parts of a log
        # acquisition; BoTorch then restarts from new points by itself. Nothing to report.
        warnings.simplefilter("ignore", OptimizationWarning)
        warnings.simplefilter("ignore", NumericalWarning)
        warnings.filterwarnings("ignore", message="Optimization failed", category=RuntimeWarning)
        return _optimize(acq, domain, q, num_restarts=num_restarts, raw_samples=raw_samples,
                         maxiter=maxiter, later=acq if later is None else later)


def _optimize(acq: AcquisitionFunction, domain: InputDomain, q: int, *, num_restarts: int,
              raw_samples: int, maxiter: int, later: AcquisitionFunction) -> Tensor:
    """The first point with the full effort, then ``q - 1`` by BoTorch's sequential greedy
    (each maximises the acquisition given the points chosen before it as pending) with a
    smaller effort per point, so that a batch of 64 costs far less than 64 single asks."""
    first = _optimize_step(acq, domain, 1, num_restarts, raw_samples, maxiter)
    if q == 1:
        return first
    # Later points only need to be good given the earlier ones: the incumbent front is already
    # fantasised to contain them, so the landscape is flatter and cheaper starts suffice.
    base = later.X_pending
    later.set_X_pending(first if base is None else torch.cat([base, first]))
    try:
        rest = _optimize_step(later, domain, q - 1,
                              max(1, num_restarts // BATCH_RESTART_DIVISOR),
                              max(32, raw_samples // BATCH_RAW_DIVISOR), BATCH_MAXITER)
    finally:
        later.set_X_pending(base)
    return torch.cat([first, rest])


def _optimize_step(acq: AcquisitionFunction, domain: InputDomain, q: int, num_restarts: int,
                   raw_samples: int, maxiter: int) -> Tensor:
    if domain.discrete_dims or domain.cat_dims:
        candidates, _ = optimize_acqf_mixed_alternating(
            acq, bounds=domain.bounds, discrete_dims=domain.discrete_dims,
            cat_dims=domain.cat_dims, q=q, num_restarts=num_restarts, raw_samples=raw_samples,
            options={"batch_limit": num_restarts, "init_batch_limit": INIT_BATCH_LIMIT,
                     "maxiter_init": 30, "maxiter_continuous": min(16, maxiter),
                     "maxiter_alternating": 8, "tol": 1e-3})
        return candidates.detach()
    candidates, _ = optimize_acqf(
        acq, bounds=domain.bounds, q=q, num_restarts=num_restarts, raw_samples=raw_samples,
        sequential=True,
        options={"batch_limit": num_restarts, "init_batch_limit": INIT_BATCH_LIMIT,
                 "maxiter": maxiter, "ftol": ACQ_FTOL, "factr": None,
                 "sample_around_best": SAMPLE_AROUND_BEST})
    return candidates.detach()


def best_of_pool(acq: AcquisitionFunction, pool: Tensor, X_pending: Tensor | None) -> int:
    """Index of the pool point (``p x d``) of highest acquisition value given ``X_pending``."""
    acq.set_X_pending(X_pending)
    with torch.no_grad():
        values = torch.cat([acq(chunk.unsqueeze(-2)) for chunk in pool.split(128)])
    values = torch.nan_to_num(values, nan=-np.inf)
    return int(values.argmax())
