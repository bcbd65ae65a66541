"""Group laws, actions and frames: composition, inverses, isometry, subgroup structure."""

from __future__ import annotations

import pytest
import torch

from objectives.groups import (
    Orthogonal,
    Permutation,
    Reflection,
    Rotation,
    Scaling,
    Translation,
    o2_about,
    so2_about,
)

DT = torch.float64
GROUPS = {
    "so2": lambda: Rotation(2),
    "so3": lambda: Rotation(3),
    "o3": lambda: Orthogonal(3),
    "reflection": lambda: Reflection([1.0, 2.0, -1.0]),
    "scaling": lambda: Scaling(3),
    "translation": lambda: Translation(3),
    "permutation": lambda: Permutation(5),
    "o2_z": lambda: o2_about((0.0, 0.0, 1.0)),
    "so2_x": lambda: so2_about((1.0, 0.0, 0.0)),
}


def _inputs(group, batch: int = 6, blocks: int = 2) -> torch.Tensor:
    d = getattr(group, "dim", 3)
    return torch.randn(batch, 5, blocks * d, dtype=DT, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", GROUPS)
def test_action_is_a_homomorphism(name):
    group = GROUPS[name]()
    gen = torch.Generator().manual_seed(0)
    g, h = group.sample(4, generator=gen, dtype=DT), group.sample(4, generator=gen, dtype=DT)
    x = _inputs(group)[None]  # (1, B, N, C) against elements (4, 1, ...)
    gh = group.compose(g, h)[:, None]
    two_steps = group.act_input(g[:, None], group.act_input(h[:, None], x))
    assert torch.allclose(group.act_input(gh, x), two_steps, atol=1e-12)
    back = group.act_input(group.inverse(g)[:, None], group.act_input(g[:, None], x))
    assert torch.allclose(back, x.expand_as(back), atol=1e-12)
    assert group.act_input(g[:, None], x).shape == (4, *x.shape[1:])


@pytest.mark.parametrize("name", ["so2", "so3", "o3", "reflection", "o2_z", "so2_x", "permutation"])
def test_isometries_preserve_pairwise_distances(name):
    group = GROUPS[name]()
    x = _inputs(group, blocks=1)
    moved = group.act_input(
        group.sample(3, generator=torch.Generator().manual_seed(2), dtype=DT)[:, None], x[None]
    )
    distances = torch.cdist(x, x).sort(dim=-1).values.sort(dim=-2).values
    moved_distances = torch.cdist(moved, moved).sort(dim=-1).values.sort(dim=-2).values
    assert torch.allclose(moved_distances, distances.expand_as(moved_distances), atol=1e-10)


@pytest.mark.parametrize(("name", "det"), [("so2", 1.0), ("so3", 1.0), ("so2_x", 1.0)])
def test_rotations_have_unit_determinant(name, det):
    g = GROUPS[name]().sample(64, generator=torch.Generator().manual_seed(3), dtype=DT)
    assert torch.allclose(torch.linalg.det(g), torch.full((64,), det, dtype=DT), atol=1e-12)
    assert torch.allclose(g @ g.mT, torch.eye(g.shape[-1], dtype=DT).expand_as(g), atol=1e-12)


def test_orthogonal_samples_both_components_and_so3_is_haar():
    g = Orthogonal(3).sample(2000, generator=torch.Generator().manual_seed(4), dtype=DT)
    dets = torch.linalg.det(g)
    assert 0.4 < float((dets < 0).double().mean()) < 0.6
    # Haar on SO(3): E[trace] = 0 and E[R] = 0; a biased sampler (e.g. Euler angles) fails this.
    r = Rotation(3).sample(4000, generator=torch.Generator().manual_seed(5), dtype=DT)
    assert abs(float(r.diagonal(dim1=-2, dim2=-1).sum(-1).mean())) < 0.1
    assert float(r.mean(0).abs().max()) < 0.05


def test_embedded_o2_fixes_its_axis_and_nests_in_o3():
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=DT)
    g = o2_about(axis).sample(50, generator=torch.Generator().manual_seed(6), dtype=DT)
    assert torch.allclose(g @ axis, axis.expand(50, 3), atol=1e-12)  # every element fixes e_z
    assert torch.allclose(
        g @ g.mT, torch.eye(3, dtype=DT).expand(50, 3, 3), atol=1e-12
    )  # inside O(3)
    dets = torch.linalg.det(g)
    assert bool((dets > 0).any()) and bool((dets < 0).any())  # rotations and mirrors
    s = so2_about(axis).sample(50, generator=torch.Generator().manual_seed(7), dtype=DT)
    assert torch.allclose(torch.linalg.det(s), torch.ones(50, dtype=DT), atol=1e-12)  # SO(2) < O(2)
    moved_x = so2_about((1.0, 0.0, 0.0)).sample(5, dtype=DT) @ axis
    assert not torch.allclose(moved_x, axis.expand(5, 3), atol=1e-3)  # about x, e_z moves


