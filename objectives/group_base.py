"""The :class:`Group` interface shared by every symmetry group (see :mod:`objectives.groups`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

OutputKind = Literal["invariant", "vector", "points", "tensor"]
OUTPUT_KINDS: tuple[str, ...] = ("invariant", "vector", "points", "tensor")

__all__ = ["OUTPUT_KINDS", "Group", "OutputKind"]


def check_output(output: str) -> OutputKind:
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output: got {output!r}; expected one of {', '.join(OUTPUT_KINDS)}")
    return output  # type: ignore[return-value]


def blocks(x: Tensor, d: int) -> Tensor:
    """View ``(..., C)`` as ``(..., C // d, d)``; the last axis must be a multiple of ``d``."""
    if x.shape[-1] % d:
        raise ValueError(f"last axis has {x.shape[-1]} numbers, not a multiple of dim={d}")
    return x.unflatten(-1, (x.shape[-1] // d, d))


class Group(ABC):
    """A group ``G`` with a sampler, a group law and actions on inputs and outputs.

    Attributes:
        name: a short label used in metric names (``equiv_err.<name>``).
        output: how ``G`` acts on the model output (see the module docstring).
        elem_ndim: number of trailing dimensions of one element (2 for matrices, 1 for vectors).
    """

    name: str
    output: OutputKind
    elem_ndim: int

    @abstractmethod
    def sample(
        self,
        m: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``m`` elements; returns ``(m, *elem)``."""

    def draw(self, m: int, *, generator: torch.Generator | None = None) -> Tensor:
        """The random numbers behind ``sample(m)``: the same generator calls, before the
        transform into elements, so that many draws (a trial's epoch, a cohort's members) are
        transformed by one :meth:`from_draws` call instead of one ``sample`` call each.

        The default draws the elements themselves in float64 (exact: every group computes its
        elements in float64 and casts them last); groups whose transform costs override both.
        """
        return self.sample(m, generator=generator, dtype=torch.float64)

    def from_draws(
        self,
        draws: Tensor,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Elements ``(*S, m, *elem)`` from :meth:`draw` outputs stacked on leading axes ``S``:
        ``from_draws(draw(m))`` equals ``sample(m)`` with the same generator state, element for
        element."""
        return draws.to(device=device, dtype=dtype if draws.is_floating_point() else None)

    @abstractmethod
    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        """The product ``g h`` (apply ``h`` first), so ``act(compose(g, h), x) == act(g, act(h,
        x))``."""

    @abstractmethod
    def inverse(self, g: Tensor) -> Tensor:
        """Elementwise inverse; ``(*S, *elem) -> (*S, *elem)``."""

    @abstractmethod
    def act_input(self, g: Tensor, x: Tensor) -> Tensor:
        """``g . x`` for ``g: (*S, *elem)`` and ``x: (*S', N, C)``; returns ``(*broadcast(S, S'), N,
        C)``."""

    @abstractmethod
    def act_output(self, g: Tensor, y: Tensor) -> Tensor:
        """``g . y`` for ``g: (*S, *elem)`` and ``y: (*S', *out)`` per ``self.output``.

        Returns ``(*broadcast(S, S'), *out)``, except for ``"invariant"`` outputs and groups that
        act trivially on this kind, which return ``y`` itself (it broadcasts against that shape).
        """

    @abstractmethod
    def frame(self, x: Tensor) -> Tensor:
        """A frame for each input: ``x: (B, N, C) -> (B, F, *elem)`` with ``F(g . x) = g F(x)``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, output={self.output!r})"
