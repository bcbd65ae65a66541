"""One writer per store: an advisory ``flock`` on ``STORE/LOCK`` that names its holder.

``flock`` is released by the kernel when the holding process dies, even by SIGKILL, so a crashed
search never leaves a stale lock behind that a user must delete by hand.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .._errors import StoreError


class StoreLock:
    """Exclusive lock on a store folder, held for the lifetime of a writer."""

    def __init__(self, folder: Path):
        self.path = folder / "LOCK"
        self._file = None

    def acquire(self) -> None:
        """Take the lock or raise a StoreError naming the process that holds it."""
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            raise StoreError(
                f"store {self.path.parent} is being written by {holder}; wait for that search to "
                f"finish, stop it, or choose another store path") from None
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
        """Whether a live process holds the lock of ``folder`` right now."""
        path = folder / "LOCK"
        if not path.exists():
            return False
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