@pytest.mark.parametrize("output", ["vector", "points", "tensor"])
def test_matrix_output_actions(output):
    group = Rotation(3, output=output)
    g = group.sample(2, generator=torch.Generator().manual_seed(8), dtype=DT)
    shapes = {"vector": (4, 6), "points": (4, 5, 3), "tensor": (4, 3, 3)}
    y = torch.randn(*shapes[output], dtype=DT)
    moved = group.act_output(g[:, None], y[None])
    assert moved.shape == (2, *shapes[output])
    if output == "tensor":
        expected = g[:, None] @ y[None] @ g[:, None].mT
    else:
        blocks = y.unflatten(-1, (-1, 3))
        expected = torch.einsum("mij,...j->m...i", g, blocks).reshape(2, *shapes[output])
    assert torch.allclose(moved, expected, atol=1e-12)


def test_outputs_that_a_group_does_not_move():
    y = torch.randn(4, 5, 3, dtype=DT)
    for group in (Translation(3, output="vector"), Permutation(5, output="tensor"), Rotation(3)):
        assert torch.equal(group.act_output(group.sample(2, dtype=DT)[:, None], y[None]), y[None])
    perm = Permutation(5, output="points")
    g = perm.sample(1, generator=torch.Generator().manual_seed(9))
    assert torch.equal(perm.act_output(g, y[:1])[0], y[0, g[0]])


@pytest.mark.parametrize("name", GROUPS)
def test_frames_are_equivariant(name):
    """``F(g x) = g F(x)``: canonicalising ``g x`` and ``x`` gives the same inputs (as a set)."""
    group = GROUPS[name]()
    x = _inputs(group)
    g = group.sample(x.shape[0], generator=torch.Generator().manual_seed(10), dtype=DT)
    moved = group.act_input(g, x)

    def canonical(points):
        frames = group.frame(points)
        return group.act_input(group.inverse(frames), points[:, None])  # (B, F, N, C)

    a, b = canonical(x), canonical(moved)
    # Frames of finite size are sets: compare after sorting the frame axis by a fingerprint.
    key_a = a.flatten(2).sum(-1).argsort(dim=1)
    key_b = b.flatten(2).sum(-1).argsort(dim=1)
    a = torch.take_along_dim(a, key_a[..., None, None], dim=1)
    b = torch.take_along_dim(b, key_b[..., None, None], dim=1)
    assert torch.allclose(a, b, atol=1e-9)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="output"):
        Rotation(3, output="scalar")
    with pytest.raises(ValueError, match="low, high"):
        Scaling(3, low=2.0, high=1.0)
    with pytest.raises(ValueError, match="set elements"):
        Permutation(4).act_input(Permutation(4).sample(1), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="multiple of dim"):
        Rotation(3).act_input(Rotation(3).sample(1), torch.zeros(1, 2, 4))


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_haar_samplers_in_every_dimension(dim):
    """Closed forms (d = 2, 3) and QR (d >= 4) alike: orthogonal, right determinant, E[R] = 0."""
    gen = torch.Generator().manual_seed(11)
    r = Rotation(dim).sample(3000, generator=gen, dtype=DT)
    o = Orthogonal(dim).sample(3000, generator=gen, dtype=DT)
    eye = torch.eye(dim, dtype=DT)
    for g in (r, o):
        assert torch.allclose(g @ g.mT, eye.expand_as(g), atol=1e-12)
        assert float(g.mean(0).abs().max()) < 0.06
    assert torch.allclose(torch.linalg.det(r), torch.ones(3000, dtype=DT), atol=1e-12)
    assert 0.45 < float((torch.linalg.det(o) < 0).double().mean()) < 0.55


@pytest.mark.parametrize("name", [*GROUPS, "so4"])
def test_draws_transformed_together_are_the_samples_drawn_one_by_one(name):
    """A trial's epoch and a cohort's members draw their numbers call by call and transform them
    in one ``from_draws``: the elements must be exactly ``sample``'s."""
    group = Rotation(4) if name == "so4" else GROUPS[name]()
    one_by_one = torch.Generator().manual_seed(11)
    samples = torch.stack([torch.stack([group.sample(2, generator=one_by_one) for _ in range(3)])
                           for _ in range(4)])  # (members, steps, samples, *elem)
    drawing = torch.Generator().manual_seed(11)
    draws = torch.stack([torch.stack([group.draw(2, generator=drawing) for _ in range(3)])
                         for _ in range(4)])
    assert torch.equal(group.from_draws(draws), samples)
