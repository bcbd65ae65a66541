"""Cohorts: members trained together are the trials they would be alone, and fail or stop alone."""

from __future__ import annotations

import math

import pytest
import torch

from distopt._context import TrialContext
from distopt._worker import TrialWorker
from distopt.cohort import Cohort
from objectives.cohort import CohortTrainer, architecture, runs_alone
from objectives.mixed_symmetry import make_cohort_task, make_task
from objectives.models import MLP, MODELS
from objectives.regularisers import equivariance_terms
from objectives.runner import SampleStream, build_trial_model
from objectives.settings import parse_settings
from objectives.training import plan_losses

ALPHAS = {"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}
FAST = {"epochs": 2, "width": 16, "depth": 2}
#: Members that differ in everything a cohort shares a computation for: seed, strengths (one of
#: them off), lr, weight decay and mode (weighted or auto).
CONFIGS = [
    {**FAST, "seed": 0, "lam.rotation": 0.5, "lam.scaling": 0.1, "lam.permutation": 1.0},
    {**FAST, "seed": 1, "lam.rotation": 2.0, "lr": 1e-2, "weight_decay": 1e-3},
    {**FAST, "seed": 2, "mode": "auto", "warmup": 1, "auto_scale": 0.5},
]
#: Models that are not a plain MLP (frame averaging, a residual pathway) run as a vmap of
#: functional_call instead of MLP.forward_stacked: the same checks hold for them.
OTHER_MODELS = [
    {**FAST, "seed": 0, "hard": "permutation", "lam.rotation": 0.5, "lam.scaling": 0.1},
    {**FAST, "seed": 1, "hard": "permutation", "lam.rotation": 2.0, "lr": 1e-2,
     "weight_decay": 1e-3},
]
RESIDUAL = [{**c, "model": "residual"} for c in OTHER_MODELS]
METRICS = ("test_mse", "val_mse", "equiv_err.rotation", "equiv_err.scaling",
           "equiv_err.permutation", "params_m")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    return make_task(ALPHAS, n_train=64)


def _settings(task, config):
    return parse_settings(config, groups=task.candidates, defaults=task.defaults(),
                          allow_penalty=False, models=MODELS)


def _members(n):
    """A cohort of ``n`` worker-side members (rows land on each member's context)."""
    return Cohort([TrialContext(trial_id=i) for i in range(n)])


def _run(objective, configs, members=None):
    from distopt._context import install_cohort

    members = members or _members(len(configs))
    install_cohort(members)
    try:
        return objective.batch(configs), members
    finally:
        install_cohort(None)


def _lone_first_step(task, settings):
    """The loss vector and gradients of the first step of ``settings`` trained alone."""
    groups = task.groups()
    data = task.data()
    torch.manual_seed(settings.seed)
    model = build_trial_model(groups, settings, task.network)
    plan = plan_losses(settings, list(groups))
    generator = torch.Generator().manual_seed(settings.seed)
    steps = -(-data.x_train.shape[0] // settings.batch_size)
    order = torch.randperm(data.x_train.shape[0], generator=generator)
    active = [groups[g] for g in plan.groups]
    drawn = SampleStream(active, settings.samples, steps, generator,
                         torch.device("cpu")).draw_epoch()
    idx = order[: settings.batch_size]
    x, y = data.x_train[idx], data.y_train[idx]
    fx, regs = equivariance_terms(model, active, x, settings.samples,
                                  elements=[block[0] for block in drawn])
    losses = torch.cat([(fx - y).square().mean()[None], regs])
    weights = plan.strengths.clone().float()
    if settings.mode == "auto":
        weights[plan.regulariser_rows] = 0.0
    grads = torch.autograd.grad((weights * losses).sum(), list(model.parameters()))
    return plan, losses.detach(), dict(zip(dict(model.named_parameters()), grads, strict=True))


@pytest.mark.parametrize("configs", [CONFIGS, OTHER_MODELS, RESIDUAL],
                         ids=["mlp", "hard", "residual"])
def test_first_step_losses_and_gradients_equal_the_lone_trials(task, configs, monkeypatch):
    stacked = []
    original = MLP.forward_stacked
    monkeypatch.setattr(MLP, "forward_stacked",
                        lambda self, *args: stacked.append(1) or original(self, *args))
    settings = [_settings(task, c) for c in configs]
    trainer = CohortTrainer(task.data(), task.groups(), settings, task.network,
                            device=torch.device("cpu"))
    x, y, elements = next(trainer.epoch_batches())
    losses = trainer.losses(x, y, elements)
    assert bool(stacked) == (configs is CONFIGS)  # plain MLPs run hand-batched, others vmapped
    grads = dict(zip(trainer.params, trainer.gradients(losses), strict=True))
    for k, s in enumerate(settings):
        plan, lone_losses, lone_grads = _lone_first_step(task, s)
        own = [0, *trainer.own_rows[k]]
        assert len(own) == len(plan.names)
        torch.testing.assert_close(losses[k, own].detach(), lone_losses, rtol=1e-5, atol=1e-7)
        for name, grad in lone_grads.items():
            torch.testing.assert_close(grads[name][k], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("configs", [CONFIGS, OTHER_MODELS], ids=["mlp", "hard"])
def test_trained_members_match_their_lone_trials(task, configs):
    results, _ = _run(make_cohort_task(ALPHAS, n_train=64), configs)
    for config, result in zip(configs, results, strict=True):
        lone = task(config)
        for metric in METRICS:
            assert result[metric] == pytest.approx(lone[metric], rel=1e-4), (config, metric)
        used = sorted(m for m in lone if m.startswith("lam_used."))  # auto mode's strengths
        assert used == sorted(m for m in result if m.startswith("lam_used."))
        assert bool(used) == (config.get("mode") == "auto")
        for metric in used:
            assert result[metric] == pytest.approx(lone[metric], rel=1e-4), (config, metric)


def test_members_of_other_architectures_form_their_own_subcohorts(task, monkeypatch):
    sizes = []
    original = CohortTrainer.__init__

    def spy(self, data, groups, settings, *args, **kwargs):
        sizes.append(sorted(s.width for s in settings))
        original(self, data, groups, settings, *args, **kwargs)

    monkeypatch.setattr(CohortTrainer, "__init__", spy)
    configs = [{**FAST, "seed": 0}, {**FAST, "width": 8, "seed": 1}, {**FAST, "seed": 2},
               {**FAST, "mode": "jacobian", "lam.rotation": 0.3, "epochs": 1}]
    results, _ = _run(make_cohort_task(ALPHAS, n_train=64), configs)
    assert sorted(sizes) == [[8], [16, 16]]  # the jacobian member ran alone, outside both
    assert runs_alone(_settings(task, configs[3])) and not runs_alone(_settings(task, configs[0]))
    assert architecture(_settings(task, configs[0])) != architecture(_settings(task, configs[1]))
    for config, result in zip(configs, results, strict=True):
        assert result["test_mse"] == pytest.approx(task(config)["test_mse"], rel=1e-4)


def test_each_member_gets_its_own_curve(task):
    from distopt import _context

    results, members = _run(make_cohort_task(ALPHAS, n_train=64), CONFIGS)
    for config, member in zip(CONFIGS, members.members, strict=True):
        rows = member.take_rows()
        assert [r["step"] for r in rows] == [0, 1]
        _context.last_reports.clear()
        task(config)  # outside a trial: its rows land on last_reports
        lone = _context.last_reports[-2:]
        for row, alone in zip(rows, lone, strict=True):
            assert row["train_mse"] == pytest.approx(alone["train_mse"], rel=1e-4)
            assert row["val_mse"] == pytest.approx(alone["val_mse"], rel=1e-4)
    assert len({m.last_row["train_mse"] for m in members.members}) == len(CONFIGS)


def test_a_diverging_or_invalid_member_fails_alone():
    configs = [{**FAST, "lam.rotation": 1.0, "lr": 1e30}, {**FAST, "lam.rotation": -1.0},
               {**FAST, "seed": 3}]
    results, members = _run(make_cohort_task(ALPHAS, n_train=64), configs)
    assert isinstance(results[0], FloatingPointError) and "diverged" in str(results[0])
    assert isinstance(results[1], ValueError) and "lam.rotation" in str(results[1])
    assert math.isfinite(results[2]["test_mse"])
    assert members.members[1].take_rows() == []  # never trained
    assert [r["step"] for r in members.members[2].take_rows()] == [0, 1]


def test_the_worker_records_each_member_as_its_own_trial():
    worker = TrialWorker(make_cohort_task(ALPHAS, n_train=64), ["test_mse"], frozenset(), "w0")
    rows = worker.run([(7, {**FAST, "lr": 1e30, "lam.rotation": 1.0}, 1), (8, FAST, 1)])
    assert [r["status"] for r in rows] == ["FAILED", "COMPLETE"]
    assert "diverged" in rows[0]["error"]
    assert [c["trial_id"] for c in rows[1]["curves"]] == [8, 8]


def test_a_stopped_member_stops_changing(task):
    settings = [_settings(task, {**FAST, "epochs": 3, "seed": s}) for s in (0, 1)]
    trainer = CohortTrainer(task.data(), task.groups(), settings, task.network,
                            device=torch.device("cpu"))
    seen = {}

    def on_epoch(epoch, train, val, reporting):
        seen[epoch] = ({k: v.detach().clone() for k, v in trainer.params.items()}, reporting)
        return [True, epoch < 1]  # the scheduler stops member 1 after its second epoch

    trainer.train(on_epoch)
    after_stop, _ = seen[1]
    for name, value in trainer.params.items():
        torch.testing.assert_close(value[1], after_stop[name][1], rtol=0, atol=0)
        assert not torch.equal(value[0], after_stop[name][0])
    assert seen[2][1] == [True, False]  # and reports no more


def test_a_member_stopped_by_the_scheduler_reports_no_more():
    class StopsMemberOne(Cohort):
        def report_member(self, index, step=None, **metrics):
            super().report_member(index, step, **metrics)
            if index == 1:
                self.members[1].stop_requested = True

    members = StopsMemberOne([TrialContext(trial_id=i) for i in range(2)])
    configs = [{**FAST, "epochs": 3}, {**FAST, "epochs": 3, "seed": 1}]
    _run(make_cohort_task(ALPHAS, n_train=64), configs, members)
    assert [r["step"] for r in members.members[0].take_rows()] == [0, 1, 2]
    assert [r["step"] for r in members.members[1].take_rows()] == [0]


def test_a_cohort_of_one_is_a_plain_objective(task):
    objective = make_cohort_task(ALPHAS, n_train=64)
    assert objective(CONFIGS[0])["test_mse"] == pytest.approx(task(CONFIGS[0])["test_mse"],
                                                              rel=1e-4)
    with pytest.raises(FloatingPointError):
        objective({**FAST, "lr": 1e30, "lam.rotation": 1.0})


def test_a_training_error_fails_its_subcohort_only(monkeypatch):
    original = CohortTrainer.train

    def train(self, on_epoch=None):
        if self.settings[0].width == 8:
            raise RuntimeError("boom")
        return original(self, on_epoch)

    monkeypatch.setattr(CohortTrainer, "train", train)
    configs = [{**FAST, "width": 8}, {**FAST}]
    results, _ = _run(make_cohort_task(ALPHAS, n_train=64), configs)
    assert isinstance(results[0], RuntimeError) and math.isfinite(results[1]["test_mse"])


def test_an_epoch_stream_draws_exactly_what_per_step_draws_would(task):
    groups = list(task.groups().values())
    blocks = SampleStream(groups, 2, 3, torch.Generator().manual_seed(5),
                          torch.device("cpu")).draw_epoch()
    generator = torch.Generator().manual_seed(5)
    for step in range(3):
        for group, block in zip(groups, blocks, strict=True):
            assert torch.equal(block[step], group.sample(2, generator=generator))


def test_evaluation_in_member_chunks_gives_the_same_metrics(task, monkeypatch):
    import objectives.cohort as cohort_module

    settings = [_settings(task, {**FAST, "seed": s}) for s in range(3)]
    trainer = CohortTrainer(task.data(), task.groups(), settings, task.network,
                            device=torch.device("cpu"))
    whole = (trainer.mse(trainer.data.x_test, trainer.data.y_test),
             trainer.equivariance_errors(trainer.data.x_test))
    # The mse in chunks of two members then one, the equivariance errors one member at a time.
    monkeypatch.setitem(cohort_module.EVAL_FLOATS, "cpu", 2 * 1024 * 16)
    assert [s.stop - s.start for s in trainer._member_chunks(1024)] == [2, 1]
    assert [s.stop - s.start for s in trainer._member_chunks(256 * 49)] == [1, 1, 1]
    chunked = (trainer.mse(trainer.data.x_test, trainer.data.y_test),
               trainer.equivariance_errors(trainer.data.x_test))
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
