"""A cluster address that nothing answers at fails fast, naming the field, before ray.init."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distopt._errors import ConfigError
from distopt._ray import check_reachable

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A localhost port that was free a moment ago (so a connect there is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_closed_port_is_an_error_naming_the_address():
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigError) as caught:
        check_reachable(address, timeout=2.0)
    message = str(caught.value)
    assert message.startswith("address: ") and address in message and "--address" in message


def test_a_listening_port_passes_with_or_without_a_scheme():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}", timeout=2.0)
        check_reachable(f"ray://127.0.0.1:{port}", timeout=2.0)


@pytest.mark.parametrize("address", ["auto", "local", "localhost"])
def test_addresses_without_a_port_are_left_to_ray(address):
    check_reachable(address, timeout=0.01)  # returns without trying to connect


def test_the_cli_stops_with_exit_status_2_before_starting_ray(tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "distopt", "run", str(ROOT / "searchspaces/studies/quickstart.yaml"),
         "--address", address, "--store", str(tmp_path / "store")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert f"address: nothing answers at '{address}'" in done.stderr
    assert time.monotonic() - start < 60
