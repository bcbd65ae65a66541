"""The asynchronous loop: ask -> dispatch to actors -> collect -> store -> tell.

Each worker (see :mod:`distopt._pool`) runs one call at a time: one trial, a few very short
trials, or a cohort of a batched objective. A finished call frees its worker at once (no
generation barrier): the loop waits for *any* call, writes every trial that is ready in one batch,
tells the strategy, and refills the free workers with configurations asked with the running ones
as ``pending`` (see :mod:`distopt._suggest`: model-based strategies think in the background).

Faults handled here: a worker process that dies mid-trial (or hits CUDA out of memory) is
replaced and its trials retried (see :mod:`distopt._retries`), up to ``max_retries`` deaths
charged to one trial, then recorded FAILED with the cause; a trial past ``trial_timeout`` is
stopped (its actor killed and replaced) and recorded TIMEOUT.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._budget import Budget
from ._curves import CurveFollower
from ._front import FrontTracker
from ._pool import Slot, WorkerPool, cause
from ._problem import Problem, TrialResult
from ._retries import RetryPolicy
from ._suggest import Suggester
from .cohort import is_batched
from .store import StoreWriter
from .strategies import Strategy
from .trial import COMPLETE, FAILED, PRUNED, RESERVED, TIMEOUT, trial_row

#: Seconds the loop waits for a result before checking timeouts, curves and progress.
TICK = 0.25
#: The same while free workers wait for suggestions computed in the background.
SHORT_TICK = 0.02
#: Target duration of one actor call when very short trials are batched into it.
BATCH_SECONDS = 0.005
#: Most trials one actor call carries (plain objectives).
MAX_TRIALS_PER_CALL = 16
#: Members of a cohort when neither the user nor the objective's free memory decides.
DEFAULT_COHORT = 16

Dispatch = tuple[int, dict[str, Any], int]  # (trial_id, config, attempt)


@dataclass
class _Running:
    trial_id: int
    config: dict[str, Any]
    attempt: int
    started: float
    drained: float = field(default=0.0)


@dataclass
class _Call:
    """One ``run`` call on one actor, carrying one or more trials."""

    slot: Slot
    actor: Any
    trials: list[_Running]


@dataclass
class Progress:
    """A snapshot of a running search, passed to the progress callback."""

    finished: int           # trials in the store, those of earlier runs included
    running: int            # started on a worker
    failed: int
    budget: int
    front_size: int
    hypervolume: float | None
    queued: int = 0         # handed to a worker, waiting behind its running call
    stored: int = 0         # in the store when this run began


class Orchestrator:
    """Runs trials of ``objective`` until the store holds ``budget`` (see module docstring)."""

    def __init__(self, problem: Problem, strategy: Strategy, writer: StoreWriter,
                 objective: Callable[..., Any], *, budget: int | Budget, workers: int,
                 resources: Mapping[str, float], max_retries: int = 2,
                 trial_timeout: float | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_trial: Callable[[dict[str, Any]], None] | None = None,
                 scheduler: Any = None, cohort_size: int | None = None,
                 enqueued: Sequence[Mapping[str, Any]] = (), shipped: Any = None):
        self.problem = problem
        self.strategy = strategy
        self.writer = writer
        self.objective = objective
        self.budget = budget if isinstance(budget, Budget) else Budget(budget)
        self.trial_timeout = trial_timeout
        self.on_progress = on_progress
        self.on_trial = on_trial
        #: Early stopping (``distopt.schedulers.Scheduler``): sees every report row, may stop
        #: a running trial; with one, running trials are drained more often.
        self.scheduler = scheduler
        self.curves = CurveFollower(scheduler)
        self.cohort_size = cohort_size
        self.pool = WorkerPool(objective, problem.metric_names, RESERVED, workers=workers,
                               resources=resources, shipped=shipped)
        self.front = FrontTracker(problem, self.budget.total,
                                  ref_point=writer.metadata.get("ref_point"), record=writer.record)
        self.suggester: Suggester | None = None
        self._running: dict[Any, _Call] = {}         # run ref -> the call's trials
        self._trial_seconds: float | None = None     # moving mean of COMPLETE trial durations
        self._requeue: deque[Dispatch] = deque()
        self._enqueued: deque[dict[str, Any]] = deque(dict(c) for c in enqueued)
        self.retries = RetryPolicy(max_retries)
        self._next_id = 0
        #: Trials given an interim point while the strategy was thinking (recorded in the store).
        self.interim: list[int] = []
        self._short_since: float | None = None       # free workers waiting for suggestions
        self._resumed: list[TrialResult] = []        # trials of the store this run resumes
        self.n_failed = 0
        self._progress_at = 0.0

    @property
    def n_finished(self) -> int:
        """Trials in the store, those of earlier runs included."""
        return self.budget.finished

    # -- setup ------------------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Create the worker actors without waiting for them."""
        self.pool.start()

    def stop_workers(self) -> None:
        """Kill the worker actors (idempotent)."""
        self.pool.stop()

    def resume_from(self, results: Iterable[TrialResult], in_flight: Iterable[Dispatch],
                    max_id: int) -> None:
        """Rebuild from a store: tell the strategy every stored trial, re-run the in-flight ones
        (each as its next attempt: the run lost with the driver counts)."""
        results = list(results)
        space = self.problem.space
        learnable = [r for r in results if space.gives_every_param(r.config)]
        if len(learnable) < len(results):
            logging.getLogger("distopt").warning(
                "distopt: %d stored trials lack a parameter of the space (imported from a "
                "define-by-run Optuna study?): the strategy learns from the other %d",
                len(results) - len(learnable), len(learnable))
        self.strategy.tell(learnable)
        self._resumed = learnable
        self.budget.finished = max(self.budget.finished, len(results))
        self.n_failed = sum(r.status not in (COMPLETE, PRUNED) for r in results)
        for result in results:
            self.front.note(result.status, result.metrics)
        self._requeue.extend((t, c, a + 1) for t, c, a in in_flight)
        self._next_id = max_id + 1

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Run trials until the budget is met; stops the workers after."""
        if not self.pool.slots:
            self.start_workers()
        self.suggester = Suggester(
            self.strategy, self.problem, seed=getattr(self.strategy, "seed", 0),
            background=self.strategy.background_ask and len(self.pool.slots) > 1,
            history=self._resumed)
        try:
            while not self.budget.done:
                self._fill()
                self._collect(self._wait())
                self._check_timeouts()
                self.pool.check_alive(self.writer.path, busy=bool(self._running))
                self.curves.drain(self._running.values())
                self._report_progress()
            self._report_progress(force=True)
        finally:
            self.suggester.close()
            if self.interim:
                self.writer.record(interim_trials=sorted(
                    set(self.writer.metadata.get("interim_trials", [])) | set(self.interim)))
            self.stop_workers()

    @property
    def n_running(self) -> int:
        """Trials dispatched and not yet finished."""
        return sum(len(call.trials) for call in self._running.values())

    def _per_call(self, free: int) -> int:
        """How many trials one actor call carries (see :func:`call_size`)."""
        memory = next((s.info.get("free_memory") for s in self.pool.up_slots()), None)
        simple = (self.trial_timeout is not None or self.strategy.queue_depth < 2
                  or self.retries.active)
        return call_size(self.objective, cohort_size=self.cohort_size, free_memory=memory,
                         room=self.budget.room(self.n_running), free_workers=free,
                         trial_seconds=None if simple else self._trial_seconds)

    def _free_slots(self) -> list[Slot]:
        """One entry per call a worker can still take, least loaded workers first."""
        # Queued trials would start late, so a per-trial timeout keeps one call per worker; so
        # do retried trials (a death of their worker is then charged to them alone) and cohorts.
        depth = 1 if (self.trial_timeout is not None or self.retries.active or self._requeue
                      or is_batched(self.objective)) else max(1, self.strategy.queue_depth)
        load: dict[int, int] = {}
        for call in self._running.values():
            load[call.slot.index] = load.get(call.slot.index, 0) + 1
        up = self.pool.dispatchable()
        return [s for level in range(depth) for s in up if load.get(s.index, 0) <= level]

    def _fill(self) -> None:
        free = self._free_slots()
        per_call = self._per_call(len(free))
        count = min(len(free) * per_call, self.budget.room(self.n_running))
        if count <= 0:
            self._short_since = None
            return
        batch: list[Dispatch] = []
        while self._requeue and len(batch) < count:
            batch.append(self._requeue.popleft())
        while self._enqueued and len(batch) < count:  # the user's known configurations first
            batch.append((self._new_id(), self._enqueued.popleft(), 1))
        if len(batch) < count:
            pending = [t.config for c in self._running.values() for t in c.trials]
            pending += [b[1] for b in batch]
            now = time.monotonic()
            waited = 0.0 if self._short_since is None else now - self._short_since
            # With nothing running, the first trials and a lone worker wait for the strategy (a
            # one-worker search stays synchronous); several idle workers get interim points after
            # the same patience as when some still run, or all would wait out each model fit.
            idle = not self._running and not batch and (
                len(free) < 2 or self._trial_seconds is None)
            configs, n_interim = self.suggester.take(
                count - len(batch), pending, idle=idle,
                waited=waited, trial_seconds=self._trial_seconds)
            batch += [(self._new_id(), config, 1) for config in configs]
            self.interim += [t for t, _, _ in batch[len(batch) - n_interim:]] if n_interim else []
            self._short_since = (self._short_since or now) if len(batch) < count else None
        chunks = list(self._chunks(batch, per_call))
        # Lost trials go out in smaller calls, so there may be more calls than free workers.
        for chunk in reversed(chunks[len(free):]):
            self._requeue.extendleft(reversed(chunk))
        chunks = chunks[:len(free)]
        if not chunks:
            return
        self.writer.add_dispatched([{"trial_id": t, "attempt": a, "time": time.time(),
                                     "config": c} for chunk in chunks for t, c, a in chunk])
        started = time.monotonic()
        for slot, chunk in zip(free, chunks, strict=False):
            ref = slot.actor.run.remote(chunk)
            self._running[ref] = _Call(slot, slot.actor, [_Running(t, c, a, started, started)
                                                          for t, c, a in chunk])
        # The workers that free up next find suggestions ready (background strategies).
        self.suggester.prefetch(len(self.pool.slots), [t.config for c in self._running.values()
                                                       for t in c.trials], self._trial_seconds)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _chunks(self, batch: list[Dispatch], per_call: int) -> Iterable[list[Dispatch]]:
        """Split ``batch`` into calls of at most ``per_call`` trials, fewer for lost trials."""
        index = 0
        while index < len(batch):
            size = min([per_call] + [self.retries.limit(t, per_call)
                                     for t, _, _ in batch[index:index + per_call]])
            yield batch[index:index + max(1, size)]
            index += max(1, size)

    def _wait(self) -> list[Any]:
        import ray

        refs = list(self._running) + self.curves.refs() + self.pool.pending_refs()
        if not refs:  # nothing out: the strategy thinks, or the budget is met
            time.sleep(SHORT_TICK)
            return []
        tick = SHORT_TICK if self._short_since is not None else TICK
        ready, rest = ray.wait(refs, num_returns=1, timeout=tick)
        if ready and rest:  # take everything else already done, so it is written in one batch
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def _collect(self, ready: list[Any]) -> None:
        import ray

        rows, curves = [], []
        for ref in ready:
            if self.pool.owns(ref):
                self.pool.started(ref)
                continue
            if self.curves.owns(ref):
                curves += self.curves.collected(ref)
                continue
            call = self._running.pop(ref, None)
            if call is None:  # a call of an actor already handled as lost
                continue
            try:
                results = ray.get(ref)
            except ray.exceptions.RayError as error:
                rows += self._lost(call, error)
                continue
            for result in results:
                curves += result.pop("curves")
                rows.append(result)
        self.curves.schedule(curves, rows, self._running_trials())
        self._finish(rows, curves)

    def _running_trials(self) -> dict[int, _Call]:
        return {t.trial_id: call for call in self._running.values() for t in call.trials}

    def _finish(self, rows: list[dict[str, Any]], curves: list[dict[str, Any]]) -> None:
        # Curves first: when a trial row is durable, its learning curve already is.
        self.writer.add_curves(curves)
        if not rows:
            return
        self.writer.add_trials(rows)
        for row in rows:
            self.retries.ended(row["trial_id"])
        self.budget.finished += len(rows)
        durations = [r["end_time"] - r["start_time"] for r in rows if r["status"] == COMPLETE]
        if durations:
            mean = sum(durations) / len(durations)
            self._trial_seconds = mean if self._trial_seconds is None else \
                0.8 * self._trial_seconds + 0.2 * mean
            # cohort members train at once: each is one of the trials a suggestion waits behind
            at_once = self.n_running + len(rows) if is_batched(self.objective) else 0
            self.strategy.observe_pace(self._trial_seconds, max(len(self.pool.slots), at_once))
        results = [TrialResult(r["trial_id"], r["config"], r["status"], r["metrics"]) for r in rows]
        for result in results:
            self.n_failed += result.status not in (COMPLETE, PRUNED)
            self.front.note(result.status, result.metrics)
        self.suggester.tell(results)
        if self.on_trial is not None:
            for row in rows:
                self.on_trial(row)

    def _lost(self, call: _Call, error: Exception) -> list[dict[str, Any]]:
        """Replace the dead actor; its trials run again or are FAILED (see ``RetryPolicy``)."""
        lost = [call]
        for ref, other in list(self._running.items()):
            if other.actor is call.actor and not _succeeded(ref):
                lost.append(self._running.pop(ref))  # never started, or died with the actor
        if call.slot.actor is call.actor:
            self.pool.replace(call.slot)
        else:  # the worker was replaced already (a timeout): make sure the old actor is gone
            import ray

            ray.kill(call.actor)
        trials = [t for c in lost for t in c.trials]
        deaths = self.retries.lost([t.trial_id for t in trials])
        if deaths is None:
            self._requeue.extend((t.trial_id, t.config, t.attempt + 1) for t in trials)
            return []
        return [self._ended_row(trials[0], call.slot, FAILED,
                                f"worker died {deaths} times; last cause: {cause(error)}")]

    def _ended_row(self, trial: _Running, slot: Slot, status: str, error: str) -> dict[str, Any]:
        return trial_row(trial.trial_id, status, trial.config, error=error,
                         attempts=trial.attempt,
                         start_time=time.time() - (time.monotonic() - trial.started),
                         worker=slot.name)

    def _check_timeouts(self) -> None:
        if self.trial_timeout is None:
            return
        import ray

        now = time.monotonic()
        late = [(ref, call) for ref, call in self._running.items()
                if now - call.trials[0].started > self.trial_timeout]
        rows = []
        for ref, call in late:  # with a timeout every call runs alone on its worker
            self._running.pop(ref)
            if call.slot.actor is call.actor:
                self.pool.replace(call.slot)
            else:
                ray.kill(call.actor)
            rows += [self._ended_row(t, call.slot, TIMEOUT, f"stopped after trial_timeout="
                                                            f"{self.trial_timeout} s")
                     for t in call.trials]
        self.curves.schedule([], rows, {})  # a scheduler forgets a trial only when told it ended
        self._finish(rows, [])

    # -- progress ---------------------------------------------------------------------------------

    def _report_progress(self, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._progress_at < 0.5:
            return
        self._progress_at = now
        running, queued = _running_and_queued(self._running.values(),
                                              is_batched(self.objective))
        front_size, hv = self.front.summary()
        self.on_progress(Progress(self.budget.finished, running, self.n_failed, self.budget.total,
                                  front_size, hv, queued=queued, stored=self.budget.stored))


def call_size(objective: Any, *, cohort_size: int | None, free_memory: int | None, room: int,
              free_workers: int, trial_seconds: float | None) -> int:
    """How many trials one actor call carries.

    A batched objective trains a cohort: ``cohort_size`` members, else what the device's free
    memory holds (``distopt.batched(memory_per_member=...)``), at most an even share of the
    ``room`` left to hand out among the ``free_workers``. A plain objective: one trial, except
    that Ray costs about half a millisecond of driver time per actor call, more than a very
    short trial takes; when trials are measured (``trial_seconds``; None when the strategy
    needs fresh results for each suggestion) to be that short, several share one call, sized to
    take about ``BATCH_SECONDS``.
    """
    if is_batched(objective):
        size = cohort_size or objective.spec.size_for(free_memory, DEFAULT_COHORT)
        return max(1, min(size, -(-room // max(1, free_workers))))
    if trial_seconds is None:
        return 1
    return int(min(MAX_TRIALS_PER_CALL, max(1, BATCH_SECONDS / max(trial_seconds, 1e-6))))


def _running_and_queued(calls: Iterable[_Call], cohorts: bool) -> tuple[int, int]:
    """Trials started on a worker, and trials waiting behind its running call. Calls are in
    dispatch order, so a worker's first call is the one it runs; a cohort runs all its members,
    a batch of short trials one at a time."""
    running = queued = 0
    seen: set[int] = set()
    for call in calls:
        if call.slot.index in seen:
            queued += len(call.trials)
            continue
        seen.add(call.slot.index)
        started = len(call.trials) if cohorts else 1
        running += started
        queued += len(call.trials) - started
    return running, queued


def _succeeded(ref: Any) -> bool:
    """Whether a call has already returned its trials (they are collected as usual)."""
    import ray

    if not ray.wait([ref], timeout=0)[0]:
        return False
    try:
        ray.get(ref)
    except ray.exceptions.RayError:
        return False
    return True
