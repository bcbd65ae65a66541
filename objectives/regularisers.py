r"""Soft equivariance regularisers and the held-out equivariance-error metric.

For a group ``G`` acting on inputs and outputs, the equivariance regulariser of a model ``f`` is

.. math::

    R_G(f) = \mathbb{E}_x \mathbb{E}_{g \sim G} \| f(g \cdot x) - g \cdot f(x) \|^2,

an invariance penalty when ``G`` acts trivially on outputs; the relative form divides by ``E_x
||f(x)||^2`` so that it is comparable across tasks and scales. Kim et al., "Regularizing Towards
Soft Equivariance Under Mixed Symmetries", ICML 2023, use one such term per candidate symmetry type.

All ``m`` sampled elements of all ``K`` groups, and the untransformed batch, go through the model in
one batched forward of ``(1 + K m) B`` inputs; there is no Python loop over group elements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .groups import Group

__all__ = ["equivariance_error", "equivariance_loss", "equivariance_terms"]

Model = Callable[[Tensor], Tensor]

#: Guards the relative form against an all-zero model output.
EPS = 1e-12


def _squared_norm(t: Tensor, lead: int) -> Tensor:
    """Sum of squares over all but the ``lead`` leading axes."""
    return t.square().flatten(lead).sum(-1) if t.ndim > lead else t.square()


def equivariance_terms(
    model: Model,
    groups: Sequence[Group],
    x: Tensor,
    samples: int = 2,
    *,
    relative: bool = False,
    generator: torch.Generator | None = None,
    elements: Sequence[Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Model output on ``x`` and ``R_G`` for each group, from one batched forward.

    Args:
        model: maps ``(*S, n, N, C)`` to ``(*S, n, *out)``.
        groups: the ``K`` candidate groups.
        x: inputs ``(*S, B, N, C)``: usually ``(B, N, C)``; a cohort of independent models
            (:mod:`objectives.cohort`) adds its member axis ``S = (members,)``.
        samples: ``m``, group elements drawn per group (one Monte-Carlo draw of ``E_g``, shared
            across the batch so it is a single tensor op).
        relative: divide each term by the batch mean of ``||f(x)||^2``.
        generator: source of the group samples (CPU ``torch.Generator``).
        elements: the group elements to use instead of drawing them, one ``(*S, samples, *elem)``
            tensor per group (the ``S`` axes may be 1 to share elements; a trial draws a whole
            epoch's at once, see :class:`objectives.runner.SampleStream`).

    Returns:
        ``(f(x), R)`` with ``f(x): (*S, B, *out)`` (reuse it for the task loss) and
        ``R: (*S, K)``, differentiable with respect to the model parameters.
    """
    if samples < 1:
        raise ValueError(f"samples: must be >= 1; got {samples}")
    lead = x.ndim - 3  # the S axes
    if elements is None:
        elements = [
            group.sample(samples, generator=generator, device=x.device, dtype=x.dtype)
            for group in groups
        ]
        elements = [g.reshape((1,) * lead + g.shape) for g in elements]
    moved = [
        group.act_input(g.unsqueeze(lead + 1), x.unsqueeze(lead))
        for group, g in zip(groups, elements, strict=True)
    ]  # (*S, m, B, N, C)
    inputs = torch.cat([x.unsqueeze(lead), *moved], dim=lead)  # (*S, 1 + K m, B, N, C)
    out = model(inputs.flatten(lead, lead + 1)).unflatten(lead, inputs.shape[lead:lead + 2])
    fx = out.select(lead, 0)  # (*S, B, *out)
    f_moved = out.narrow(lead, 1, len(groups) * samples).unflatten(lead, (len(groups), samples))
    terms = [
        _squared_norm(
            f_moved.select(lead, k) - group.act_output(g.unsqueeze(lead + 1), fx.unsqueeze(lead)),
            lead=lead + 2,
        ).flatten(lead).mean(-1)  # over the m samples and B inputs
        for k, (group, g) in enumerate(zip(groups, elements, strict=True))
    ]
    residual = torch.stack(terms, dim=-1) if terms else fx.new_zeros((*x.shape[:lead], 0))
    if relative:
        residual = residual / (_squared_norm(fx, lead=lead + 1).mean(-1) + EPS)[..., None]
    return fx, residual


def equivariance_loss(
    model: Model,
    group: Group,
    x: Tensor,
    samples: int = 2,
    *,
    relative: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``R_G(f)`` on the batch ``x: (B, N, C)`` as a differentiable scalar (see
    :func:`equivariance_terms`)."""
    _, terms = equivariance_terms(
        model, [group], x, samples, relative=relative, generator=generator
    )
    return terms[0]


@torch.no_grad()
def equivariance_error(
    model: Model,
    groups: Sequence[Group],
    x: Tensor,
    samples: int = 16,
    *,
    seed: int = 0,
    chunk: int = 256,
) -> dict[str, float]:
    """Held-out relative equivariance error per group: ``R_G(f) / E||f(x)||^2`` without gradients.

    Deterministic for a given ``seed`` (the same group samples for every model compared). About
    float round-off (< 1e-6) for an exactly equivariant model; of order 1e-2 to 1 for an MLP.

    Args:
        x: held-out inputs ``(n, N, C)``; processed in chunks of ``chunk`` rows to bound memory.
    Returns:
        ``{group.name: error}``.
    """
    generator = torch.Generator().manual_seed(seed)
    # Summed on the device and copied to the host once at the end.
    sums = torch.zeros(len(groups), dtype=torch.float64, device=x.device)
    norm = torch.zeros((), dtype=torch.float64, device=x.device)
    for part in x.split(chunk):
        fx, residual = equivariance_terms(model, groups, part, samples, generator=generator)
        sums += residual.double() * part.shape[0]
        norm += _squared_norm(fx, lead=1).double().sum()
    sums, scale = sums.cpu(), float(norm) / x.shape[0] + EPS
    return {group.name: float(sums[k]) / x.shape[0] / scale for k, group in enumerate(groups)}
