"""Faults of the machine or the cluster (a full disk, a dead Ray, SIGTERM) ended in distopt's words.

None of these is the user's input or objective failing: the finished trials are safe in the
store, and the search continues with ``distopt resume STORE`` once the cause is gone. So each
ends the same way as Ctrl-C does (running trials cancelled, the store closed), then with one line
naming the cause and that command:

- SIGTERM (``kill``, a scheduler's time limit) raises :class:`Terminated`, a ``KeyboardInterrupt``,
  in the main thread: every ``finally`` that Ctrl-C runs runs, and ``distopt`` exits 143.
- A full disk (``ENOSPC``, ``EDQUOT``) anywhere in an ``OSError``'s chain becomes an
  :class:`InfrastructureError` (exit status 2).
- Ray's GCS or raylet dying: Ray's C++ core ends the process by itself after 15-60 s, with no
  Python exception and no ``finally`` run. The watchdog of :mod:`distopt._ray` notices it within a
  second and calls :func:`ray_lost`, which interrupts the main thread the way SIGTERM does; the
  guard turns that into an :class:`InfrastructureError`.
"""

from __future__ import annotations

import errno
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._errors import DistoptError

#: ``errno`` values of a full disk or an exhausted quota.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class InfrastructureError(DistoptError):
    """The machine or the Ray cluster failed; the store is closed and can be resumed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same clean-up runs."""


class RayLost(KeyboardInterrupt):
    """The Ray that runs the search died (its GCS or raylet); raised like Ctrl-C (by the
    watchdog, through the SIGTERM handler), then reported by :func:`guard` as an
    :class:`InfrastructureError`."""


def resume_hint(store: str | Path, then: str = "") -> str:
    """The sentence every fault ends with (``then``: what to do first, e.g. free some space)."""
    if not (Path(store) / "study.json").exists():  # the fault came before the store was made
        return f"nothing was stored in {store} yet; {then}run the study again"
    return f"finished trials are safe in {store}; {then}continue with: distopt resume {store}"


_guards: list[Any] = []  # active guards, innermost last (main thread only)
_lost_cause: list[str] = []  # why Ray was lost, set by the watchdog thread before interrupting
_terminated: list[int] = []  # SIGTERM or SIGINT was received: the search is being stopped
_responded = threading.Event()  # the main thread took the RayLost interrupt


