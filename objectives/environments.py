r"""Task 3: multi-environment regression with an invariant cause and a flipping spurious feature.

Each environment ``e`` draws causes ``X_c ~ N(0, I)``, a target ``Y = h(X_c) + sigma_y eps`` from
the same mechanism ``h`` everywhere, and a spurious feature ``X_s = c_e Y + sigma_s eps'`` whose
coefficient ``c_e`` changes across environments. ``X_s`` predicts ``Y`` better than ``X_c`` in
training, so ERM leans on it; at test time ``c`` flips sign and that reliance costs ``ood_risk``.
The invariant predictor ``h(X_c)`` has the same risk ``sigma_y^2`` everywhere: it is what the IRMv1,
V-REx and MMD penalties reward. Variants: ``"linear"`` (``h`` linear, a linear model) and
``"nonlinear"`` (``h(x) = sin(x_1) + x_2^2 / 2 - 1/2``, an MLP).

Metrics: ``train_risk`` (mean training-environment MSE), ``ood_risk`` (MSE in the flipped
environment), ``penalty`` (the configured penalty on the training data; IRMv1 when
``penalty=none``), ``penalty.irm``, ``penalty.vrex``, ``penalty.mmd``, ``spurious_weight`` (mean
``|df/dX_s|`` on test inputs: the spurious coefficient of a linear model), ``causal_weight`` (the
same for ``X_c``), ``params_m``, ``train_seconds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .models import ACTIVATIONS, count_parameters
from .penalties import env_risks, irm_penalty, mmd_penalty, vrex_penalty
from .runner import finite_metrics, report, trial_device
from .settings import TrainSettings, parse_settings
from .training import fit, plan_losses

__all__ = ["EnvironmentsTask", "FeatureModel", "make_task"]

VARIANTS = ("linear", "nonlinear")
SIZES: dict[str, dict[str, int]] = {
    "small": {"n_env": 1024, "n_test": 2048},
    "large": {"n_env": 16384, "n_test": 16384},
}
#: Training defaults per (variant, size); a linear model needs few units, the MLP more.
DEFAULTS: dict[tuple[str, str], TrainSettings] = {
    ("linear", "small"): TrainSettings(
        width=8, depth=1, epochs=60, batch_size=128, lr=1e-2, warmup=15
    ),
    ("nonlinear", "small"): TrainSettings(
        width=64, depth=2, epochs=100, batch_size=128, lr=3e-3, warmup=20
    ),
    ("linear", "large"): TrainSettings(
        width=8, depth=1, epochs=60, batch_size=1024, lr=1e-2, warmup=15
    ),
    ("nonlinear", "large"): TrainSettings(
        width=256, depth=3, epochs=150, batch_size=1024, lr=1e-3, warmup=30
    ),
}


class FeatureModel(nn.Module):
    """``f(x) = head(phi(x))``: a featuriser (whose outputs the MMD penalty compares) and a linear
    head.

    ``linear=True`` makes ``phi`` a single affine map, so ``f`` is linear in ``x``.
    """

    def __init__(self, n_in: int, width: int, depth: int, activation: str, linear: bool) -> None:
        super().__init__()
        if linear:
            self.phi: nn.Module = nn.Linear(n_in, width)
        else:
            layers: list[nn.Module] = []
            for i in range(max(depth, 1)):
                layers += [nn.Linear(n_in if i == 0 else width, width), ACTIVATIONS[activation]()]
            self.phi = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., n_in) -> (prediction (...), features (..., width))``."""
        features = self.phi(x)
        return self.head(features)[..., 0], features


def _mechanism(causes: Tensor, variant: str) -> Tensor:
    if variant == "linear":
        return causes.sum(-1) / math.sqrt(causes.shape[-1])
    return torch.sin(causes[..., 0]) + 0.5 * causes[..., 1].square() - 0.5


