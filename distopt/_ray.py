"""Joining or starting Ray for a search, and checking that the cluster can hold the workers."""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from ._errors import ConfigError, field_error


@contextmanager
def ray_session(address: str | None, *, workers: int,
                resources: Mapping[str, float]) -> Iterator[None]:
    """Use the running Ray, join ``address``, or start an embedded local Ray (and stop it after).

    The embedded Ray is always a new, private instance (``address="local"``: never a cluster that
    ``ray start`` left running on the machine), has at least ``workers * cpu`` logical CPUs, so
    asking for more workers than cores oversubscribes (the user's choice) rather than hanging,
    and has the dashboard off unless ``DISTOPT_DASHBOARD=1``, which binds it to 127.0.0.1 only.

    While it runs, a watchdog stops the search the moment the Ray it started or joined dies (see
    :mod:`distopt._faults`), and stopping it leaves no process of the embedded Ray behind.
    """
    from . import _faults, _logging

    _logging.quiet_ray_import()  # before the first `import ray` of a notebook kernel
    import ray

    from ._watchdog import Watchdog

    owned = False
    watchdog = None
    if not ray.is_initialized():
        for name, value in _logging.ray_env().items():
            os.environ.setdefault(name, value)
        quiet = _logging.ray_init_options()  # Ray's own warnings only with -v
        if address is None:
            cores = os.cpu_count() or 1
            cpus = max(cores, math.ceil(workers * resources.get("cpu", 1)))
            if cpus > cores:  # the user's choice, but one they should know about
                logging.getLogger("distopt").warning(
                    "distopt: %d worker%s x %g CPU asked on a machine with %d cores: they "
                    "share the cores (lower %s for less contention)", workers,
                    "" if workers == 1 else "s", resources.get("cpu", 1), cores,
                    "--workers" if workers > 1 else "resources_per_trial.cpu")
            with _terminable():
                ray.init(address="local", num_cpus=cpus, **dashboard_options(), **quiet)
        else:
            check_reachable(address)
            token = use_cluster_token(address)
            check_token(address, token)
            try:
                with _terminable():
                    ray.init(address=address, **quiet)
            except (ConnectionError, TimeoutError, ValueError) as error:
                raise field_error("address", f"cannot join a Ray cluster at {address!r} ({error})",
                                  _join_fix(token)) from None
        owned = True
        _faults.install_sigterm()  # ray.init replaced distopt's SIGTERM handler with its own
        watchdog = Watchdog.start(address)
    restore = _quiet_raylet_errors() if _logging.verbosity() < 0 else None
    try:
        # A cluster joined by address may grow (autoscaling, nodes added by hand): a resource
        # it lacks now is waited for; an embedded or already running local Ray cannot grow.
        check_resources(workers, resources, growable=address is not None)
        yield
    finally:
        if restore is not None:
            restore()
        if owned:
            with _faults.shielded():  # a second Ctrl-C must not leave half of Ray running
                lost = watchdog.stop() if watchdog is not None else None
                if lost is None:
                    if quiet["log_to_driver"]:
                        # Ray's log monitor forwards the workers' output every 0.1 s or so; the
                        # objective's last prints are still on their way when the search ends.
                        time.sleep(LOG_FLUSH_S)
                    ray.shutdown()
                else:
                    watchdog.reap()  # what is left of the embedded Ray: it cannot recover
                    bounded_shutdown()
                if watchdog is not None:
                    watchdog.reap()


def _quiet_raylet_errors() -> Callable[[], None] | None:
    """With ``-q``, drop the error messages Ray's driver thread prints for the cluster ("(raylet)
    A worker died or was killed ..."), which neither ``log_to_driver`` nor a log level reaches;
    distopt reports those deaths itself (a retry, or a FAILED row with the cause). Returns what
    undoes it (None when this Ray has no such printer: then nothing was changed)."""
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None:
        return None

    def printer(data: dict, *args: object, **kwargs: object) -> None:
        if data.get("pid") != "raylet":
            original(data, *args, **kwargs)

    worker.print_to_stdstream = printer

    def restore() -> None:
        worker.print_to_stdstream = original

    return restore


@contextmanager
def _terminable() -> Iterator[None]:
    """Around ``ray.init``: a SIGTERM in its seconds of start-up meets Ray's own handler, which
    exits with status 15 and no word (``sys.exit(signum)``), or distopt's; either way what Ray
    started so far is stopped, and it ends as distopt's :class:`~distopt._faults.Terminated`,
    which the CLI reports with exit 143 and the resume hint."""
    import signal

    from ._faults import Terminated

    try:
        yield
    except SystemExit as exit_:
        if exit_.code != signal.SIGTERM:
            raise
        bounded_shutdown()
        raise Terminated from None
    except KeyboardInterrupt:
        bounded_shutdown()
        raise


