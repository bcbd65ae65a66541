"""What an objective sees of the trial it runs in: ``report`` and ``device``.

The worker actor installs a :class:`TrialContext` before calling the objective and removes it
after. ``report`` only appends to an in-memory list under a lock (microseconds); the worker ships
the rows to the driver, which alone writes the store. Outside a trial (an objective called directly
in a notebook or a unit test) ``report`` validates its input and keeps the rows on
:data:`last_reports`, so the same objective code runs everywhere.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigError
from .trial import CURVE_COLUMNS

#: Rows reported outside any trial, newest last (kept for inspection and tests).
last_reports: list[dict[str, Any]] = []


class TrialPruned(Exception):
    """Raised by ``distopt.report`` when a scheduler has stopped the trial early.

    Let it propagate out of the objective (do not catch it with a bare ``except Exception``): the
    worker records the trial ``PRUNED`` with the metrics of its last report.
    """


@dataclass
class TrialContext:
    """Per-trial state shared by the objective (writer) and the worker (reader)."""

    trial_id: int
    device: str = "cpu"
    attempt: int = 1
    rows: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    n_reported: int = 0
    stop_requested: bool = False
    last_row: dict[str, Any] | None = None  # the newest report row
    #: The latest reported value of every metric (across rows): the metrics of a PRUNED trial.
    latest_metrics: dict[str, float] = field(default_factory=dict)

    def take_rows(self) -> list[dict[str, Any]]:
        """Hand over the rows reported since the last call, leaving the buffer empty."""
        with self.lock:
            rows, self.rows = self.rows, []
        return rows


_current: TrialContext | None = None
#: The cohort a batched objective trains in this process (``distopt.cohort``), else None.
_cohort: Any = None
_warned_outside = False  # report() outside a trial has said so once in this process


def _set_context(context: TrialContext | None) -> None:
    global _current
    _current = context


def install_context(context: TrialContext | None) -> None:
    """Make ``context`` the trial running in this process (None: no trial)."""
    _set_context(context)


def current_context() -> TrialContext | None:
    """The trial running in this process, or None outside a trial."""
    return _current


def install_cohort(cohort: Any) -> None:
    """Make ``cohort`` (a :class:`distopt.cohort.Cohort`) the one running here (None: none)."""
    global _cohort
    _cohort = cohort


def current_cohort() -> Any:
    """The cohort running in this process, or None."""
    return _cohort


def running_contexts() -> list[TrialContext]:
    """Every trial running in this process: the lone trial, or the cohort's members."""
    if _cohort is not None and not _cohort.local:
        return list(_cohort.members)
    return [] if _current is None else [_current]


def _as_number(name: str, value: Any) -> float:
    try:
        if isinstance(value, (str, bytes)):  # float("0.3") would accept text
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"report: metric {name!r} must be a number; got {type(value).__name__} {value!r}"
        ) from None
    return number


def report(step: int | None = None, **metrics: Any) -> None:
    """Record one row of intermediate metrics (a learning-curve point) for the current trial.

    Args:
        step: the epoch or iteration, an int >= 0; by default one more than the previous report.
            A step reported again adds another row (an Optuna export, one value per step,
            keeps the last).
        **metrics: metric name to number (Python, NumPy or 0-d torch values). NaN is allowed here
            (a diverging curve is information); only the objective's return value must be finite.

    The row is buffered in the worker and streamed to the driver's store within about a second.

    Raises:
        TrialPruned: after the row is recorded, when a scheduler has stopped this trial.
    """
    if not metrics:
        raise ConfigError("report: give at least one metric, e.g. report(step=epoch, loss=0.3)")
    context = _current
    if context is None and _cohort is not None:
        if len(_cohort) != 1:
            raise ConfigError("report: inside a batched objective of several members, use "
                              "distopt.cohort().report(step=..., metric=<one value per member>)")
        _cohort.report(step, **metrics)
        return
    record_row(context, step, metrics)


def record_row(context: TrialContext | None, step: int | None, metrics: dict[str, Any], *,
               local: bool = False) -> None:
    """Validate one report row and append it to ``context`` (``local`` or no context: to
    :data:`last_reports`); raise TrialPruned when a lone trial was asked to stop."""
    if local:
        context, member = None, context
    else:
        member = None
    if step is None:
        holder = context if context is not None else member
        previous = holder.last_row if holder is not None else (
            last_reports[-1] if last_reports else None)
        step = previous["step"] + 1 if previous else 0
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        if hasattr(step, "__index__") and not isinstance(step, bool) and int(step) >= 0:
            step = int(step)
        else:
            raise ConfigError(f"report: step must be an int >= 0; got {step!r}")
    row: dict[str, Any] = {"step": step, "time": time.time()}
    for name, value in metrics.items():
        if name in CURVE_COLUMNS:
            raise ConfigError(f"report: {name!r} is a reserved column; rename the metric")
        row[name] = _as_number(name, value)
    if context is None:
        if member is not None:
            member.last_row = row
        else:
            _warn_outside_once()
        last_reports.append(row)
        return
    with context.lock:
        context.rows.append(row)
        context.n_reported += 1
        context.last_row = row
        context.latest_metrics.update({k: v for k, v in row.items() if k not in ("step", "time")})
    if context.stop_requested and _cohort is None:  # a cohort masks its member instead
        raise TrialPruned(f"trial {context.trial_id} stopped early by the scheduler at step {step}")


def _warn_outside_once() -> None:
    """Say once per process that rows reported outside a trial are not stored (once: an
    objective tried by hand in a loop would otherwise repeat it every call)."""
    global _warned_outside
    if not _warned_outside:
        _warned_outside = True
        import warnings

        warnings.warn("distopt.report called outside a trial: rows are kept on "
                      "distopt._context.last_reports, not stored", UserWarning, stacklevel=4)


def should_stop() -> bool:
    """True when a scheduler has asked the current trial to stop (False outside a trial).

    ``distopt.report`` raises :class:`TrialPruned` by itself; this is for objectives that want to
    save a checkpoint or clean up first.
    """
    context = _current
    return context is not None and context.stop_requested


def device() -> Any:
    """The ``torch.device`` an objective should use: its GPU when the trial was given one, else CPU.

    Inside a trial Ray has already restricted ``CUDA_VISIBLE_DEVICES`` to the trial's GPU, so this
    is ``cuda`` (index 0 of what the process sees). Outside a trial: CUDA if available, else CPU.
    """
    import torch  # lazy: `distopt show` must start without importing torch

    context = _current
    if context is None and _cohort is not None and not _cohort.local and len(_cohort):
        context = _cohort.members[0]
    if context is not None:
        return torch.device(context.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


