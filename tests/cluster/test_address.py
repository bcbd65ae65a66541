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


def test_auto_is_checked_where_it_points(monkeypatch):
    """A dead RAY_ADDRESS (or a stale cluster file from an old `ray start`) made `--address
    auto` wait silently for minutes; it is checked where Ray would go."""
    port = closed_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # Ray resolves it to this host's IP
    with pytest.raises(ConfigError, match=rf"^address: 'auto' means '[^']*:{port}' here "
                                          rf"\(RAY_ADDRESS, .*\), and nothing answers at"):
        check_reachable("auto", timeout=2.0)


def serving(reply: bytes | None):
    """A localhost server that answers each connection with ``reply`` (None: says nothing)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(64)
                if reply is not None:
                    connection.sendall(reply)
                time.sleep(0.5)

    threading.Thread(target=answer, daemon=True).start()
    return server


#: What a gRPC server (Ray's GCS) sends first: an HTTP/2 SETTINGS frame (type 4).
SETTINGS = bytes([0, 0, 0x18, 4, 0, 0, 0, 0, 0])


def test_a_grpc_port_passes_with_or_without_a_scheme():
    with serving(SETTINGS) as server:
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}", timeout=2.0)
        check_reachable(f"ray://127.0.0.1:{port}", timeout=2.0)


@pytest.mark.parametrize("reply", [b"HTTP/1.0 400 Bad Request\r\n\r\n", None])
def test_a_port_where_something_else_listens_is_refused_fast(reply):
    """ray.init waited minutes, silently, at a web server's port (no handshake timeout)."""
    with serving(reply) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ConfigError, match=rf"^address: '{address}' answers, but not as a "
                                              r"Ray cluster"):
            check_reachable(address, timeout=2.0)
        assert time.monotonic() - start < 10


@pytest.mark.parametrize("address", ["auto", "local", "localhost"])
def test_addresses_without_a_port_are_left_to_ray(address, monkeypatch):
    # "auto" when Ray finds no cluster to join (no RAY_ADDRESS, no recorded `ray start`)
    monkeypatch.setattr("distopt._ray._resolve_auto", lambda: None)
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
