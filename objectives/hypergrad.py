r"""Hypergradients of the symmetry tasks' held-out metrics with respect to their regulariser
strengths.

A trained model's held-out metrics are differentiable in the hyperparameters that enter its
training loss. With :math:`w^*(h) = \arg\min_w L_\mathrm{train}(w, h)`, the implicit function
theorem gives

.. math::

    \frac{d M}{d h} = - \nabla_w M^\top \, [\nabla^2_w L_\mathrm{train}]^{-1} \,
    \nabla_w \partial_h L_\mathrm{train},

and the inverse-Hessian-vector product is approximated by a truncated Neumann series
:math:`H^{-1} v \approx \alpha \sum_{j=0}^{J} (I - \alpha H)^j v`, built from Hessian-vector
products (Lorraine, Vicol and Duvenaud, "Optimizing Millions of Hyperparameters by Implicit
Differentiation", AISTATS 2020). ``method="unroll"`` instead differentiates through a short window
of ``J`` full-batch gradient steps taken from the trained weights.

Hyperparameters covered: ``lam.<group>`` (every candidate group, active or not: the derivative at
``lam = 0`` is the first-order effect of switching the regulariser on) and ``weight_decay`` (Adam's
coupled L2 term ``wd/2 ||w||^2``). The training loss used for the Hessian is deterministic: the
task loss on (up to ``hypergrad.train_samples``) training points plus each ``lam_k R_k`` with a
fixed set of ``hypergrad.group_samples`` elements per group.

Metrics covered: ``test_mse``, ``val_mse`` and ``equiv_err.<group>``, each computed exactly as the
task reports it (the same held-out data and, for ``equiv_err``, the same seeded group samples).

**Key scheme** (:mod:`distopt.gradients`). Beside its metrics the objective returns one float per
(metric, hyperparameter)::

    grad/<metric>/<param> = d <metric> / d <param>

in the parameter's *raw* units (``grad/test_mse/lam.rotation`` is per unit of ``lam.rotation``,
not per unit of its log or its encoded coordinate). Consumers convert with the chain rule; distopt's
``jacobian`` strategy does so for log-scaled and ``off``-banded Floats.

**Config keys** (removed before the task parses its settings):

* ``hypergrad``: ``true`` (= ``"neumann"``), ``"neumann"``, ``"unroll"`` or ``false``/``"none"``.
* ``hypergrad.iterations``: Neumann terms or unrolled steps ``J`` (default 20).
* ``hypergrad.damping``: ``delta`` added to the Hessian's diagonal (default 0).
* ``hypergrad.train_samples``: training points in the Hessian's loss (default 128).
* ``hypergrad.group_samples``: fixed group elements per regulariser (default 2).
* ``hypergrad.metrics``: metric names joined by ``+`` (default: every covered metric).

The defaults cost about a tenth of the training of the ``small`` mixed-symmetry task (two metrics:
0.12 CPU-s beside about 1 s) and agree with central differences to a cosine above 0.99 there; the
truncated series shrinks the magnitude (directions flatter than ``lambda_max / J`` are damped) more
than the direction.

**Where they are wrong.** The theorem assumes the trained weights minimise the training loss.
Over 16 Sobol points of the three strengths (``1e-3`` to ``10``, log) on the ``small`` task, the
cosine to central differences (0.05 decades, same training seed) has median 0.99 for ``test_mse``
(13 of 16 above 0.9) and 0.93 for ``equiv_err.permutation`` (9 of 16 above 0.9), and at one point,
``lam.rotation = 9.75``, the ``test_mse`` row points the other way (-0.95): a strong regulariser
stiffens the loss (largest Hessian eigenvalue ~110 against ~15 elsewhere) and 60 epochs end far
from its minimum. More Neumann terms, group samples or training points do not change the sign,
and neither does ``method="unroll"`` (20 or 60 steps: -0.29 and -0.96 there). The stiffness
itself is the warning sign: the three points with ``lambda_max`` of 45 or more had ``test_mse``
cosines of 0.79, 0.70 and -0.95, the thirteen below 40 all 0.9 or more. The gradient of the
Hessian's loss at the trained weights is no such sign (the Newton decrement relative to the loss
was 0.2-1.8 at good and bad points alike: that loss sees a subsample of the training set). So a
consumer must treat a hypergradient as a proposal to verify (distopt's ``jacobian`` strategy
accepts a step only when the trial at its end confirms it).

The model differentiated is the trial's own trained model, whichever it is (a plain MLP, one
frame-averaged over ``hard`` groups, or ``model: residual``'s two pathways, whose free pathway the
strengths act on). Hypergradients exist in ``mode: weighted`` only (other modes do not weight the
losses by the strengths); elsewhere no ``grad/`` key is returned. The hypergradient is computed
after training and never changes the model, so the reported metrics are those of the same trial
without ``hypergrad``; it only adds keys and CPU time (measured in ``hypergrad_seconds``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distopt.gradients import GRAD_PREFIX, grad_key, parse_grad_key

from .groups import Group
from .regularisers import EPS, equivariance_terms
from .settings import TrainSettings

__all__ = [
    "GRAD_PREFIX",
    "HypergradOptions",
    "grad_key",
    "hypergradients",
    "parse_grad_key",
    "run_with_hypergradients",
    "split_hypergrad_config",
]

METHODS = ("neumann", "unroll")
_OPTION_KEYS = ("iterations", "damping", "train_samples", "group_samples", "metrics")
#: Hessian-vector products spent estimating ``lambda_max`` (see :func:`_top_curvature`).
POWER_ITERATIONS = 10


@dataclass(frozen=True)
class HypergradOptions:
    """How a trial computes its hypergradients (see the module docstring for the config keys)."""

    method: str = "neumann"
    iterations: int | None = None
    damping: float = 0.0
    train_samples: int = 128
    group_samples: int = 2
    metrics: tuple[str, ...] = ()

    @property
    def steps(self) -> int:
        return self.iterations if self.iterations is not None else 20


def _positive_int(key: str, value: Any) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value)
            or value < 1):
        raise ValueError(f"{key}: expected an integer >= 1; got {value!r}")
    return int(value)


def split_hypergrad_config(
        config: Mapping[str, Any]) -> tuple[dict[str, Any], HypergradOptions | None]:
    """Remove the ``hypergrad*`` keys from a config; return the rest and the options (None: off).

    Raises:
        ValueError: naming the key, the value and what is allowed.
    """
    rest = {k: v for k, v in config.items()
            if not (isinstance(k, str) and (k == "hypergrad" or k.startswith("hypergrad.")))}
    switch = config.get("hypergrad", False)
    if switch is True:
        method = "neumann"
    elif switch is False or switch == "none":
        method = None
    elif switch in METHODS:
        method = switch
    else:
        raise ValueError(f"hypergrad: got {switch!r}; allowed: true, false, none, "
                         f"{', '.join(METHODS)}")
    extra = {k[len("hypergrad."):]: v for k, v in config.items()
             if isinstance(k, str) and k.startswith("hypergrad.")}
    unknown = sorted(set(extra) - set(_OPTION_KEYS))
    if unknown:
        raise ValueError(f"hypergrad.{unknown[0]}: unknown key; allowed: "
                         + ", ".join(f"hypergrad.{k}" for k in _OPTION_KEYS))
    if method is None:
        return rest, None
    kwargs: dict[str, Any] = {"method": method}
    if "iterations" in extra:
        kwargs["iterations"] = _positive_int("hypergrad.iterations", extra["iterations"])
    for key in ("train_samples", "group_samples"):
        if key in extra:
            kwargs[key] = _positive_int(f"hypergrad.{key}", extra[key])
    if "damping" in extra:
        damping = extra["damping"]
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping >= 0:
            raise ValueError(f"hypergrad.damping: expected a number >= 0; got {damping!r}")
        kwargs["damping"] = float(damping)
    if "metrics" in extra:
        metrics = extra["metrics"]
        if not isinstance(metrics, str) or not metrics:
            raise ValueError(f"hypergrad.metrics: expected names joined by '+'; got {metrics!r}")
        kwargs["metrics"] = tuple(metrics.split("+"))
    return rest, HypergradOptions(**kwargs)


# -- the differentiable pieces ---------------------------------------------------------------------


def _mse(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, chunk: int = 1024) -> Tensor:
    """Differentiable twin of the task's reported MSE (sum of squares over ``y.numel()``)."""
    total = sum((model(a) - b).double().square().sum()
                for a, b in zip(x.split(chunk), y.split(chunk), strict=True))
    return total / y.numel()


