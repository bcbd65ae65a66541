r"""Symmetry groups that sample elements and act on point clouds and on model outputs.

Every group acts on inputs laid out as ``x: (*batch, N, C)``: ``N`` set elements (particles,
points), each carrying ``C = k * d`` numbers read as ``k`` vectors of ``R^d`` (``k = 1`` for a plain
point cloud; ``k = T`` for ``T`` past positions of a particle). Euclidean groups act on every
``d``-block, permutations act on the ``N`` axis.

How a group acts on a model's *output* is set per instance by ``output``:

* ``"invariant"``: trivially, ``g . y = y`` (any shape).
* ``"vector"``: ``y: (*batch, C)``, one global quantity of ``k`` free vectors (a velocity, a
  dipole), rotated/scaled by matrix groups, untouched by translations and permutations.
* ``"points"``: ``y: (*batch, N, C)``, per-element positions, acted on exactly like the input.
* ``"tensor"``: ``y: (*batch, d, d)``, a rank-2 tensor, ``g . Y = A Y A^T`` for a matrix element
  ``A`` (an inertia tensor); untouched by translations and permutations.

Elements are tensors, so ``m`` elements are sampled, composed and applied in single tensor
operations: every method broadcasts the leading (batch) dimensions of elements against those of the
data, e.g. elements ``(m, 1, *elem)`` against inputs ``(1, B, N, C)`` give ``(m, B, N, C)``.

``frame(x)`` returns a *frame* (Puny et al., "Frame Averaging for Invariant and Equivariant Network
Design", ICLR 2022): a small set ``F(x)`` of elements with ``F(g . x) = g F(x)``. Averaging a model
over it gives an exactly equivariant model (:class:`objectives.models.FrameAveraged`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .group_base import OUTPUT_KINDS, Group, OutputKind, blocks, check_output
from .matrix_groups import (
    Embedded,
    MatrixGroup,
    Orthogonal,
    Reflection,
    Rotation,
    Scaling,
    o2_about,
    so2_about,
)

__all__ = [
    "OUTPUT_KINDS",
    "Embedded",
    "Group",
    "MatrixGroup",
    "Orthogonal",
    "OutputKind",
    "Permutation",
    "Reflection",
    "Rotation",
    "Scaling",
    "Translation",
    "o2_about",
    "so2_about",
]


class Translation(Group):
    r"""Translations ``x_i -> x_i + t`` of every ``d``-block, ``t ~ N(0, scale^2 I)``.

    Acts on ``"points"`` outputs the same way and trivially on ``"vector"``/``"tensor"`` outputs
    (free vectors and tensors about the centroid do not move). The frame is the centroid.
    """

    elem_ndim = 1

    def __init__(
        self, dim: int = 3, scale: float = 1.0, output: str = "invariant", name: str = "translation"
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale: must be > 0; got {scale}")
        self.dim, self.scale, self.name = dim, float(scale), name
        self.output = check_output(output)

    def sample(self, m, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        t = self.scale * torch.randn(m, self.dim, generator=generator, dtype=torch.float64)
        return t.to(device=device, dtype=dtype)

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        return g + h

    def inverse(self, g: Tensor) -> Tensor:
        return -g

    def _shift(self, t: Tensor, x: Tensor) -> Tensor:
        parts = blocks(x, self.dim)  # (*S', N, k, d)
        return (parts + t[..., None, None, :]).flatten(-2)

    def act_input(self, g: Tensor, x: Tensor) -> Tensor:
        return self._shift(g, x)

    def act_output(self, g: Tensor, y: Tensor) -> Tensor:
        return self._shift(g, y) if self.output == "points" else y

    def frame(self, x: Tensor) -> Tensor:
        return blocks(x, self.dim).mean(dim=(-3, -2))[:, None, :]


class Permutation(Group):
    r"""The symmetric group S_n permuting the ``N = n`` set elements: ``(g . x)_i = x_{g(i)}``.

    Elements are index vectors ``(n,)``. Acts on ``"points"`` outputs the same way and trivially on
    global outputs. The frame is the single permutation sorting the elements by their first
    coordinate (a canonicalisation; ties have probability zero for continuous data).
    """

    elem_ndim = 1

    def __init__(self, n: int, output: str = "invariant", name: str = "permutation") -> None:
        if n < 1:
            raise ValueError(f"n: must be >= 1; got {n}")
        self.n, self.name = n, name
        self.output = check_output(output)

    def sample(self, m, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        # ``dtype`` is accepted for a uniform signature; indices are always int64.
        return self.from_draws(self.draw(m, generator=generator), device=device)

    def draw(self, m, *, generator=None) -> Tensor:
        return torch.rand(m, self.n, generator=generator)

    def from_draws(self, draws, *, device=None, dtype=torch.float32) -> Tensor:
        return draws.argsort(dim=-1).to(device)

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        g, h = torch.broadcast_tensors(g, h)
        return torch.gather(h, -1, g)

    def inverse(self, g: Tensor) -> Tensor:
        return g.argsort(dim=-1)

    def _permute(self, g: Tensor, x: Tensor) -> Tensor:
        if x.shape[-2] != self.n:
            raise ValueError(f"Permutation(n={self.n}) got data with {x.shape[-2]} set elements")
        batch = torch.broadcast_shapes(g.shape[:-1], x.shape[:-2])
        index = g.expand(*batch, self.n)[..., None].expand(*batch, self.n, x.shape[-1])
        return torch.gather(x.expand(*batch, *x.shape[-2:]), -2, index)

    def act_input(self, g: Tensor, x: Tensor) -> Tensor:
        return self._permute(g, x)

    def act_output(self, g: Tensor, y: Tensor) -> Tensor:
        return self._permute(g, y) if self.output == "points" else y

    def frame(self, x: Tensor) -> Tensor:
        # (g . x)_i = x_{g(i)}, so g = argsort(key) lists elements in sorted order: g^{-1}
        # canonicalises.
        return self.inverse(x[..., 0].argsort(dim=-1))[:, None, :]
