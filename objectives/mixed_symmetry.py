r"""Task 1: function approximation under mixed approximate symmetries with known breaking levels.

Two variants, both generated in code from a seed:

``"points"`` (default): a scalar function of a set of ``N`` points in ``R^d``,

.. math::

    y = s(X) + \sum_k \alpha_k b_k(X) + \sigma \varepsilon,

where ``s`` is invariant to rotations SO(d), scalings and permutations of the points, and each
breaking term ``b_k`` breaks exactly one of them while staying invariant to the other two. So
``alpha_k = 0`` means symmetry ``k`` holds exactly, larger ``alpha_k`` breaks it more (in units of
the symmetric signal's standard deviation), and the levels are independent knobs. Candidate groups:
``rotation``, ``scaling``, ``permutation``.

``"inertia"``: the inertia tensor of ``N`` unit masses in ``R^3`` (O(3)-equivariant, permutation
invariant) plus ``alpha_o3`` times a term built from one axis ``e_z``, which keeps only the O(2) of
rotations about and reflections containing ``e_z`` (after the "modified inertia" task of Finzi et
al., "Residual Pathway Priors for Soft Equivariance Constraints", NeurIPS 2021), plus
``alpha_permutation`` times the inertia of the first point alone. Candidates are nested: ``o3`` >
``o2_z`` > ``so2_z``, and ``o2_x`` (the wrong axis) and ``permutation``.

``make_task`` returns a picklable :class:`MixedSymmetryTask`; calling it with a config trains an MLP
(optionally frame-averaged; or, with ``model: residual``, a frame-averaged MLP plus a free MLP
pathway, the soft model of Residual Pathway Priors) with one equivariance regulariser per candidate
group and returns
``test_mse``, ``val_mse``, ``equiv_err.<group>``, ``params_m`` and ``train_seconds`` (in a cohort:
the whole call's), and in ``mode: auto``, which sets its strengths after the warm-up and ignores
the ``lam.<group>`` parameters, the strengths it set as ``lam_used.<group>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .groups import Group, Orthogonal, Permutation, Rotation, Scaling, o2_about, so2_about
from .models import MLP, MODELS
from .runner import RegressionData, run_regression, trial_device
from .settings import LARGE_SETTINGS, SMALL_SIZE, TrainSettings, parse_settings

__all__ = ["MixedSymmetryTask", "make_cohort_task", "make_task"]

VARIANTS: dict[str, tuple[str, ...]] = {
    "points": ("rotation", "scaling", "permutation"),
    "inertia": ("o3", "o2_z", "so2_z", "o2_x", "permutation"),
}
#: Symmetries each variant can break on purpose (keys of ``alphas``).
BREAKABLE: dict[str, tuple[str, ...]] = {
    "points": ("rotation", "scaling", "permutation"),
    "inertia": ("o3", "permutation"),
}
def true_levels(variant: str, alphas: Mapping[str, float],
                candidates: Sequence[str]) -> dict[str, float]:
    """How broken each candidate group is in the target: ``alpha`` of every breaking term that
    breaks it. A term breaks its own group, and in the inertia variant the ``o3`` term (which
    keeps the O(2) about ``e_z``) breaks ``o2_x`` too; ``o2_z`` and ``so2_z`` stay exact."""
    breaks = {"o2_x": ("o3",)} if variant == "inertia" else {}
    return {g: float(sum(float(alphas.get(k, 0.0)) for k in breaks.get(g, (g,))))
            for g in candidates}


#: Split sizes and training defaults: ``small`` trains in seconds on one CPU core.
SIZES: dict[str, dict[str, Any]] = {
    "small": SMALL_SIZE,
    "large": {"n_train": 8192, "n_val": 2048, "n_test": 8192, "settings": LARGE_SETTINGS},
}
_SCALE_RANGE = (0.5, 2.0)
_REFERENCE_SEED = (
    20230601  # fixes the normalising constants, so the function does not depend on seed
)


def _sample_points(n: int, n_points: int, dim: int, generator: torch.Generator) -> Tensor:
    """``(n, N, d)`` Gaussian point sets with a log-uniform global scale in ``_SCALE_RANGE``."""
    points = torch.randn(n, n_points, dim, generator=generator, dtype=torch.float64)
    lo, hi = torch.log(torch.tensor(_SCALE_RANGE, dtype=torch.float64))
    scale = torch.exp(
        lo + (hi - lo) * torch.rand(n, 1, 1, generator=generator, dtype=torch.float64)
    )
    return points * scale


def _point_terms(x: Tensor) -> Tensor:
    """Symmetric part and breaking terms of the ``points`` variant: ``(n, N, d) -> (n, 4)``.

    Columns: ``s`` (invariant to all three groups), ``b_rotation``, ``b_scaling``,
        ``b_permutation``,
    each invariant to the two groups it does not name.
    """
    n_points, dim = x.shape[-2:]
    gram = x @ x.mT  # (n, N, N): rotation invariant
    total = gram.diagonal(dim1=-2, dim2=-1).sum(-1)  # ||X||_F^2
    unit = gram / total[:, None, None]  # scale invariant too
    anisotropy = unit.square().sum((-2, -1))  # tr(G^2): also permutation invariant
    centroid = unit.sum((-2, -1)) / n_points  # ||sum_i x_i||^2 / (N ||X||^2)
    spread = n_points * unit.diagonal(dim1=-2, dim2=-1).square().sum(-1)
    symmetric = torch.sin(2 * torch.pi * anisotropy) + 2 * centroid - spread
    b_rotation = (x[..., 0].square().sum(-1) / total - 1 / dim) + x[..., 1].sum(-1) / total.sqrt()
    b_scaling = torch.log(total / (n_points * dim))
    diag = unit.diagonal(dim1=-2, dim2=-1)
    b_permutation = n_points * (diag[:, 0] - diag[:, -1] + unit[:, 0, 1])
    return torch.stack([symmetric, b_rotation, b_scaling, b_permutation], dim=-1)


def _inertia_terms(x: Tensor) -> Tensor:
    """Inertia terms of ``(n, N, 3)`` unit masses: ``(n, 3, 3, 3)``, stacked on axis 1.

    ``[0]``: ``(1/N) sum_i (|x_i|^2 I - x_i x_i^T)`` (O(3)-equivariant, permutation invariant);
    ``[1]``: ``(1/N) sum_i (x_i . e_z)^2 e_z e_z^T`` (only O(2)_z-equivariant);
    ``[2]``: ``|x_0|^2 I - x_0 x_0^T`` (O(3)-equivariant, not permutation invariant).
    """
    eye = torch.eye(3, dtype=x.dtype)
    per_point = x.square().sum(-1)[..., None, None] * eye - x[..., :, None] * x[..., None, :]
    e_z = eye[2]
    along = (x[..., 2].square().mean(-1))[:, None, None] * torch.outer(e_z, e_z)
    return torch.stack([per_point.mean(1), along, per_point[:, 0]], dim=1)


@dataclass(frozen=True)
class MixedSymmetryTask:
    """Picklable objective: settings only; data are regenerated from ``seed`` inside each call.

    Attributes:
        alphas: breaking level per breakable symmetry (missing ones are 0 = exact).
        seed: data seed (the target function itself does not depend on it).
        variant: ``"points"`` or ``"inertia"``.
        size: ``"small"`` (seconds on a CPU core) or ``"large"`` (for GPUs).
        candidates: the groups that get a regulariser and an ``equiv_err`` metric.
        n_points: set size ``N`` (:func:`make_task` picks 3 for points, 5 for inertia).
        dim: ambient dimension ``d`` of the points variant (2 or 3).
        noise: observation noise standard deviation ``sigma``.
        n_train: override the size's training-set size.
    """

    alphas: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    variant: str = "points"
    size: str = "small"
    candidates: tuple[str, ...] = ()
    n_points: int = 3
    dim: int = 3
    noise: float = 0.1
    n_train: int | None = None

    def __post_init__(self) -> None:
        # Checked here, where a study file's `with:` arrives: a bad value would otherwise fail
        # every trial with torch's own message (`manual_seed expected a long`, an IndexError).
        for name, low in (("seed", 0), ("n_points", 2), ("n_train", 1)):
            value = getattr(self, name)
            if name == "n_train" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an int >= {low}; got {value!r}")
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)):
            raise ValueError(f"noise: must be a number >= 0; got {self.noise!r}")
        if isinstance(self.candidates, str):
            raise ValueError(f"candidates: must be a list of group names; got "
                             f"{self.candidates!r} (write [{self.candidates}])")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: got {self.variant!r}; allowed: {', '.join(VARIANTS)}")
        if self.size not in SIZES:
            raise ValueError(f"size: got {self.size!r}; allowed: {', '.join(SIZES)}")
        for name, alpha in self.alphas.items():
            if name not in BREAKABLE[self.variant]:
                breakable = ", ".join(BREAKABLE[self.variant])
                raise ValueError(f"alphas.{name}: the {self.variant} variant can break {breakable}")
            if not 0 <= float(alpha) < math.inf:
                raise ValueError(f"alphas.{name}: must be a finite number >= 0; got {alpha!r}")
        candidates = tuple(self.candidates) or VARIANTS[self.variant]
        for name in candidates:
            if name not in VARIANTS[self.variant]:
                raise ValueError(
                    f"candidates: {name!r} unknown; allowed: {', '.join(VARIANTS[self.variant])}"
                )
        object.__setattr__(self, "candidates", candidates)
        object.__setattr__(self, "alphas", dict(self.alphas))
        if self.variant == "points" and self.dim not in (2, 3):
            raise ValueError(f"dim: the points variant supports 2 or 3; got {self.dim}")
        if self.noise < 0:
            raise ValueError(f"noise: must be >= 0; got {self.noise}")

    # -- the symmetries ------------------------------------------------------------------------

    @property
    def dims(self) -> tuple[int, int]:
        """``(N, d)`` of one input."""
        return (self.n_points, 3 if self.variant == "inertia" else self.dim)

    def groups(self) -> dict[str, Group]:
        """The candidate groups, keyed by name, acting on this variant's inputs and outputs."""
        n, d = self.dims
        if self.variant == "points":
            every: dict[str, Group] = {
                "rotation": Rotation(d, name="rotation"),
                "scaling": Scaling(d, *_SCALE_RANGE, name="scaling"),
                "permutation": Permutation(n, name="permutation"),
            }
        else:
            every = {
                "o3": Orthogonal(3, output="tensor", name="o3"),
                "o2_z": o2_about((0.0, 0.0, 1.0), output="tensor", name="o2_z"),
                "so2_z": so2_about((0.0, 0.0, 1.0), output="tensor", name="so2_z"),
                "o2_x": o2_about((1.0, 0.0, 0.0), output="tensor", name="o2_x"),
                "permutation": Permutation(n, output="tensor", name="permutation"),
            }
        return {name: every[name] for name in self.candidates}

    # -- the data ------------------------------------------------------------------------------

    def _terms(self, x: Tensor) -> Tensor:
        return _point_terms(x) if self.variant == "points" else _inertia_terms(x)

    def _normaliser(self) -> tuple[Tensor, Tensor]:
        """Per-term ``(mean, scale)`` from a fixed reference sample, independent of ``seed``."""
        n, d = self.dims
        reference = self._terms(
            _sample_points(4096, n, d, torch.Generator().manual_seed(_REFERENCE_SEED))
        )
        if self.variant == "points":
            return reference.mean(0), reference.std(0)
        # Tensors keep zero offset (a constant tensor is not equivariant); scale by RMS norm.
        rms = reference.square().sum((-2, -1)).mean(0).sqrt()
        return torch.zeros_like(rms)[:, None, None], rms[:, None, None]

    def target(self, x: Tensor) -> Tensor:
        """The noiseless target: ``(n, N, d) -> (n,)`` (points) or ``(n, 3, 3)`` (inertia),
        float64."""
        mean, scale = self._normaliser()
        terms = (self._terms(x.double()) - mean) / scale
        weights = [1.0, *(float(self.alphas.get(k, 0.0)) for k in BREAKABLE[self.variant])]
        if self.variant == "points":
            return terms @ torch.tensor(weights, dtype=torch.float64)
        return torch.einsum("k,nkij->nij", torch.tensor(weights, dtype=torch.float64), terms)

    def data(self, *, n_train: int | None = None) -> RegressionData:
        """Deterministic splits from ``seed`` (float32, CPU)."""
        spec = SIZES[self.size]
        sizes = (n_train or self.n_train or spec["n_train"], spec["n_val"], spec["n_test"])
        generator = torch.Generator().manual_seed(self.seed)
        n, d = self.dims
        splits = []
        for size in sizes:
            x = _sample_points(size, n, d, generator)
            y = self.target(x)
            y = y + self.noise * torch.randn(y.shape, generator=generator, dtype=torch.float64)
            splits += [x.float(), y.float()]
        return RegressionData(*splits)

    # -- the objective -------------------------------------------------------------------------

    def defaults(self) -> TrainSettings:
        return SIZES[self.size]["settings"]

    def check_config(self, config: Mapping[str, Any]) -> TrainSettings:
        """The settings of ``config``, or the ValueError naming its bad key (no training: a
        study calls this on its space before anything is written)."""
        from .hypergrad import split_hypergrad_config

        config, _ = split_hypergrad_config(config)
        return parse_settings(
            config,
            groups=self.candidates,
            defaults=self.defaults(),
            allow_penalty=False,
            models=MODELS,
        )

    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        """Train under ``config`` (keys: ``lam.<candidate>`` and training settings, see
        :func:`objectives.settings.parse_settings`) and return the trial metrics.
        ``hypergrad: true`` also returns ``grad/<metric>/<param>`` hypergradients (see
        :mod:`objectives.hypergrad`)."""
        from .hypergrad import run_with_hypergradients, split_hypergrad_config

        settings = self.check_config(config)
        config, hypergrad = split_hypergrad_config(config)
        if hypergrad is not None:
            return run_with_hypergradients(
                self.data(), self.groups(), settings, self.network, hypergrad,
                device=trial_device()
            )
        return run_regression(
            self.data(), self.groups(), settings, self.network, device=trial_device()
        )

    def network(self, settings: TrainSettings) -> MLP:
        """The plain network of a trial (before frame averaging or a residual pathway)."""
        n, d = self.dims
        out_shape: tuple[int, ...] = () if self.variant == "points" else (3, 3)
        return MLP((n, d), out_shape, width=settings.width, depth=settings.depth,
                   activation=settings.activation)

    def batch(self, configs: Sequence[Mapping[str, Any]]) -> list[dict[str, float] | Exception]:
        """Train the trials ``configs`` together as the members of ``distopt.cohort()`` (wrap it
        with :func:`make_cohort_task`); one result per config, in order.

        Members that share an architecture are trained as one batched computation
        (:mod:`objectives.cohort`); ``mode: jacobian`` and ``hypergrad: true`` members run alone
        inside the call, one after another. A bad config, a diverged or failed member is that
        member's result (an exception) and fails it alone.
        """
        from distopt import cohort

        from .cohort import run_regression_cohort
        from .hypergrad import run_with_hypergradients, split_hypergrad_config

        members = cohort()
        if len(configs) != len(members):
            raise ValueError(f"configs: got {len(configs)} for a cohort of {len(members)}")
        settings: list[TrainSettings | BaseException] = []
        hypergrads: dict[int, Any] = {}
        for index, config in enumerate(configs):
            try:
                config, hypergrad = split_hypergrad_config(config)
                settings.append(parse_settings(config, groups=self.candidates,
                                               defaults=self.defaults(), allow_penalty=False,
                                               models=MODELS))
            except ValueError as exc:
                settings.append(exc)
                continue
            if hypergrad is not None:
                hypergrads[index] = hypergrad
        data, groups, device = self.data(), self.groups(), trial_device()

        def lone(index: int, report_to: Callable[..., None]) -> dict[str, float]:
            run = partial(run_regression, report_to=report_to)
            if index in hypergrads:
                return run_with_hypergradients(data, groups, settings[index], self.network,
                                               hypergrads[index], device=device, run=run)
            return run(data, groups, settings[index], self.network, device=device)

        return run_regression_cohort(data, groups, settings, self.network, members,
                                     device=device, lone=lone, alone=hypergrads)