def _equiv_errors(model: Callable[[Tensor], Tensor], groups: Sequence[Group], x: Tensor,
                  samples: int, seed: int, chunk: int = 256) -> Tensor:
    """Differentiable twin of :func:`objectives.regularisers.equivariance_error`, shape ``(K,)``.

    The same chunks, the same generator and the same draw order, hence the same group elements.
    """
    generator = torch.Generator().manual_seed(seed)
    sums = torch.zeros(len(groups), dtype=torch.float64, device=x.device)
    norm = torch.zeros((), dtype=torch.float64, device=x.device)
    for part in x.split(chunk):
        fx, residual = equivariance_terms(model, groups, part, samples, generator=generator)
        sums = sums + residual.double() * part.shape[0]
        norm = norm + fx.double().square().sum()
    return sums / x.shape[0] / (norm / x.shape[0] + EPS)


def covered_metrics(groups: Mapping[str, Group]) -> list[str]:
    """Metric names that get hypergradients for a task with these candidate groups."""
    return ["test_mse", "val_mse", *(f"equiv_err.{name}" for name in groups)]


def evaluate_metrics(model: Callable[[Tensor], Tensor], data: Any, groups: Mapping[str, Group],
                     names: Sequence[str], *, eval_samples: int = 16,
                     eval_seed: int = 1) -> dict[str, Tensor]:
    """The covered metrics ``names`` of ``model`` as differentiable scalars, computed as the task
    does."""
    out: dict[str, Tensor] = {}
    if "test_mse" in names:
        out["test_mse"] = _mse(model, data.x_test, data.y_test)
    if "val_mse" in names:
        out["val_mse"] = _mse(model, data.x_val, data.y_val)
    if any(n.startswith("equiv_err.") for n in names) and groups:
        errors = _equiv_errors(model, list(groups.values()), data.x_test, eval_samples, eval_seed)
        for k, name in enumerate(groups):
            if f"equiv_err.{name}" in names:
                out[f"equiv_err.{name}"] = errors[k]
    return {n: out[n] for n in names}


