"""Makes ``strategy_helpers`` importable whatever pytest's import mode, registers ``slow``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: longer runs of the strategies (deselect with "
                                       "-m 'not slow')")