#: Seconds an owned Ray is left running after the search, so that the workers' last output
#: (the objective's prints) reaches the driver before it disconnects.
LOG_FLUSH_S = 0.5
#: Seconds ``ray.shutdown()`` may take once Ray's GCS or raylet is dead.
SHUTDOWN_GRACE = 5.0


def bounded_shutdown(grace: float = SHUTDOWN_GRACE) -> bool:
    """``ray.shutdown()`` for a Ray that died; False when it did not finish within ``grace``.

    With the GCS gone, the driver's part of ``ray.shutdown()`` waits for it for up to a minute
    (measured: 7 to 64 s), and the store would stay open meanwhile. It runs in a daemon thread
    instead, and if it hangs, Ray's exit hook (which would hang the same way) is dropped.
    """
    import atexit
    import threading

    import ray

    thread = threading.Thread(target=ray.shutdown, name="distopt-ray-shutdown", daemon=True)
    thread.start()
    thread.join(grace)
    if thread.is_alive():
        atexit.unregister(ray.shutdown)
        return False
    return True


def use_cluster_token(address: str) -> bool:
    """Send this machine's Ray token when joining the cluster at ``address`` if it asks for one;
    True if so.

    ``ray start --head`` turns token authentication on when a token exists (``~/.ray/auth_token``,
    which any embedded Ray creates, or ``RAY_AUTH_TOKEN``), but a driver joining it with
    ``ray.init(address=...)`` sends the token only when ``RAY_AUTH_MODE=token``: so it was
    refused ("InvalidAuthToken") by a cluster of the same machine and user. The other way round
    fails too: a driver in token mode refuses the calls a cluster without authentication makes
    back to it, so every worker's creation is cancelled ("The actor never ran"). So the cluster
    is asked first, without a token (one probe with Ray's GCS client, the call ``ray.init``
    makes first), and the token is turned on only when it refuses that. An explicit
    ``RAY_AUTH_MODE`` is respected.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return os.environ["RAY_AUTH_MODE"].strip().lower() == "token"
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # a Ray without token authentication
        return False
    if _probe(address) is not False:  # it answers without a token (or cannot be asked)
        return False
    log = logging.getLogger(setup.__name__)
    level, log.level = log.level, logging.ERROR  # Ray warns as if it started a cluster
    try:
        return bool(setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False))
    finally:
        log.setLevel(level)


def check_token(address: str, token: bool) -> None:
    """Raise a ConfigError naming ``address`` when its cluster refuses this machine's token.

    ``ray.init`` asks the cluster for its id 20 times, one second apart, each refusal a
    ``gcs_client.cc`` warning line on stderr, before it fails with a message that names neither
    the token nor the fix; :func:`_probe` tells the refusal apart in milliseconds.
    """
    if _probe(address) is False:
        raise field_error("address", f"cannot join the Ray cluster at {address!r}: it refused "
                                     "this machine's authentication token",
                          _token_fix(token))


def _probe(address: str) -> bool | None:
    """Whether the cluster at ``address`` lets this process in with its current token settings:
    False when it refuses them, True when it answers, None when it cannot be asked this way
    (Ray Client's ``ray://``, an older Ray, no cluster found for ``auto``, anything else
    ``ray.init`` then reports as before). One call of Ray's GCS client; its warning line goes
    nowhere."""
    if "://" in address:  # Ray Client (ray://): its server is not a GCS
        return None
    try:
        from ray._private.services import canonicalize_bootstrap_address
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return None
    try:
        with _stderr_silenced():  # the C++ client warns on fd 2, past Python's logging
            gcs = canonicalize_bootstrap_address(address)  # "auto": RAY_ADDRESS, or ray start's
            if gcs is None:
                return None
            GcsClient(address=gcs, cluster_id=None)
    except AuthenticationError:
        return False
    except Exception:  # noqa: BLE001 - ray.init reports whatever else is wrong, as before
        return None
    return True


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (a native library's own writes too)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _token_fix(sent: bool) -> str:
    """What to do when a cluster refuses the token this machine sent (or did not send)."""
    if sent:
        return "copy the head node's ~/.ray/auth_token to this machine or set RAY_AUTH_TOKEN to it"
    return ("set RAY_AUTH_MODE=token and put the cluster's token in RAY_AUTH_TOKEN or "
            "~/.ray/auth_token")


def _join_fix(token: bool) -> str:
    fix = ("check that the cluster runs ('ray status' on its head node), pass its address, or "
           "leave --address out for a local Ray")
    if not token:
        fix += ("; a cluster with token authentication (Ray's default for 'ray start --head') "
                f"also needs you to {_token_fix(False)}")
    return fix


#: Seconds to wait for a TCP connection to ``--address`` before giving up.
CONNECT_TIMEOUT = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise a ConfigError naming ``address`` when nothing accepts a TCP connection there.

    ``ray.init`` retries an unreachable cluster address for a long time before it fails (minutes
    for a host that drops packets), so a mistyped or dead address is checked with one socket
    connect first. ``"auto"`` is checked at the address Ray resolves it to (``RAY_ADDRESS``, or
    the cluster ``ray start`` last recorded on this machine, which may be long dead); other
    addresses without an explicit ``host:port`` are left to Ray.
    """
    if address == "auto":
        resolved = _resolve_auto()
        if resolved is None:
            return  # Ray says what it cannot find
        if resolved != address:
            try:
                check_reachable(resolved, timeout)
            except ConfigError as error:
                raise field_error("address", f"'auto' means {resolved!r} here (RAY_ADDRESS, or "
                                  f"the cluster 'ray start' last recorded), and "
                                  f"{str(error).removeprefix('address: ')}") from None
            return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    host = host.strip("[]")  # IPv6 literal
    fix = ("check the head node's address and port ('ray status' on the head prints it), or "
           "leave --address out for a local Ray")
    try:
        connection = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise field_error("address", f"nothing answers at {address!r} ({reason} after trying "
                                     f"for up to {timeout:g} s)", fix) from None
    with connection:
        if not _speaks_grpc(connection, timeout):
            raise field_error("address", f"{address!r} answers, but not as a Ray cluster (no "
                                         f"gRPC handshake, which Ray's GCS and client server "
                                         f"give at once)", fix)


