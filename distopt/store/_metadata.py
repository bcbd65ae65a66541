"""``STORE/study.json``: the study definition, library versions and the recorded reference point.

JSON, never pickle: a store must be safe to open from anywhere. Rewritten atomically (write to a
temporary file, fsync, rename) so a crash leaves either the old or the new version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._checks import preview
from .._errors import StoreError

METADATA_FILE = "study.json"
FORMAT_VERSION = 1


#: The table folders of a store, in the order a writer publishes them (a trial after its curve).
TABLES = ("curves", "dispatched", "trials")


def holds_rows(folder: Path) -> bool:
    """Whether ``folder`` has a table folder with files in it (a store's data, with or without
    its ``study.json``)."""
    return any((folder / t).is_dir() and any((folder / t).iterdir()) for t in TABLES)


def read_metadata(folder: Path) -> dict[str, Any]:
    """The metadata of the store at ``folder``; a StoreError says what is wrong."""
    path = folder / METADATA_FILE
    if not path.exists():
        if holds_rows(folder):
            raise StoreError(f"{folder} is not a distopt store as it is: it holds trial data "
                             f"but no {METADATA_FILE} (the definition of the study that wrote "
                             f"it); restore that file, or read the parts with pyarrow")
        raise StoreError(f"{folder} is not a distopt store (no {METADATA_FILE}); check the path")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StoreError(f"{path} is not valid JSON ({error}); the trial data beside it are "
                         f"intact and readable with pyarrow") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} holds {type(data).__name__} JSON, not a study's metadata (a "
                         f"mapping); restore it from a copy: the trial data beside it are intact")
    if data.get("format") != FORMAT_VERSION:
        raise StoreError(f"{path}: store format {preview(data.get('format'))} is not supported "
                         f"by this version (expects {FORMAT_VERSION})")
    _check_shape(path, data)
    return data


#: Entries of ``study.json`` that opening a store reads, and the JSON type each must have.
_REQUIRED = {"problem": dict, "config_types": dict}
_PROBLEM = {"space": dict, "objectives": dict}


def _check_shape(path: Path, data: dict[str, Any]) -> None:
    """A StoreError naming the first entry a reader needs that is missing or of the wrong type
    (a hand-edited or foreign ``study.json``), instead of a KeyError deep in the reader."""
    problem = data.get("problem")
    wanted = [(name, data.get(name), kind) for name, kind in _REQUIRED.items()]
    if isinstance(problem, dict):
        wanted += [(f"problem.{name}", problem.get(name), kind) for name, kind in _PROBLEM.items()]
    wanted.append(("metric_order", data.get("metric_order", []), list))
    for name, value, kind in wanted:
        if not isinstance(value, kind):
            got = "is missing" if value is None else f"is {preview(value)}"
            raise StoreError(f"{path}: {name} {got}, not a JSON {_JSON_NAMES[kind]}; restore "
                             f"study.json from a copy: the trial data beside it are intact")


_JSON_NAMES = {dict: "object", list: "array"}


def write_metadata(folder: Path, data: dict[str, Any]) -> None:
    """Atomically replace the metadata of the store at ``folder``."""
    path = folder / METADATA_FILE
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as handle:
        json.dump({"format": FORMAT_VERSION, **data}, handle, indent=2,
                  default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (read without importing them)."""
    from importlib import metadata

    versions = {}
    for name in ("distopt", "ray", "torch", "botorch", "optuna", "torchjd", "pyarrow", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
