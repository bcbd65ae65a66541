"""Cohorts: K trials trained together in one process, as one batched computation.

A GPU trial of a small network spends its time launching kernels, not computing; K trials whose
hyperparameters do not change the architecture can share one batched forward and backward
(``torch.func.stack_module_state`` + ``vmap``). An objective opts in with :func:`batched`::

    @distopt.batched(max_size=64)
    def objective(configs: list[dict]) -> list[dict]:
        cohort = distopt.cohort()                  # this call's members, in the order of configs
        ...
        for epoch in range(epochs):
            losses = step()                        # a (K,) tensor: one loss per member
            cohort.report(step=epoch, train_loss=losses)
            keep = cohort.active                   # (K,) bools: False once a member was stopped
        return [{"test_mse": m} for m in mse.tolist()]   # or an Exception for a failed member

Each member stays a full trial: its own ``trial_id``, row, curve rows, status and error. A member
whose result is an exception fails alone; a member stopped by a scheduler is recorded PRUNED with
its last reported metrics while the others go on. A plain (unbatched) objective is unchanged.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._checks import check_int
from ._context import TrialContext, current_cohort, install_cohort, record_row
from ._errors import field_error

Result = Mapping[str, Any] | BaseException


@dataclass(frozen=True)
class BatchSpec:
    """How large a cohort an objective accepts.

    Attributes:
        max_size: most members per call (a ``cohort_size`` above it is refused).
        memory_per_member: bytes of device memory one member needs; with it, an automatic
            cohort size is ``0.8 * free device memory / memory_per_member`` (capped by max_size).
    """

    max_size: int | None = None
    memory_per_member: int | None = None

    def size_for(self, free_bytes: int | None, default: int) -> int:
        """The cohort size for a device with ``free_bytes`` free (None: unknown, e.g. a CPU):
        what the memory holds, capped by ``max_size``; else ``max_size``, else ``default``."""
        if free_bytes and self.memory_per_member:
            size = max(1, int(0.8 * free_bytes // self.memory_per_member))
            return min(size, self.max_size) if self.max_size else size
        return max(1, self.max_size or default)


class BatchedObjective:
    """A cohort objective ``configs -> results`` (see :func:`batched`). Calling it with one
    config runs a cohort of one and returns that member's metrics, so it also works wherever a
    plain objective is expected."""

    def __init__(self, fn: Callable[[list[dict[str, Any]]], Sequence[Result]], spec: BatchSpec):
        self.fn = fn
        self.spec = spec
        # Its import path is the decorated function's, so a study records ``module:name`` and
        # ``distopt resume`` imports this very object again.
        for attribute in ("__module__", "__qualname__", "__name__", "__doc__"):
            setattr(self, attribute, getattr(fn, attribute, None))

    def batch(self, configs: Sequence[Mapping[str, Any]]) -> list[Result]:
        """Run the members ``configs`` together; one result (metrics or exception) per config.

        Outside a worker (a notebook, a unit test) a cohort of local members is installed, whose
        report rows land on ``distopt._context.last_reports``.
        """
        configs = [dict(c) for c in configs]
        if current_cohort() is not None:
            return self._results(self.fn(configs), len(configs))
        install_cohort(Cohort([TrialContext(trial_id=-1 - i) for i in range(len(configs))],
                              local=True))
        try:
            return self._results(self.fn(configs), len(configs))
        finally:
            install_cohort(None)

    def _results(self, returned: Any, n: int) -> list[Result]:
        """``returned`` as a list of ``n`` results, else an error saying what to return (the
        whole call fails: no member's result can be told from another's)."""
        if isinstance(returned, (Mapping, str, bytes)) or not isinstance(returned, Iterable):
            raise TypeError(f"batched objective {self.__name__} returned "
                            f"{type(returned).__name__}; return a list with one dict of metrics "
                            f"(or an exception) per config, in order")
        results = list(returned)
        if len(results) != n:
            raise ValueError(f"batched objective {self.__name__} returned {len(results)} results "
                             f"for {n} configs; return one per config, in order")
        return results

    def __reduce__(self) -> tuple[Any, ...]:
        # By reference when its module gives it by name, as cloudpickle ships a plain function:
        # the decorator took the function's name, so cloudpickle could not find ``fn`` by it and
        # shipped it by value, with every module global it uses (a lock in one was refused).
        if _importable_as(self, self.__module__, self.__qualname__):
            return _import_objective, (self.__module__, self.__qualname__)
        return BatchedObjective, (self.fn, self.spec)

    def __call__(self, config: Mapping[str, Any]) -> Mapping[str, Any]:
        result = self.batch([config])
        if len(result) != 1:
            raise ValueError(f"{self.__name__} returned {len(result)} results for 1 config")
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def __repr__(self) -> str:
        return f"batched({self.__module__}:{self.__qualname__}, {self.spec})"


def _lookup(module: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _importable_as(obj: Any, module: str | None, qualname: str | None) -> bool:
    """Whether ``module:qualname`` names ``obj`` in an imported module (not ``__main__``, whose
    objects a worker cannot import)."""
    if not module or not qualname or module == "__main__" or module not in sys.modules:
        return False
    try:
        return _lookup(module, qualname) is obj
    except AttributeError:
        return False


def _import_objective(module: str, qualname: str) -> BatchedObjective:
    return _lookup(module, qualname)


def batched(fn: Callable[..., Any] | None = None, *, max_size: int | None = None,
            memory_per_member: int | None = None) -> Any:
    """Mark ``fn(configs: list[dict]) -> list[dict | Exception]`` as a cohort objective.

    Use as ``@distopt.batched`` or ``@distopt.batched(max_size=64)``. Inside it,
    :func:`cohort` gives the members' handles for ``report`` and stop requests.
    """
    check_int("batched.max_size", max_size, 1, allow_none=True)
    if memory_per_member is not None and (isinstance(memory_per_member, bool)
                                          or not isinstance(memory_per_member, int)):
        raise field_error("batched.memory_per_member", f"must be a whole number of bytes; got "
                                                       f"{memory_per_member!r}",
                          "e.g. 40 << 20 for 40 MiB")
    check_int("batched.memory_per_member", memory_per_member, 1, allow_none=True)
    spec = BatchSpec(max_size, memory_per_member)
    if fn is None:
        return lambda f: BatchedObjective(f, spec)
    return BatchedObjective(fn, spec)


def is_batched(objective: Any) -> bool:
    """Whether ``objective`` runs cohorts."""
    return isinstance(objective, BatchedObjective)


class Cohort:
    """The members of one batched call, in the order of its configs."""

    def __init__(self, members: list[TrialContext], *, local: bool = False):
        self.members = members
        self.local = local  # outside a worker: rows go to last_reports

    def __len__(self) -> int:
        return len(self.members)

    @property
    def trial_ids(self) -> list[int]:
        """The members' trial ids."""
        return [m.trial_id for m in self.members]

    @property
    def active(self) -> list[bool]:
        """Per member, False once a scheduler has asked it to stop (mask it out of training:
        its row is PRUNED whatever is returned for it)."""
        return [not m.stop_requested for m in self.members]

    def report(self, step: int | None = None, **metrics: Any) -> None:
        """One learning-curve row per active member.

        Each metric is a scalar (the same for every member) or a length-K sequence, NumPy array
        or 1-D tensor (member ``i`` gets element ``i``; NaN allowed). A tensor is copied to the
        host once per call, not once per member.
        """
        columns = {name: _column(name, value, len(self)) for name, value in metrics.items()}
        for index, member in enumerate(self.members):
            if member.stop_requested:
                continue
            record_row(member, step, {name: col[index] for name, col in columns.items()},
                       local=self.local)

    def report_member(self, index: int, step: int | None = None, **metrics: Any) -> None:
        """A learning-curve row for member ``index`` alone (nothing once it was stopped)."""
        if self.members[index].stop_requested:
            return
        record_row(self.members[index], step, metrics, local=self.local)


def cohort() -> Cohort:
    """The cohort the running batched objective trains (see :func:`batched`)."""
    running = current_cohort()
    if running is None:
        from ._errors import ConfigError

        raise ConfigError("distopt.cohort() is only available inside a @distopt.batched "
                          "objective; decorate the objective, or use distopt.report")
    return running


def _column(name: str, value: Any, size: int) -> list[Any]:
    if hasattr(value, "detach"):  # a torch tensor: one device-to-host copy for every member
        value = value.detach().cpu().tolist()
    elif hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != size:
            from ._errors import ConfigError

            raise ConfigError(f"cohort.report: metric {name!r} has {len(value)} values for "
                              f"{size} members; give one per member or a scalar")
        return list(value)
    return [value] * size
