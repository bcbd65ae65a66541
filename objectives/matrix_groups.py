"""Matrix groups acting linearly on every ``d``-block: rotations, reflections, scalings, subgroups.

Sampling uses closed forms where they exist (angles, quaternions) and frames come from the second
moment of the points (PCA), see :mod:`objectives.groups` for the data layout.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from .group_base import Group, blocks, check_output

__all__ = [
    "Embedded",
    "MatrixGroup",
    "Orthogonal",
    "Reflection",
    "Rotation",
    "Scaling",
    "o2_about",
    "so2_about",
]


class MatrixGroup(Group):
    r"""A group of ``d x d`` matrices acting linearly on every ``d``-block: ``x_i -> A x_i``.

    Outputs: ``"vector"`` and ``"points"`` are mapped by ``A`` blockwise, ``"tensor"`` by
    ``Y -> A Y A^T``. Subclasses provide the sampler and the frame.
    """

    elem_ndim = 2

    def __init__(self, dim: int, name: str, output: str = "invariant") -> None:
        if dim < 1:
            raise ValueError(f"dim: must be >= 1; got {dim}")
        self.dim = dim
        self.name = name
        self.output = check_output(output)

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        return g @ h

    def inverse(self, g: Tensor) -> Tensor:
        return torch.linalg.inv(g)

    def identity(self, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The identity element, ``(d, d)``."""
        return torch.eye(self.dim, device=device, dtype=dtype)

    def _apply_blocks(self, g: Tensor, x: Tensor, extra: int) -> Tensor:
        # ``extra`` data axes sit between the batch axes and the (k, d) blocks (1 for N, 0 for a
        # global vector). einsum, not a broadcast ``@``: the latter runs one tiny d x d product per
        # (element, sample, point), which made the action cost as much as a small forward.
        parts = blocks(x, self.dim)
        spec = "...ij,...nkj->...nki" if extra else "...ij,...kj->...ki"
        return torch.einsum(spec, g, parts).flatten(-2)

    def act_input(self, g: Tensor, x: Tensor) -> Tensor:
        return self._apply_blocks(g, x, extra=1)

    def act_output(self, g: Tensor, y: Tensor) -> Tensor:
        if self.output == "invariant":
            return y
        if self.output == "vector":
            return self._apply_blocks(g, y, extra=0)
        if self.output == "points":
            return self._apply_blocks(g, y, extra=1)
        return torch.einsum("...ij,...jk,...lk->...il", g, y, g)


def _quaternion_forms() -> Tensor:
    """``C: (3, 3, 4, 4)`` with ``R(q)_ij = q^T C_ij q`` for a unit quaternion ``q = (w, x, y, z)``.

    Diagonal: ``w^2 + x^2 - y^2 - z^2`` and its permutations; off-diagonal: ``2 (ab -+ wc)``, each
    product split symmetrically over ``C[a, b]`` and ``C[b, a]``.
    """
    c = torch.zeros(3, 3, 4, 4, dtype=torch.float64)
    for i, signs in enumerate([(1, 1, -1, -1), (1, -1, 1, -1), (1, -1, -1, 1)]):
        c[i, i] = torch.diag(torch.tensor(signs, dtype=torch.float64))
    w, x, y, z = range(4)
    off_diagonal = [
        (0, 1, (x, y), (w, z), -1.0),
        (1, 0, (x, y), (w, z), 1.0),
        (0, 2, (x, z), (w, y), 1.0),
        (2, 0, (x, z), (w, y), -1.0),
        (1, 2, (y, z), (w, x), -1.0),
        (2, 1, (y, z), (w, x), 1.0),
    ]
    for i, j, (a, b), (e, f), sign in off_diagonal:
        c[i, j, a, b] = c[i, j, b, a] = 1.0
        c[i, j, e, f] = c[i, j, f, e] = sign
    return c


_QUATERNION_FORMS = _quaternion_forms()


