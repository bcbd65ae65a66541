"""Models trained inside trials: a plain MLP on flattened sets, the frame-averaged hard baseline,
and the residual-pathway soft model that adds a free pathway to it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .groups import Group

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODELS",
    "FrameAveraged",
    "ResidualPathway",
    "count_parameters",
    "hard_equivariant",
]

#: Trial model families (config key ``model``): ``mlp`` is the plain network (frame-averaged when
#: ``hard`` names groups); ``residual`` is :class:`ResidualPathway`.
MODELS: tuple[str, ...] = ("mlp", "residual")

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


class MLP(nn.Module):
    """A fully connected network from ``(B, *in_shape)`` to ``(B, *out_shape)``.

    It flattens its input, so it has no built-in symmetry at all: any equivariance it shows is
    learnt (from data or from a regulariser), which is what the symmetry objectives measure.

    Args:
        in_shape: shape of one input, e.g. ``(N, C)``.
        out_shape: shape of one output, e.g. ``()`` for a scalar, ``(3, 3)`` for a tensor.
        width: hidden units per layer.
        depth: number of hidden layers (0 gives an affine map).
        activation: one of :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        width: int = 64,
        depth: int = 2,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: got {activation!r}; expected one of {', '.join(ACTIVATIONS)}"
            )
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        n_in = int(torch.Size(self.in_shape).numel())
        n_out = int(torch.Size(self.out_shape).numel())
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(n_in if i == 0 else width, width), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(width if depth else n_in, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, *in_shape) -> (B, *out_shape)``."""
        y = self.net(x.flatten(-len(self.in_shape)) if self.in_shape else x[..., None])
        return y.reshape(*y.shape[:-1], *self.out_shape)

    def forward_stacked(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """``M`` copies of this network at once: ``x: (M, B, *in_shape) -> (M, B, *out_shape)``.

        ``params`` are the copies' parameters stacked on a leading ``M`` axis, keyed as
        ``named_parameters()`` (what ``torch.func.stack_module_state`` returns). Each linear layer
        is one ``bmm``: on a CPU, ``vmap`` of ``functional_call`` dispatches several batching
        rules per small layer, which cost as much as the arithmetic of a trial's layers.
        """
        h = x.flatten(-len(self.in_shape)) if self.in_shape else x[..., None]
        for name, layer in self.net.named_children():
            if isinstance(layer, nn.Linear):
                h = torch.bmm(h, params[f"net.{name}.weight"].mT)  # (M, B, out)
                bias = params.get(f"net.{name}.bias")
                if bias is not None:
                    # In place (bmm's backward does not need its output): about 6% less time
                    # than baddbmm, which first copies the bias into the whole output.
                    h = h.add_(bias[:, None])
            else:  # an activation: elementwise, any shape
                h = layer(h)
        return h.reshape(*h.shape[:-1], *self.out_shape)


class FrameAveraged(nn.Module):
    r"""The exactly ``G``-equivariant model ``fbar(x) = mean_{h in F(x)} h . f(h^{-1} . x)``.

    Because ``F(g x) = g F(x)``, ``fbar(g x) = g fbar(x)`` for every ``g`` (Puny et al., "Frame
    Averaging for Invariant and Equivariant Network Design", ICLR 2022); with ``F(x) = G`` for a
    finite group this is plain group averaging. All ``|F|`` canonicalised copies go through
    ``model`` in one batched forward. Used as the hard-equivariance baseline against soft
    regularisation.
    """

    def __init__(self, model: nn.Module, group: Group) -> None:
        super().__init__()
        self.model, self.group = model, group

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C) -> (B, *out)``."""
        frames = self.group.frame(x)  # (B, F, *elem)
        canonical = self.group.act_input(self.group.inverse(frames), x[:, None])  # (B, F, N, C)
        out = self.model(canonical.flatten(0, 1)).unflatten(0, canonical.shape[:2])  # (B, F, *out)
        return self.group.act_output(frames, out).mean(dim=1)


def hard_equivariant(model: nn.Module, groups: Sequence[Group]) -> nn.Module:
    """Nest :class:`FrameAveraged` wrappers, ``groups[0]`` innermost.

    The outermost wrapper is exact for its group. An inner group ``H`` stays exact when its action
    commutes with the outer group's and the outer frame is ``H``-invariant, ``F(h x) = F(x)``: e.g.
    permutations inside rotations or scalings (PCA and RMS frames ignore the order of points), but
    not the other way round (sorting points by a coordinate is not rotation-invariant).
    """
    for group in groups:
        model = FrameAveraged(model, group)
    return model


class ResidualPathway(nn.Module):
    r"""The soft model ``f(x) = f_hard(x) + f_free(x)`` of Residual Pathway Priors.

    ``f_hard`` is exactly equivariant (a :class:`FrameAveraged` network), ``f_free`` has no built-in
    symmetry (Finzi et al., "Residual Pathway Priors for Soft Equivariance Constraints", NeurIPS
    2021; the soft models of Kim et al., ICML 2023, are built the same way). Trained with the
    equivariance regulariser on the whole ``f``: since ``R_G(f) = R_G(f_free)`` for every ``G`` the
    hard pathway is exact for, a large strength pulls ``f`` towards an equivariant model with (at
    least) the hard model's capacity, and a small one lets the free pathway fit the symmetry
    breaking. So soft and hard differ in the constraint, not in the architecture.

    Args:
        hard: the equivariant pathway.
        free: the unconstrained pathway, same input and output shapes.
        zero_init: zero the free pathway's last linear layer, so training starts at the hard model
            and leaves it only as far as the data (and the strength) allow: the RPP prior is
            centred on the equivariant solution.
    """

    def __init__(self, hard: nn.Module, free: nn.Module, *, zero_init: bool = True) -> None:
        super().__init__()
        self.hard, self.free = hard, free
        if zero_init:
            last = [m for m in free.modules() if isinstance(m, nn.Linear)]
            if not last:
                raise ValueError("free: zero_init needs an nn.Linear layer in the free pathway")
            with torch.no_grad():
                last[-1].weight.zero_()
                if last[-1].bias is not None:
                    last[-1].bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, *in) -> (B, *out)``: the sum of both pathways."""
        return self.hard(x) + self.free(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
