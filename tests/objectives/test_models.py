"""The MLP, the frame-averaged hard baseline and the residual-pathway soft model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from objectives.groups import Orthogonal, Permutation, Rotation, Scaling, Translation, o2_about
from objectives.models import (
    MLP,
    FrameAveraged,
    ResidualPathway,
    count_parameters,
    hard_equivariant,
)
from objectives.regularisers import equivariance_error

DT = torch.float64


def test_mlp_shapes_and_parameter_count():
    model = MLP((4, 3), (3, 3), width=16, depth=2)
    assert model(torch.randn(7, 4, 3)).shape == (7, 3, 3)
    assert count_parameters(model) == (12 * 16 + 16) + (16 * 16 + 16) + (16 * 9 + 9)
    assert MLP((4, 3), (), width=8, depth=0)(torch.randn(5, 4, 3)).shape == (5,)
    with pytest.raises(ValueError, match="activation"):
        MLP((4, 3), (), activation="swish")


@pytest.mark.parametrize(("out_shape", "depth"), [((3, 3), 2), ((), 0)])
def test_forward_stacked_is_each_copys_forward(out_shape, depth):
    from torch.func import stack_module_state

    copies = [MLP((4, 3), out_shape, width=16, depth=depth) for _ in range(3)]
    params, _ = stack_module_state(copies)
    x = torch.randn(3, 7, 4, 3)
    stacked = copies[0].forward_stacked(params, x)
    assert stacked.shape == (3, 7, *out_shape)
    for k, model in enumerate(copies):
        torch.testing.assert_close(stacked[k], model(x[k]), rtol=1e-5, atol=1e-6)


CASES = {
    "so3-invariant": (Rotation(3), (), (4, 3)),
    "o3-tensor": (Orthogonal(3, output="tensor"), (3, 3), (5, 3)),
    "o2z-vector": (o2_about(output="vector"), (3,), (5, 3)),
    "so2-points": (Rotation(2, output="points"), (4, 6), (4, 6)),
    "translation-points": (Translation(2, output="points"), (4, 4), (4, 4)),
    "permutation-points": (Permutation(4, output="points"), (4, 3), (4, 3)),
    "scaling-vector": (Scaling(3, output="vector"), (3,), (4, 3)),
}


@pytest.mark.parametrize("case", CASES)
def test_frame_averaging_is_exactly_equivariant(case):
    group, out_shape, in_shape = CASES[case]
    torch.manual_seed(0)
    mlp = MLP(in_shape, out_shape, width=32, depth=2).double()
    x = torch.randn(64, *in_shape, dtype=DT)
    plain = equivariance_error(mlp, [group], x, samples=8)[group.name]
    hard = equivariance_error(FrameAveraged(mlp, group), [group], x, samples=8)[group.name]
    assert hard < 1e-12  # float64 round-off
    assert plain > 1e-3


def test_frame_averaging_in_float32_stays_at_round_off():
    torch.manual_seed(1)
    group = Rotation(3)
    model = FrameAveraged(MLP((4, 3), (), width=64, depth=2), group)
    assert equivariance_error(model, [group], torch.randn(256, 4, 3), samples=8)["rotation"] < 1e-6


def test_nested_frames_keep_both_symmetries():
    torch.manual_seed(2)
    rotation, permutation = Rotation(3), Permutation(4)
    model = hard_equivariant(MLP((4, 3), (), width=16, depth=1).double(), [permutation, rotation])
    errors = equivariance_error(model, [rotation, permutation], torch.randn(32, 4, 3, dtype=DT))
    assert max(errors.values()) < 1e-12
    # The other nesting order loses rotation invariance: the outer sorting frame is not rotation
    # invariant, which is why hard_equivariant documents the order.
    wrong = hard_equivariant(MLP((4, 3), (), width=16, depth=1).double(), [rotation, permutation])
    assert equivariance_error(wrong, [rotation], torch.randn(32, 4, 3, dtype=DT))["rotation"] > 1e-4


def _pathways(seed: int = 3) -> tuple[Rotation, nn.Module, MLP, torch.Tensor]:
    torch.manual_seed(seed)
    group = Rotation(3)
    hard = FrameAveraged(MLP((4, 3), (), width=16, depth=2).double(), group)
    free = MLP((4, 3), (), width=16, depth=2).double()
    return group, hard, free, torch.randn(64, 4, 3, dtype=DT)


def test_residual_pathway_starts_as_the_hard_model():
    group, hard, free, x = _pathways()
    model = ResidualPathway(hard, free)  # zero_init: the free pathway outputs exactly 0
    assert torch.equal(model(x), hard(x))
    assert equivariance_error(model, [group], x, samples=8)["rotation"] < 1e-12
    assert count_parameters(model) == count_parameters(hard) + count_parameters(free)
    # Its gradients still reach the free pathway's last layer, so training can leave the hard model.
    model(x).square().mean().backward()
    assert free.net[-1].weight.grad.abs().sum() > 0


def test_residual_pathway_is_equivariant_exactly_when_its_free_pathway_is():
    group, hard, free, x = _pathways()
    broken = ResidualPathway(hard, free, zero_init=False)
    assert not torch.equal(broken(x), hard(x))
    assert equivariance_error(broken, [group], x, samples=8)["rotation"] > 1e-3
    other = FrameAveraged(MLP((4, 3), (), width=16, depth=2).double(), group)
    both = ResidualPathway(hard, other, zero_init=False)
    assert equivariance_error(both, [group], x, samples=8)["rotation"] < 1e-12
    assert torch.allclose(both(x), hard(x) + other(x))


def test_residual_pathway_needs_a_linear_layer_to_zero():
    group, hard, _, _ = _pathways()
    with pytest.raises(ValueError, match="free"):
        ResidualPathway(hard, nn.Identity())
