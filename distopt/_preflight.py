"""Checks that run before a search writes anything: is the store path usable, is it the same study.

Each failure is one line naming the field and the fix, so a typo never leaves a half-made folder
or a traceback behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._checks import preview
from ._errors import StoreError, field_error


def check_objective_configs(objective: Any, space: Any) -> None:
    """Refuse, in one line naming the space's key, a space some of whose configurations the
    objective refuses, when the objective says which it can run: a ``check_config(config)``
    method that raises on a configuration it cannot train (a typo in a key, a value out of its
    range) without training. Probed: the space's lowest, highest and middle configurations, and
    the middle with each categorical choice in turn. Without the check every trial would fail
    with the same error, after the store was written."""
    check = getattr(objective, "check_config", None)
    if not callable(check):
        return
    for config in _probes(space):
        try:
            check(dict(config))
        except Exception as error:  # noqa: BLE001 - whatever the objective refuses, said once
            text = (str(error).splitlines() or [type(error).__name__])[0]
            key, sep, rest = text.partition(": ")
            if sep and key in config:
                raise field_error(f"space.{key}", f"{rest} (the objective's own check)",
                                  "fix the study's space") from None
            raise field_error("space", f"the objective refuses {preview(config)}: {text}",
                              "fix the study's space") from None


def _probes(space: Any) -> list[dict[str, Any]]:
    middle = space.decode([[0.5] * space.dim])[0]
    probes = space.decode([[0.0] * space.dim, [1.0] * space.dim]) + [middle]
    for name, param in space.params.items():
        for choice in getattr(param, "choices", ()):
            probes.append({**middle, name: choice})
    return probes


def check_store_path(path: str | os.PathLike[str]) -> None:
    """Raise a one-line ConfigError (field ``store``) when ``path`` cannot be a store folder.

    Refused: a file where the folder should be, a path under a file, a folder that holds other
    files and no study (the store would be written in among them, the working directory say), a
    store's tables without its ``study.json``, a folder (or the nearest existing parent of a new
    one) that this process cannot write.
    """
    from .store import METADATA_FILE  # lazy: the store's writer imports this module
    from .store._metadata import holds_rows
    from .store._writer import STORE_NAMES

    try:
        path = Path(path)
        if "\0" in str(path):  # pathlib answers "does not exist" for it; mkdir would raise
            raise ValueError("it contains a NUL byte")
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as error:  # OSError: a name too long
        raise field_error("store", f"{preview(str(path))} is not a usable path ({error})",
                          "give a folder path") from None
    if exists and not is_dir:
        raise field_error("store", f"{path} is a file, not a folder", "give a folder path")
    if exists:
        others = [] if (path / METADATA_FILE).exists() else sorted(
            n.name for n in path.iterdir()
            if n.name not in STORE_NAMES and not n.name.endswith(".tmp"))
        if others:
            raise field_error("store", f"{path} holds other files ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}) and no study",
                              "give a new or empty folder, e.g. runs/my-study")
        if not (path / METADATA_FILE).exists() and holds_rows(path):
            # its rows would be taken for this study's, whatever study wrote them
            raise field_error("store", f"{path} holds trial data but no {METADATA_FILE} (the "
                              f"definition of the study that wrote it)",
                              f"restore {METADATA_FILE}, or give a new folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise field_error("store", f"{path} is not writable by this user",
                              "choose a folder you can write, or fix its permissions")
        return
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise field_error("store", f"{path} is under {parent}, which is a file",
                          "give a folder path that is not inside a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise field_error("store", f"cannot create {path}: {parent} is not writable by this user",
                          "choose a folder you can write")


def different_study_error(path: Path, stored: Mapping[str, Any],
                          new: Mapping[str, Any]) -> StoreError | None:
    """The refusal to run a study into a store that holds another one (None: the same study)."""
    if stored.get("problem") == new.get("problem"):
        return None
    return StoreError(f"store {path} holds a different study: "
                      f"{study_difference(stored, new) or 'definitions differ'}; use a new store "
                      f"path, or the study definition recorded in {path / 'study.json'}")


def study_difference(stored: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """The first field where two study definitions differ, as ``path: stored A, given B``.

    Given whole store metadata (with a ``problem`` entry), only the problems are compared: the
    space, objectives and constraints decide whether trials are comparable. None when equal.
    """
    if "problem" in stored and "problem" in new:
        stored, new = stored["problem"], new["problem"]
    return _first_difference(stored, new, "")


_MISSING = object()


def _first_difference(old: Any, new: Any, where: str) -> str | None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in [*old, *(k for k in new if k not in old)]:
            found = _first_difference(old.get(key, _MISSING), new.get(key, _MISSING),
                                      f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if (isinstance(old, (list, tuple)) and isinstance(new, (list, tuple))
            and len(old) == len(new)):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if old == new:
        return None
    if old is _MISSING:
        return f"{where or 'study'}: not in the stored study, given {preview(new)}"
    if new is _MISSING:
        return f"{where or 'study'}: stored {preview(old)}, not given"
    return f"{where or 'study'}: stored {preview(old)}, given {preview(new)}"
