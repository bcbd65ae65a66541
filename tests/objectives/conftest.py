"""Fixtures shared by the objectives' tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """One torch thread: the models are tiny, and a second thread only adds contention on a
    shared machine (and makes CPU-time comparisons noisy)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