def _haar_special(m: int, d: int, generator: torch.Generator | None) -> Tensor:
    """``m`` Haar-distributed rotations of SO(d), ``(m, d, d)`` float64.

    Closed forms where they exist, since a batched LAPACK QR costs more than the regulariser's
    other bookkeeping: a uniform angle for d = 2, a uniform unit quaternion (a normalised 4-D
    Gaussian) for d = 3 (Shoemake, "Uniform random rotations", Graphics Gems III, 1992). Otherwise
    QR of a Gaussian with the sign fix of Mezzadri, "How to generate random matrices from the
    classical compact groups", 2007, and one column flipped where the determinant is -1.
    """
    return _haar_special_from(_haar_special_draw(m, d, generator), d)


def _haar_special_draw(m: int, d: int, generator: torch.Generator | None) -> Tensor:
    """The random numbers of :func:`_haar_special`: ``(m,)`` angles' uniforms for d = 2, ``(m, 4)``
    quaternions for d = 3, ``(m, d, d)`` Gaussians otherwise (float64)."""
    if d == 2:
        return torch.rand(m, generator=generator, dtype=torch.float64)
    if d == 3:
        return torch.randn(m, 4, generator=generator, dtype=torch.float64)
    return torch.randn(m, d, d, generator=generator, dtype=torch.float64)


def _haar_special_from(draws: Tensor, d: int) -> Tensor:
    """:func:`_haar_special`'s rotations ``(*S, d, d)`` from its draws ``(*S, ...)``."""
    if d == 2:
        angle = 2 * math.pi * draws
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    if d == 3:
        q = draws.reshape(-1, 4)
        # R(q) is a quadratic form in q divided by |q|^2, so no normalisation step is needed.
        r = torch.einsum("ijab,ma,mb->mij", _QUATERNION_FORMS, q, q)
        return (r / q.square().sum(-1)[:, None, None]).reshape(*draws.shape[:-1], 3, 3)
    q, r = torch.linalg.qr(draws)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.linalg.det(q).sign()
    return torch.cat([q[..., :1] * flip[..., None, None], q[..., 1:]], dim=-1)


def _haar_orthogonal(m: int, d: int, generator: torch.Generator | None) -> Tensor:
    """``m`` Haar-distributed matrices of O(d), ``(m, d, d)`` float64: a Haar rotation times a
    reflection ``diag(-1, 1, ..., 1)`` with probability 1/2 (O(d) is SO(d) and its coset)."""
    rotation = _haar_special(m, d, generator)
    coin = torch.randint(0, 2, (m,), generator=generator, dtype=torch.float64)
    return torch.cat([rotation[..., :1] * (1 - 2 * coin)[:, None, None], rotation[..., 1:]], -1)


def _pca_frames(x: Tensor, d: int, special: bool) -> Tensor:
    """PCA frames of ``x: (B, N, C)`` read as points of ``R^d``; returns ``(B, F, d, d)``.

    The second moment ``S(x) = sum_i x_i x_i^T`` satisfies ``S(A x) = A S(x) A^T``, so its
    eigenvectors ``E`` move with ``A`` up to the sign of each column; taking every sign pattern
    ``E diag(s)`` (only ``det = +1`` ones for SO(d)) gives a frame. It is about the origin, where
    the group acts, not centred: centring would lose a rank, and two points in ``R^3`` would then
    leave a degenerate eigenspace. Exactness needs distinct eigenvalues except possibly one zero
    (points spanning at least ``d - 1`` dimensions), true almost surely for continuous data.
    Computed in float64 since the frame is only as equivariant as the eigensolver is accurate.
    """
    points = blocks(x, d).flatten(-3, -2).double()  # (B, N * k, d)
    _, vectors = torch.linalg.eigh(points.mT @ points)  # (B, d, d), columns = eigenvectors
    signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=d)), dtype=torch.float64)
    if special:
        # Make every E a rotation, then keep sign patterns of product +1, so all frames lie in
        # SO(d).
        flip = torch.linalg.det(vectors).sign()
        vectors = torch.cat([vectors[..., :1] * flip[:, None, None], vectors[..., 1:]], dim=-1)
        signs = signs[signs.prod(dim=-1) > 0]
    frames = vectors[:, None] * signs.to(vectors.device)[None, :, None, :]
    return frames.to(x.dtype)


