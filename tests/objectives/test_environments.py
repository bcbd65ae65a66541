"""Task 3: the spurious feature flips at test time; strong penalties ignore it, ERM does not."""

from __future__ import annotations

import math

import pytest

from objectives.environments import make_task

KEYS = {
    "train_risk",
    "ood_risk",
    "penalty",
    "penalty.irm",
    "penalty.vrex",
    "penalty.mmd",
    "spurious_weight",
    "causal_weight",
    "params_m",
    "train_seconds",
}


def test_spurious_correlation_differs_across_environments_and_flips_at_test():
    x_train, y_train, x_test, y_test = make_task().data()

    def slope(x, y):  # least-squares coefficient of y on the spurious feature alone
        s = x[:, -1] - x[:, -1].mean()
        return float(s @ (y - y.mean()) / s.square().sum())

    train = [slope(x, y) for x, y in zip(x_train, y_train, strict=True)]
    assert min(train) > 0.3 and max(train) - min(train) > 0.5  # same sign, different strength
    assert slope(x_test, y_test) < -0.3


@pytest.mark.parametrize("variant", ["linear", "nonlinear"])
@pytest.mark.parametrize("penalty", ["none", "irm", "vrex", "mmd"])
def test_objective_returns_finite_metrics(variant, penalty):
    metrics = make_task(variant)(
        {"epochs": 2, "penalty": penalty, "penalty_weight": 10.0, "warmup": 1}
    )
    assert set(metrics) == KEYS
    assert all(math.isfinite(v) for v in metrics.values())
    if penalty != "none":
        assert metrics["penalty"] == metrics[f"penalty.{penalty}"]


@pytest.fixture(scope="module")
def erm():
    return make_task("linear", seed=0)({"penalty": "none"})


# IRMv1 pins the spurious coefficient near 0; V-REx only equalises risks, which with three
# environments also removes most of it but less reliably across seeds (see the benchmark table).
@pytest.mark.parametrize(
    ("penalty", "weight_ratio", "risk_ratio"), [("irm", 0.2, 0.5), ("vrex", 0.5, 0.7)]
)
def test_strong_penalty_shrinks_the_spurious_weight_and_the_ood_risk(
    erm, penalty, weight_ratio, risk_ratio
):
    strong = make_task("linear", seed=0)({"penalty": penalty, "penalty_weight": 1e4})
    assert erm["spurious_weight"] > 0.25  # ERM leans on the spurious feature
    assert strong["spurious_weight"] < weight_ratio * erm["spurious_weight"]
    assert strong["ood_risk"] < risk_ratio * erm["ood_risk"]
    assert strong["train_risk"] > erm["train_risk"]  # the price: it gives up the shortcut


def test_jacobian_mode_with_a_penalty_runs():
    metrics = make_task()(
        {"epochs": 3, "mode": "jacobian", "penalty": "irm", "penalty_weight": 1.0}
    )
    assert all(math.isfinite(v) for v in metrics.values())


def test_bad_configs():
    with pytest.raises(ValueError, match="lam.rotation"):
        make_task()({"lam.rotation": 1.0})
    with pytest.raises(ValueError, match="penalty_weight"):
        make_task()({"penalty": "irm", "penalty_weight": -1.0})
    with pytest.raises(ValueError, match="penalty"):
        make_task()({"penalty": "dro"})
    with pytest.raises(ValueError, match="train_coefs"):
        make_task(train_coefs=(1.0, 1.0))
