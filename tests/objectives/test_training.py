"""Training modes: Jacobian descent never conflicts with a loss; settings validate; auto
rescales."""

from __future__ import annotations

import pytest
import torch

from objectives.models import MLP
from objectives.settings import AGGREGATORS, TrainSettings, parse_settings
from objectives.training import backward_step, fit, make_aggregator, plan_losses, warmup_epochs

# Constant gradients g1 = (1, 0) and g2 = (-2, 0.5): their sum (-1, 0.5) has a negative inner
# product with g1, so a weighted step would increase L1.
G1, G2 = torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.5])


def _conflicting_step(mode: str, aggregator: str) -> torch.Tensor:
    theta = torch.zeros(2, requires_grad=True)
    losses = torch.stack([theta @ G1, theta @ G2])
    backward_step(losses, torch.ones(2), [theta], mode, make_aggregator(aggregator))
    return theta.grad


@pytest.mark.parametrize("aggregator", ["UPGrad", "DualProj", "MGDA"])
def test_jacobian_step_does_not_conflict_with_any_loss(aggregator):
    step = _conflicting_step("jacobian", aggregator)
    # torchjd regularises the Gramian (eps ~ 1e-4) before its QP, so "non-negative" holds up to
    # that relative tolerance; the conflicting weighted step below is off by order 1.
    for g in (G1, G2):
        assert float(step @ g) >= -1e-2 * float(step.norm() * g.norm())
    assert float(step.norm()) > 1e-3  # not the trivial zero step


def test_the_toy_really_conflicts_for_weighted_and_mean_steps():
    for step in (_conflicting_step("weighted", "UPGrad"), _conflicting_step("jacobian", "Mean")):
        assert float(step @ G1) < -0.1 * float(step.norm() * G1.norm())


def test_upgrad_on_an_mlp_with_three_losses_across_parameter_tensors():
    torch.manual_seed(0)
    model = MLP((3,), (3,), width=8, depth=2)
    params = list(model.parameters())
    x = torch.randn(16, 3)
    out = model(x)
    losses = torch.stack(
        [out[:, 0].mean(), -out[:, 0].mean() + out[:, 1].square().mean(), out[:, 2].abs().mean()]
    )
    grads = [
        torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])
        for loss in losses
    ]
    backward_step(losses, torch.ones(3), params, "jacobian", make_aggregator("UPGrad"))
    step = torch.cat([p.grad.flatten() for p in params])
    assert (
        min(float(grads[0] @ grads[1]), float(grads[0] @ grads[2]), float(grads[1] @ grads[2])) < 0
    )
    for g in grads:
        assert float(step @ g) >= -1e-5 * float(g.norm() * step.norm())


