"""How much distopt and the Ray it starts print: one verbosity, set by ``-q`` / ``-v``.

Levels: ``-1`` quiet (errors only), ``0`` default (distopt's warnings; Ray's errors only), ``1``
verbose (distopt's info; Ray's warnings), ``2`` debug (everything, Ray's info too). The level lives
in the ``DISTOPT_VERBOSITY`` environment variable so that a process started later (a Ray driver
in a subprocess, a notebook kernel's next run) sees the same choice.

``distopt._ray`` reads :func:`ray_init_options` and :func:`ray_env` when it starts Ray.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: Environment variable holding the verbosity (an int from -1 to 2).
ENV = "DISTOPT_VERBOSITY"

_LEVELS = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_RAY_LEVELS = {-1: logging.ERROR, 0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}


def set_verbosity(level: int) -> None:
    """Set the verbosity (clipped to -1..2) for distopt's logger and for Ray started after this."""
    level = max(-1, min(2, int(level)))
    os.environ[ENV] = str(level)
    logger = logging.getLogger("distopt")
    logger.setLevel(_LEVELS[level])
    if not logger.handlers:  # without a handler, INFO would not reach the terminal
        handler = logging.StreamHandler()
        handler.setFormatter(_Prefixed("%(message)s"))
        logger.addHandler(handler)


class _Prefixed(logging.Formatter):
    """``distopt: `` before each line, once: the warnings a user must see carry it themselves,
    so that they read the same under Python's last-resort handler (a script or notebook that
    never configured logging), and this handler must not print it twice."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if text.startswith("distopt: ") else f"distopt: {text}"


def verbosity() -> int:
    """The current verbosity: the last :func:`set_verbosity`, else ``DISTOPT_VERBOSITY``, else 0."""
    try:
        return max(-1, min(2, int(os.environ.get(ENV, "0"))))
    except ValueError:
        return 0


def ray_log_level() -> int:
    """The ``logging_level`` for ``ray.init``: Ray's own warnings stay quiet unless ``-v``."""
    return _RAY_LEVELS[verbosity()]


def ray_init_options() -> dict[str, object]:
    """``ray.init`` keywords for the verbosity: Ray's log level, and whether the workers' output
    (the objective's prints) reaches the driver (not with ``-q``)."""
    return {"logging_level": ray_log_level(), "log_to_driver": verbosity() >= 0}


def ray_env() -> dict[str, str]:
    """Environment variables to set (if unset) before Ray starts: ``RAY_DEDUP_LOGS=1`` folds the
    same line printed by many workers into one (Ray's default, made explicit so that a user's
    shell setting does not flood a run); ``RAY_COLOR_PREFIX=0`` when stderr is not a terminal,
    so that a log file gets no ANSI colour codes around ``(TrialWorker pid=...)``."""
    env = {"RAY_DEDUP_LOGS": "1"}
    if not _is_terminal(sys.stderr):
        env["RAY_COLOR_PREFIX"] = "0"
    return env


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def quiet_ray_import() -> None:
    """Keep two notebook-only messages of ``import ray`` off the screen (call before it).

    In a Jupyter kernel without ipywidgets, importing Ray imports ``tqdm.auto``, which warns
    ``TqdmWarning: IProgress not found``, and logs ``Missing packages: ['ipywidgets']`` at INFO;
    distopt shows no widget, so neither concerns a user. ``-vv`` lets the log line through.
    Only those two messages are filtered; idempotent.
    """
    warnings.filterwarnings("ignore", message="IProgress not found")
    if verbosity() < 2:
        logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
