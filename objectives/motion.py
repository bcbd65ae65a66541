r"""Task 2: n-body motion forecasting with an external field that breaks rotation equivariance.

``N`` particles (3 to 5) in ``R^d`` interact through springs (identical particles, every pair joined
by a spring of rest length 1) or charges (alternating +1/-1 by index, softened Coulomb forces),
simulated in code with velocity Verlet. A uniform external field ``field * e_1`` (gravity for
springs, an electric field for charges) is translation invariant but singles out a direction, so it
breaks rotation equivariance by a set amount: ``field = 0`` gives exactly SO(d)-equivariant
dynamics. For springs, relabelling particles is an exact symmetry; for charges it is broken
(charges differ).

A trial forecasts the next ``T_out`` positions of every particle from its last ``T_in`` positions.
Inputs ``(B, N, T_in d)`` and targets ``(B, N, T_out d)`` are per-particle "points": rotations and
translations act on every ``d``-block, permutations on the particle axis. Candidate groups:
``rotation``, ``translation``, ``permutation`` (and ``so2_x``, rotations about the field axis, when
``d = 3``: exact for any field strength with springs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .groups import Group, Permutation, Rotation, Translation, so2_about
from .models import MLP
from .runner import RegressionData, run_regression, trial_device
from .settings import LARGE_SETTINGS, SMALL_SIZE, TrainSettings, parse_settings

__all__ = ["MotionModel", "MotionTask", "make_task", "simulate"]

SYSTEMS = ("springs", "charges")
SIZES: dict[str, dict[str, Any]] = {
    "small": SMALL_SIZE,
    "large": {"n_train": 16384, "n_val": 2048, "n_test": 8192, "settings": LARGE_SETTINGS},
}
_SOFTENING = 0.5  # keeps close charge encounters finite; the data stay smooth enough to learn


def _accelerations(pos: Tensor, system: str, charges: Tensor, field: Tensor) -> Tensor:
    """``pos: (B, N, d)`` -> accelerations ``(B, N, d)`` (unit masses)."""
    diff = pos[:, :, None, :] - pos[:, None, :, :]  # (B, N, N, d), r_ij = x_i - x_j
    dist = diff.square().sum(-1, keepdim=True)
    if system == "springs":
        length = (dist + 1e-12).sqrt()
        pair = -(length - 1.0) * diff / length  # Hooke with rest length 1, k = 1
        external = field.expand_as(pos)
    else:
        qq = (charges[:, None] * charges[None, :])[None, :, :, None]
        pair = qq * diff / (dist + _SOFTENING**2) ** 1.5
        external = charges[None, :, None] * field
    eye = torch.eye(pos.shape[1], dtype=torch.bool, device=pos.device)[None, :, :, None]
    return pair.masked_fill(eye, 0.0).sum(2) + external


def simulate(
    pos: Tensor,
    vel: Tensor,
    *,
    system: str = "springs",
    field: float = 0.0,
    frames: int = 5,
    stride: int = 25,
    dt: float = 0.01,
) -> Tensor:
    """Integrate ``B`` systems with velocity Verlet and record every ``stride`` steps.

    Args:
        pos, vel: initial positions and velocities ``(B, N, d)``.
        system: ``"springs"`` or ``"charges"``.
        field: strength of the uniform external field along ``e_1``.
        frames: number of recorded frames (the first is ``pos``).
    Returns:
        ``(B, frames, N, d)`` positions.
    """
    if system not in SYSTEMS:
        raise ValueError(f"system: got {system!r}; allowed: {', '.join(SYSTEMS)}")
    n, d = pos.shape[-2:]
    charges = torch.tensor([(-1.0) ** i for i in range(n)], dtype=pos.dtype, device=pos.device)
    field_vec = torch.zeros(d, dtype=pos.dtype, device=pos.device)
    field_vec[0] = field
    acc = _accelerations(pos, system, charges, field_vec)
    out = [pos]
    for _ in range(frames - 1):
        for _ in range(stride):
            vel = vel + 0.5 * dt * acc
            pos = pos + dt * vel
            acc = _accelerations(pos, system, charges, field_vec)
            vel = vel + 0.5 * dt * acc
        out.append(pos)
    return torch.stack(out, dim=1)


class MotionModel(nn.Module):
    """Constant-velocity extrapolation plus a learnt MLP correction.

    The extrapolation ``x_last + j (x_last - x_prev)`` is exactly equivariant to rotations,
    translations and permutations, so every symmetry error of the model comes from the MLP, which
    sees raw positions and has no built-in symmetry.
    """

    def __init__(
        self, n: int, d: int, t_in: int, t_out: int, width: int, depth: int, activation: str
    ) -> None:
        super().__init__()
        self.d, self.t_in, self.t_out = d, t_in, t_out
        self.net = MLP(
            (n, t_in * d), (n, t_out * d), width=width, depth=depth, activation=activation
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, T_in d) -> (B, N, T_out d)``."""
        last, prev = x[..., -self.d :], x[..., -2 * self.d : -self.d]
        steps = torch.arange(1, self.t_out + 1, dtype=x.dtype, device=x.device)
        base = last[..., None, :] + steps[:, None] * (last - prev)[..., None, :]  # (B, N, T_out, d)
        return base.flatten(-2) + self.net(x)


