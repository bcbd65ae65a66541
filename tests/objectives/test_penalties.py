"""Invariance penalties: ~0 when environments agree, > 0 when they differ, closed forms correct."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from objectives.penalties import env_risks, irm_penalty, mmd_penalty, vrex_penalty


def _irm_by_autograd(preds, targets, loss):
    scale = torch.ones((), dtype=preds.dtype, requires_grad=True)
    total = 0.0
    for p, y in zip(preds, targets, strict=True):
        if loss == "mse":
            risk = (scale * p - y).square().mean()
        else:
            risk = F.binary_cross_entropy_with_logits(scale * p, y)
        (grad,) = torch.autograd.grad(risk, scale, create_graph=True)
        total = total + grad.square()
    return total / preds.shape[0]


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_irm_closed_form_matches_the_dummy_scale_gradient(loss):
    gen = torch.Generator().manual_seed(0)
    preds = torch.randn(3, 50, dtype=torch.float64, generator=gen)
    targets = torch.randn(3, 50, dtype=torch.float64, generator=gen)
    if loss == "bce":
        targets = (targets > 0).double()
    assert torch.allclose(irm_penalty(preds, targets, loss), _irm_by_autograd(preds, targets, loss))


def test_irm_is_zero_when_one_scale_is_optimal_everywhere_and_positive_otherwise():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, dtype=torch.float64, generator=gen)
    y = 2.0 * x + 0.3 * torch.randn(200, dtype=torch.float64, generator=gen)
    best = (x * y).sum() / x.square().sum()  # least-squares scale of the predictor x
    same = torch.stack([x, x]) * best, torch.stack([y, y])
    assert float(irm_penalty(*same)) < 1e-20
    # Second environment with the opposite relation: no single scale fits both.
    differ = torch.stack([x, x]) * best, torch.stack([y, -y])
    assert float(irm_penalty(*differ)) > 1.0


def test_vrex_is_the_variance_of_environment_risks():
    preds = torch.zeros(3, 4)
    equal = torch.ones(3, 4)
    assert float(vrex_penalty(env_risks(preds, equal))) == 0.0
    unequal = torch.stack([torch.full((4,), v) for v in (1.0, 2.0, 3.0)])
    risks = env_risks(preds, unequal)  # 1, 4, 9
    assert torch.allclose(risks, torch.tensor([1.0, 4.0, 9.0]))
    assert torch.allclose(vrex_penalty(risks), torch.tensor([1.0, 4.0, 9.0]).var(unbiased=False))


def test_mmd_separates_shifted_environments():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(256, 4, generator=gen)
    same_samples = torch.stack([a, a])
    assert float(mmd_penalty(same_samples)) < 1e-6
    # The V-statistic has an O(1/n) bias, so independent samples of one law give a small positive
    # value.
    same_law = torch.stack([a, torch.randn(256, 4, generator=gen)])
    shifted = torch.stack([a, torch.randn(256, 4, generator=gen) + 1.0])
    assert float(mmd_penalty(same_law)) < 0.05
    assert float(mmd_penalty(shifted)) > 4 * float(mmd_penalty(same_law))


def test_mmd_gradient_is_finite_even_for_identical_features():
    one = torch.randn(1, 16, 3)
    features = torch.cat([one, one]).requires_grad_(True)
    mmd_penalty(features).backward()
    assert torch.isfinite(features.grad).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="loss"):
        irm_penalty(torch.zeros(2, 3), torch.zeros(2, 3), loss="hinge")
    with pytest.raises(ValueError, match="2 environments"):
        mmd_penalty(torch.zeros(1, 3, 2))