class Rotation(MatrixGroup):
    """The rotation group SO(d), Haar-sampled: ``Rotation(2)`` is SO(2), ``Rotation(3)`` SO(3)."""

    def __init__(self, dim: int = 3, output: str = "invariant", name: str = "rotation") -> None:
        super().__init__(dim, name, output)

    def sample(self, m, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return self.from_draws(self.draw(m, generator=generator), device=device, dtype=dtype)

    def draw(self, m, *, generator=None) -> Tensor:
        return _haar_special_draw(m, self.dim, generator)

    def from_draws(self, draws, *, device=None, dtype=torch.float32) -> Tensor:
        return _haar_special_from(draws, self.dim).to(device=device, dtype=dtype)

    def inverse(self, g: Tensor) -> Tensor:
        return g.mT

    def frame(self, x: Tensor) -> Tensor:
        return _pca_frames(x, self.dim, special=True)


class Orthogonal(MatrixGroup):
    """The orthogonal group O(d) (rotations and reflections), Haar-sampled."""

    def __init__(self, dim: int = 3, output: str = "invariant", name: str = "orthogonal") -> None:
        super().__init__(dim, name, output)

    def sample(self, m, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return _haar_orthogonal(m, self.dim, generator).to(device=device, dtype=dtype)

    def inverse(self, g: Tensor) -> Tensor:
        return g.mT

    def frame(self, x: Tensor) -> Tensor:
        return _pca_frames(x, self.dim, special=False)


class Reflection(MatrixGroup):
    r"""The two-element group ``{I, H}`` with ``H = I - 2 n n^T`` the mirror through ``n^\perp``.

    Sampling is uniform over both elements, so the regulariser is the exact group mean in
    expectation; the frame is the whole group (plain group averaging).
    """

    def __init__(
        self,
        normal: Tensor | list[float] | tuple[float, ...],
        output: str = "invariant",
        name: str = "reflection",
    ) -> None:
        normal_ = torch.as_tensor(normal, dtype=torch.float64)
        if normal_.ndim != 1 or not bool(normal_.norm() > 0):
            raise ValueError(f"normal: need a non-zero vector; got {normal!r}")
        super().__init__(normal_.numel(), name, output)
        self.normal = normal_ / normal_.norm()

    def mirror(self, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The non-trivial element ``H``, ``(d, d)``."""
        n = self.normal
        return (torch.eye(self.dim, dtype=torch.float64) - 2 * torch.outer(n, n)).to(device, dtype)

    def elements(self, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Both elements, ``(2, d, d)``: identity first."""
        return torch.stack(
            [self.identity(device=device, dtype=dtype), self.mirror(device=device, dtype=dtype)]
        )

    def sample(self, m, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        pick = torch.randint(0, 2, (m,), generator=generator)
        return self.elements(dtype=dtype)[pick].to(device)

    def inverse(self, g: Tensor) -> Tensor:
        return g.mT

    def frame(self, x: Tensor) -> Tensor:
        return self.elements(device=x.device, dtype=x.dtype).expand(
            x.shape[0], 2, self.dim, self.dim
        )


class Scaling(MatrixGroup):
    r"""Isotropic scalings ``x -> s x`` stored as ``s I``, with ``log s ~ U(log low, log high)``.

    ``R_{>0}`` is not compact, so "sampling the group" means sampling this range; choose it to cover
    the scales the data actually vary over. A ``"vector"`` output is then degree-1 homogeneous
    (``f(s x) = s f(x)``), a ``"tensor"`` output degree 2; ``"invariant"`` means scale-free. The
    frame is the single element ``rms(x) I``: it canonicalises the input to unit RMS.
    """

    def __init__(
        self,
        dim: int = 3,
        low: float = 0.5,
        high: float = 2.0,
        output: str = "invariant",
        name: str = "scaling",
    ) -> None:
        if not 0 < low <= high:
            raise ValueError(f"low, high: need 0 < low <= high; got {low}, {high}")
        super().__init__(dim, name, output)
        self.low, self.high = float(low), float(high)

    def sample(self, m, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return self.from_draws(self.draw(m, generator=generator), device=device, dtype=dtype)

    def draw(self, m, *, generator=None) -> Tensor:
        return torch.rand(m, generator=generator, dtype=torch.float64)

    def from_draws(self, draws, *, device=None, dtype=torch.float32) -> Tensor:
        s = torch.exp(math.log(self.low) + draws * (math.log(self.high) - math.log(self.low)))
        eye = torch.eye(self.dim, dtype=torch.float64)
        return (s[..., None, None] * eye).to(device=device, dtype=dtype)

    def inverse(self, g: Tensor) -> Tensor:
        return g.diagonal(dim1=-2, dim2=-1).reciprocal().diag_embed()

    def frame(self, x: Tensor) -> Tensor:
        rms = x.double().square().mean(dim=(-2, -1)).sqrt()  # (B,)
        eye = torch.eye(self.dim, dtype=torch.float64, device=x.device)
        return (rms[:, None, None, None] * eye).to(x.dtype)


class Embedded(MatrixGroup):
    r"""A subgroup acting on a ``k``-plane of ``R^D``: ``A = (I - U U^T) + U h U^T`` for ``h`` in
    ``inner``.

    ``U: (D, k)`` has orthonormal columns spanning the plane; the orthogonal complement is fixed.
    With ``inner = Orthogonal(2)`` and ``U`` spanning the plane normal to ``e_z`` this is the O(2)
    of rotations about ``e_z`` and reflections through planes containing it, a subgroup of O(3), so
    candidate symmetry types can be nested (SO(2)_z < O(2)_z < O(3)).
    """

    def __init__(
        self, inner: MatrixGroup, basis: Tensor, output: str = "invariant", name: str | None = None
    ) -> None:
        basis = torch.as_tensor(basis, dtype=torch.float64)
        if basis.ndim != 2 or basis.shape[1] != inner.dim:
            raise ValueError(f"basis: need shape (D, {inner.dim}); got {tuple(basis.shape)}")
        gram = basis.mT @ basis
        if not torch.allclose(gram, torch.eye(inner.dim, dtype=torch.float64), atol=1e-8):
            raise ValueError("basis: columns must be orthonormal")
        super().__init__(basis.shape[0], name or f"{inner.name}_embedded", output)
        self.inner, self.basis = inner, basis

    def embed(self, h: Tensor) -> Tensor:
        """Inner elements ``(*S, k, k) -> (*S, D, D)``."""
        u = self.basis.to(device=h.device, dtype=h.dtype)
        eye = torch.eye(self.dim, device=h.device, dtype=h.dtype)
        return eye - u @ u.mT + u @ h @ u.mT

    def sample(self, m, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return self.embed(self.inner.sample(m, generator=generator, dtype=torch.float64)).to(
            device, dtype
        )

    def inverse(self, g: Tensor) -> Tensor:
        # Embedding is a homomorphism, so invert in the plane; avoids a general D x D inverse.
        u = self.basis.to(device=g.device, dtype=g.dtype)
        return self.embed(self.inner.inverse(u.mT @ g @ u))

    def frame(self, x: Tensor) -> Tensor:
        u = self.basis.to(device=x.device, dtype=x.dtype)
        in_plane = (blocks(x, self.dim) @ u).flatten(-2)  # (B, N, k * inner.dim)
        return self.embed(self.inner.frame(in_plane))


def _plane_basis(axis: Tensor | list[float] | tuple[float, ...]) -> Tensor:
    """Orthonormal ``(3, 2)`` basis of the plane normal to ``axis``, right-handed with it."""
    a = torch.as_tensor(axis, dtype=torch.float64)
    if a.shape != (3,) or not bool(a.norm() > 0):
        raise ValueError(f"axis: need a non-zero 3-vector; got {axis!r}")
    a = a / a.norm()
    helper = torch.eye(3, dtype=torch.float64)[int(torch.argmin(a.abs()))]
    u1 = torch.linalg.cross(a, helper)
    u1 = u1 / u1.norm()
    u2 = torch.linalg.cross(a, u1)
    return torch.stack([u1, u2], dim=-1)


def so2_about(axis=(0.0, 0.0, 1.0), output: str = "invariant", name: str = "so2_z") -> Embedded:
    """SO(2) of rotations of ``R^3`` about ``axis``."""
    return Embedded(Rotation(2), _plane_basis(axis), output=output, name=name)


def o2_about(axis=(0.0, 0.0, 1.0), output: str = "invariant", name: str = "o2_z") -> Embedded:
    """O(2) about ``axis``: rotations about it and reflections through planes containing it."""
    return Embedded(Orthogonal(2), _plane_basis(axis), output=output, name=name)