@dataclass(frozen=True)
class MotionTask:
    """Picklable objective (settings only; trajectories are simulated from ``seed`` in each call).

    Attributes:
        system: ``"springs"`` or ``"charges"``.
        field: external field strength (0 = rotation symmetry exact).
        n_particles: 3 to 5.
        dim: 2 or 3.
        t_in, t_out: observed and forecast frames (``t_in >= 2`` for the extrapolation base).
        seed, size, candidates, n_train: as in
            :class:`objectives.mixed_symmetry.MixedSymmetryTask`.
    """

    system: str = "springs"
    field: float = 0.5
    n_particles: int = 4
    dim: int = 2
    t_in: int = 3
    t_out: int = 2
    seed: int = 0
    size: str = "small"
    candidates: tuple[str, ...] = ()
    n_train: int | None = None

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"system: got {self.system!r}; allowed: {', '.join(SYSTEMS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: must be an int >= 0; got {self.seed!r}")
        if isinstance(self.n_particles, bool) or not isinstance(self.n_particles, int) \
                or not 3 <= self.n_particles <= 5:
            raise ValueError(f"n_particles: must be an int from 3 to 5; got {self.n_particles!r}")
        if self.dim not in (2, 3):
            raise ValueError(f"dim: must be 2 or 3; got {self.dim}")
        if self.t_in < 2 or self.t_out < 1:
            raise ValueError(
                f"t_in, t_out: need t_in >= 2 and t_out >= 1; got {self.t_in}, {self.t_out}"
            )
        if self.size not in SIZES:
            raise ValueError(f"size: got {self.size!r}; allowed: {', '.join(SIZES)}")
        if not self.field >= 0:
            raise ValueError(f"field: must be >= 0; got {self.field}")
        every = self.available()
        candidates = tuple(self.candidates) or every
        for name in candidates:
            if name not in every:
                raise ValueError(f"candidates: {name!r} unknown; allowed: {', '.join(every)}")
        object.__setattr__(self, "candidates", candidates)

    def available(self) -> tuple[str, ...]:
        return ("rotation", "translation", "permutation", *(("so2_x",) if self.dim == 3 else ()))

    def groups(self) -> dict[str, Group]:
        every: dict[str, Group] = {
            "rotation": Rotation(self.dim, output="points", name="rotation"),
            "translation": Translation(self.dim, scale=1.0, output="points", name="translation"),
            "permutation": Permutation(self.n_particles, output="points", name="permutation"),
        }
        if self.dim == 3:
            every["so2_x"] = so2_about((1.0, 0.0, 0.0), output="points", name="so2_x")
        return {name: every[name] for name in self.candidates}

    def trajectories(self, n: int, generator: torch.Generator) -> Tensor:
        """``(n, t_in + t_out, N, d)`` simulated positions, float64."""
        shape = (n, self.n_particles, self.dim)
        pos = torch.randn(shape, generator=generator, dtype=torch.float64)
        vel = 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)
        return simulate(
            pos, vel, system=self.system, field=self.field, frames=self.t_in + self.t_out
        )

    def data(self) -> RegressionData:
        spec = SIZES[self.size]
        generator = torch.Generator().manual_seed(self.seed)
        splits = []
        for size in (self.n_train or spec["n_train"], spec["n_val"], spec["n_test"]):
            traj = self.trajectories(size, generator).transpose(1, 2)  # (n, N, T, d)
            splits += [
                traj[:, :, : self.t_in].flatten(-2).float(),
                traj[:, :, self.t_in :].flatten(-2).float(),
            ]
        return RegressionData(*splits)

    def check_config(self, config: Mapping[str, Any]) -> TrainSettings:
        """The settings of ``config``, or the ValueError naming its bad key (no training: a
        study calls this on its space before anything is written)."""
        return parse_settings(
            config,
            groups=self.candidates,
            defaults=SIZES[self.size]["settings"],
            allow_penalty=False,
        )

    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        """Train under ``config`` (``lam.<candidate>`` and training settings) and return the
        metrics:
        ``test_mse`` (future positions), ``val_mse``, ``equiv_err.<group>``, ``params_m``,
        ``train_seconds``."""
        settings = self.check_config(config)

        def build(s: TrainSettings) -> MotionModel:
            return MotionModel(
                self.n_particles, self.dim, self.t_in, self.t_out, s.width, s.depth, s.activation
            )

        return run_regression(self.data(), self.groups(), settings, build, device=trial_device())


def make_task(
    system: str = "springs",
    field: float = 0.5,
    seed: int = 0,
    *,
    n_particles: int = 4,
    dim: int = 2,
    size: str = "small",
    candidates: Sequence[str] | None = None,
    t_in: int = 3,
    t_out: int = 2,
    n_train: int | None = None,
) -> MotionTask:
    """Build the motion-forecasting objective, e.g. ``make_task("charges", field=1.0,
    n_particles=5)``; see :class:`MotionTask` for the arguments."""
    return MotionTask(
        system=system,
        field=field,
        n_particles=n_particles,
        dim=dim,
        t_in=t_in,
        t_out=t_out,
        seed=seed,
        size=size,
        candidates=tuple(candidates or ()),
        n_train=n_train,
    )