@dataclass(frozen=True)
class EnvironmentsTask:
    """Picklable objective (settings only; environments are sampled from ``seed`` in each call).

    Attributes:
        variant: ``"linear"`` or ``"nonlinear"``.
        train_coefs: spurious coefficients ``c_e`` of the training environments (>= 2 distinct; with
            only 2, V-REx cannot single out the invariant linear predictor: a one-parameter family
            of predictors using ``X_s`` has equal risks in both, so the default has 3).
        test_coef: the coefficient at test time (negative: the correlation flips).
        n_causes: dimension of ``X_c`` (>= 2).
        noise_y, noise_s: ``sigma_y`` and ``sigma_s``.
        seed, size: data seed and ``"small"``/``"large"``.
    """

    variant: str = "linear"
    train_coefs: tuple[float, ...] = (0.5, 1.0, 2.0)
    test_coef: float = -1.0
    n_causes: int = 2
    noise_y: float = 0.5
    noise_s: float = 0.25
    seed: int = 0
    size: str = "small"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: got {self.variant!r}; allowed: {', '.join(VARIANTS)}")
        if self.size not in SIZES:
            raise ValueError(f"size: got {self.size!r}; allowed: {', '.join(SIZES)}")
        if len(self.train_coefs) < 2 or len(set(self.train_coefs)) < 2:
            raise ValueError(
                f"train_coefs: need >= 2 distinct coefficients; got {self.train_coefs}"
            )
        if self.n_causes < 2:
            raise ValueError(f"n_causes: must be >= 2; got {self.n_causes}")
        object.__setattr__(self, "train_coefs", tuple(float(c) for c in self.train_coefs))

    def environment(self, coef: float, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` samples of one environment: ``x: (n, n_causes + 1)`` (spurious last), ``y:
        (n,)``."""
        causes = torch.randn(n, self.n_causes, generator=generator)
        y = _mechanism(causes, self.variant) + self.noise_y * torch.randn(n, generator=generator)
        spurious = coef * y + self.noise_s * torch.randn(n, generator=generator)
        return torch.cat([causes, spurious[:, None]], dim=-1), y

    def data(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_train (E, n, p), y_train (E, n), x_test (m, p), y_test (m,))``."""
        spec = SIZES[self.size]
        generator = torch.Generator().manual_seed(self.seed)
        envs = [self.environment(c, spec["n_env"], generator) for c in self.train_coefs]
        x_test, y_test = self.environment(self.test_coef, spec["n_test"], generator)
        return torch.stack([x for x, _ in envs]), torch.stack([y for _, y in envs]), x_test, y_test

    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        """Train under ``config`` (training settings plus ``penalty`` and ``penalty_weight``; no
        ``lam.*`` keys) and return the metrics listed in the module docstring."""
        settings = parse_settings(config, groups=(), defaults=DEFAULTS[self.variant, self.size])
        device = trial_device()
        torch.manual_seed(settings.seed)
        x_train, y_train, x_test, y_test = (t.to(device) for t in self.data())
        model = FeatureModel(
            x_train.shape[-1],
            settings.width,
            settings.depth,
            settings.activation,
            self.variant == "linear",
        ).to(device)
        plan = plan_losses(settings, ())
        generator = torch.Generator().manual_seed(settings.seed)

        def terms(idx: Tensor) -> Tensor:
            preds, features = model(x_train[:, idx.to(device)])  # (E, b), (E, b, h)
            targets = y_train[:, idx.to(device)]
            risks = env_risks(preds, targets)
            if not plan.penalty:
                return risks.mean()[None]
            penalty = _penalty(settings.penalty, preds, targets, risks, features)
            return torch.stack([risks.mean(), penalty])

        def on_epoch(epoch: int, summary: dict[str, float]) -> None:
            report(
                epoch,
                train_risk=summary["task"],
                **({"penalty": summary["penalty"]} if plan.penalty else {}),
            )

        start = time.perf_counter()
        fit(model, terms, plan, settings, x_train.shape[1], generator=generator, on_epoch=on_epoch)
        train_seconds = time.perf_counter() - start
        return finite_metrics(
            {
                **self._evaluate(model, settings, x_train, y_train, x_test, y_test),
                "params_m": count_parameters(model) / 1e6,
                "train_seconds": train_seconds,
            }
        )

    def _evaluate(
        self,
        model: FeatureModel,
        settings: TrainSettings,
        x_train: Tensor,
        y_train: Tensor,
        x_test: Tensor,
        y_test: Tensor,
    ) -> dict[str, float]:
        with torch.no_grad():
            preds, features = model(x_train)
            risks = env_risks(preds, y_train)
            values = {
                "irm": float(irm_penalty(preds, y_train)),
                "vrex": float(vrex_penalty(risks)),
                # MMD is quadratic in n: a fixed subsample keeps evaluation cheap and deterministic.
                "mmd": float(mmd_penalty(features[:, :512])),
            }
            ood_risk = float((model(x_test)[0] - y_test).square().mean())
        x = x_test.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[0].sum(), x)
        weights = grad.abs().mean(0)
        configured = settings.penalty if settings.penalty != "none" else "irm"
        return {
            "train_risk": float(risks.mean()),
            "ood_risk": ood_risk,
            "penalty": values[configured],
            **{f"penalty.{name}": value for name, value in values.items()},
            "spurious_weight": float(weights[-1]),
            "causal_weight": float(weights[:-1].mean()),
        }


def _penalty(name: str, preds: Tensor, targets: Tensor, risks: Tensor, features: Tensor) -> Tensor:
    if name == "irm":
        return irm_penalty(preds, targets)
    if name == "vrex":
        return vrex_penalty(risks)
    return mmd_penalty(features)


def make_task(
    variant: str = "linear",
    seed: int = 0,
    *,
    train_coefs: Sequence[float] = (0.5, 1.0, 2.0),
    test_coef: float = -1.0,
    size: str = "small",
    n_causes: int = 2,
    noise_y: float = 0.5,
    noise_s: float = 0.25,
) -> EnvironmentsTask:
    """Build the multi-environment objective, e.g. ``make_task("nonlinear", seed=1)``."""
    return EnvironmentsTask(
        variant=variant,
        train_coefs=tuple(train_coefs),
        test_coef=test_coef,
        n_causes=n_causes,
        noise_y=noise_y,
        noise_s=noise_s,
        seed=seed,
        size=size,
    )
