"""How every benchmark hands over its table: printed, and written to its results file."""

from __future__ import annotations

import os


def publish(text: str, path: str) -> None:
    """Print ``text`` and write it to ``path`` (folders created)."""
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text + "\n")