@contextmanager
def guard(store: str | Path) -> Iterator[None]:
    """Run a search so that SIGTERM, a full disk or a dead Ray end with a resumable store.

    Inside, SIGTERM raises :class:`Terminated`; on the way out a full disk or a lost Ray becomes
    an :class:`InfrastructureError` naming the cause and ``distopt resume STORE``. Nested guards
    are harmless; outside the main thread no signal handler can be installed, and only the
    translation of errors applies.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    previous_int = signal.getsignal(signal.SIGINT) if main else None
    if main:
        if not _guards:
            _lost_cause.clear()
            _terminated.clear()
            _responded.clear()
        _guards.append(store)
        install_sigterm()
    try:
        yield
    except KeyboardInterrupt as stop:
        # Ray's own code turns an exception a signal handler raised inside ray.wait/ray.get into
        # a plain KeyboardInterrupt, so the cause is kept here rather than in the exception.
        if _lost_cause:
            raise InfrastructureError(f"{_lost_cause[0]}; {resume_hint(store)}") from None
        if signal.SIGTERM in _terminated and not isinstance(stop, Terminated):
            raise Terminated("terminated (SIGTERM)") from None
        raise
    except OSError as error:
        full = disk_full(error)
        if full is None:
            raise
        where = f" writing {full.filename}" if full.filename else ""
        raise InfrastructureError(f"the disk is full ({full.strerror or full}{where}); "
                                  f"{resume_hint(store, 'free some space, then ')}") from None
    except Exception as error:
        cause = ray_failure(error)
        if cause is None:
            raise
        raise InfrastructureError(f"the Ray cluster failed ({cause}); {resume_hint(store)}") \
            from None
    finally:
        if main:
            _guards.pop()
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            if previous_int is not None:
                signal.signal(signal.SIGINT, previous_int)


def install_sigterm() -> None:
    """(Re)install distopt's SIGTERM and SIGINT handlers while a guard is active: ``ray.init``
    replaces the first with Ray's own (which exits 1 without closing the store), so
    :mod:`distopt._ray` calls this again after starting or joining Ray."""
    if _guards and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum: int, frame: Any) -> None:
    # Ctrl-C in a terminal reaches the embedded Ray too, whose GCS and raylet then die: that is
    # the user stopping the search, not a fault, so the watchdog must not report it.
    _terminated.append(signum)
    raise KeyboardInterrupt


def _on_sigterm(signum: int, frame: Any) -> None:
    # Further SIGTERMs are ignored while the clean-up runs: a second one would interrupt it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _lost_cause:
        _responded.set()
        raise RayLost(_lost_cause[0])
    _terminated.append(signum)
    raise Terminated("terminated (SIGTERM)")


def ray_lost(cause: str) -> bool:
    """From the watchdog thread: Ray died (``cause``); interrupt the main thread, which raises
    :class:`RayLost` there. Returns False when no guard is active (nothing is interrupted)."""
    if not _guards or _lost_cause or _terminated:  # already stopping: Ctrl-C or SIGTERM
        return False
    import _thread

    _lost_cause.append(cause)
    _thread.interrupt_main(signal.SIGTERM)
    return True


def stuck(grace: float) -> bool:
    """From the watchdog thread, after :func:`ray_lost`: True when the main thread has not taken
    the interrupt within ``grace`` seconds. It is then blocked inside a Ray call that waits for
    the dead GCS (creating an actor, for one) and runs no Python code until Ray's core ends the
    process, up to a minute later."""
    return bool(_guards) and not _responded.wait(grace)


def exit_now() -> None:
    """From the watchdog thread, when the main thread is :func:`stuck`: say what happened and
    end the process at once (status 2), as Ray's core would do a little later with status 1 and
    no word. Every finished trial is already in the store (each row is flushed to the OS when
    written); a store not closed is read and resumed as after a crash."""
    import os
    import sys

    store = _guards[-1] if _guards else "the store"
    cause = _lost_cause[0] if _lost_cause else "Ray stopped answering"
    sys.stderr.write(f"\ndistopt: error: {cause}, while the search waited on it; "
                     f"{resume_hint(store)}\n")
    sys.stderr.flush()
    os._exit(2)


def disk_full(error: BaseException) -> OSError | None:
    """The ``ENOSPC``/``EDQUOT`` OSError in ``error``'s chain (causes and contexts), if any.

    A full disk often surfaces twice: once while writing, again while closing a file; and pyarrow
    raises it as an ``OSError`` whose ``errno`` is missing but whose text names it.
    """
    for link in _chain(error):
        if isinstance(link, OSError) and (link.errno in DISK_FULL or (
                link.errno is None and "No space left on device" in str(link))):
            return link
    return None


def ray_failure(error: BaseException) -> str | None:
    """A short cause when ``error`` says Ray itself failed (not a trial): its GCS or raylet is
    unreachable. Ray is not imported here: an error of Ray implies Ray is loaded."""
    import sys

    exceptions = sys.modules.get("ray.exceptions")
    if exceptions is None:
        return None
    kinds = tuple(getattr(exceptions, name) for name in (
        "RaySystemError", "RpcError", "NodeDiedError", "LocalRayletDiedError")
        if hasattr(exceptions, name))
    for link in _chain(error):
        if isinstance(link, kinds):
            text = str(link).strip().splitlines()
            return f"{type(link).__name__}: {text[0][:200] if text else ''}".rstrip(": ")
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


@contextmanager
def shielded() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while Ray is being stopped: a second Ctrl-C used to interrupt
    ``ray.shutdown()`` and leave Ray's agents running. (Stopping takes seconds; SIGKILL still
    ends it.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
