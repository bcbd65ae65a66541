"""Makes ``strategy_helpers`` importable whatever pytest's import mode; one torch thread."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """BoTorch's small matrices gain nothing from threads, and on a busy 2-core runner
    spinning OpenMP threads made the ``bayes`` tests several times slower."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of bayes only
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