def make_task(
    alphas: Mapping[str, float] | None = None,
    seed: int = 0,
    *,
    variant: str = "points",
    size: str = "small",
    candidates: Sequence[str] | None = None,
    n_points: int | None = None,
    dim: int = 3,
    noise: float = 0.1,
    n_train: int | None = None,
) -> MixedSymmetryTask:
    """Build the mixed-symmetry objective.

    Example: ``make_task(alphas={"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}, seed=0)``;
    ``make_task(alphas={"o3": 0.5}, variant="inertia")`` for the inertia tensor with O(3) broken
    along ``e_z``. See :class:`MixedSymmetryTask` for the arguments.
    """
    if n_points is None:
        n_points = 5 if variant == "inertia" else 3
    return MixedSymmetryTask(
        alphas=dict(alphas or {}),
        seed=seed,
        variant=variant,
        size=size,
        # a string is one name, not its letters (the dataclass says so)
        candidates=candidates if isinstance(candidates, str) else tuple(candidates or ()),
        n_points=n_points,
        dim=dim,
        noise=noise,
        n_train=n_train,
    )


def make_cohort_task(
    alphas: Mapping[str, float] | None = None,
    seed: int = 0,
    *,
    max_size: int | None = None,
    memory_per_member: int | None = None,
    **options: Any,
) -> Any:
    """The mixed-symmetry objective as a ``distopt.batched`` cohort objective: one call trains
    many trials together (:meth:`MixedSymmetryTask.batch`). ``options`` are :func:`make_task`'s
    (``variant``, ``size``, ...); ``max_size`` and ``memory_per_member`` (bytes) are
    :func:`distopt.batched`'s. Called with one config it trains a cohort of one, so it also
    runs where a plain objective is expected."""
    import inspect

    from distopt import batched
    from distopt._checks import did_you_mean
    from distopt._errors import field_error

    # the options pass through to make_task: a typo is named with every option there is
    passed = list(inspect.signature(make_task).parameters)
    for key in options:
        if key not in passed:
            allowed = [*passed, "max_size", "memory_per_member"]
            raise field_error(f"objective.with.{key}", "is not an option"
                              + did_you_mean(key, allowed), f"the options are "
                                                            f"{', '.join(allowed)}")
    task = make_task(alphas, seed, **options)
    return batched(max_size=max_size, memory_per_member=memory_per_member)(task.batch)
