"""The actor pool: starts, replaces, awaits and stops the worker actors of one search.

The pool is elastic: a worker takes trials as soon as its actor is up, the search never waits for
every worker, and workers whose resources are not free yet (a busy or autoscaling cluster) join
whenever Ray places them. The search fails only when no worker at all is up for
``START_TIMEOUT`` seconds.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._codepath import ShippedObjective, code_folders
from ._errors import DistoptError
from ._worker import TrialWorker

log = logging.getLogger("distopt")

#: Seconds without any worker up before the search gives up.
START_TIMEOUT = 180.0
#: The actor concurrency group of ``drain`` and ``stop``, which run beside ``run``.
CONTROL = "control"
#: Seconds the first trials wait for the workers the cluster can place at once, so that a short
#: search is shared by them rather than run by whichever actor came up first. Workers that do not
#: fit now never hold anything up; after this, each worker starts as soon as it is up.
START_GRACE = 10.0
#: Replacements of one slot that may fail to start in a row before the search gives up.
MAX_START_FAILURES = 3


@dataclass
class Slot:
    """One worker: its actor, and whether that actor is up."""

    index: int
    actor: Any
    up: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # what ``TrialWorker.ready`` answered
    replaced: bool = False                                # not the slot's first actor
    failures: int = 0                                     # starts that failed in a row

    @property
    def name(self) -> str:
        return f"worker-{self.index}"


class WorkerPool:
    """``n_workers`` :class:`~distopt._worker.TrialWorker` actors for ``objective``."""

    def __init__(self, objective: Any, required: list[str], reserved: frozenset[str], *,
                 workers: int, resources: Mapping[str, float],
                 shipped: ShippedObjective | None = None):
        self.objective = objective
        self.shipped = shipped  # made (and checked) before anything was written, if given
        self.required = list(required)
        self.reserved = reserved
        self.n_workers = workers
        self.resources = dict(resources)
        self.slots: list[Slot] = []
        self._starting: dict[Any, Slot] = {}   # ready ref -> its slot
        self._down_since: float | None = None   # when the pool last had no worker up
        self._objective_ref: Any = None
        self._fits = workers                     # workers the cluster could place at the start
        self._started_at: float | None = None
        self._opened = False                     # the start-up grace is over

    # -- start and stop ---------------------------------------------------------------------------

    def actor_options(self) -> dict[str, Any]:
        """Ray options of one worker actor."""
        custom = {k: v for k, v in self.resources.items() if k not in ("cpu", "gpu")}
        options: dict[str, Any] = {
            "num_cpus": self.resources.get("cpu", 1),
            "num_gpus": self.resources.get("gpu", 0),
            # ``run`` calls go one at a time (a queued call waits for the running one, and the
            # trial context is per process); ``drain`` and ``stop`` use the ``control`` group.
            "max_concurrency": 1,
            "max_restarts": 0,     # the pool replaces dead actors itself, with a fresh slot
            "scheduling_strategy": "SPREAD",
        }
        if custom:
            options["resources"] = custom
        return options

    def _spawn(self, slot: int) -> Any:
        import ray

        actor_class = ray.remote(concurrency_groups={CONTROL: 2})(TrialWorker)
        return actor_class.options(**self.actor_options()).remote(
            self._objective_ref, self.required, self.reserved, f"worker-{slot}")

    def start(self) -> None:
        """Create every worker actor without waiting for any (each takes ~0.5 s to start)."""
        import ray

        self._fits = self.warn_capacity()
        # shipped once, not once per actor, with the folders its module may live in
        self._objective_ref = ray.put(self.shipped or ShippedObjective(self.objective,
                                                                       code_folders()))
        self._down_since = self._started_at = time.monotonic()
        for index in range(self.n_workers):
            slot = Slot(index, self._spawn(index))
            self.slots.append(slot)
            self._starting[slot.actor.ready.remote()] = slot

    def warn_capacity(self) -> int:
        """How many workers the cluster can place now; one line when that is not all of them
        (the others wait for capacity)."""
        import ray

        free = ray.available_resources()
        needs = {"CPU": self.resources.get("cpu", 1), "GPU": self.resources.get("gpu", 0)}
        needs.update({k: v for k, v in self.resources.items() if k not in ("cpu", "gpu")})
        fits = self.n_workers
        short = []
        for name, amount in needs.items():
            if amount:
                now = int(math.floor(free.get(name, 0.0) / amount + 1e-9))
                if now < fits:
                    fits = now
                    short = [f"{_amount(free.get(name, 0.0))} {name} now"]
        if fits < self.n_workers:
            asked = " + ".join(f"{_amount(v)} {k}" for k, v in needs.items() if v)
            waiting = self.n_workers - max(fits, 0)
            log.warning("distopt: %d workers x %s asked, %s: %d run%s, %d wait%s for capacity",
                        self.n_workers, asked, short[0] if short else "", max(fits, 0),
                        "s" if fits == 1 else "", waiting, "s" if waiting == 1 else "")
        return max(0, fits)

    def replace(self, slot: Slot) -> None:
        """Kill ``slot``'s actor and start a new one there; it takes trials once it is up."""
        import ray

        ray.kill(slot.actor)  # a call that raised (CUDA out of memory) left the actor alive
        slot.actor = self._spawn(slot.index)
        slot.up, slot.replaced = False, True
        self._starting[slot.actor.ready.remote()] = slot
        if not self.up_slots():
            self._down_since = self._down_since or time.monotonic()

    def stop(self) -> None:
        """Kill every worker actor (idempotent)."""
        import ray

        for slot in self.slots:
            ray.kill(slot.actor)
        self.slots = []
        self._starting = {}

    # -- the loop's view --------------------------------------------------------------------------

    def up_slots(self) -> list[Slot]:
        """Workers whose actor is up."""
        return [s for s in self.slots if s.up]

    def dispatchable(self) -> list[Slot]:
        """Workers that may take trials now: every worker that is up, once the workers that fit
        at the start are up or ``START_GRACE`` has passed."""
        up = self.up_slots()
        if not self._opened:
            waited = time.monotonic() - (self._started_at or 0.0)
            if len(up) >= min(self._fits, self.n_workers) or waited >= START_GRACE:
                self._opened = True
            else:
                return []
        return up

    def pending_refs(self) -> list[Any]:
        """``ready`` calls of actors still starting (for the loop's ``ray.wait``)."""
        return list(self._starting)

    def owns(self, ref: Any) -> bool:
        """Whether ``ref`` is a ``ready`` call of this pool."""
        return ref in self._starting

    def started(self, ref: Any) -> None:
        """Handle a finished ``ready`` call: the worker joins, or its start failed."""
        import ray

        slot = self._starting.pop(ref)
        try:
            slot.info = ray.get(ref)
        except ray.exceptions.RayError as error:
            if getattr(error, "actor_init_failed", False):  # the objective, not the cluster
                raise DistoptError(
                    f"workers could not load the objective: {cause(error)}; the objective's "
                    f"module must be importable on every Ray node (install it there or use a "
                    f"runtime_env)") from None
            slot.failures += 1
            if slot.failures >= MAX_START_FAILURES:
                raise DistoptError(f"{slot.name} could not be restarted {slot.failures} times: "
                                   f"{cause(error)}") from None
            # e.g. its node went away, or Ray cancelled its placement (a node marked dead under
            # load): once more
            self.replace(slot)
            return
        slot.up, slot.failures = True, 0
        self._down_since = None

    def check_alive(self, store: Any, busy: bool) -> None:
        """Give up when no worker has been up for ``START_TIMEOUT`` and none is busy."""
        if busy or self.up_slots() or self._down_since is None:
            return
        if time.monotonic() - self._down_since < START_TIMEOUT:
            return
        import ray

        lost = any(s.replaced for s in self.slots)
        what = ("no worker could be restarted" if lost else "no worker started")
        raise DistoptError(
            f"{what} within {START_TIMEOUT:.0f} s{' after every worker was lost' if lost else ''}"
            f": the cluster has {ray.available_resources()} free and each worker asks "
            f"{self.resources}; the finished trials are in the store: add capacity or lower "
            f"resources_per_trial, then `distopt resume {store}`")


def _amount(value: float) -> str:
    return f"{value:g}"


def cause(error: BaseException) -> str:
    """The last line of an error's text: what a user needs of a Ray error. A worker process
    that died is one line of Ray's of about 600 characters (exit type, detail, then three
    guesses); it is cut to the exit type and the detail's first sentence."""
    text = str(error).strip().splitlines()
    line = text[-1] if text else type(error).__name__
    died = re.search(r"Worker exit type: (\w+)(?: Worker exit detail: ([^.]*))?", line)
    if died is None:
        return line
    detail = f": {died.group(2).strip()}" if died.group(2) else ""
    return f"the worker process died ({died.group(1)}{detail})"
