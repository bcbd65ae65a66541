r"""Invariance penalties across training environments: IRMv1, V-REx and MMD.

Each takes tensors stacked over ``E`` environments with the same number ``n`` of samples each, so
the penalty is a few tensor ops rather than a loop over environments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["PENALTIES", "env_risks", "irm_penalty", "mmd_penalty", "vrex_penalty"]

#: Penalty names accepted in a config's ``penalty`` key.
PENALTIES: tuple[str, ...] = ("none", "irm", "vrex", "mmd")


def env_risks(preds: Tensor, targets: Tensor, loss: str = "mse") -> Tensor:
    """Per-environment risk. ``preds, targets: (E, n)``; returns ``(E,)``.

    ``loss`` is ``"mse"`` (regression) or ``"bce"`` (``preds`` are logits, ``targets`` in {0, 1}).
    """
    if loss == "mse":
        return (preds - targets).square().mean(-1)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(preds, targets, reduction="none").mean(-1)
    raise ValueError(f"loss: got {loss!r}; expected 'mse' or 'bce'")


def irm_penalty(preds: Tensor, targets: Tensor, loss: str = "mse") -> Tensor:
    r"""IRMv1 (Arjovsky et al., "Invariant Risk Minimization", 2019), averaged over environments.

    .. math::

        P = \frac{1}{E} \sum_e \Big( \frac{\partial}{\partial w} R_e(w \cdot f) \Big|_{w=1} \Big)^2

    The derivative through the dummy scale ``w`` is written in closed form, which is exact and needs
    no double backward: for MSE, ``d/dw mean((w p - y)^2) = mean(2 (p - y) p)``; for BCE on logits
    ``z``, ``d/dw mean(bce(w z, y)) = mean((sigmoid(z) - y) z)``.

    It is zero exactly when the scale ``w = 1`` is optimal in every environment simultaneously.

    Args:
        preds: ``(E, n)`` predictions (logits for ``"bce"``).
        targets: ``(E, n)``.
    Returns:
        A scalar.
    """
    if loss == "mse":
        grad = (2 * (preds - targets) * preds).mean(-1)
    elif loss == "bce":
        grad = ((torch.sigmoid(preds) - targets) * preds).mean(-1)
    else:
        raise ValueError(f"loss: got {loss!r}; expected 'mse' or 'bce'")
    return grad.square().mean()


def vrex_penalty(risks: Tensor) -> Tensor:
    r"""V-REx (Krueger et al., "Out-of-Distribution Generalization via Risk Extrapolation", ICML
    2021).

    The variance of the environment risks, ``Var_e[R_e]``; ``risks: (E,)``, returns a scalar.
    """
    return risks.var(unbiased=False)


def mmd_penalty(features: Tensor, bandwidths: Sequence[float] = (0.1, 1.0, 10.0)) -> Tensor:
    r"""Mean squared MMD between the feature distributions of every pair of environments.

    .. math::

        P = \binom{E}{2}^{-1} \sum_{e < e'} \mathrm{MMD}^2(\phi_e, \phi_{e'}), \quad
        \mathrm{MMD}^2 = \bar k(e, e) + \bar k(e', e') - 2 \bar k(e, e')

    with the biased (V-statistic) estimator, so it is >= 0 and exactly 0 for identical samples, and
    ``k`` a sum of Gaussian kernels ``exp(-||a - b||^2 / (2 sigma^2))`` over ``bandwidths`` (as in
    the MMD penalty of DomainBed; Li et al., "Domain Generalization with Adversarial Feature
    Learning", CVPR 2018).

    Args:
        features: ``(E, n, h)`` featuriser outputs; ``E >= 2``.
    Returns:
        A scalar.
    """
    n_envs = features.shape[0]
    if n_envs < 2:
        raise ValueError(f"features: need >= 2 environments; got {n_envs}")
    flat = features.flatten(0, 1)  # (E n, h)
    norms = flat.square().sum(-1)
    # Expanded form rather than cdist: cdist's sqrt has an infinite gradient at the zero diagonal.
    sq = (norms[:, None] + norms[None, :] - 2 * flat @ flat.mT).clamp_min(0)
    gammas = torch.tensor([0.5 / b**2 for b in bandwidths], dtype=flat.dtype, device=flat.device)
    kernel = torch.exp(-sq[None] * gammas[:, None, None]).sum(0)  # (E n, E n)
    n = features.shape[1]
    means = kernel.unflatten(0, (n_envs, n)).unflatten(2, (n_envs, n)).mean(dim=(1, 3))  # (E, E)
    diag = means.diagonal()
    mmd2 = diag[:, None] + diag[None, :] - 2 * means  # (E, E), zero diagonal
    return mmd2.triu(diagonal=1).sum() / (n_envs * (n_envs - 1) / 2)