def _resolve_auto() -> str | None:
    """The ``host:port`` Ray's ``address="auto"`` joins, or None when Ray finds none (its own
    error then says so)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray without it: leave "auto" to Ray
        return None
    try:
        return canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - no cluster found, a bad RAY_ADDRESS: Ray's to say
        return None


#: An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray
#: Client server) answers with its own SETTINGS frame at once.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_grpc(connection: socket.socket, timeout: float) -> bool:
    """Whether the server at the other end of ``connection`` answers an HTTP/2 handshake.

    Ray's GCS client has no handshake timeout: against a port where something else listens (a
    web server, a typo'd port of another service) ``ray.init`` waited silently for minutes. With
    TLS on (``RAY_USE_TLS``) a plain preface is no test, so it passes.
    """
    if os.environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true"):
        return True
    try:
        connection.settimeout(timeout)
        connection.sendall(_HTTP2_PREFACE)
        reply = connection.recv(9)
    except OSError:
        return False
    return len(reply) >= 4 and reply[3] == 4  # frame type 4: SETTINGS


def dashboard_options() -> dict[str, object]:
    """``ray.init`` options of the embedded Ray's dashboard: off, or on and bound to localhost.

    The dashboard can submit jobs, that is run code, and has no authentication of its own, so it
    is opt-in (``DISTOPT_DASHBOARD=1``) and never listens beyond this machine; reach it from
    elsewhere through an SSH tunnel (``ssh -L 8265:127.0.0.1:8265 host``).
    """
    if os.environ.get("DISTOPT_DASHBOARD", "").strip().lower() in ("1", "true", "yes", "on"):
        return {"include_dashboard": True, "dashboard_host": "127.0.0.1"}
    return {"include_dashboard": False}


def check_resources(workers: int, resources: Mapping[str, float], *,
                    growable: bool = False) -> None:
    """Raise a ConfigError when no node could ever host one worker (instead of hanging); on a
    ``growable`` cluster, warn instead: the workers wait for capacity (see ``distopt._pool``)."""
    import ray

    total = ray.cluster_resources()
    needs = {"CPU": resources.get("cpu", 1), "GPU": resources.get("gpu", 0)}
    needs.update({k: v for k, v in resources.items() if k not in ("cpu", "gpu")})
    for name, amount in needs.items():
        if amount and total.get(name, 0) < amount:
            key = name.lower() if name in ("CPU", "GPU") else name
            if growable:
                logging.getLogger("distopt").warning(
                    "distopt: resources_per_trial.%s asks %s per worker but the Ray cluster has "
                    "%s now; the workers wait for a node that has it", key, amount,
                    total.get(name, 0))
                continue
            raise field_error(f"resources_per_trial.{key}",
                              f"asks {amount} per trial but the Ray cluster has "
                              f"{total.get(name, 0)}",
                              f"set {key} to 0 or join a cluster that has {name} (--address)")
