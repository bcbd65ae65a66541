"""One writer per store: an advisory ``flock`` on ``STORE/LOCK`` that names its holder.

``flock`` is released by the kernel when the holding process dies, even by SIGKILL, so a crashed
search never leaves a stale lock behind that a user must delete by hand.

Readers never take the lock (a reader holding it even for an instant would make a writer opening
the store at that moment be refused) and never need write access: they read the holder named in
the file and ask whether that process is alive.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .._errors import StoreError

#: The lock file's name inside a store folder.
LOCK_FILE = "LOCK"


class StoreLock:
    """Exclusive lock on a store folder, held for the lifetime of a writer."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE
        self._file = None

    def acquire(self) -> None:
        """Take the lock or raise a StoreError naming the process that holds it."""
        handle = open(self.path, "a+")
        try:
            _flock_retrying(handle)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise busy_error(self.path.parent, holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @staticmethod
    def is_held(folder: Path) -> bool:
        """Whether a live process holds the lock of ``folder`` right now (read-only: the file
        names its holder; a holder on another host is taken to be alive)."""
        try:
            text = (folder / LOCK_FILE).read_text()
        except OSError:
            return False
        if not text.strip():
            return False
        try:
            holder = json.loads(text)
            host, pid = holder["host"], int(holder["pid"])
        except (ValueError, KeyError, TypeError):
            return True  # being written by a writer that has just taken the lock
        if host != socket.gethostname():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def busy_error(folder: Path, holder: str) -> StoreError:
    """The refusal of a second writer, naming the first (the LOCK file's text)."""
    return StoreError(f"store {folder} is being written by {holder or 'an unknown process'}; "
                      f"wait for that search to finish, stop it, or choose another store path")


def check_free(folder: Path) -> None:
    """Refuse, before Ray starts, a store another live process writes (``acquire`` would, but
    only after the seconds Ray takes to start). The LOCK file's text alone is not trusted: a
    store copied from another machine, or one whose text is garbled, names a holder that is gone;
    the flock tells."""
    if StoreLock.is_held(folder) and _flocked(folder / LOCK_FILE):
        try:
            holder = (folder / LOCK_FILE).read_text().strip()
        except OSError:
            holder = ""
        raise busy_error(folder, holder)


def _flocked(path: Path) -> bool:
    """Whether a process holds the flock of ``path`` now (taken and released at once if not;
    a file this process cannot open counts as held)."""
    try:
        handle = open(path, "a+")
    except OSError:
        return True
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _flock_retrying(handle: Any, tries: int = 20, pause: float = 0.005) -> None:
    """``flock`` the writer's lock, retrying for ~0.1 s: a reader of an older distopt version
    probes the lock by taking it for an instant, which must not refuse a writer."""
    for _ in range(tries - 1):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(pause)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
