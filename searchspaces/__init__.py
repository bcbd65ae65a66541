"""Declarative search spaces (``<task>.yaml``) and ready study files (``studies/<name>.yaml``).

Run a study with ``distopt run searchspaces/studies/quickstart.yaml``; the space files are plain
YAML read by :mod:`distopt.space`, so they also load on their own.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["HERE", "space_path", "study_path"]

HERE = Path(__file__).resolve().parent


def space_path(task: str) -> Path:
    """``searchspaces/<task>.yaml``."""
    return HERE / f"{task}.yaml"


def study_path(name: str) -> Path:
    """``searchspaces/studies/<name>.yaml``."""
    return HERE / "studies" / f"{name}.yaml"
