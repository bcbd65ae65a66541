"""Surrogate of the ``bayes`` strategy: one GP per outcome, fitted with warm starts.

Every metric the problem needs (objectives, then constraint-only metrics, in
``problem.metric_names`` order) is one output of a batched ``SingleTaskGP`` (independent GPs
sharing the training inputs, cheaper than a ``ModelListGP`` of the same GPs), or of a
``MixedSingleTaskGP`` when the space has categoricals. Inputs are the space's unit-cube
encoding, snapped to valid values; outputs are raw metric values, standardised by the model's
outcome transform.

The cost of a suggestion is dominated by the fit, so each fit starts from the previous
hyperparameters and runs a short L-BFGS-B (the optimum moves little when one point is added);
past ``max_observations`` the GP is trained on the points that matter for the front plus a
random subsample of the rest.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from botorch.exceptions import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import MixedSingleTaskGP, SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from botorch.models.transforms.input import InputTransform, Warp
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior
from torch import Tensor

from .._problem import Problem
from ..pareto import pareto_rank
from ..space import Categorical, Int

DTYPE = torch.double

#: L-BFGS-B iterations of a warm-started fit (two starts at once) and of a cold fit. A cold fit
#: gains little past 150 iterations, and BoTorch's own default (scipy's 15000) makes the first
#: fit of a resumed study take seconds; more warm iterations cost CPU on every suggestion
#: without a gain that held on the quality benchmark (benchmarks/results/).
WARM_MAXITER = 40
COLD_MAXITER = 150
#: ``cold_maxiter`` of a fit to convergence, BoTorch's own (the ``thorough`` effort).
CONVERGED = None
#: The GP's kernels by name -> whether it is BoTorch's RBF (see :func:`kernel_factory`).
KERNELS = {"matern": False, "rbf": True}
#: The kernel of the ``fast`` effort, and of a model or fit state that names none.
DEFAULT_KERNEL = "matern"
#: Observation noise of every output, a variance in units of the standardised metric: a
#: Gamma(1.1, 30) prior (Optuna's GPSampler's) above a floor of 1e-6, starting at 1e-2.
NOISE_PRIOR = (1.1, 30.0)
NOISE_FLOOR = 1e-6
NOISE_START = 1e-2
#: A constraint metric whose largest slack is more than this many times its median slack (in
#: magnitude) is modelled on a log scale around its threshold (:func:`warp_constraints`).
WARP_TAIL = 100.0
#: Fits after which the explorer chain of :func:`fit_model` starts again from the priors.
EXPLORER_RESTART = 5
#: LogNormal (loc, scale) prior of both Kumaraswamy concentrations of the input warping
#: (:func:`_input_transform`): BoTorch's own choice for ``Warp``, median 1 (no warping).
WARP_PRIOR = (0.0, 0.75 ** 0.5)
#: Parameters under this prefix (the input warping's) are shared by every output of the model.
SHARED_PREFIX = "input_transform."


@dataclass(frozen=True)
class InputDomain:
    """Where the GP's inputs live: the unit-cube encoding, split by parameter kind.

    Attributes:
        bounds: ``2 x d`` lower and upper bound per coordinate (an Int's or a Categorical's
            first and last cell centre, ``[0, 1]`` for a Float).
        discrete_dims: coordinate -> sorted codes of an Int's values.
        cat_dims: coordinate -> codes of a Categorical's choices.
    """

    bounds: Tensor
    discrete_dims: dict[int, list[float]]
    cat_dims: dict[int, list[float]]

    @classmethod
    def of(cls, problem: Problem, device: torch.device | str = "cpu") -> InputDomain:
        space = problem.space
        lower, upper = np.zeros(space.dim), np.ones(space.dim)
        discrete: dict[int, list[float]] = {}
        categorical: dict[int, list[float]] = {}
        for j, name in enumerate(space.names):
            param = space.params[name]
            if isinstance(param, Int):
                codes = sorted({param.to_unit(k) for k in range(param.low, param.high + 1)})
                discrete[j] = codes
            elif isinstance(param, Categorical):
                codes = [param.to_unit(c) for c in param.choices]
                categorical[j] = codes
            else:
                continue
            lower[j], upper[j] = codes[0], codes[-1]
        bounds = torch.tensor(np.stack([lower, upper]), dtype=DTYPE, device=device)
        return cls(bounds=bounds, discrete_dims=discrete, cat_dims=categorical)

    @property
    def ordinal_dims(self) -> list[int]:
        """Coordinates the GP treats as continuous (Floats and Ints)."""
        return [j for j in range(self.bounds.shape[-1]) if j not in self.cat_dims]


def build_model(domain: InputDomain, X: Tensor, Y: Tensor, kernel: str = DEFAULT_KERNEL,
                input_warping: bool = False) -> SingleTaskGP:
    """An unfitted GP with one output per metric.

    Args:
        X: ``n x d`` snapped encodings.
        Y: ``n x m`` raw metric values.
        kernel: ``"matern"`` or ``"rbf"`` (:func:`kernel_factory`).
        input_warping: learn a warping of the continuous inputs (:func:`_input_transform`).
    """
    factory = kernel_factory(kernel)
    input_transform = _input_transform(domain, X, input_warping)
    outcome_transform = Standardize(m=Y.shape[-1])
    batch_shape = torch.Size([Y.shape[-1]]) if Y.shape[-1] > 1 else torch.Size()
    likelihood = noise_likelihood(batch_shape, X)
    if domain.cat_dims:
        return MixedSingleTaskGP(X, Y, cat_dims=sorted(domain.cat_dims),
                                 input_transform=input_transform,
                                 outcome_transform=outcome_transform,
                                 cont_kernel_factory=factory, likelihood=likelihood)
    return SingleTaskGP(X, Y, input_transform=input_transform,
                        outcome_transform=outcome_transform, likelihood=likelihood,
                        covar_module=factory(batch_shape=batch_shape, ard_num_dims=X.shape[-1]))


def _input_transform(domain: InputDomain, X: Tensor, input_warping: bool
                     ) -> InputTransform | None:
    """The map of the continuous inputs to ``[0, 1]``: scaling by the domain's bounds, then,
    with ``input_warping``, BoTorch's ``Warp``, a learned Kumaraswamy CDF per input
    ``w(x) = 1 - (1 - x^a)^b`` (Snoek et al. 2014), ``a, b`` under ``WARP_PRIOR``.

    Why warp: a stationary kernel assumes a metric varies at the same rate everywhere in the
    box, where many vary fastest near an edge (BraninCurrin's Currin objective near x2 = 0);
    the warping stretches the input there, and closed part of ``fast``'s gap to BoTorch's
    tutorial loop on the quality suite (benchmarks/results/exp_effort.md, "Session 25"). One
    warping serves every output: BoTorch learns per-batch warpings only for single-output
    models. Bounds are fixed (not learned from the data) so that the scaling does not change
    between fits and warm-started lengthscales keep their meaning.
    """
    ordinal = domain.ordinal_dims
    if not ordinal:
        return None
    bounds = _safe_bounds(domain.bounds)
    if not input_warping:
        return Normalize(d=X.shape[-1], indices=ordinal, bounds=bounds)
    return Warp(d=X.shape[-1], indices=ordinal, bounds=bounds,
                concentration1_prior=SharedLogNormalPrior(*WARP_PRIOR),
                concentration0_prior=SharedLogNormalPrior(*WARP_PRIOR)).to(X)


class SharedLogNormalPrior(LogNormalPrior):
    """A LogNormal prior of a parameter every output shares: its log density summed to one
    number, which the batched model's marginal likelihood adds to each output's (as the
    parameter's own likelihood terms are); GPyTorch's per-output sum would not broadcast."""

    def log_prob(self, value: Tensor) -> Tensor:
        return super().log_prob(value).sum()


def noise_likelihood(batch_shape: torch.Size, like: Tensor) -> GaussianLikelihood:
    """The likelihood of every output (dtype and device of ``like``): homoskedastic noise,
    learned with a weak prior.

    Why not BoTorch's default (a LogNormal(-4, 1) prior, floor 1e-4): that prior (mode 7e-3;
    1e-4 is 9 nats less likely) kept the noise of a deterministic metric at 1e-3 to 6e-3 of
    its variance with 10-20 observations (Branin, SRN's constraint), so the GP smoothed over
    what the first evaluations showed of a constraint's boundary or the front's bend. Gamma(1.1,
    30) is nearly flat from 0 to a few 1e-2: the data decide, and noisy trials still get about
    the noise they show (tests/strategies/test_bayes.py). On the quality suite it helped most
    on the constrained problems (benchmarks/results/exp_effort.md, session 20).
    """
    likelihood = GaussianLikelihood(noise_prior=GammaPrior(*NOISE_PRIOR), batch_shape=batch_shape,
                                    noise_constraint=GreaterThan(NOISE_FLOOR)).to(like)
    likelihood.noise = NOISE_START  # set in ``like``'s dtype: a float32 start would round
    return likelihood


def kernel_factory(kernel: str) -> Callable[..., Kernel]:
    """``factory(*, batch_shape, ard_num_dims, active_dims=None)`` of BoTorch's default kernel
    prior (dimension-scaled log-normal lengthscales, Hvarfner et al. 2024) on a Matern-5/2
    (``"matern"``) or an RBF (``"rbf"``, BoTorch's own default) kernel.

    Why two: the ``fast`` effort's short warm-started fits left the RBF's infinitely smooth
    sample paths extrapolating trends far beyond the data, which sent the acquisition to the
    corners of the box, where a front in the middle of the box (DTLZ2) is not; Matern-5/2 is
    the usual choice in BO for that reason (Snoek et al. 2012). Fitted to convergence (the
    ``thorough`` effort) the RBF did not chase corners and did better than the Matern on the
    quality suite.
    """
    return partial(get_covar_module_with_dim_scaled_prior, use_rbf_kernel=KERNELS[kernel])


def _safe_bounds(bounds: Tensor) -> Tensor:
    # An Int with a single value has equal bounds; widen them so Normalize never divides by 0.
    bounds = bounds.clone()
    flat = bounds[1] <= bounds[0]
    bounds[0, flat] -= 0.5
    bounds[1, flat] += 0.5
    return bounds


def hyperparameters(model: SingleTaskGP) -> dict[str, Tensor]:
    """The fitted hyperparameters (raw kernel, likelihood and mean parameters)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@dataclass
class FitState:
    """Hyperparameters carried from one fit to the next (two chains, see :func:`fit_model`).

    Attributes:
        best: per output, the hyperparameters of higher marginal likelihood last time.
        explorer: the chain restarted from the priors' initial values every
            ``EXPLORER_RESTART`` fits; None means "restart it now".
        age: fits since the explorer last restarted.
        kernel: of the fit these came from (another kernel's values are no warm start).
    """

    best: dict[str, Tensor]
    explorer: dict[str, Tensor] | None = None
    age: int = 0
    kernel: str = DEFAULT_KERNEL


def fit_model(domain: InputDomain, X: Tensor, Y: Tensor, state: FitState | None, *,
              cold_maxiter: int | None = COLD_MAXITER, kernel: str = DEFAULT_KERNEL,
              input_warping: bool = False) -> tuple[SingleTaskGP, FitState, bool]:
    """A GP fitted by maximising the marginal likelihood, the state to warm start the next fit
    from, and whether the warm start won for every output.

    Without ``state`` this is a fit from the priors' initial values: at most ``cold_maxiter``
    iterations, or with ``CONVERGED`` BoTorch's own fit to convergence. With it, a twin model
    holding two copies of every output GP is fitted in one L-BFGS-B run (``WARM_MAXITER``): one
    copy starts from ``state.best`` (last time's winner, usually a few iterations from the new
    optimum), the other continues the explorer chain, which restarts from the priors every
    ``EXPLORER_RESTART`` fits. Each output keeps the copy of higher marginal likelihood.

    The explorer is what stops a warm start from staying in a basin found with few points
    (typically "all noise": long lengthscales and large noise, which makes the acquisition
    chase corners): because it continues across fits, it converges even though each fit runs
    few iterations. Sharing one batched fit costs little more than one fit, since at a few
    hundred points the cost of an iteration is mostly Python overhead. The input warping is
    one for all outputs, so the two copies share it, starting from last time's.

    Args:
        X: ``n x d`` snapped encodings.
        Y: ``n x m`` raw metric values.
        state: what the previous fit of an ``m``-output model returned.
        kernel, input_warping: see :func:`build_model`.
    """
    if state is None:
        model = build_model(domain, X, Y, kernel, input_warping)
        _fit(model, maxiter=cold_maxiter)
        return model, FitState(best=hyperparameters(model), kernel=kernel), False
    m = Y.shape[-1]
    twin = build_model(domain, X, torch.cat([Y, Y], dim=-1), kernel, input_warping)
    params = dict(twin.named_parameters())
    if set(params) != set(state.best) or state.kernel != kernel:
        return fit_model(domain, X, Y, None, cold_maxiter=cold_maxiter, kernel=kernel,
                         input_warping=input_warping)
    with torch.no_grad():
        for name, value in state.best.items():
            if _shared(name):
                params[name].copy_(value)
        for half, values in ((slice(0, m), state.best), (slice(m, 2 * m), state.explorer)):
            for name, value in _per_output(values or {}):  # no explorer: priors' initial values
                params[name][half] = value.reshape(params[name][half].shape)
    _fit(twin, maxiter=WARM_MAXITER)
    scores = _marginal_log_likelihood(twin)  # (2m,)
    pick = torch.where(scores[:m] >= scores[m:], torch.arange(m), torch.arange(m) + m)
    model = build_model(domain, X, Y, kernel, input_warping)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(params[name] if _shared(name) else params[name][pick].reshape(param.shape))
    model.eval()
    age = state.age + 1 if state.explorer is not None else 1
    explorer = None if age >= EXPLORER_RESTART else {
        name: params[name][m:].detach().clone().reshape(value.shape)
        for name, value in _per_output(state.best)}
    return model, FitState(best=hyperparameters(model), explorer=explorer, age=age,
                           kernel=kernel), \
        bool((pick < m).all())


def _shared(name: str) -> bool:
    """Whether the hyperparameter ``name`` is one for all outputs (not one per output)."""
    return name.startswith(SHARED_PREFIX)


def _per_output(values: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
    """The hyperparameters of ``values`` that each output has its own of."""
    return [(name, value) for name, value in values.items() if not _shared(name)]


def _fit(model: SingleTaskGP, maxiter: int | None) -> None:
    """Maximise the marginal likelihood: ``maxiter`` L-BFGS-B iterations over every output's
    hyperparameters as one vector, or (``None``) BoTorch's default fit to convergence.

    Why two ways: with a few dozen iterations one joint vector costs several times less than
    BoTorch's batched fit (one L-BFGS-B per output), whose per-iteration overhead dominates.
    Run to convergence it is the other way round: the joint vector stops only when every
    output has converged and its curvature estimate mixes the outputs, so it took 20-40x the
    CPU of BoTorch's fit for no higher likelihood (6-8 outputs, 20-30 points). A model with
    parameters every output shares (the input warping) is fitted as one vector either way:
    BoTorch's per-output fit cannot split them.
    """
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    options: dict[str, Any] = {}
    if maxiter is not None or any(_shared(name) for name, _ in model.named_parameters()):
        options["closure_kwargs"] = {}  # given closure arguments, BoTorch fits one joint vector
    if maxiter is not None:
        options["optimizer_kwargs"] = {"options": {"maxiter": maxiter}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numerical and iteration-limit warnings are expected
        try:
            fit_gpytorch_mll(mll, **options)
        except ModelFittingError:  # every retry failed: keep the initial values, still usable
            model.eval()


def _marginal_log_likelihood(model: SingleTaskGP) -> Tensor:
    """Per-output marginal log likelihood (per observation), shape ``batch_shape``."""
    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with torch.no_grad():
        value = mll(model(*model.train_inputs), model.train_targets)
    model.eval()
    return torch.nan_to_num(value, nan=-torch.inf)


def training_subset(objectives: np.ndarray, violation: np.ndarray, maximize: list[bool],
                    limit: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` observations to train on, sorted.

    The best half by Deb's constrained order (feasible first, then non-dominated rank, then
    smaller violation) keeps the model sharp where the front is; a seeded uniform subsample of
    the rest keeps it honest elsewhere. Exact GP inference is cubic in the number of points, so
    this is what keeps a suggestion well under a second past a few hundred observations.

    Args:
        objectives: ``n x k`` raw objective values.
        violation: ``n`` total violations (0 = feasible).
    """
    n = len(objectives)
    if n <= limit:
        return np.arange(n)
    order = constrained_order(objectives, violation, maximize)
    n_best = limit // 2
    best, rest = order[:n_best], order[n_best:]
    rng = np.random.default_rng(seed)
    sample = rng.choice(rest, size=limit - n_best, replace=False)
    return np.sort(np.concatenate([best, sample]))


def constrained_order(objectives: np.ndarray, violation: np.ndarray,
                      maximize: list[bool]) -> np.ndarray:
    """Indices from best to worst by Deb's constrained order: feasible first, then
    non-dominated rank among the feasible, then smaller violation."""
    n = len(objectives)
    rank = np.full(n, n, dtype=int)
    feasible = violation <= 0
    if feasible.any():
        rank[feasible] = pareto_rank(objectives[feasible], maximize=maximize)
    return np.lexsort((violation, rank, ~feasible))


def warp_constraints(problem: Problem, values: np.ndarray
                     ) -> tuple[np.ndarray, dict[str, tuple[str, float]]]:
    """The training values with heavy-tailed constraint metrics put on a log scale.

    A constraint-only metric whose largest slack ``|s|`` (``s <= 0`` feasible) is over
    ``WARP_TAIL`` times its median ``|s|`` is replaced by ``sign(s) * log1p(|s| / c)``: linear
    within ``c`` of the threshold, logarithmic beyond. ``c`` is the smaller of the farthest
    feasible and the farthest infeasible ``|s|`` or, while the observations are all on one side,
    the nearest approach to the threshold. The warp is monotone and keeps the sign, so the
    constraint on the warped output is ``<= 0`` and feasibility is what it was.

    Why: the GP standardises each output by its spread. A constraint that reaches 3e5 past a
    boundary region a few hundred wide (SRN's, a sum of fourth powers) leaves the feasible
    values a sliver of the standardised output, and the model smooths over the boundary
    (benchmarks/results/exp_effort.md, session 21). SCBO (BoTorch's tutorial) puts every
    constraint through a bilog for the same reason, but a warp bends well-behaved constraints
    too (OSY's were found worse), hence only heavy tails. From an infeasible start the log
    scale is also what shows the model which way feasibility lies (an exponential constraint:
    tests/strategies/test_bayes.py). BoTorch's ``Bilog`` outcome transform is not used: it
    fixes the threshold at 0 and the scale at 1, and the model would hand the acquisition
    transformed (non-Gaussian) posteriors.

    Args:
        values: ``n x m`` raw metrics in ``problem.metric_names`` order.

    Returns:
        ``n x m`` values for the model, and the constraints on them by metric name
        (``problem.constraints`` with each warped one as ``("<=", 0.0)``).
    """
    warped = np.array(values, dtype=float)
    constraints = dict(problem.constraints)
    names = problem.metric_names
    slacks = problem.constraint_slack([dict(zip(names, row, strict=True)) for row in warped])
    for name, slack in zip(problem.constraints, slacks.T, strict=True):
        if name in problem.objectives:  # the model's objective output stays in raw units
            continue
        size = np.abs(slack)
        seen = size[size > 0]
        if slack.min() < 0 < slack.max():
            scale = min(-slack.min(), slack.max())
        elif len(seen):  # one side only: where the observations came closest to the threshold
            scale = seen.min()
        else:
            continue
        if size.max() <= WARP_TAIL * np.median(size):
            continue
        warped[:, names.index(name)] = np.sign(slack) * np.log1p(size / scale)
        constraints[name] = ("<=", 0.0)
    return warped, constraints


def to_tensor(array: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    return torch.as_tensor(np.asarray(array, dtype=float), dtype=DTYPE, device=device)


def resolve_device(device: str) -> torch.device:
    """``"auto"``: the first CUDA device when torch sees one, else the CPU; ``"cuda"`` only
    when one is there (the caller reports the error)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("torch sees no CUDA device")
    return torch.device(device)


def is_valid_training_set(Y: np.ndarray) -> bool:
    """At least two finite observations, enough to fit a GP."""
    return len(Y) >= 2 and bool(np.all(np.isfinite(Y)))

