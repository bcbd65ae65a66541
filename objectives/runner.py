"""The body shared by the symmetry regression tasks: train with regularisers, report, measure.

A task provides the data, the candidate groups and a model builder; :func:`run_regression` returns
the trial's metrics: ``test_mse``, ``val_mse``, ``equiv_err.<group>`` for every candidate group,
``params_m`` and ``train_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .groups import Group
from .models import ResidualPathway, count_parameters, hard_equivariant
from .regularisers import equivariance_error, equivariance_terms
from .settings import TrainSettings
from .training import fit, plan_losses

__all__ = [
    "RegressionData",
    "SampleStream",
    "build_trial_model",
    "report",
    "run_regression",
    "trial_device",
]

Reporter = Callable[..., None]


def report(step: int, **metrics: float) -> None:
    """``distopt.report``; imported lazily so the objectives import without the core package."""
    from distopt import report as distopt_report

    distopt_report(step=step, **metrics)


def trial_device() -> torch.device:
    """``distopt.device()``: the trial's GPU when it has one, else CPU."""
    from distopt import device

    return device()


@dataclass(frozen=True)
class RegressionData:
    """Inputs ``x_*: (n, N, C)`` and targets ``y_*: (n, *out)`` of the three splits."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor

    def to(self, device: torch.device) -> RegressionData:
        return RegressionData(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def _mse(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 1024) -> float:
    with torch.no_grad():  # summed on the device: one host synchronisation, not one per chunk
        total = sum(
            (model(a) - b).square().sum()
            for a, b in zip(x.split(chunk), y.split(chunk), strict=True)
        )
    return float(total) / y.numel()


class SampleStream:
    """The group elements of a trial's regulariser steps, drawn one epoch at a time.

    At the first step of every epoch (right after that epoch's shuffle) it draws the whole epoch,
    step by step and group by group, exactly the calls a per-step draw makes (so the random stream,
    and the trained model, are the same as drawing at each step), turns each group's draws into
    elements in one :meth:`~objectives.group_base.Group.from_draws` call and moves its
    ``(steps, samples, *elem)`` block to the device in one copy: no CPU draw or host-to-device copy
    is left in the step loop. A cohort member (:mod:`objectives.cohort`) draws with its own stream
    what the same config trained alone draws.
    """

    def __init__(self, groups: Sequence[Group], samples: int, steps: int,
                 generator: torch.Generator, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        self.groups, self.samples, self.steps = list(groups), samples, steps
        self.generator, self.device, self.dtype = generator, device, dtype

    def draw_epoch(self) -> list[Tensor]:
        """Per group ``(steps, samples, *elem)`` on the device."""
        return [group.from_draws(draws, dtype=self.dtype).to(self.device, non_blocking=True)
                for group, draws in zip(self.groups, self.draw_epoch_numbers(), strict=True)]

    def draw_epoch_numbers(self) -> list[Tensor]:
        """The epoch's random numbers before they become elements: per group the stacked
        :meth:`~objectives.group_base.Group.draw` outputs ``(steps, samples, ...)``, on the
        host."""
        drawn: list[list[Tensor]] = [[] for _ in self.groups]
        for _ in range(self.steps):
            for column, group in zip(drawn, self.groups, strict=True):
                column.append(group.draw(self.samples, generator=self.generator))
        return [torch.stack(column) for column in drawn]


def build_trial_model(
    groups: Mapping[str, Group],
    settings: TrainSettings,
    build_model: Callable[[TrainSettings], nn.Module],
) -> nn.Module:
    """The trial's model: ``build_model(settings)``, frame-averaged over ``settings.hard``
    (permutations innermost, see :func:`objectives.models.hard_equivariant`); with ``model:
    residual`` a second ``build_model(settings)`` is added as the free pathway of
    :class:`objectives.models.ResidualPathway` (so ``build_model`` must return a plain network whose
    last linear layer is its output: zeroing it zeroes the free pathway)."""
    model = build_model(settings)
    if settings.hard:
        order = sorted(settings.hard, key=lambda name: name != "permutation")
        model = hard_equivariant(model, [groups[name] for name in order])
    if settings.model == "residual":
        # Built second, so the hard pathway gets the same initial weights as the hard baseline.
        model = ResidualPathway(model, build_model(settings))
    return model


def run_regression(
    data: RegressionData,
    groups: Mapping[str, Group],
    settings: TrainSettings,
    build_model: Callable[[TrainSettings], nn.Module],
    *,
    device: torch.device,
    eval_samples: int = 16,
    on_trained: Callable[[nn.Module], None] | None = None,
    report_to: Reporter | None = None,
) -> dict[str, float]:
    """Train one model on ``data`` and return the trial metrics.

    ``on_trained`` is called with the trained model (in eval mode, after the metrics), for
    analyses of that very model such as :func:`objectives.hypergrad.hypergradients`.
    ``report_to(step, **metrics)`` receives the curve rows (default: ``distopt.report``; a cohort
    running this trial alone routes them to its member).

    The per-step loss vector is ``[mse, R_g for active g]`` from one batched forward
    (:func:`objectives.regularisers.equivariance_terms`); the model is :func:`build_trial_model`'s
    (``settings.hard`` and ``settings.model``). Each epoch reports ``train_mse`` and ``val_mse``
    through ``distopt.report``.
    """
    torch.manual_seed(settings.seed)
    model = build_trial_model(groups, settings, build_model).to(device)
    data = data.to(device)
    plan = plan_losses(settings, list(groups))
    active = [groups[name] for name in plan.groups]
    generator = torch.Generator().manual_seed(settings.seed)
    n_train = data.x_train.shape[0]
    stream = SampleStream(active, settings.samples, -(-n_train // settings.batch_size), generator,
                          device)
    state: dict[str, list[Tensor]] = {}
    step = 0

    def terms(idx: Tensor) -> Tensor:
        nonlocal step
        if step % stream.steps == 0:  # the first batch of an epoch: its shuffle is done
            state["elements"] = stream.draw_epoch()
        elements = [block[step % stream.steps] for block in state["elements"]]
        step += 1
        x, y = data.x_train[idx], data.y_train[idx]
        if not active:
            return (model(x) - y).square().mean()[None]
        fx, regs = equivariance_terms(model, active, x, settings.samples, elements=elements)
        return torch.cat([(fx - y).square().mean()[None], regs])

    emit = report_to or report

    def on_epoch(epoch: int, summary: dict[str, float]) -> None:
        emit(epoch, train_mse=summary["task"], val_mse=_mse(model, data.x_val, data.y_val))

    start = time.perf_counter()
    model.train()
    summary = fit(model, terms, plan, settings, n_train, generator=generator, on_epoch=on_epoch,
                  device=device)
    train_seconds = time.perf_counter() - start
    model.eval()
    errors = equivariance_error(model, list(groups.values()), data.x_test, eval_samples, seed=1)
    metrics = {
        "test_mse": _mse(model, data.x_test, data.y_test),
        "val_mse": _mse(model, data.x_val, data.y_val),
        **{f"equiv_err.{name}": errors[group.name] for name, group in groups.items()},
        "params_m": count_parameters(model) / 1e6,
        "train_seconds": train_seconds,
        **used_strengths(settings.mode, {g: summary[f"lam.{g}"] for g in plan.groups}),
    }
    metrics = finite_metrics(metrics)
    if on_trained is not None:
        on_trained(model)
    return metrics


def used_strengths(mode: str, strengths: Mapping[str, float]) -> dict[str, float]:
    """``lam_used.<group>`` metrics: the strengths auto mode set after its warm-up (its
    ``lam.<group>`` parameters are not used), so that the front says which strengths trained it;
    none in the other modes (weighted uses the parameters, jacobian no strengths at all)."""
    if mode != "auto":
        return {}
    return {f"lam_used.{g}": float(v) for g, v in strengths.items()}


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Python floats, with a diverged (NaN/inf) value raised as an error naming the metric."""
    out = {name: float(value) for name, value in metrics.items()}
    bad = [name for name, value in out.items() if not torch.isfinite(torch.tensor(value))]
    if bad:
        raise FloatingPointError(
            f"training diverged: non-finite {', '.join(bad)}; lower lr or strengths"
        )
    return out