class _Functional(nn.Module):
    """``model`` evaluated at the weights ``weights`` (tensors that may carry a graph)."""

    def __init__(self, model: nn.Module, names: Sequence[str], weights: Sequence[Tensor]):
        super().__init__()
        self.inner = [model]  # a list: not registered as a submodule
        self.state = dict(zip(names, weights, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        from torch.func import functional_call

        return functional_call(self.inner[0], self.state, (x,))


class _TrainLoss:
    """``L(w, h) = mse_train + sum_k lam_k R_k + wd/2 ||w||^2`` with fixed data and group
    samples."""

    def __init__(self, model: nn.Module, data: Any, groups: Mapping[str, Group],
                 settings: TrainSettings, options: HypergradOptions, seed: int):
        self.model = model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.groups = list(groups.values())
        self.hyper_names = [f"lam.{name}" for name in groups] + ["weight_decay"]
        generator = torch.Generator().manual_seed(seed)
        n = data.x_train.shape[0]
        idx = torch.randperm(n, generator=generator)[: min(n, options.train_samples)].to(
            data.x_train.device)
        self.x, self.y = data.x_train[idx], data.y_train[idx]
        # The same elements on every evaluation: a deterministic loss, so its Hessian is well
        # defined.
        self.group_seed = seed + 1
        self.samples = options.group_samples
        self.hyper = torch.tensor([*(settings.lams.get(name, 0.0) for name in groups),
                                   settings.weight_decay],
                                  dtype=torch.float64, device=data.x_train.device)

    def __call__(self, hyper: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        """The loss at the model's weights, or at ``weights`` (then differentiable in them)."""
        model: Callable[[Tensor], Tensor] = self.model
        if weights is None:
            weights = self.params
        else:
            model = _Functional(self.model, self.names, weights)
        generator = torch.Generator().manual_seed(self.group_seed)
        if self.groups:
            fx, regs = equivariance_terms(model, self.groups, self.x, self.samples,
                                          generator=generator)
        else:
            fx, regs = model(self.x), self.x.new_zeros(0)
        value = (fx - self.y).double().square().mean() + (hyper[:-1] * regs.double()).sum()
        return value + 0.5 * hyper[-1] * sum(w.double().square().sum() for w in weights)


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True))


def _hvp_operator(loss: _TrainLoss, damping: float, hyper: Tensor | None = None,
                  ) -> tuple[Callable[[list[Tensor]], list[Tensor]], tuple[Tensor, ...]]:
    """``v -> (H + damping I) v`` at the trained weights, and the gradient ``dL/dw`` it
    differentiates (a graph in ``hyper`` too when ``hyper`` requires grad, so that one graph
    serves the Hessian-vector products and the mixed partial)."""
    params = loss.params
    grads = torch.autograd.grad(loss(loss.hyper if hyper is None else hyper), params,
                                create_graph=True)

    def hvp(v: list[Tensor]) -> list[Tensor]:
        out = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        return [o + damping * x for o, x in zip(out, v, strict=True)]

    return hvp, grads


def _top_curvature(hvp: Callable[[list[Tensor]], list[Tensor]], params: Sequence[Tensor],
                   iterations: int = POWER_ITERATIONS) -> float:
    """``|lambda|_max`` of the Hessian by power iteration (seeded, so reproducible).

    The estimate only sets the Neumann step ``1 / lambda``, which contracts for any estimate
    above ``lambda_max / 2``; power iteration's Rayleigh quotient is within a few percent of it
    after a handful of products, so more iterations buy nothing but time.
    """
    generator = torch.Generator().manual_seed(0)
    probe = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    top = 0.0
    for _ in range(iterations):
        norm = math.sqrt(float(_dot(probe, probe))) or 1.0
        probe = [x / norm for x in probe]
        image = hvp(probe)
        top = abs(float(_dot(probe, image)))
        probe = [x.detach() for x in image]
    return max(top, 1e-12)


def _implicit(loss: _TrainLoss, values: Mapping[str, Tensor],
              options: HypergradOptions) -> dict[str, list[float]]:
    """IFT with a Neumann inverse: ``dM/dh = -(d2L/dh dw) [H + delta I]^{-1} dM/dw``.

    The step ``alpha = 1 / lambda_max`` comes from a power iteration, so the series contracts on
    every direction of positive curvature; directions flatter than about ``lambda_max / J`` are
    damped, as early stopping damps them in training.
    """
    params = loss.params
    hyper = loss.hyper.clone().requires_grad_(True)
    hvp, grads = _hvp_operator(loss, options.damping, hyper)
    alpha = 1.0 / _top_curvature(hvp, params)
    out = {}
    for name, value in values.items():
        v = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        term = [torch.zeros_like(p) if g is None else g.detach()
                for p, g in zip(params, v, strict=True)]
        total = [t.clone() for t in term]
        for _ in range(options.steps):
            term = [t - alpha * h for t, h in zip(term, hvp(term), strict=True)]
            total = [s + t for s, t in zip(total, term, strict=True)]
        solved = [alpha * s for s in total]
        # d/dh of (p . grad_w L) is the mixed partial applied to p.
        mixed = torch.autograd.grad(_dot(grads, solved), hyper, retain_graph=True)[0]
        out[name] = (-mixed).tolist()
    return out


def _unrolled(loss: _TrainLoss, data: Any, groups: Mapping[str, Group], names: Sequence[str],
              options: HypergradOptions, eval_samples: int) -> dict[str, list[float]]:
    """Differentiate the metrics through ``J`` full-batch gradient steps from the trained weights.

    The window starts at the trained weights (treated as constant) and steps with
    ``1 / lambda_max``; the model's own weights are never changed.
    """
    step = 1.0 / _top_curvature(_hvp_operator(loss, 0.0)[0], loss.params)
    hyper = loss.hyper.clone().requires_grad_(True)
    current = [p.detach().clone().requires_grad_(True) for p in loss.params]
    for _ in range(options.steps):
        g = torch.autograd.grad(loss(hyper, current), current, create_graph=True)
        current = [w - step * gi for w, gi in zip(current, g, strict=True)]
    moved = _Functional(loss.model, loss.names, current)
    values = evaluate_metrics(moved, data, groups, names, eval_samples=eval_samples)
    return {name: torch.autograd.grad(value, hyper, retain_graph=True)[0].tolist()
            for name, value in values.items()}


def hypergradients(model: nn.Module, data: Any, groups: Mapping[str, Group],
                   settings: TrainSettings, options: HypergradOptions | None = None, *,
                   eval_samples: int = 16) -> dict[str, float]:
    """``{grad/<metric>/<param>: value}`` for a trained ``model`` (its weights are left unchanged).

    Args:
        model: the trained model, exactly as the task evaluates it (hard wrappers included).
        data: the task's :class:`objectives.runner.RegressionData`, on the model's device.
        groups: the task's candidate groups, keyed by name (``lam.<name>`` and
            ``equiv_err.<name>``).
        settings: the trial's settings (strengths and weight decay at which to differentiate).
        options: method and sizes; the defaults of :class:`HypergradOptions` when None.
        eval_samples: group samples of the ``equiv_err`` metrics (the task's default is 16).
    """
    options = options or HypergradOptions()
    if options.method not in METHODS:
        raise ValueError(f"hypergrad: got {options.method!r}; allowed: {', '.join(METHODS)}")
    covered = covered_metrics(groups)
    names = list(options.metrics) or covered
    unknown = [m for m in names if m not in covered]
    if unknown:
        raise ValueError(f"hypergrad.metrics: {unknown[0]!r} has no hypergradient; allowed: "
                         f"{', '.join(covered)}")
    was_training = model.training
    model.eval()
    loss = _TrainLoss(model, data, groups, settings, options, seed=settings.seed)
    try:
        with torch.enable_grad():
            if options.method == "neumann":
                values = evaluate_metrics(model, data, groups, names, eval_samples=eval_samples)
                rows = _implicit(loss, values, options)
            else:
                rows = _unrolled(loss, data, groups, names, options, eval_samples)
    finally:
        model.train(was_training)
    # A non-finite entry is left out: consumers then estimate that column another way.
    return {grad_key(metric, param): float(value)
            for metric, values in rows.items()
            for param, value in zip(loss.hyper_names, values, strict=True)
            if math.isfinite(value)}


def run_with_hypergradients(data: Any, groups: Mapping[str, Group], settings: TrainSettings,
                            build_model: Callable[[TrainSettings], nn.Module],
                            options: HypergradOptions, *, device: torch.device,
                            run: Callable[..., dict[str, float]] | None = None,
                            ) -> dict[str, float]:
    """The task's metrics plus ``grad/<metric>/<param>`` keys and ``hypergrad_seconds``.

    Training is the task's own (:func:`objectives.runner.run_regression`, or ``run``, which must
    take the same ``on_trained`` callback): the trained model it hands back (frame-averaged or
    residual-pathway as the trial built it) is differentiated after the metrics are measured.
    """
    if run is None:
        from .runner import run_regression as run
    trained: list[nn.Module] = []
    metrics = run(data, groups, settings, build_model, device=device, on_trained=trained.append)
    if settings.mode != "weighted" or settings.penalty != "none":
        # The strengths do not enter the training loss as weights (torchjd aggregation, or
        # strengths set after a warm-up): no hypergradient; consumers fall back to differences.
        metrics["hypergrad_seconds"] = 0.0
        return metrics
    start = time.perf_counter()
    grads = hypergradients(trained[-1], data.to(device), groups, settings, options)
    metrics.update(grads)
    metrics["hypergrad_seconds"] = time.perf_counter() - start
    return metrics
