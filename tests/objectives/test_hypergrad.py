"""Hypergradients of the mixed-symmetry task: config keys, and agreement with differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distopt.gradients import grad_key
from objectives.hypergrad import HypergradOptions, split_hypergrad_config
from objectives.mixed_symmetry import make_task

#: Small enough to train in about a second on one core, large enough to fit the function.
TINY = {"width": 32, "depth": 2, "epochs": 30, "batch_size": 64, "lr": 3e-3, "seed": 0}
LAMS = {"lam.rotation": 0.3, "lam.scaling": 0.3, "lam.permutation": 0.3}
COVERED = ["test_mse", "val_mse", "equiv_err.rotation", "equiv_err.scaling",
           "equiv_err.permutation"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    # Permutation symmetry broken on purpose, rotation exact: strengths trade accuracy for
    # invariance.
    return make_task(alphas={"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}, dim=2,
                     n_train=256)


@pytest.fixture(scope="module")
def center(task):
    return task({**TINY, **LAMS, "hypergrad": True})


def test_config_keys_are_split_off_and_validated():
    rest, options = split_hypergrad_config({"lam.rotation": 0.1, "hypergrad": True,
                                            "hypergrad.iterations": 10,
                                            "hypergrad.metrics": "test_mse"})
    assert rest == {"lam.rotation": 0.1}
    assert options == HypergradOptions(method="neumann", iterations=10, metrics=("test_mse",))
    assert split_hypergrad_config({"hypergrad": False, "hypergrad.iterations": 3})[1] is None
    assert split_hypergrad_config({"hypergrad": "unroll"})[1].steps == 20
    assert split_hypergrad_config({"hypergrad": True})[1].steps == 20
    for bad in ({"hypergrad": "magic"}, {"hypergrad": True, "hypergrad.iterations": 0},
                {"hypergrad": True, "hypergrad.typo": 1},
                {"hypergrad": True, "hypergrad.damping": -1}):
        with pytest.raises(ValueError, match="hypergrad"):
            split_hypergrad_config(bad)


def test_hypergrad_adds_keys_and_leaves_the_metrics_unchanged(task, center):
    plain = task({**TINY, **LAMS})
    for name, value in plain.items():
        if name != "train_seconds":
            assert center[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    params = [*LAMS, "weight_decay"]
    assert {grad_key(m, p) for m in COVERED for p in params} <= set(center)
    assert all(math.isfinite(v) for v in center.values())
    assert center["hypergrad_seconds"] > 0


def _central_differences(task, h=0.05, base=TINY):
    columns = []
    for param, value in LAMS.items():
        up = task({**base, **LAMS, param: value + h})
        down = task({**base, **LAMS, param: value - h})
        columns.append([(up[m] - down[m]) / (2 * h) for m in COVERED])
    return np.array(columns).T  # metrics x params


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def differences(task):
    return _central_differences(task)


def _hypergradients(result):
    return np.array([[result[grad_key(m, p)] for p in LAMS] for m in COVERED])


def test_hypergradients_agree_with_central_differences(task, differences):
    """IFT + Neumann hypergradients against differences of trials that share the training seed."""
    accurate = task({**TINY, **LAMS, "hypergrad": True, "hypergrad.iterations": 50,
                     "hypergrad.group_samples": 4, "hypergrad.train_samples": 256})
    hyper = _hypergradients(accurate)
    # Accuracy and the invariances a search trades off, one row per metric (equiv_err.scaling, a
    # small, flat row here, and val_mse on 256 points are the noisiest).
    for metric in ("test_mse", "equiv_err.rotation", "equiv_err.permutation"):
        row = COVERED.index(metric)
        assert _cosine(hyper[row], differences[row]) > 0.95, metric
    # The whole Jacobian (every covered metric) points the same way.
    assert _cosine(hyper.ravel(), differences.ravel()) > 0.95


def test_cheap_defaults_and_the_unrolled_window_agree_too(task, center, differences):
    hyper = _hypergradients(center)  # the defaults: a few tenths of a second
    assert _cosine(hyper.ravel(), differences.ravel()) > 0.95
    for metric, bound in (("test_mse", 0.9), ("equiv_err.rotation", 0.95),
                          ("equiv_err.permutation", 0.95)):
        row = COVERED.index(metric)
        assert _cosine(hyper[row], differences[row]) > bound, metric
    unrolled = task({**TINY, **LAMS, "hypergrad": "unroll",
                     "hypergrad.metrics": "test_mse+equiv_err.permutation"})
    for metric in ("test_mse", "equiv_err.permutation"):
        row = COVERED.index(metric)
        estimate = np.array([unrolled[grad_key(metric, p)] for p in LAMS])
        assert _cosine(estimate, differences[row]) > 0.9, metric


def test_the_residual_pathway_model_gets_hypergradients_of_both_pathways(task):
    """``model: residual``: the trained two-pathway model itself is differentiated (every
    strength, rotation's included: its regulariser acts on the free pathway)."""
    residual = {**TINY, "model": "residual", "hard": "rotation"}
    result = task({**residual, **LAMS, "hypergrad": True, "hypergrad.iterations": 50,
                   "hypergrad.group_samples": 4, "hypergrad.train_samples": 256})
    plain = task({**residual, **LAMS})
    assert result["test_mse"] == pytest.approx(plain["test_mse"], rel=1e-6)
    hyper = _hypergradients(result)
    differences = _central_differences(task, base=residual)
    assert _cosine(hyper.ravel(), differences.ravel()) > 0.95
    for metric in ("test_mse", "equiv_err.permutation"):
        row = COVERED.index(metric)
        assert _cosine(hyper[row], differences[row]) > 0.95, metric
