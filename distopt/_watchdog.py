"""A thread that notices the death of the Ray a search runs on, and what the embedded Ray leaves.

When Ray's GCS or raylet dies, Ray's C++ core ends the driver by itself 15-60 s later (no
exception, no ``finally``): the store stays open and no resume command is printed. Polling the
embedded Ray's processes (or pinging a joined cluster's GCS) finds the death within a second or
a few, early enough to stop the search the way Ctrl-C does (see :mod:`distopt._faults`).

The embedded Ray's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) and workers are
children of its raylet; when the raylet dies first they are orphaned and ``ray.shutdown()``, which
only knows the processes it started itself, leaves them running. :meth:`Watchdog.reap` kills every
descendant seen while the search ran (``psutil`` identifies a process by pid and start time, so a
reused pid is never hit).
"""

from __future__ import annotations

import threading
from typing import Any

#: Seconds between two looks at the embedded Ray's processes.
POLL = 0.5
#: Seconds a joined cluster's GCS may take to answer one ping, and failed pings in a row that
#: mean it is gone (Ray itself gives up after 60 s, or 15 s when the local raylet died).
PING_TIMEOUT, PING_FAILURES = 2.0, 3
#: Seconds between finding Ray dead and reporting it (see ``_watch``).
SIGNAL_GRACE = 1.0
#: Seconds the main thread gets to take the interrupt before the process is ended from here.
STUCK_GRACE = 6.0
#: Seconds each orphan gets to exit after SIGKILL.
REAP_WAIT = 5.0


class Watchdog:
    """Watches the Ray of one search from a daemon thread; see the module docstring."""

    def __init__(self, processes: dict[str, Any], ping: Any = None, *,
                 address: str | None = None) -> None:
        import psutil

        self._processes = processes  # name -> psutil.Process of the embedded Ray's daemons
        self._ping = ping
        self._address = address
        self._seen: dict[int, Any] = {}
        self._psutil = psutil
        self._stopped = threading.Event()
        #: Why Ray was found dead, or None.
        self.cause: str | None = None
        self._thread = threading.Thread(target=self._watch, name="distopt-watchdog", daemon=True)

    @classmethod
    def start(cls, address: str | None) -> Watchdog | None:
        """Watch the Ray that ``ray.init`` just started (``address`` None) or joined."""
        import psutil
        import ray

        node = getattr(ray._private.worker, "_global_node", None)  # None for ray:// clients
        if address is None:
            if node is None:
                return None
            processes = {}
            for name in ("gcs_server", "raylet"):
                for info in node.all_processes.get(name, []):
                    try:
                        processes[name] = psutil.Process(info.process.pid)
                    except psutil.NoSuchProcess:
                        continue
            watchdog = cls(processes)
            for infos in node.all_processes.values():
                for info in infos:
                    watchdog._remember(info.process.pid)
        else:
            client = getattr(ray._private.worker.global_worker, "gcs_client", None)
            if client is None:
                return None
            raylet = _local_raylet(node)
            watchdog = cls({"raylet": raylet} if raylet is not None else {},
                           lambda: client.internal_kv_get(b"distopt-ping", None,
                                                          timeout=PING_TIMEOUT),
                           address=address)
        watchdog._thread.start()
        return watchdog

    def stop(self) -> str | None:
        """Stop watching (before ``ray.shutdown()``, whose own stopping is no fault); the cause
        when Ray was found dead."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=PING_TIMEOUT + 1)
        self._track()
        return self.cause

    def reap(self) -> list[int]:
        """Kill the embedded Ray's processes that outlived ``ray.shutdown()``; their pids."""
        psutil = self._psutil
        alive = [p for p in self._seen.values() if _running(p)]
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=REAP_WAIT)
        return [p.pid for p in alive]

    # -- the thread ---------------------------------------------------------------------------

    def _watch(self) -> None:
        from . import _faults

        failures, looks = 0, 0
        while not self._stopped.wait(POLL):
            looks += 1
            if looks % 4 == 1:
                self._track()
            cause = self._dead_daemon()
            if cause is None and self._ping is not None:
                failures = 0 if self._answers() else failures + 1
                if failures >= PING_FAILURES:
                    cause = (f"the Ray cluster at {self._address} stopped answering (its GCS, on "
                             f"the head node, did not reply for "
                             f"{PING_FAILURES * (POLL + PING_TIMEOUT):.0f} s)")
            # A signal to the whole process group (Ctrl-C, a scheduler's SIGTERM) kills Ray's
            # daemons too, and may do so before the main thread has run its handler; so a death
            # is reported only if the search is not being stopped a moment later.
            if cause is not None and not self._stopped.wait(SIGNAL_GRACE):
                self.cause = cause
                if _faults.ray_lost(cause) and _faults.stuck(STUCK_GRACE):
                    self.reap()
                    _faults.exit_now()
                return

    def _dead_daemon(self) -> str | None:
        owner = "the embedded Ray's" if self._address is None else \
            f"the Ray cluster's ({self._address})"
        for name, process in self._processes.items():
            if not _running(process):
                return f"{owner} {name} (pid {process.pid}) died"
        return None

    def _answers(self) -> bool:
        try:
            self._ping()
        except Exception:  # any failure to reach the GCS counts; the kind varies by Ray version
            return False
        return True

    def _track(self) -> None:
        """Remember the raylet's descendants (agents, workers) while it still has them."""
        raylet = self._processes.get("raylet")
        if raylet is None or self._address is not None:  # a cluster's raylet is not ours
            return
        try:
            children = raylet.children(recursive=True)
        except self._psutil.Error:
            return
        for child in children:
            self._seen.setdefault(child.pid, child)

    def _remember(self, pid: int) -> None:
        try:
            self._seen.setdefault(pid, self._psutil.Process(pid))
        except self._psutil.Error:
            pass


def _local_raylet(node: Any) -> Any:
    """The raylet of this machine that a driver joining a cluster talks to, if it runs here.

    When it dies (the head node going down, when the driver runs on it), Ray's core ends the
    driver about 14 s later, sooner than the GCS pings would tell. A raylet that exits after
    its graceful drain (``ray stop``) takes the driver with it within milliseconds, before any
    poll: that case ends with no line (README says so; the store resumes).
    """
    import psutil

    socket = getattr(node, "raylet_socket_name", None) if node is not None else None
    if not socket:
        return None
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if process.info["name"] == "raylet" and \
                    f"--raylet_socket_name={socket}" in (process.info["cmdline"] or []):
                return process
        except psutil.Error:
            continue
    return None


def _running(process: Any) -> bool:
    """Alive and not a zombie (a dead child the driver has not waited for yet)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
