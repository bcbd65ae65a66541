"""distopt.report validation and distopt.device() outside a trial."""

from __future__ import annotations

import math

import numpy as np
import pytest

import distopt
from distopt import _context
from distopt._context import TrialContext, TrialPruned, _set_context


@pytest.fixture(autouse=True)
def clean_reports():
    _context.last_reports.clear()
    _set_context(None)
    yield
    _context.last_reports.clear()
    _set_context(None)


@pytest.fixture
def trial():
    context = TrialContext(trial_id=11)
    _set_context(context)
    yield context
    _set_context(None)


def test_report_outside_a_trial_is_kept_for_inspection():
    distopt.report(step=0, loss=1.5)
    distopt.report(loss=np.float32(0.5), acc=np.int64(1))
    rows = _context.last_reports
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[0]["loss"] == 1.5 and rows[1]["loss"] == 0.5 and rows[1]["acc"] == 1.0
    assert all(type(v) is float for r in rows for k, v in r.items() if k not in ("step", "time"))
    assert isinstance(rows[0]["time"], float)


def test_report_inside_a_trial_buffers_rows(trial):
    distopt.report(loss=3.0)
    distopt.report(loss=2.0)
    distopt.report(step=np.int64(7), loss=1.0)  # NumPy ints are ints
    rows = trial.take_rows()
    assert [(r["step"], r["loss"]) for r in rows] == [(0, 3.0), (1, 2.0), (7, 1.0)]
    assert trial.take_rows() == []
    assert _context.last_reports == []


def test_nan_is_allowed_in_a_curve(trial):
    distopt.report(step=0, loss=math.nan)
    assert math.isnan(trial.take_rows()[0]["loss"])


@pytest.mark.parametrize("step", [-1, 1.5, 2.0, "3", True, [1]])
def test_bad_step(step):
    with pytest.raises(distopt.ConfigError, match=r"^report: step must be an int >= 0"):
        distopt.report(step=step, loss=1.0)
    assert _context.last_reports == []


@pytest.mark.parametrize("value", ["high", None, [1.0, 2.0], {"a": 1}, object()])
def test_non_number(value):
    with pytest.raises(distopt.ConfigError, match=r"^report: metric 'loss' must be a number"):
        distopt.report(step=0, loss=value)
    assert _context.last_reports == []


@pytest.mark.parametrize("name", ["time", "trial_id"])
def test_reserved_names(name):
    with pytest.raises(distopt.ConfigError, match=rf"^report: '{name}' is a reserved column"):
        distopt.report(step=0, **{name: 1.0})


def test_no_metric():
    with pytest.raises(distopt.ConfigError, match="at least one metric"):
        distopt.report(step=0)


def test_rejected_report_leaves_the_trial_untouched(trial):
    with pytest.raises(distopt.ConfigError):
        distopt.report(step=0, loss="bad")
    assert trial.take_rows() == [] and trial.n_reported == 0


def test_stop_request_raises_trial_pruned_after_recording(trial):
    distopt.report(step=0, loss=1.0)
    trial.stop_requested = True
    assert distopt.should_stop() is True
    with pytest.raises(TrialPruned, match="trial 11"):
        distopt.report(step=1, loss=0.5)
    assert [r["step"] for r in trial.take_rows()] == [0, 1]
    assert trial.last_row["loss"] == 0.5


def test_should_stop_outside_a_trial():
    assert distopt.should_stop() is False


def test_default_step_follows_the_previous_report(trial):
    distopt.report(step=5, loss=1.0)
    distopt.report(loss=0.5)
    assert [r["step"] for r in trial.take_rows()] == [5, 6]


def test_numeric_text_is_not_a_number():
    with pytest.raises(distopt.ConfigError):
        distopt.report(step=0, loss="0.3")


def test_device_outside_a_trial():
    torch = pytest.importorskip("torch")
    device = distopt.device()
    assert isinstance(device, torch.device)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_device_inside_a_trial_follows_the_context():
    torch = pytest.importorskip("torch")
    _set_context(TrialContext(trial_id=0, device="cuda"))
    try:
        assert distopt.device() == torch.device("cuda")
    finally:
        _set_context(None)
    assert distopt.device().type == ("cuda" if torch.cuda.is_available() else "cpu")
