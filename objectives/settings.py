"""Trial configuration: the keys an objective reads, their defaults, and validation.

A config is the flat dict a search samples, with dotted keys (``lam.rotation``). Missing keys take
the task's defaults; a bad value raises :class:`ValueError` naming the key and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .models import ACTIVATIONS
from .penalties import PENALTIES

__all__ = [
    "AGGREGATORS", "LARGE_SETTINGS", "MODES", "SMALL_SIZE", "TrainSettings", "parse_settings",
]

#: Training modes: fixed strengths, Jacobian descent, or strengths set after a warm-up.
MODES: tuple[str, ...] = ("weighted", "jacobian", "auto")

#: torchjd aggregators selectable by name in ``jacobian`` mode: those that need no extra settings
#: and no optional solver (CAGrad and NashMTL need cvxpy).
AGGREGATORS: tuple[str, ...] = (
    "UPGrad",
    "DualProj",
    "MGDA",
    "IMTLG",
    "AlignedMTL",
    "ConFIG",
    "PCGrad",
    "GradVac",
    "GradDrop",
    "Mean",
    "Sum",
    "Random",
)


@dataclass(frozen=True)
class TrainSettings:
    """Validated training settings of one trial (see :func:`parse_settings` for the config keys)."""

    lams: dict[str, float] = field(default_factory=dict)
    lr: float = 3e-3
    width: int = 64
    depth: int = 2
    epochs: int = 40
    batch_size: int = 64
    mode: str = "weighted"
    aggregator: str = "UPGrad"
    penalty: str = "none"
    penalty_weight: float = 0.0
    samples: int = 2
    warmup: int = 5
    auto_scale: float = 1.0
    activation: str = "silu"
    weight_decay: float = 0.0
    seed: int = 0
    hard: tuple[str, ...] = ()
    model: str = "mlp"

    def with_(self, **changes: Any) -> TrainSettings:
        """A copy with some fields replaced (used for task-specific defaults)."""
        return replace(self, **changes)


# key -> (kind, lower bound, whether the bound is inclusive)
_NUMERIC: dict[str, tuple[type, float, bool]] = {
    "lr": (float, 0.0, False),
    "width": (int, 1, True),
    "depth": (int, 0, True),
    "epochs": (int, 1, True),
    "batch_size": (int, 1, True),
    "penalty_weight": (float, 0.0, True),
    "samples": (int, 1, True),
    "warmup": (int, 0, True),
    "auto_scale": (float, 0.0, False),
    "weight_decay": (float, 0.0, True),
    "seed": (int, 0, True),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": MODES,
    "aggregator": AGGREGATORS,
    "penalty": PENALTIES,
    "activation": tuple(ACTIVATIONS),
}


def _number(key: str, value: Any, kind: type, low: float, inclusive: bool) -> float | int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        and not hasattr(value, "__float__")
    ):
        raise ValueError(f"{key}: expected a number; got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{key}: must be finite; got {value!r}")
    if kind is int:
        if number != int(number):
            raise ValueError(f"{key}: expected an integer; got {value!r}")
        number = int(number)
    if number < low or (number == low and not inclusive):
        bound = ">=" if inclusive else ">"
        raise ValueError(f"{key}: must be {bound} {low:g}; got {value!r}")
    return number


def _hard(value: Any, groups: Sequence[str]) -> tuple[str, ...]:
    if not groups:
        raise ValueError("hard: this task has no symmetry groups to build in; remove the key")
    if not isinstance(value, str):
        raise ValueError(f"hard: expected 'none' or group names joined by '+'; got {value!r}")
    if value == "none":
        return ()
    names = tuple(value.split("+"))
    for name in names:
        if name not in groups:
            raise ValueError(
                f"hard: unknown group {name!r} in {value!r}; allowed: none, {', '.join(groups)}"
            )
    return names


def _model(value: Any, groups: Sequence[str], models: Sequence[str]) -> str:
    if not groups:
        raise ValueError("model: this task has no symmetry groups to build in; remove the key")
    if value not in models:
        raise ValueError(f"model: got {value!r}; allowed: {', '.join(models)}")
    return value


#: The ``small`` size of every regression task: splits and training defaults that train in
#: seconds on one CPU core.
SMALL_SIZE: dict[str, Any] = {
    "n_train": 1024,
    "n_val": 256,
    "n_test": 1024,
    "settings": TrainSettings(width=64, depth=2, epochs=60, batch_size=64, lr=3e-3, warmup=10),
}
#: Training defaults of the ``large`` size (a GPU's worth of work); tasks set their own splits.
LARGE_SETTINGS = TrainSettings(width=256, depth=3, epochs=150, batch_size=256, lr=1e-3, warmup=20)


def parse_settings(
    config: Mapping[str, Any],
    *,
    groups: Sequence[str] = (),
    defaults: TrainSettings | None = None,
    allow_penalty: bool = True,
    models: Sequence[str] = ("mlp",),
) -> TrainSettings:
    """Validate a trial config and merge it over ``defaults``.

    Keys: ``lam.<group>`` (float >= 0, one per candidate group, default 0 = off), ``lr``, ``width``,
    ``depth``, ``epochs``, ``batch_size``, ``samples`` (group elements per regulariser per step),
    ``mode`` (:data:`MODES`), ``aggregator`` (:data:`AGGREGATORS`), ``penalty`` (``none``, ``irm``,
    ``vrex``, ``mmd``), ``penalty_weight`` (>= 0), ``warmup`` (epochs; see
    :func:`objectives.training.warmup_epochs`), ``auto_scale`` (> 0), ``activation``,
    ``weight_decay``, ``seed``, ``hard`` (``"none"`` or group names joined by ``+``:
    wrap the model in exact frame averaging over those groups, the hard baseline), ``model``
    (one of ``models``, which the task supports, from :data:`objectives.models.MODELS`:
    ``residual`` adds a free MLP pathway to the frame-averaged one, so ``hard`` must name its
    groups). Keys starting
    with ``_`` are ignored (free for the caller's bookkeeping); any other unknown key is an error,
    so a typo never passes silently.

    Raises:
        ValueError: naming the key, the received value and what is allowed.
    """
    base = defaults or TrainSettings()
    lams = {name: 0.0 for name in groups}
    changes: dict[str, Any] = {}
    allowed = sorted(
        [
            *(f"lam.{g}" for g in groups),
            *_NUMERIC,
            *_CHOICES,
            *(("hard", "model") if groups else ()),
        ]
    )
    for key, value in config.items():
        if not isinstance(key, str):
            raise ValueError(f"config keys must be strings; got {key!r}")
        if key.startswith("_"):
            continue
        if key.startswith("lam."):
            name = key[4:]
            if name not in lams:
                known = (
                    ", ".join(f"lam.{g}" for g in groups)
                    or "none (this task has no symmetry groups)"
                )
                raise ValueError(f"{key}: unknown symmetry group {name!r}; allowed: {known}")
            lams[name] = float(_number(key, value, float, 0.0, True))
        elif key in _NUMERIC:
            changes[key] = _number(key, value, *_NUMERIC[key])
        elif key == "hard":
            changes["hard"] = _hard(value, groups)
        elif key == "model":
            changes["model"] = _model(value, groups, models)
        elif key in _CHOICES:
            if value not in _CHOICES[key]:
                raise ValueError(f"{key}: got {value!r}; allowed: {', '.join(_CHOICES[key])}")
            changes[key] = value
        else:
            raise ValueError(f"{key}: unknown config key; allowed: {', '.join(allowed)}")
    settings = base.with_(lams=lams, **changes)
    if settings.model == "residual" and not settings.hard:
        raise ValueError(
            "model: 'residual' needs `hard` to name the groups of its equivariant pathway "
            f"(e.g. hard: {groups[0]}); got hard: none"
        )
    if not allow_penalty and settings.penalty != "none":
        raise ValueError(
            f"penalty: got {settings.penalty!r}; this task has one environment, allowed: none"
        )
    return settings
