"""Suggestions for free workers without making them wait for the strategy.

A model-based strategy (``bayes``) can take seconds to fit and optimise; with cheap trials the
workers would sit idle while it thinks. In background mode one thread owns the strategy (every
``ask`` and ``tell`` runs there, so strategies need no locks) and keeps a buffer of suggestions;
the loop that collects results and dispatches trials only takes from that buffer. The buffer is
kept as deep as the workers will drain while the strategy computes its next batch (a worker's
worth when a suggestion is quicker than a trial, up to ``MAX_DEPTH`` workers' worth when it is
slower): a model-based point computed a little earlier beats a random one. When the buffer
is empty, a free worker waits at most ``patience`` seconds (a twentieth of a trial), then gets an
*interim* suggestion: a scrambled Sobol point that avoids every pending configuration. With
``idle`` (the caller's say: nothing runs and waiting is better than guessing, e.g. one worker) the
loop waits for the strategy, so a one-worker search behaves exactly as a synchronous one.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ._problem import Problem, TrialResult
from .strategies import RandomStrategy, Strategy

#: Shortest wait for the strategy before a free worker gets an interim suggestion.
MIN_PATIENCE = 0.05
#: Fraction of the mean trial duration a free worker waits for the strategy.
PATIENCE_FRACTION = 0.05
#: Most workers' worth of suggestions kept ready (see :meth:`Suggester.prefetch`).
MAX_DEPTH = 4
#: The interpreter's thread switch interval (seconds) while a strategy thinks in the background.
SWITCH_INTERVAL = 0.0005


class Suggester:
    """``take`` configurations for free workers; ``tell`` finished trials (see module doc).

    Args:
        strategy: the bound strategy; in background mode only the thread calls it.
        problem: for interim suggestions.
        background: run the strategy in a thread (else every call runs inline).
        seed: seed of the interim Sobol sequence.
        history: trials finished before (a resumed study's), which interim points skip.
    """

    def __init__(self, strategy: Strategy, problem: Problem, *, background: bool,
                 seed: int | None = 0, history: Sequence[TrialResult] = ()):
        self.strategy = strategy
        self.background = background
        self.n_interim = 0
        self._interim = RandomStrategy(seed=None if seed is None else seed + 7919)
        self._interim.bind(problem)
        # Told every trial (a resumed study's too), the interim sequence goes on past the points
        # it handed out before instead of repeating them. Only background mode hands them out.
        if background:
            self._interim.tell(list(history))
        self._cond = threading.Condition()
        self._ready: deque[dict[str, Any]] = deque()
        self._tells: list[TrialResult] = []
        self._demand = 0
        self._pending: list[dict[str, Any]] = []
        self._busy = False
        self._ask_seconds: float | None = None  # wall time of the strategy's last ask
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._switch = sys.getswitchinterval()
        if background:
            # The strategy's Python (GPyTorch, SciPy's optimiser callbacks) holds the GIL for
            # long stretches; a short switch interval hands it back to the dispatching loop
            # sooner, so a free worker is not kept waiting by the model it is not waiting for.
            sys.setswitchinterval(SWITCH_INTERVAL)
            self._thread = threading.Thread(target=self._serve, name="distopt-suggest",
                                            daemon=True)
            self._thread.start()

    # -- the loop's side --------------------------------------------------------------------------

    def tell(self, results: Sequence[TrialResult]) -> None:
        """Hand finished trials to the strategy (at once, or on its thread)."""
        if not results:
            return
        if not self.background:
            self.strategy.tell(results)
            return
        self._interim.tell(list(results))
        with self._cond:
            self._tells.extend(results)
            self._cond.notify_all()

    def prefetch(self, n: int, pending: Sequence[dict[str, Any]],
                 trial_seconds: float | None = None) -> None:
        """Keep suggestions ready ahead of the ``n`` workers that will free up, so that a free
        worker rarely waits (background mode; the strategy is asked only when it is idle).

        ``n`` when a suggestion takes less than a trial; else as many as ``n`` workers finish
        while the strategy computes a batch, ``n * ask_seconds / trial_seconds`` (at most
        ``MAX_DEPTH * n``).
        """
        if not self.background:
            return
        with self._cond:
            n = self.depth(n, trial_seconds)
            if not self._busy and not self._demand and len(self._ready) < n:
                self._want(n - len(self._ready), list(pending) + list(self._ready))

    def take(self, n: int, pending: Sequence[dict[str, Any]], *, idle: bool,
             waited: float, trial_seconds: float | None) -> tuple[list[dict[str, Any]], int]:
        """Up to ``n`` configurations for free workers.

        Args:
            pending: configurations running or queued (the strategy avoids them).
            idle: wait for the strategy rather than guess (nothing runs).
            waited: seconds free workers have already waited for suggestions.
            trial_seconds: mean duration of a trial, if measured.

        Returns:
            The configurations, the strategy's first, and how many at the end are interim.
        """
        if not self.background:
            return self.strategy.ask(n, list(pending)), 0
        with self._cond:
            self._raise()
            out = self._pop(n)
            if len(out) < n:
                self._want(n - len(out), list(pending) + out)
                if idle and not out:
                    while not self._ready and self._error is None:
                        self._want(n, list(pending))  # again, if the thread was busy telling
                        self._cond.wait()
                    self._raise()
                    out = self._pop(n)
            extra: list[dict[str, Any]] = []
            if len(out) < n and not idle and waited >= self.patience(trial_seconds):
                extra = self._interim.ask(n - len(out), list(pending) + out + list(self._ready))
                self.n_interim += len(extra)
        return out + extra, len(extra)

    @staticmethod
    def patience(trial_seconds: float | None) -> float:
        """How long a free worker waits for the strategy while others run."""
        if trial_seconds is None:
            return MIN_PATIENCE
        return max(MIN_PATIENCE, PATIENCE_FRACTION * trial_seconds)

    def depth(self, n: int, trial_seconds: float | None) -> int:
        """How many suggestions to keep ready for ``n`` workers (see :meth:`prefetch`)."""
        if not trial_seconds or self._ask_seconds is None:
            return n
        return math.ceil(n * min(MAX_DEPTH, max(1.0, self._ask_seconds / trial_seconds)))

    @property
    def thinking(self) -> bool:
        """Whether the strategy is computing suggestions that are not out yet."""
        with self._cond:
            return self._busy or self._demand > 0

    def close(self) -> None:
        """Stop the thread (after the call it is in, if any)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
            sys.setswitchinterval(self._switch)

    def _pop(self, n: int) -> list[dict[str, Any]]:
        return [self._ready.popleft() for _ in range(min(n, len(self._ready)))]

    def _want(self, n: int, pending: list[dict[str, Any]]) -> None:
        if not self._busy:
            self._demand, self._pending = n, pending
            self._cond.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- the strategy's thread --------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._tells or self._demand):
                    self._cond.wait()
                if self._closed:
                    return
                tells, self._tells = self._tells, []
                demand, pending, self._demand = self._demand, self._pending, 0
                self._busy = True
            try:
                if tells:
                    self.strategy.tell(tells)
                start = time.monotonic()
                fresh = self.strategy.ask(demand, pending) if demand else None
                if demand:
                    self._ask_seconds = time.monotonic() - start
            except BaseException as error:  # raised in the loop's thread by the next take
                with self._cond:
                    self._error, self._busy = error, False
                    self._cond.notify_all()
                continue
            with self._cond:
                if fresh is not None:
                    # The new batch saw more results than whatever is still buffered: it goes
                    # first; the oldest buffered ones beyond a worker's worth are dropped.
                    self._ready = deque((fresh + list(self._ready))[:max(len(fresh), 64)])
                self._busy = False
                self._cond.notify_all()
