"""Where ``module:function`` objectives (and ``module:Class`` strategies) are imported from: the
working directory and the study file's folder, on the driver and in every worker.

``python -m distopt`` has the working directory on ``sys.path`` but the ``distopt`` console script
has its own bin folder there instead, so the folders are appended (after installed packages, so
they never shadow one). Workers of the embedded Ray inherit ``PYTHONPATH``; workers of a cluster
do not (Ray adds only the driver's working directory to them), so the objective travels with
the folders as a :class:`ShippedObjective` and each worker adds those that exist on its node
before unpickling it. Both also export the folders in ``PYTHONPATH``: processes the objective
starts itself (a ``spawn`` DataLoader's workers, ``multiprocessing``) import its module too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: Folders added so far (resolved paths), in order.
_added: list[str] = []


def add_code_folders(folders: Iterable[Path]) -> None:
    """Let objectives be imported from ``folders``, here and in the workers Ray starts later."""
    for folder in folders:
        text = str(Path(folder).resolve())
        if text not in _added:
            _added.append(text)
    _extend_sys_path(_added)
    _export(_added)


def code_folders() -> list[str]:
    """The folders added so far."""
    return list(_added)


def _export(folders: Iterable[str]) -> None:
    """Append ``folders`` to ``PYTHONPATH``, for the processes started from here on."""
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    extra = [p for p in folders if p not in current]
    if extra:
        os.environ["PYTHONPATH"] = os.pathsep.join(current + extra)


def _extend_sys_path(folders: Iterable[str]) -> None:
    for text in folders:
        if text not in sys.path and os.path.isdir(text):
            sys.path.append(text)
    importlib.invalidate_caches()  # a module written after the last import attempt


class ShippedObjective:
    """An objective on its way to a worker, with the folders its module may live in.

    Ray unpickles an actor's arguments before the actor's code runs, so an objective whose
    module sits in a folder the worker's ``sys.path`` lacks (a study file's folder, on a
    cluster) failed there with ``ModuleNotFoundError``; pickled to bytes here, it is unpickled
    by :meth:`load` once the worker has added the folders.
    """

    def __init__(self, objective: Callable[..., Any], folders: Iterable[str]):
        import cloudpickle  # Ray's own pickler (by reference for importable functions)

        from ._errors import field_error

        self.folders = list(folders)
        try:
            self.payload = cloudpickle.dumps(objective)
        except Exception as error:  # noqa: BLE001 - whatever the pickler refuses, said once
            raise field_error("objective", f"cannot be sent to the workers ({type(error).__name__}"
                                           f": {error})",
                              "create locks, open files and clients inside the objective, not "
                              "in what it refers to") from None

    def load(self) -> Callable[..., Any]:
        import cloudpickle

        _extend_sys_path(self.folders)
        _export(f for f in self.folders if os.path.isdir(f))
        return cloudpickle.loads(self.payload)
