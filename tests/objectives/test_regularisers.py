"""Equivariance regularisers: ~0 for symmetric models, > 0 otherwise, finite gradients, one
forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from objectives.groups import Permutation, Rotation, Scaling, Translation
from objectives.models import MLP, FrameAveraged
from objectives.regularisers import equivariance_error, equivariance_loss, equivariance_terms


class SumOfNorms(nn.Module):
    """``sum_i ||x_i||^2``: invariant to rotations and permutations, not to
    translations/scalings."""

    def forward(self, x):
        return x.square().sum((-2, -1))


class Centroid(nn.Module):
    """``mean_i x_i``: equivariant ("vector") to rotations, invariant to permutations."""

    def forward(self, x):
        return x.mean(-2)


@pytest.mark.parametrize(
    ("model", "group", "exact"),
    [
        (SumOfNorms(), Rotation(3), True),
        (SumOfNorms(), Permutation(4), True),
        (SumOfNorms(), Translation(3), False),
        (SumOfNorms(), Scaling(3), False),
        (Centroid(), Rotation(3, output="vector"), True),
        (Centroid(), Permutation(4, output="vector"), True),
        (Centroid(), Rotation(3, output="invariant"), False),
    ],
)
def test_regulariser_vanishes_exactly_for_symmetric_functions(model, group, exact):
    x = torch.randn(32, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        value = float(equivariance_loss(model, group, x, samples=4, relative=True))
    if exact:
        assert value < 1e-20
    else:
        assert value > 1e-2


@pytest.mark.parametrize("group", [Rotation(3), Permutation(4), Scaling(3)])
def test_regulariser_for_averaged_and_plain_mlp(group):
    torch.manual_seed(0)
    mlp = MLP((4, 3), (), width=64, depth=2)
    x = torch.randn(128, 4, 3)
    with torch.no_grad():
        hard = float(
            equivariance_loss(FrameAveraged(mlp, group), group, x, samples=4, relative=True)
        )
        plain = float(equivariance_loss(mlp, group, x, samples=4, relative=True))
    assert hard < 1e-6
    assert plain > 0.01


def test_gradients_are_finite_and_reach_every_parameter():
    torch.manual_seed(1)
    mlp = MLP((4, 3), (), width=16, depth=2)
    groups = [Rotation(3), Permutation(4), Scaling(3), Translation(3)]
    fx, terms = equivariance_terms(mlp, groups, torch.randn(16, 4, 3), samples=3, relative=True)
    assert fx.shape == (16,) and terms.shape == (4,)
    (terms.sum() + fx.square().mean()).backward()
    for p in mlp.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_all_groups_and_samples_share_one_batched_forward():
    calls = []
    mlp = MLP((4, 3), (), width=8, depth=1)
    mlp.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    equivariance_terms(mlp, [Rotation(3), Permutation(4)], torch.randn(10, 4, 3), samples=5)
    assert calls == [(1 + 2 * 5) * 10]


@pytest.mark.parametrize("shared", [False, True], ids=["own elements", "shared elements"])
def test_leading_member_axes_give_each_members_terms(shared):
    """A stack of models on a leading axis (a cohort) gets what each model gets alone."""
    torch.manual_seed(3)
    models = [MLP((4, 3), (3,), width=8, depth=1) for _ in range(2)]
    groups = [Rotation(3, output="vector"), Permutation(4), Scaling(3, output="vector")]
    x = torch.randn(2, 10, 4, 3)
    generator = torch.Generator().manual_seed(0)
    draws = [[g.sample(5, generator=generator) for _ in models] for g in groups]
    elements = [torch.stack([d[0]] * 2 if shared else d) for d in draws]  # (2, 5, *elem)

    def stacked(inputs):
        return torch.stack([m(part) for m, part in zip(models, inputs, strict=True)])

    fx, terms = equivariance_terms(stacked, groups, x, samples=5, relative=True,
                                   elements=[e[:1] if shared else e for e in elements])
    assert fx.shape == (2, 10, 3) and terms.shape == (2, 3)
    for k, model in enumerate(models):
        alone_fx, alone = equivariance_terms(model, groups, x[k], samples=5, relative=True,
                                             elements=[e[k] for e in elements])
        torch.testing.assert_close(fx[k], alone_fx)
        torch.testing.assert_close(terms[k], alone)


def test_relative_form_is_scale_free_and_matches_absolute():
    torch.manual_seed(2)
    mlp, group, x = MLP((4, 3), (), width=16, depth=1), Rotation(3), torch.randn(32, 4, 3)
    absolute = equivariance_loss(mlp, group, x, generator=torch.Generator().manual_seed(0))
    relative = equivariance_loss(
        mlp, group, x, relative=True, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(relative, absolute / mlp(x).square().mean(), rtol=1e-5)
    scaled = equivariance_loss(
        lambda t: 10 * mlp(t), group, x, relative=True, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(scaled, relative, rtol=1e-4)


def test_equivariance_error_is_deterministic_and_gradient_free():
    mlp = MLP((4, 3), (), width=16, depth=1)
    x = torch.randn(300, 4, 3)
    first = equivariance_error(mlp, [Rotation(3), Permutation(4)], x, chunk=128)
    assert first == equivariance_error(mlp, [Rotation(3), Permutation(4)], x, chunk=128)
    assert set(first) == {"rotation", "permutation"} and min(first.values()) > 0
    with pytest.raises(ValueError, match="samples"):
        equivariance_terms(mlp, [Rotation(3)], x, samples=0)
