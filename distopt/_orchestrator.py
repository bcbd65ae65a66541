"""The asynchronous loop: ask -> dispatch to actors -> collect -> store -> tell.

One worker slot holds one Ray actor and runs one trial at a time. A finished trial frees its slot
at once (no generation barrier): the loop waits for *any* trial, writes every trial that is ready
in one batch, tells the strategy, and refills the free slots with configurations asked with the
running ones as ``pending``.

Faults handled here: a worker process that dies mid-trial (or hits CUDA out of memory) is
replaced and its trial retried up to ``max_retries`` times, then recorded FAILED with the cause;
a trial past ``trial_timeout`` is stopped (its actor killed and replaced) and recorded TIMEOUT.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import DistoptError
from ._problem import Problem, TrialResult
from ._worker import TrialWorker
from .store import StoreWriter
from .strategies import Strategy
from .trial import COMPLETE, FAILED, PRUNED, RESERVED, TIMEOUT, trial_row

#: Seconds the loop waits for a result before checking timeouts, curves and progress.
TICK = 0.25
#: Seconds between two collections of report rows from a running trial.
DRAIN_INTERVAL = 1.0
#: The actor concurrency group of ``drain`` and ``stop``, which run beside ``run``.
CONTROL = "control"
#: Target duration of one actor call when very short trials are batched into it.
BATCH_SECONDS = 0.005
#: Most trials one actor call carries.
MAX_TRIALS_PER_CALL = 16
#: Seconds to wait for the worker actors to start before blaming the resources asked for.
START_TIMEOUT = 180.0


@dataclass
class _Running:
    trial_id: int
    config: dict[str, Any]
    attempt: int
    slot: int
    started: float
    drained: float = field(default=0.0)


@dataclass
class _Call:
    """One ``run`` call on one actor, carrying one or more trials."""

    slot: int
    actor: Any
    trials: list[_Running]


@dataclass
class Progress:
    """A snapshot of a running search, passed to the progress callback."""

    finished: int
    running: int
    failed: int
    budget: int
    front_size: int
    hypervolume: float | None


class Orchestrator:
    """Runs ``budget`` trials of ``objective`` on ``workers`` Ray actors (see module docstring)."""

    def __init__(self, problem: Problem, strategy: Strategy, writer: StoreWriter,
                 objective: Callable[[dict[str, Any]], Any], *, budget: int, workers: int,
                 resources: Mapping[str, float], max_retries: int = 2,
                 trial_timeout: float | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 scheduler: Any = None):
        self.problem = problem
        self.strategy = strategy
        self.writer = writer
        self.objective = objective
        self.budget = budget
        self.n_workers = workers
        self.resources = dict(resources)
        self.max_retries = max_retries
        self.trial_timeout = trial_timeout
        self.on_progress = on_progress
        #: Early stopping (``distopt.schedulers.Scheduler``): sees every report row, may stop
        #: a running trial; with one, running trials are drained more often.
        self.scheduler = scheduler
        self._drain_interval = DRAIN_INTERVAL if scheduler is None else min(
            DRAIN_INTERVAL, scheduler.drain_interval)
        self._stop_sent: set[int] = set()
        self._slots: list[Any] = []
        self._running: dict[Any, _Call] = {}         # run ref -> the call's trials
        self._draining: dict[Any, int] = {}          # drain ref -> slot
        self._starting: dict[Any, int] = {}          # ready ref -> slot of a replacement actor
        self._starting_since: dict[int, float] = {}  # slot -> when it lost its started actor
        self._start_failures: dict[int, int] = {}    # slot -> replacements that did not start
        self._trial_seconds: float | None = None     # moving mean of COMPLETE trial durations
        self._requeue: deque[tuple[int, dict[str, Any], int]] = deque()
        self._solo: set[int] = set()                 # trials to run alone (see _worker_lost)
        self._charged: dict[int, int] = {}           # trial id -> worker deaths charged to it
        self._next_id = 0
        self.n_finished = 0
        self.n_failed = 0
        self._front_points: list[list[float]] = []   # feasible points, pruned to the front
        self._front_pruned = 0                        # its length after the last pruning
        self._initial_points: list[list[float]] = []  # feasible points until the ref is fixed
        self._progress_at = 0.0

    # -- setup ------------------------------------------------------------------------------------

    def resume_from(self, results: Iterable[TrialResult],
                    in_flight: Iterable[tuple[int, dict, int]], max_id: int) -> None:
        """Rebuild from a store: tell the strategy every stored trial, re-run the in-flight ones."""
        results = list(results)
        self.strategy.tell(results)
        self.n_finished = len(results)
        self.n_failed = sum(r.status not in (COMPLETE, PRUNED) for r in results)
        for result in results:
            self._note_front(result.status, result.metrics)
        for trial_id, config, attempt in in_flight:
            self._requeue.append((trial_id, config, attempt))
        self._next_id = max_id + 1

    def _actor_options(self) -> dict[str, Any]:
        custom = {k: v for k, v in self.resources.items() if k not in ("cpu", "gpu")}
        options: dict[str, Any] = {
            "num_cpus": self.resources.get("cpu", 1),
            "num_gpus": self.resources.get("gpu", 0),
            # ``run`` calls go one at a time (a queued trial waits for the running one, and the
            # trial context is per process); ``drain`` and ``stop`` use the ``control`` group.
            "max_concurrency": 1,
            "max_restarts": 0,     # the orchestrator replaces dead actors itself, with a fresh slot
            "scheduling_strategy": "SPREAD",
        }
        if custom:
            options["resources"] = custom
        return options

    def _spawn(self, slot: int) -> Any:
        import ray

        actor_class = ray.remote(concurrency_groups={CONTROL: 2})(TrialWorker)
        return actor_class.options(**self._actor_options()).remote(
            self._objective_ref, self.problem.metric_names, RESERVED, f"worker-{slot}")

    def _replace(self, slot: int) -> None:
        """Put a new actor in ``slot``; it gets trials once it has started (see _free_slots)."""
        actor = self._spawn(slot)
        self._slots[slot] = actor
        self._starting[actor.ready.remote()] = slot
        self._starting_since.setdefault(slot, time.monotonic())

    def start_workers(self) -> None:
        """Create the worker actors without waiting for them (they take ~0.5 s to start)."""
        import ray

        self._objective_ref = ray.put(self.objective)  # shipped once, not once per actor
        self._slots = [self._spawn(slot) for slot in range(self.n_workers)]
        self._ready_refs = [actor.ready.remote() for actor in self._slots]

    def _await_workers(self) -> None:
        import ray

        pending = self._ready_refs
        ready, not_ready = ray.wait(pending, num_returns=len(pending), timeout=START_TIMEOUT)
        if not_ready:
            raise DistoptError(
                f"{len(not_ready)} of {self.n_workers} workers did not start within "
                f"{START_TIMEOUT:.0f} s; the cluster has {ray.available_resources()} free and each "
                f"worker asks {self.resources}: lower workers or resources_per_trial")
        try:
            ray.get(ready)
        except ray.exceptions.RayError as error:
            raise DistoptError(
                f"workers could not load the objective: {_cause(error)}; the objective's module "
                f"must be importable on every Ray node (install it there or use a runtime_env)"
            ) from None

    def stop_workers(self) -> None:
        """Kill the worker actors (idempotent)."""
        import ray

        for actor in self._slots:
            if actor is not None:
                ray.kill(actor)
        self._slots = []

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Run trials until ``budget`` have finished (any status); stops the workers after."""
        if not self._slots:
            self.start_workers()
        try:
            self._await_workers()
            while self.n_finished < self.budget:
                self._fill()
                self._collect(self._wait())
                self._check_timeouts()
                self._check_stalled_starts()
                self._drain_long_trials()
                self._report_progress()
            self._report_progress(force=True)
        finally:
            self.stop_workers()

    def _free_slots(self) -> list[int]:
        """One entry per call a slot can still take, least loaded slots first."""
        # Queued trials would start late, so a per-trial timeout keeps one trial per worker; so
        # do retried trials and those that must run solo (see ``_worker_lost``): a death of
        # their worker is then charged to them alone.
        depth = 1 if self.trial_timeout is not None or self._solo or self._requeue else max(
            1, self.strategy.queue_depth)
        load = [0] * len(self._slots)
        for call in self._running.values():
            load[call.slot] += 1
        for slot in self._starting.values():  # a replacement takes trials once it is up, so
            load[slot] = depth                 # that start-up never counts toward a timeout
        return [s for level in range(depth) for s in range(len(self._slots)) if load[s] <= level]

    def _trials_per_call(self) -> int:
        """How many trials one actor call carries.

        Ray costs about half a millisecond of driver time per actor call, more than a very short
        trial takes. When trials are measured to be that short and the strategy does not need
        fresh results for each suggestion, several trials share one call, sized to take about
        ``BATCH_SECONDS``. Trials of a second or more always go one per call.
        """
        if self.trial_timeout is not None or self.strategy.queue_depth < 2 or \
                self._trial_seconds is None or self._solo:
            return 1
        return int(min(MAX_TRIALS_PER_CALL, max(1, BATCH_SECONDS / max(self._trial_seconds, 1e-6))))

    @property
    def n_running(self) -> int:
        """Trials dispatched and not yet finished."""
        return sum(len(call.trials) for call in self._running.values())

    def _fill(self) -> None:
        free = self._free_slots()
        room = self.budget - self.n_finished - self.n_running
        per_call = self._trials_per_call()
        count = min(len(free) * per_call, room)
        if count <= 0:
            return
        batch = []
        while self._requeue and len(batch) < count:
            batch.append(self._requeue.popleft())
        if len(batch) < count:
            pending = [t.config for c in self._running.values() for t in c.trials]
            pending += [b[1] for b in batch]
            for config in self.strategy.ask(count - len(batch), pending):
                batch.append((self._next_id, config, 1))
                self._next_id += 1
        now = time.time()
        self.writer.add_dispatched([{"trial_id": t, "attempt": a, "time": now, "config": c}
                                    for t, c, a in batch])
        started = time.monotonic()
        for index, slot in enumerate(free):
            chunk = batch[index * per_call:(index + 1) * per_call]
            if not chunk:
                break
            actor = self._slots[slot]
            ref = actor.run.remote(chunk)
            self._running[ref] = _Call(slot, actor, [_Running(t, c, a, slot, started, started)
                                                     for t, c, a in chunk])

    def _wait(self) -> list[Any]:
        import ray

        refs = list(self._running) + list(self._draining) + list(self._starting)
        if not refs:
            return []
        ready, rest = ray.wait(refs, num_returns=1, timeout=TICK)
        if ready and rest:  # take everything else already done, so it is written in one batch
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def _collect(self, ready: list[Any]) -> None:
        import ray

        rows, curves = [], []
        for ref in ready:
            if ref in self._starting:
                slot = self._starting.pop(ref)
                try:
                    ray.get(ref)
                    self._start_failures.pop(slot, None)
                    self._starting_since.pop(slot, None)
                except ray.exceptions.RayError as error:  # e.g. its node went away: once more
                    self._start_failures[slot] = self._start_failures.get(slot, 0) + 1
                    if self._start_failures[slot] > 2:
                        raise DistoptError(f"worker-{slot} could not be restarted 3 times: "
                                           f"{_cause(error)}") from None
                    self._replace(slot)
                continue
            if ref in self._draining:
                self._draining.pop(ref)
                try:
                    curves += ray.get(ref)
                except ray.exceptions.RayError:
                    pass  # the run call of the same actor reports the failure
                continue
            call = self._running.pop(ref, None)
            if call is None:  # a call of an actor already handled as lost
                continue
            try:
                results = ray.get(ref)
            except ray.exceptions.RayError as error:
                rows += self._worker_lost(call, error)
                continue
            for result in results:
                curves += result.pop("curves")
                rows.append(result)
        if self.scheduler is not None:
            self._schedule(curves, rows)
        self._finish(rows, curves)

    def _schedule(self, curves: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
        """Show new report rows to the scheduler; ask the workers of trials it stops to stop."""
        running = {t.trial_id: call for call in self._running.values() for t in call.trials}
        for row in curves:
            trial_id = row["trial_id"]
            metrics = {k: v for k, v in row.items() if k not in ("trial_id", "step", "time")}
            stop = self.scheduler.on_report(trial_id, row["step"], metrics)
            if stop and trial_id in running and trial_id not in self._stop_sent:
                self._stop_sent.add(trial_id)
                running[trial_id].actor.stop.options(concurrency_group=CONTROL).remote(trial_id)
        for row in rows:
            self.scheduler.on_trial_end(row["trial_id"], row["status"])
            self._stop_sent.discard(row["trial_id"])

    def _finish(self, rows: list[dict[str, Any]], curves: list[dict[str, Any]]) -> None:
        # Curves first: when a trial row is durable, its learning curve already is.
        self.writer.add_curves(curves)
        if not rows:
            return
        self.writer.add_trials(rows)
        for row in rows:
            self._solo.discard(row["trial_id"])
            self._charged.pop(row["trial_id"], None)
        results = [TrialResult(r["trial_id"], r["config"], r["status"], r["metrics"]) for r in rows]
        self.n_finished += len(rows)
        durations = [r["end_time"] - r["start_time"] for r in rows if r["status"] == COMPLETE]
        if durations:
            mean = sum(durations) / len(durations)
            self._trial_seconds = mean if self._trial_seconds is None else \
                0.8 * self._trial_seconds + 0.2 * mean
        for result in results:
            self.n_failed += result.status not in (COMPLETE, PRUNED)
            self._note_front(result.status, result.metrics)
        self.strategy.tell(results)

    def _worker_lost(self, call: _Call, error: Exception) -> list[dict[str, Any]]:
        """Replace the dead actor; retry its trials, or return FAILED rows past max_retries.

        Every lost trial is handed out again as its next ``attempt``. Only a death that can be
        pinned on one trial is *charged* to it (counts toward ``max_retries``): when the actor
        held one trial. When it held several (a batched call, or calls queued behind the running
        one) the culprit is unknown, so none is charged and they all run *solo* (one trial per
        actor, nothing queued) until they end: their next death is charged. So a trial that
        kills its worker cannot make its neighbours FAILED.
        """
        import ray

        ray.kill(call.actor)  # a call that raised (CUDA out of memory) left the actor alive
        lost = [call]
        for ref, other in list(self._running.items()):
            if other.actor is call.actor and not _succeeded(ref):
                lost.append(self._running.pop(ref))  # never started, or died with the actor
        if self._slots[call.slot] is call.actor:
            self._replace(call.slot)
        trials = [t for c in lost for t in c.trials]
        if len(trials) > 1:
            self._solo.update(t.trial_id for t in trials)
            self._requeue.extend((t.trial_id, t.config, t.attempt + 1) for t in trials)
            return []
        trial = trials[0]
        deaths = self._charged[trial.trial_id] = self._charged.get(trial.trial_id, 0) + 1
        if deaths <= self.max_retries:
            self._requeue.append((trial.trial_id, trial.config, trial.attempt + 1))
            return []
        return [self._ended_row(trial, FAILED, f"worker died {deaths} times; last cause: "
                                               f"{_cause(error)}")]

    def _ended_row(self, trial: _Running, status: str, error: str) -> dict[str, Any]:
        return trial_row(trial.trial_id, status, trial.config, error=error,
                         attempts=trial.attempt,
                         start_time=time.time() - (time.monotonic() - trial.started),
                         worker=f"worker-{trial.slot}")

    def _check_timeouts(self) -> None:
        if self.trial_timeout is None:
            return
        import ray

        now = time.monotonic()
        late = [(ref, call) for ref, call in self._running.items()
                if now - call.trials[0].started > self.trial_timeout]
        rows = []
        for ref, call in late:  # with a timeout every call carries exactly one trial
            self._running.pop(ref)
            ray.kill(call.actor)
            if self._slots[call.slot] is call.actor:
                self._replace(call.slot)
            rows += [self._ended_row(t, TIMEOUT, f"stopped after trial_timeout="
                                                 f"{self.trial_timeout} s") for t in call.trials]
        if self.scheduler is not None and rows:  # it forgets a trial only when told it ended
            self._schedule([], rows)
        self._finish(rows, [])

    def _check_stalled_starts(self) -> None:
        """Give up when every worker has lost its actor and none could be placed again within
        ``START_TIMEOUT`` (e.g. the only node with the resource a trial asks is gone): waiting
        would hang the search. Fewer workers than asked is fine; no worker at all is not."""
        if len(self._starting_since) < len(self._slots) or self._running:
            return
        if time.monotonic() - min(self._starting_since.values()) < START_TIMEOUT:
            return
        import ray

        raise DistoptError(
            f"no worker could be restarted within {START_TIMEOUT:.0f} s after every worker "
            f"was lost (e.g. their node went away): the cluster has "
            f"{ray.available_resources()} free and each worker asks {self.resources}; the "
            f"finished trials are in the store: add capacity, then `distopt resume "
            f"{self.writer.path}`")

    def _drain_long_trials(self) -> None:
        """Ask each busy worker for its new report rows, about once a second (more often when a
        scheduler decides from them)."""
        now = time.monotonic()
        draining = set(self._draining.values())
        for call in self._running.values():
            first = call.trials[0]
            if now - first.drained >= self._drain_interval and call.slot not in draining:
                first.drained = now
                draining.add(call.slot)
                drain = call.actor.drain.options(concurrency_group=CONTROL)
                self._draining[drain.remote()] = call.slot

    # -- progress ---------------------------------------------------------------------------------

    def _note_front(self, status: str, metrics: Mapping[str, float]) -> None:
        if status == COMPLETE and self.problem.feasible([metrics])[0]:
            point = [metrics[m] for m in self.problem.objectives]
            self._front_points.append(point)
            if len(self._front_points) > 2 * max(self._front_pruned, 256):
                self._prune_front()  # memory stays O(front), not O(trials), without a hook
            if self.writer.metadata.get("ref_point") is None:
                self._initial_points.append(point)
                self._ensure_ref_point()

    def _prune_front(self) -> None:
        from . import pareto

        mask = pareto.is_non_dominated(self._front_points, maximize=self.problem.maximize)
        self._front_points = [p for p, keep in zip(self._front_points, mask, strict=True) if keep]
        self._front_pruned = len(self._front_points)

    def _ensure_ref_point(self) -> None:
        """Fix the reference point once the initial design has run, and record it.

        It is the nadir of the first 2*(d+1) feasible trials, pushed out by 10% of their range:
        fixed early so that hypervolume over time is comparable, generous so that later fronts
        lie inside it.
        """
        needed = min(self.budget, 2 * (self.problem.space.dim + 1))
        if len(self._initial_points) < needed:
            return
        from . import pareto

        ref = pareto.reference_point(self._initial_points, maximize=self.problem.maximize,
                                     front_only=False)
        self.writer.record(ref_point=dict(zip(self.problem.objectives, map(float, ref),
                                                   strict=True)))
        self._initial_points = []

    def _report_progress(self, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._progress_at < 0.5:
            return
        self._progress_at = now
        from . import pareto

        front_size, hv = 0, None
        if self._front_points:
            self._prune_front()
            front_size = len(self._front_points)
            ref = self.writer.metadata.get("ref_point")
            if ref is not None:
                hv = pareto.hypervolume(self._front_points,
                                        [ref[m] for m in self.problem.objectives],
                                        maximize=self.problem.maximize)
        self.on_progress(Progress(self.n_finished, self.n_running, self.n_failed, self.budget,
                                  front_size, hv))


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


def _cause(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
