"""Symmetry-aware objectives for distopt searches.

Groups (:mod:`.groups`), soft equivariance regularisers (:mod:`.regularisers`), invariance penalties
(:mod:`.penalties`), models with a frame-averaged hard baseline (:mod:`.models`), in-trial training
(:mod:`.training`, :mod:`.settings`) and three tasks generated in code: :mod:`.mixed_symmetry`,
:mod:`.motion`, :mod:`.environments`. Each task module has ``make_task(...) -> objective`` where
``objective(config) -> dict[str, float]`` is picklable and runs inside a distopt trial;
``mixed_symmetry.make_cohort_task(...)`` is the same objective as a ``distopt.batched`` cohort
objective, training many trials of one architecture as one batched computation (:mod:`.cohort`).
"""

from .groups import (
    Embedded,
    Group,
    MatrixGroup,
    Orthogonal,
    Permutation,
    Reflection,
    Rotation,
    Scaling,
    Translation,
    o2_about,
    so2_about,
)
from .models import MLP, MODELS, FrameAveraged, ResidualPathway, hard_equivariant
from .penalties import irm_penalty, mmd_penalty, vrex_penalty
from .regularisers import equivariance_error, equivariance_loss, equivariance_terms
from .settings import AGGREGATORS, MODES, TrainSettings, parse_settings
from .training import backward_step, fit, make_aggregator, plan_losses

__all__ = [
    "AGGREGATORS",
    "MLP",
    "MODELS",
    "MODES",
    "Embedded",
    "FrameAveraged",
    "Group",
    "MatrixGroup",
    "Orthogonal",
    "Permutation",
    "Reflection",
    "ResidualPathway",
    "Rotation",
    "Scaling",
    "TrainSettings",
    "Translation",
    "backward_step",
    "equivariance_error",
    "equivariance_loss",
    "equivariance_terms",
    "fit",
    "hard_equivariant",
    "irm_penalty",
    "make_aggregator",
    "mmd_penalty",
    "o2_about",
    "parse_settings",
    "plan_losses",
    "so2_about",
    "vrex_penalty",
]
