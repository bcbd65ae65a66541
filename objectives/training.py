r"""Training inside a trial: one loss vector per step, combined by a fixed weighting or by torchjd.

A task supplies ``terms(idx) -> (L,)``, the loss vector ``[task, R_1, ..., R_K, (penalty)]`` on the
mini-batch ``idx``; :func:`fit` turns it into parameter updates according to the mode:

* ``weighted``: descend ``task + sum_k lam_k R_k + w P``.
* ``jacobian``: Jacobian descent (Quinton & Rey, "Jacobian Descent for Multi-Objective
  Optimization", 2024): torchjd builds the ``L x n_params`` Jacobian and an aggregator (UPGrad by
  default) maps it to one update that, for UPGrad, does not increase any of the losses to first
  order. No strengths.
* ``auto``: strengths set from the losses observed during a warm-up of plain training,
  ``lam_k = auto_scale * L_task / R_k`` (every regulariser starts at ``auto_scale`` times the task
  loss, so symmetries the unregularised fit already nearly has are weighted most). This is the
  in-training tuning baseline in the spirit of Kim et al. (ICML 2023), against which searched
  strengths are compared; it is a simple rescaling rule, not a reimplementation of their method.

Penalties follow IRM practice: weight ``min(w, 1)`` during the warm-up, then ``w``, with the Adam
state reset at the switch (the loss scale jumps; stale moments would mis-scale the first steps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchjd.aggregation as aggregation
from torch import Tensor, nn
from torchjd.autojac import backward as jd_backward
from torchjd.autojac import jac_to_grad

from .settings import AGGREGATORS, TrainSettings

__all__ = ["LossPlan", "backward_step", "fit", "make_aggregator", "plan_losses", "warmup_epochs"]


def warmup_epochs(settings: TrainSettings) -> int:
    """The warm-up actually used: ``settings.warmup`` capped at half the epochs, so a search that
    samples ``epochs`` never gets a warm-up longer than training; at least 1 in ``auto`` mode, which
    needs one epoch of observations to set its strengths."""
    cap = settings.epochs // 2
    if settings.mode == "auto":
        return max(1, min(settings.warmup, cap))
    return min(settings.warmup, cap)


def make_aggregator(name: str) -> aggregation.Aggregator:
    """The torchjd aggregator called ``name`` (one of :data:`objectives.settings.AGGREGATORS`)."""
    if name not in AGGREGATORS:
        raise ValueError(f"aggregator: got {name!r}; allowed: {', '.join(AGGREGATORS)}")
    return getattr(aggregation, name)()


@dataclass(frozen=True)
class LossPlan:
    """Which losses a trial computes and with what strengths.

    Attributes:
        names: ``L`` row names, ``"task"`` first, then ``"reg.<group>"``, then ``"penalty"``.
        groups: the groups whose regulariser is computed, in row order.
        strengths: ``(L,)`` float64 weights for ``weighted`` mode (``auto`` fills the regulariser
            rows after the warm-up; ``jacobian`` ignores them).
        penalty: whether the last row is a penalty.
    """

    names: tuple[str, ...]
    groups: tuple[str, ...]
    strengths: Tensor
    penalty: bool

    @property
    def regulariser_rows(self) -> slice:
        return slice(1, 1 + len(self.groups))


def plan_losses(settings: TrainSettings, candidates: Sequence[str]) -> LossPlan:
    """Select the loss rows for a trial.

    In ``weighted`` and ``jacobian`` mode a regulariser is computed only when its ``lam`` is > 0 (so
    ``lam = 0`` really is "off" and costs nothing); in ``auto`` mode every candidate is computed.
    The penalty row exists when ``penalty != "none"`` and ``penalty_weight > 0``.
    """
    if settings.mode == "auto":
        groups = tuple(candidates)
    else:
        groups = tuple(g for g in candidates if settings.lams.get(g, 0.0) > 0)
    has_penalty = settings.penalty != "none" and settings.penalty_weight > 0
    weights = [1.0, *(settings.lams.get(g, 0.0) for g in groups)]
    if has_penalty:
        weights.append(settings.penalty_weight)
    names = ("task", *(f"reg.{g}" for g in groups), *(("penalty",) if has_penalty else ()))
    return LossPlan(names, groups, torch.tensor(weights, dtype=torch.float64), has_penalty)


def backward_step(
    losses: Tensor,
    weights: Tensor,
    params: Sequence[Tensor],
    mode: str,
    aggregator: aggregation.Aggregator | None = None,
) -> None:
    """Fill ``p.grad`` for ``params`` from the loss vector ``losses: (L,)``.

    ``weighted``/``auto``: the gradient of ``sum_l weights[l] * losses[l]``. ``jacobian``: torchjd
    computes the Jacobian of ``losses`` (one row per loss) and ``aggregator`` reduces it to the
    update. The caller zeroes gradients first.
    """
    if mode == "jacobian" and losses.numel() > 1:
        if aggregator is None:
            raise ValueError("aggregator: jacobian mode needs a torchjd aggregator")
        jd_backward(losses, inputs=list(params))
        jac_to_grad(list(params), aggregator)
    else:
        (weights.to(losses) * losses).sum().backward()


def fit(
    model: nn.Module,
    terms: Callable[[Tensor], Tensor],
    plan: LossPlan,
    settings: TrainSettings,
    n_train: int,
    *,
    generator: torch.Generator,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Train ``model`` with Adam for ``settings.epochs`` epochs of mini-batches.

    The step loop never waits for the device: the epoch's order goes to ``device`` in one copy,
    the weights only when they change, and the loss sums stay on the device until the epoch ends
    (one host synchronisation per epoch, for ``on_epoch`` and the auto-mode strengths).

    Args:
        terms: maps mini-batch indices ``(b,)`` (int64 on ``device``) to the loss vector ``(L,)``
            of ``plan``.
        n_train: dataset size the indices range over.
        generator: CPU generator for shuffling (the task owns seeding).
        device: where the indices go (default: CPU).
        on_epoch: called after each epoch with the epoch index and the epoch-mean of each row,
            ``{plan.names[l]: value}`` plus ``"lam.<group>"`` for the strengths in use.

    Returns:
        The last epoch's means, in the same format.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    aggregator = make_aggregator(settings.aggregator) if settings.mode == "jacobian" else None
    weights = plan.strengths.clone()
    regs = plan.regulariser_rows
    if settings.mode == "auto":
        weights[regs] = 0.0
    warmup = warmup_epochs(settings)
    target_penalty = float(weights[-1]) if plan.penalty else 0.0
    if plan.penalty:
        weights[-1] = min(target_penalty, 1.0) if warmup > 0 else target_penalty

    def new_optimizer() -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)

    optimizer = new_optimizer()
    summary: dict[str, float] = {}
    on_device = None  # ``weights`` on the loss device, refreshed only when they change
    for epoch in range(settings.epochs):
        if epoch == warmup and epoch > 0:
            if plan.penalty and weights[-1] != target_penalty:
                weights[-1] = target_penalty
                optimizer = new_optimizer()
                on_device = None
        order = torch.randperm(n_train, generator=generator).to(device or "cpu")
        total, batches = None, 0
        for idx in order.split(settings.batch_size):
            losses = terms(idx)
            if on_device is None:
                on_device = weights.to(losses)
            optimizer.zero_grad(set_to_none=True)
            backward_step(losses, on_device, params, settings.mode, aggregator)
            optimizer.step()
            detached = losses.detach()
            total = detached if total is None else total + detached
            batches += 1
        means = (total / batches).double().cpu()
        if settings.mode == "auto" and epoch == warmup - 1:
            # Inverse to what the unregularised fit shows: a symmetry it already nearly has gets a
            # large strength, a clearly broken one a small strength.
            floor = torch.finfo(torch.float32).tiny
            weights[regs] = settings.auto_scale * means[0] / means[regs].clamp_min(floor)
            on_device = None
        summary = {name: float(v) for name, v in zip(plan.names, means, strict=True)}
        summary.update({f"lam.{g}": float(weights[1 + k]) for k, g in enumerate(plan.groups)})
        if on_epoch is not None:
            on_epoch(epoch, summary)
    return summary