@pytest.mark.parametrize("name", AGGREGATORS)
def test_every_listed_aggregator_builds_and_aggregates(name):
    result = make_aggregator(name)(torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.5]]))
    assert result.shape == (3,) and torch.isfinite(result).all()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"lam.rotation": -1.0}, "lam.rotation"),
        ({"lam.rotaton": 1.0}, "lam.rotaton"),
        ({"mode": "sgd"}, "mode"),
        ({"aggregator": "Adam"}, "aggregator"),
        ({"lr": 0.0}, "lr"),
        ({"width": 3.5}, "width"),
        ({"depth": True}, "depth"),
        ({"epochs": "ten"}, "epochs"),
        ({"penalty": "irm"}, "penalty"),
        ({"hard": "scaling"}, "hard"),
        ({"model": "residual"}, "model"),
        ({"model": "residual", "hard": "rotation"}, "model"),  # this caller allows mlp only
        ({"model": "cnn"}, "model"),
        ({"widht": 8}, "widht"),
        ({"warmup": -1}, "warmup"),
        ({"lam.rotation": float("nan")}, "lam.rotation"),
    ],
)
def test_bad_config_values_name_the_key(config, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as info:
        parse_settings(config, groups=("rotation", "permutation"), allow_penalty=False)
    assert str(info.value).startswith(key)


def test_settings_merge_defaults_and_accept_integral_floats():
    defaults = TrainSettings(width=32, epochs=10)
    s = parse_settings(
        {"lam.rotation": 0.5, "width": 64.0, "_trial": 3},
        groups=("rotation", "scaling"),
        defaults=defaults,
    )
    assert s.width == 64 and isinstance(s.width, int) and s.epochs == 10
    assert s.lams == {"rotation": 0.5, "scaling": 0.0}
    assert parse_settings({"hard": "rotation+scaling"}, groups=("rotation", "scaling")).hard == (
        "rotation",
        "scaling",
    )


def test_model_key_defaults_to_mlp_and_residual_needs_hard_groups():
    groups = ("rotation", "scaling")
    assert parse_settings({}, groups=groups).model == "mlp"
    s = parse_settings(
        {"model": "residual", "hard": "rotation"}, groups=groups, models=("mlp", "residual")
    )
    assert (s.model, s.hard) == ("residual", ("rotation",))
    with pytest.raises(ValueError, match="^model: 'residual' needs `hard`"):
        parse_settings({"model": "residual"}, groups=groups, models=("mlp", "residual"))
    with pytest.raises(ValueError, match="^model: this task has no symmetry groups"):
        parse_settings({"model": "mlp"})


def test_plan_turns_off_zero_strengths_except_in_auto_mode():
    s = parse_settings({"lam.a": 0.0, "lam.b": 2.0}, groups=("a", "b"))
    plan = plan_losses(s, ["a", "b"])
    assert plan.names == ("task", "reg.b") and plan.strengths.tolist() == [1.0, 2.0]
    auto = plan_losses(s.with_(mode="auto"), ["a", "b"])
    assert auto.names == ("task", "reg.a", "reg.b")
    with_penalty = plan_losses(parse_settings({"penalty": "vrex", "penalty_weight": 10.0}), [])
    assert with_penalty.names == ("task", "penalty") and with_penalty.penalty


def test_warmup_is_capped_by_the_epochs():
    assert warmup_epochs(TrainSettings(epochs=40, warmup=10)) == 10
    assert warmup_epochs(TrainSettings(epochs=6, warmup=10)) == 3
    assert warmup_epochs(TrainSettings(epochs=1, warmup=10, mode="auto")) == 1
    assert warmup_epochs(TrainSettings(epochs=8, warmup=0, mode="auto")) == 1
    assert warmup_epochs(TrainSettings(epochs=8, warmup=0)) == 0


def test_auto_mode_sets_strengths_inverse_to_the_observed_regularisers():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
    model = torch.nn.Module()
    model.w = w

    def terms(idx):
        task = (w - 2.0).square().sum()
        return torch.stack([task, 100.0 * (w[0].square() + 1.0), 0.01 * (w[1].square() + 1.0)])

    settings = TrainSettings(mode="auto", epochs=6, warmup=2, lr=1e-2, batch_size=4, auto_scale=0.5)
    plan = plan_losses(settings, ["big", "small"])
    seen = {}
    fit(
        model,
        terms,
        plan,
        settings,
        8,
        generator=torch.Generator().manual_seed(0),
        on_epoch=lambda epoch, summary: seen.setdefault(epoch, summary),
    )
    during, after = seen[0], seen[1]
    assert during["lam.big"] == 0.0 and during["lam.small"] == 0.0  # warm-up: plain training
    assert after["lam.big"] == pytest.approx(0.5 * after["task"] / after["reg.big"])
    assert after["lam.small"] == pytest.approx(0.5 * after["task"] / after["reg.small"])
    assert after["lam.small"] > 1000 * after["lam.big"]
    assert seen[5]["lam.big"] == after["lam.big"]  # fixed after the warm-up


def test_weighted_fit_reduces_the_task_loss():
    torch.manual_seed(0)
    model = MLP((2,), (), width=16, depth=1)
    x = torch.randn(64, 2)
    y = x.sum(-1) + torch.sin(2 * x[:, 0])

    def terms(idx):
        return (model(x[idx]) - y[idx]).square().mean()[None]

    settings = TrainSettings(epochs=30, batch_size=16, lr=1e-2)
    history = []
    fit(
        model,
        terms,
        plan_losses(settings, []),
        settings,
        64,
        generator=torch.Generator().manual_seed(0),
        on_epoch=lambda epoch, summary: history.append(summary["task"]),
    )
    assert history[-1] < 0.2 * history[0]
