"""The strategy interface: ``ask(n, pending)`` and ``tell(results)``.

A strategy is a plain, seeded, picklable object that knows nothing about Ray or the store. The
orchestrator binds it to a :class:`~distopt.Problem` once, replays every stored trial through
``tell`` when a study resumes (state is rebuilt from data, never unpickled), then alternates
``ask`` and ``tell`` as workers free up.

The base class validates; subclasses implement ``_ask`` and ``_tell``, and may refuse a problem
they cannot search in ``check`` (a study calls it when it is made, before anything is written).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from .._errors import DistoptError, field_error
from .._plugin import ProblemBound
from .._problem import TrialResult

#: The largest seed every library a strategy seeds (numpy, scipy, torch, Optuna) takes.
MAX_SEED = 2**32 - 1


class Strategy(ProblemBound, ABC):
    """Proposes configurations and learns from finished trials.

    Args:
        seed: seed of every random choice the strategy makes; the same seed, problem and
            sequence of ``tell`` calls give the same suggestions.
    """

    #: Name used by ``strategy="..."`` in the API, the study YAML and ``--strategy``.
    name: str = ""
    #: Trials each worker may hold at once (the running one plus queued ones). Model-based
    #: strategies keep 1 so that every suggestion sees the newest results; strategies whose
    #: suggestions do not depend on recent results raise it so workers never wait for the driver.
    queue_depth: int = 1
    #: Whether suggestions are slow enough (model fits) to be computed in a background thread
    #: while free workers get interim points (see ``distopt._suggest``); only with 2+ workers.
    background_ask: bool = False
    #: Whether a strategy rebuilt by replaying the same results through ``tell`` asks exactly
    #: what the original asks next (checked by ``distopt.testing``).
    replays_exactly: bool = False

    def __new__(cls, *args: Any, **options: Any) -> Strategy:
        # Keep the options exactly as given, so that ``to_dict`` states what ran and a resumed
        # study rebuilds it (subclasses need not repeat each option).
        self = super().__new__(cls)
        self._given_options = {k: v for k, v in options.items() if k != "seed"}
        return self

    def __init__(self, *, seed: int | None = 0):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not 0 <= seed <= MAX_SEED):
            # the range numpy, scipy's Sobol and Optuna's samplers take (they raise later)
            raise field_error("seed", f"must be an int in [0, 2**32 - 1] or None; got {seed!r}")
        self.seed = seed

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "options": {...}}``: what ``make_strategy`` needs to rebuild this
        strategy (the seed is the study's). The name is the registered one, else the class's
        import path ``module:Class``."""
        from . import registered_name

        return {"name": registered_name(type(self)),
                "options": dict(getattr(self, "_given_options", {}))}

    def ask(self, n: int, pending: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
        """Return ``n`` new configurations.

        Args:
            n: how many configurations to propose, >= 1.
            pending: configurations already running, so that model-based strategies can avoid
                proposing them again (they are treated as fantasised observations).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise field_error("ask.n", f"must be an int >= 1; got {n!r}")
        configs = self._ask(n, list(pending))
        if len(configs) != n:
            raise DistoptError(f"{type(self).__name__}._ask returned {len(configs)} configs; "
                               f"expected {n}")
        return configs

    def offer_ref_point(self, ref_point: dict[str, float]) -> None:  # noqa: B027 - optional hook
        """The study's hypervolume reference point (metric -> value, own units and direction),
        for strategies that steer by hypervolume; ignored by the others."""

    def observe_pace(self, trial_seconds: float, concurrency: int) -> None:  # noqa: B027
        """How long trials take (a moving mean of completed ones, seconds) and how many run at
        once (workers, or workers x cohort members), as the orchestrator measures it: a result
        arrives every ``trial_seconds / concurrency`` seconds. For strategies that trade the
        cost of a suggestion for its quality; ignored by the others. Called from the loop's
        thread, also while the strategy computes in the background: store it, read it at the
        next ``ask``."""

    def tell(self, results: Sequence[TrialResult]) -> None:
        """Learn from finished trials (any status; failed ones carry no usable metrics)."""
        if results:
            self._tell(list(results))

    @abstractmethod
    def _ask(self, n: int, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Propose ``n`` configurations given the running ones."""

    @abstractmethod
    def _tell(self, results: list[TrialResult]) -> None:
        """Update the strategy's state with finished trials."""
