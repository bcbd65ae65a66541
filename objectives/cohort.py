r"""Cohorts: K trials of one architecture trained as one batched computation.

A trial of the regression tasks is a small MLP: on a GPU its time goes to kernel launches and the
Python step loop, not to arithmetic. Trials whose configs differ only in what does not change
shapes or the loop (strengths ``lam.*``, ``lr``, ``weight_decay``, ``auto_scale``, ``warmup``,
``mode`` weighted or auto, ``seed``) share every launch here: the K members' parameters are stacked
with ``torch.func.stack_module_state`` (leading axis K, all held in one ``(K, P)`` tensor for
Adam) and one batched forward computes every member's loss vector ``(K, L)`` on its own
mini-batch, group samples and weights (:func:`objectives.regularisers.equivariance_terms` with a
member axis): one ``bmm`` per layer for a plain MLP (:meth:`objectives.models.MLP.forward_stacked`),
a ``vmap`` of ``functional_call`` for other models. Since the members are independent, the
gradient of ``sum_k w_k . L_k`` with respect to member ``k``'s parameters is exactly that member's
own gradient.

Each member is the same trial as the config trained alone
(:func:`objectives.runner.run_regression`): the same initial weights (``torch.manual_seed(seed)``
before building), the same shuffles and group samples (its own CPU generator, drawn one epoch at
a time by :class:`objectives.runner.SampleStream`), the same Adam; only the float round-off of
batched matmuls differs. The cohort computes the union of its members' regularisers; a member
whose strength is 0 (or in the auto warm-up) gets weight 0 on that row, which leaves its gradient
unchanged.

Per-member failure: a member whose epoch losses are not finite is frozen and fails alone
(FloatingPointError); a member a scheduler stopped (``active`` False) is frozen (its Adam step is
masked) and reports no more. Members that cannot be batched run alone inside the same call (see
:func:`runs_alone`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from distopt.trial import is_device_fault

from .groups import Group
from .models import MLP, count_parameters
from .regularisers import EPS, equivariance_terms
from .runner import (
    RegressionData,
    SampleStream,
    build_trial_model,
    finite_metrics,
    used_strengths,
)
from .settings import TrainSettings
from .training import plan_losses, warmup_epochs

__all__ = ["CohortTrainer", "Members", "architecture", "run_regression_cohort", "runs_alone"]

#: Adam's constants, as ``torch.optim.Adam``'s defaults (which the lone trial uses).
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
#: Most floats one activation of a batched evaluation may hold; members are evaluated in chunks.
#: On a CPU a smaller chunk that stays in the cache is about 3x faster than one that does not (the
#: activation, elementwise ops and matrix products all stream through memory otherwise).
EVAL_FLOATS = {"cuda": 1 << 26, "cpu": 1 << 20}


class Members(Protocol):
    """What a cohort run needs of ``distopt.cohort()``."""

    @property
    def active(self) -> list[bool]: ...

    def report_member(self, index: int, step: int | None = None, **metrics: Any) -> None: ...


def architecture(settings: TrainSettings) -> tuple[Any, ...]:
    """What must be equal for two trials to share a cohort: shapes and the loop."""
    return (settings.width, settings.depth, settings.activation, settings.model, settings.hard,
            settings.epochs, settings.batch_size, settings.samples)


def runs_alone(settings: TrainSettings) -> str | None:
    """Why a trial cannot join a cohort (None: it can).

    ``jacobian`` mode needs torchjd's Jacobian of one member's loss vector and an aggregator per
    member; a penalty changes the optimiser mid-run. Both run as lone trials inside the call.
    """
    if settings.mode == "jacobian":
        return "jacobian mode (torchjd aggregates each member's own Jacobian)"
    if settings.penalty != "none" and settings.penalty_weight > 0:
        return "an invariance penalty"
    return None


class CohortTrainer:
    """K members of one architecture, trained together (see the module docstring).

    Args:
        data: the task's splits (shared by every member).
        groups: the candidate groups, in the task's order.
        settings: one per member, all with the same :func:`architecture`, none :func:`runs_alone`.
        build_model: the task's network builder (as for ``run_regression``).
        device: where the stacked parameters, data and samples live.
    """

    def __init__(self, data: RegressionData, groups: Mapping[str, Group],
                 settings: Sequence[TrainSettings],
                 build_model: Callable[[TrainSettings], nn.Module], *, device: torch.device):
        if len({architecture(s) for s in settings}) != 1:
            raise ValueError("settings: a cohort's members must share width, depth, activation, "
                             "model, hard, epochs, batch_size and samples")
        self.settings, self.device = list(settings), device
        self.data, self.groups = data.to(device), dict(groups)
        models = []
        for s in self.settings:  # each member's initial weights are its lone trial's
            torch.manual_seed(s.seed)
            models.append(build_trial_model(self.groups, s, build_model))
        self.params_m = count_parameters(models[0]) / 1e6
        params, self.buffers = stack_module_state(models)
        # One (K, P) tensor holds every parameter, and each entry of ``params`` is a leaf viewing
        # its block: Adam updates the cohort in a handful of ops on ``flat`` instead of a Python
        # loop of ops per parameter tensor.
        k = len(self.settings)
        self.flat = torch.cat([v.detach().reshape(k, -1) for v in params.values()], dim=1).to(
            device)
        self.params: dict[str, Tensor] = {}
        offset = 0
        for name, value in params.items():
            size = value[0].numel()
            block = self.flat[:, offset:offset + size].view(value.shape)
            self.params[name] = block.detach().requires_grad_()  # shares ``flat``'s storage
            offset += size
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")  # the structure; weights come stacked
        # A plain MLP runs as one bmm per layer (MLP.forward_stacked); other models (frame
        # averaging, residual pathways) as a vmap of functional_call.
        self._stacked = type(self.base) is MLP and not self.buffers
        candidates = list(self.groups)
        plans = [plan_losses(s, candidates) for s in self.settings]
        union = [g for g in candidates if any(g in p.groups for p in plans)]
        self.union, self.active = union, [self.groups[g] for g in union]
        # (K, 1 + G) float64 strengths on the host, as the lone trial keeps them; 0 where a
        # member does not compute that regulariser and, in auto mode, until its warm-up ends.
        self.weights = torch.zeros(len(self.settings), 1 + len(union), dtype=torch.float64)
        self.weights[:, 0] = 1.0
        self.own_rows: list[list[int]] = []
        for k, (s, plan) in enumerate(zip(self.settings, plans, strict=True)):
            own = [1 + union.index(g) for g in plan.groups]
            self.own_rows.append(own)
            if s.mode == "weighted":
                self.weights[k, own] = plan.strengths[plan.regulariser_rows]
        self.warmup = [warmup_epochs(s) for s in self.settings]
        first = self.settings[0]
        self.n_train = self.data.x_train.shape[0]
        self.steps = -(-self.n_train // first.batch_size)
        self.generators = [torch.Generator().manual_seed(s.seed) for s in self.settings]
        self.member_groups = [list(plan.groups) for plan in plans]
        self.streams = [SampleStream([self.groups[g] for g in own], first.samples, self.steps, g,
                                     torch.device("cpu"))
                        for own, g in zip(self.member_groups, self.generators, strict=True)]
        self.lr = torch.tensor([s.lr for s in self.settings], dtype=torch.float64, device=device)
        self.decay = torch.tensor([s.weight_decay for s in self.settings], device=device)
        self._decays = any(s.weight_decay for s in self.settings)
        self.moments = (torch.zeros_like(self.flat), torch.zeros_like(self.flat))
        self.adam_steps = 0
        self.live = [True] * len(self.settings)  # False: stopped or diverged (frozen)
        self._live_dev = torch.ones(len(self.settings), dtype=torch.bool, device=device)
        self._all_live = True
        self._weights_dev = self.weights.to(device=device, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.settings)

    # -- the members' computation, batched over the cohort --------------------------------------

    def model(self, members: slice = slice(None)) -> Callable[[Tensor], Tensor]:
        """The members' networks as one function ``(M, n, *in) -> (M, n, *out)``."""
        every = members == slice(None)  # the leaves themselves: no slicing in the backward pass
        params = self.params if every else {k: v[members] for k, v in self.params.items()}
        if self._stacked:
            return lambda inputs: self.base.forward_stacked(params, inputs)
        buffers = self.buffers if every else {k: v[members] for k, v in self.buffers.items()}

        def member(p: dict[str, Tensor], b: dict[str, Tensor], inputs: Tensor) -> Tensor:
            return functional_call(self.base, (p, b), (inputs,))

        return lambda inputs: vmap(member)(params, buffers, inputs)

    def losses(self, x: Tensor, y: Tensor, elements: Sequence[Tensor]) -> Tensor:
        """``(K, 1 + G)`` loss vectors: ``x: (K, b, N, C)``, ``y: (K, b, *out)``, one
        ``(K, samples, *elem)`` tensor per computed group."""
        model = self.model()
        if not self.active:
            return (model(x) - y).square().flatten(1).mean(-1)[:, None]
        fx, regs = equivariance_terms(model, self.active, x, self.settings[0].samples,
                                      elements=list(elements))
        return torch.cat([(fx - y).square().flatten(1).mean(-1)[:, None], regs], dim=1)

    def draw_epoch(self) -> tuple[Tensor, list[Tensor]]:
        """The next epoch's randomness of every member, drawn from its generator in its lone
        trial's order (the shuffle, then its groups' samples step by step) and moved to the device
        in one copy per tensor: ``order (K, n_train)`` and per computed group
        ``(K, steps, samples, *elem)``. A member that does not compute a group gets another
        member's elements there (its weight on that row is 0). Each member's numbers are drawn
        with its own generator, and each group's numbers of all members become elements in one
        ``from_draws`` call (the transform, not the generator, is most of a draw's cost)."""
        orders, draws = [], []
        for generator, stream in zip(self.generators, self.streams, strict=True):
            orders.append(torch.randperm(self.n_train, generator=generator))
            draws.append(stream.draw_epoch_numbers())
        elements = []
        for group in self.union:
            owners = [k for k, own in enumerate(self.member_groups) if group in own]
            source = [k if k in owners else owners[0] for k in range(len(self))]
            numbers = torch.stack([draws[j][self.member_groups[j].index(group)] for j in source])
            elements.append(self.groups[group].from_draws(numbers).to(self.device,
                                                                      non_blocking=True))
        return torch.stack(orders).to(self.device, non_blocking=True), elements

    def batches(self, drawn: tuple[Tensor, list[Tensor]]):
        """The epoch's ``(x, y, elements)`` per step from :meth:`draw_epoch`'s randomness."""
        order, elements = drawn
        size = self.settings[0].batch_size
        for step in range(self.steps):
            idx = order[:, step * size:(step + 1) * size]
            yield (self.data.x_train[idx], self.data.y_train[idx],
                   [e[:, step] for e in elements])

    def epoch_batches(self):
        """Draw the next epoch and iterate over its steps (see :meth:`draw_epoch`)."""
        return self.batches(self.draw_epoch())

    def gradients(self, losses: Tensor) -> list[Tensor]:
        """Per-member gradients of ``sum_l w_kl L_kl``, stacked like the parameters."""
        total = (self._weights_dev * losses).sum()
        return list(torch.autograd.grad(total, list(self.params.values())))

    def freeze(self, members: Sequence[bool]) -> None:
        """Stop updating the members flagged True (stopped by a scheduler, or diverged)."""
        self.live = [live and not frozen for live, frozen in zip(self.live, members, strict=True)]
        self._live_dev = torch.tensor(self.live, device=self.device)
        self._all_live = all(self.live)

    @torch.no_grad()
    def adam_step(self, grads: Sequence[Tensor]) -> None:
        """``torch.optim.Adam``'s update with a per-member learning rate and weight decay.

        Written out because one ``torch.optim.Adam`` over the stacked tensors has one ``lr``, and
        Adam's update does not scale with the gradient, so no gradient scaling can stand in for a
        per-member ``lr``. It runs on the one ``(K, P)`` tensor of all parameters (``grads`` are
        concatenated like it). A frozen member's parameters are left as they are (``where``, so
        NaN moments of a diverged member cannot leak into its weights).
        """
        self.adam_steps += 1
        beta1, beta2 = BETAS
        correction1 = 1 - beta1 ** self.adam_steps
        correction2 = (1 - beta2 ** self.adam_steps) ** 0.5
        step_size = (self.lr / correction1).float()[:, None]
        flat = self.flat
        grad = torch.cat([g.reshape(len(flat), -1) for g in grads], dim=1)
        if self._decays:
            grad = grad + self.decay[:, None] * flat
        mean, square = self.moments
        mean.lerp_(grad, 1 - beta1)
        square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = mean / square.sqrt().div_(correction2).add_(ADAM_EPS)
        update.mul_(step_size)  # in place: step_size * (mean / denominator), as before
        if not self._all_live:
            update = torch.where(self._live_dev[:, None], update, 0.0)
        flat.sub_(update)

    # -- the loop --------------------------------------------------------------------------------

    def train(self, on_epoch: Callable[[int, Tensor, Tensor, list[bool]], list[bool]] | None = None
              ) -> list[str | None]:
        """Train every live member for the cohort's epochs; per member None or why it failed.

        ``on_epoch(epoch, train_mse, val_mse, reporting)`` gets ``(K,)`` float64 host tensors (one
        device synchronisation per epoch) and which members report this epoch, and returns the
        members to keep training (False: stopped by a scheduler).
        """
        failures: list[str | None] = [None] * len(self)
        epochs = self.settings[0].epochs
        drawn = self.draw_epoch()
        for epoch in range(epochs):
            total = None
            for x, y, elements in self.batches(drawn):
                losses = self.losses(x, y, elements)
                self.adam_step(self.gradients(losses))
                detached = losses.detach()
                total = detached if total is None else total + detached
            means = (total / self.steps).double()
            val = self.mse(self.data.x_val, self.data.y_val)
            if epoch + 1 < epochs:  # on a GPU, drawn on the host while the device still works
                drawn = self.draw_epoch()
            means, val = means.cpu(), val.cpu()  # the epoch's one synchronisation
            reporting = list(self.live)
            for k in range(len(self)):
                if self.live[k] and not bool(torch.isfinite(means[k]).all()):
                    failures[k] = (f"training diverged at epoch {epoch}: non-finite train loss; "
                                   "lower lr or strengths")
                    self.live[k] = False
            self._set_auto_strengths(epoch, means)
            if on_epoch is not None:
                self.freeze([not kept for kept in on_epoch(epoch, means[:, 0], val, reporting)])
            else:
                self.freeze([not live for live in self.live])
            if not any(self.live):
                break
        return failures

    def _set_auto_strengths(self, epoch: int, means: Tensor) -> None:
        # The lone trial's rule (objectives.training.fit), member by member.
        floor = torch.finfo(torch.float32).tiny
        changed = False
        for k, s in enumerate(self.settings):
            if s.mode == "auto" and epoch == self.warmup[k] - 1:
                own = self.own_rows[k]
                self.weights[k, own] = s.auto_scale * means[k, 0] / means[k, own].clamp_min(floor)
                changed = True
        if changed:
            self._weights_dev = self.weights.to(device=self.device, dtype=torch.float32)

    # -- evaluation ------------------------------------------------------------------------------

    def _member_chunks(self, rows: int) -> list[slice]:
        """Slices of members whose activations of ``rows`` inputs fit :data:`EVAL_FLOATS`."""
        floats = EVAL_FLOATS.get(self.device.type, EVAL_FLOATS["cuda"])
        size = max(1, floats // max(1, rows * max(self.settings[0].width, 1)))
        return [slice(lo, min(lo + size, len(self))) for lo in range(0, len(self), size)]

    @torch.no_grad()
    def mse(self, x: Tensor, y: Tensor, chunk: int = 1024) -> Tensor:
        """``(K,)`` mean squared errors on ``(x, y)`` (on the device, no synchronisation)."""
        parts = []
        for members in self._member_chunks(chunk):
            model = self.model(members)
            size = members.stop - members.start
            parts.append(sum((model(a.expand(size, *a.shape)) - b).square().flatten(1).sum(-1)
                             for a, b in zip(x.split(chunk), y.split(chunk), strict=True)))
        return torch.cat(parts) / y.numel()

    @torch.no_grad()
    def equivariance_errors(self, x: Tensor, samples: int = 16, *, seed: int = 1,
                            chunk: int = 256) -> Tensor:
        """``(K, n_candidates)`` held-out relative equivariance errors, with the same seeded group
        samples as :func:`objectives.regularisers.equivariance_error` draws for a lone trial."""
        groups = list(self.groups.values())
        generator = torch.Generator().manual_seed(seed)
        sums = torch.zeros(len(self), len(groups), dtype=torch.float64, device=self.device)
        norm = torch.zeros(len(self), dtype=torch.float64, device=self.device)
        chunks = self._member_chunks(chunk * (1 + len(groups) * samples))
        for part in x.split(chunk):
            elements = [g.sample(samples, generator=generator, device=x.device, dtype=x.dtype)[None]
                        for g in groups]  # shared by every member
            for members in chunks:
                size = members.stop - members.start
                fx, residual = equivariance_terms(self.model(members), groups,
                                                  part.expand(size, *part.shape), samples,
                                                  elements=elements)
                sums[members] += residual.double() * part.shape[0]
                norm[members] += fx.double().square().flatten(1).sum(-1)
        return sums / x.shape[0] / (norm / x.shape[0] + EPS)[:, None]

    def metrics(self, train_seconds: float) -> list[dict[str, float] | BaseException]:
        """Each member's trial metrics, as ``run_regression`` returns them (a non-finite one is
        a FloatingPointError for that member alone)."""
        test = self.mse(self.data.x_test, self.data.y_test).cpu()
        val = self.mse(self.data.x_val, self.data.y_val).cpu()
        errors = self.equivariance_errors(self.data.x_test).cpu()
        results: list[dict[str, float] | BaseException] = []
        for k in range(len(self)):
            metrics = {"test_mse": float(test[k]), "val_mse": float(val[k]),
                       **{f"equiv_err.{name}": float(errors[k, j])
                          for j, name in enumerate(self.groups)},
                       "params_m": self.params_m, "train_seconds": train_seconds,
                       **used_strengths(self.settings[k].mode, {
                           g: float(self.weights[k, row]) for g, row in
                           zip(self.member_groups[k], self.own_rows[k], strict=True)})}
            try:
                results.append(finite_metrics(metrics))
            except FloatingPointError as exc:
                results.append(exc)
        return results


class _Stopped(Exception):
    """A lone member inside a cohort call was stopped by a scheduler (its row is PRUNED)."""


def run_regression_cohort(
    data: RegressionData,
    groups: Mapping[str, Group],
    settings: Sequence[TrainSettings | BaseException],
    build_model: Callable[[TrainSettings], nn.Module],
    members: Members,
    *,
    device: torch.device,
    lone: Callable[[int, Callable[..., None]], dict[str, float]],
    alone: Collection[int] = (),
) -> list[dict[str, float] | BaseException]:
    """One result per member: sub-cohorts of one :func:`architecture` trained one after another,
    members that :func:`runs_alone` or are listed in ``alone`` (e.g. the caller's hypergradient
    trials) trained alone, in the call, by ``lone(index, report_to)``.

    ``settings[i]`` may be an exception (a bad config): that member's result is it. An exception
    while training a sub-cohort fails that sub-cohort's members and no others; CUDA out of memory
    and CUDA errors propagate (the worker retries the call in a fresh process).
    """
    results: list[dict[str, float] | BaseException | None] = [None] * len(settings)
    cohorts: dict[tuple[Any, ...], list[int]] = {}
    lone_members: list[int] = []
    for i, s in enumerate(settings):
        if isinstance(s, BaseException):
            results[i] = s
        elif i in alone or runs_alone(s):
            lone_members.append(i)
        else:
            cohorts.setdefault(architecture(s), []).append(i)
    for indices in cohorts.values():
        try:
            part = _train_subcohort(data, groups, [settings[i] for i in indices], build_model,
                                    members, indices, device=device)
        except Exception as exc:
            if is_device_fault(exc):  # retried in a fresh worker: leave the call
                raise
            part = [exc] * len(indices)
        for i, result in zip(indices, part, strict=True):
            results[i] = result
    for i in lone_members:
        results[i] = _run_alone(i, members, lone)
    return results  # type: ignore[return-value]


def _train_subcohort(data, groups, settings, build_model, members: Members,
                     indices: list[int], *, device) -> list[dict[str, float] | BaseException]:
    start = time.perf_counter()
    trainer = CohortTrainer(data, groups, settings, build_model, device=device)
    trainer.freeze([not members.active[i] for i in indices])  # stopped before it started

    def on_epoch(epoch: int, train: Tensor, val: Tensor, reporting: list[bool]) -> list[bool]:
        active = members.active
        for k, i in enumerate(indices):
            if reporting[k] and active[i]:
                members.report_member(i, step=epoch, train_mse=float(train[k]),
                                      val_mse=float(val[k]))
        return [active[i] for i in indices]

    failures = trainer.train(on_epoch)
    # Wall time shared by the members: each is charged its share (what a trial cost here).
    seconds = (time.perf_counter() - start) / len(indices)
    results = trainer.metrics(seconds)
    return [FloatingPointError(failure) if failure else result
            for failure, result in zip(failures, results, strict=True)]


def _run_alone(index: int, members: Members,
               lone: Callable[[int, Callable[..., None]], dict[str, float]]
               ) -> dict[str, float] | BaseException:
    def report_to(step: int, **metrics: float) -> None:
        if not members.active[index]:
            raise _Stopped(f"member {index} stopped by the scheduler")
        members.report_member(index, step=step, **metrics)

    try:
        return lone(index, report_to)
    except _Stopped as exc:
        return exc  # recorded PRUNED by the worker whatever is returned
    except Exception as exc:
        if is_device_fault(exc):  # retried in a fresh worker: leave the call
            raise
        return exc
