"""``STORE/study.json``: the study definition, library versions and the recorded reference point.

JSON, never pickle: a store must be safe to open from anywhere. Rewritten atomically (write to a
temporary file, fsync, rename) so a crash leaves either the old or the new version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._errors import StoreError

METADATA_FILE = "study.json"
FORMAT_VERSION = 1


def read_metadata(folder: Path) -> dict[str, Any]:
    """The metadata of the store at ``folder``; a StoreError says what is wrong."""
    path = folder / METADATA_FILE
    if not path.exists():
        raise StoreError(f"{folder} is not a distopt store (no {METADATA_FILE}); check the path")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StoreError(f"{path} is not valid JSON ({error}); the trial data beside it are "
                         f"intact and readable with pyarrow") from None
    if data.get("format") != FORMAT_VERSION:
        raise StoreError(f"{path}: store format {data.get('format')!r} is not supported by this "
                         f"version (expects {FORMAT_VERSION})")
    return data


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
