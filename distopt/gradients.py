"""The hypergradient key scheme, defined once: ``grad/<metric>/<param>``.

An objective that can differentiate its metrics in its hyperparameters returns, beside the
metrics, one float per (metric, parameter) under :func:`grad_key`: ``d metric / d param`` in the
parameter's *raw* units (per unit of ``lr``, not of its log or its encoded coordinate). Producers
(``objectives.hypergrad``) write keys with :func:`grad_key`; consumers (the ``jacobian`` strategy)
read them with it or with :func:`parse_grad_key`.
"""

from __future__ import annotations

#: Prefix of every hypergradient key: ``grad/<metric>/<param>``.
GRAD_PREFIX = "grad/"


def grad_key(metric: str, param: str) -> str:
    """``grad/<metric>/<param>``: the key of ``d metric / d param`` in raw parameter units."""
    return f"{GRAD_PREFIX}{metric}/{param}"


def parse_grad_key(key: str) -> tuple[str, str] | None:
    """``(metric, param)`` of a ``grad/<metric>/<param>`` key, or None for any other key.

    Parameter names never contain ``/`` (distopt forbids it), so the last ``/`` splits the two.
    """
    if not key.startswith(GRAD_PREFIX):
        return None
    metric, sep, param = key[len(GRAD_PREFIX):].rpartition("/")
    return (metric, param) if sep and metric and param else None


__all__ = ["GRAD_PREFIX", "grad_key", "parse_grad_key"]
