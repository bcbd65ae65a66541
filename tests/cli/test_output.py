"""Small things a user meets: the progress bar's counts, 'nothing to run', --version, -q/-v,
report() outside a trial, and the reader methods Optuna and Ray Tune users look for."""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import pytest

import distopt
from distopt import Categorical, Float, Problem, _context, _logging, open_store
from distopt._budget import Budget
from distopt._progress import ProgressBar
from distopt.cli import main
from distopt.store import StoreWriter
from distopt.trial import trial_row


def test_nothing_to_run_message():
    assert Budget(28, stored=28).nothing_to_run() == \
        "nothing to run (28/28 done; raise --budget to continue)"


def test_the_bar_counts_stored_trials_and_shows_queued_apart(capsys):
    bar = ProgressBar(28, stored=20)
    bar.update(SimpleNamespace(finished=22, running=2, queued=1, failed=1, budget=28,
                               front_size=5, hypervolume=0.5, stored=20))
    bar.close()
    text = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert "22/28" in text[-1] and "running=2 queued=1 failed=1 front=5 hv=0.5" in text[-1]
    assert "20/28" in [line for line in text if line][0]   # starts from the stored trials


def test_the_bar_reads_an_older_progress_without_queued(capsys):
    bar = ProgressBar(8)
    bar.update(SimpleNamespace(finished=3, running=2, failed=0, budget=8, front_size=2,
                               hypervolume=None))
    bar.close()
    last = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert "3/8" in last and "running=2 failed=0 front=2 hv=-" in last


def test_a_bar_written_to_a_file_redraws_only_when_a_trial_finishes(capsys):
    """It redrew twice a second while idle: a line in a log file each time (600 KB an hour)."""
    bar = ProgressBar(8)  # under pytest stderr is no terminal, as when it goes to a file
    idle = SimpleNamespace(finished=1, running=2, failed=0, budget=8, front_size=1,
                           hypervolume=None)
    bar.update(idle)
    drawn = capsys.readouterr().err.count("\r")
    for _ in range(20):
        bar.update(idle)  # the loop's ticks while the trials run
    assert capsys.readouterr().err.count("\r") == 0 and drawn >= 1
    bar.update(SimpleNamespace(**{**vars(idle), "finished": 2}))
    assert "2/8" in capsys.readouterr().err
    bar.close()


def test_no_ipywidgets_means_no_tqdm_warning():
    from distopt._progress import _tqdm_class

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = _tqdm_class()(total=2, disable=True)
        bar.close()


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"distopt {distopt.__version__}\n"


@pytest.fixture
def verbosity(monkeypatch):
    """Restore the verbosity and distopt's logger after a test changes them."""
    monkeypatch.delenv(_logging.ENV, raising=False)
    logger = logging.getLogger("distopt")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.mark.parametrize(("argv", "level", "ray_level", "to_driver"), [
    ([], logging.WARNING, logging.ERROR, True),
    (["-q"], logging.ERROR, logging.ERROR, False),
    (["-v"], logging.INFO, logging.WARNING, True),
    (["-vv"], logging.DEBUG, logging.INFO, True),
])
def test_quiet_and_verbose_set_distopt_and_ray_levels(verbosity, tmp_path, argv, level,
                                                      ray_level, to_driver):
    main(["show", *argv, str(tmp_path / "nowhere")])  # exits 2; the levels are set before
    assert logging.getLogger("distopt").level == level
    assert _logging.ray_log_level() == ray_level
    assert _logging.ray_init_options() == {"logging_level": ray_level, "log_to_driver": to_driver}
    # no colour codes: stderr is no terminal under pytest, as in a log file
    assert _logging.ray_env() == {"RAY_DEDUP_LOGS": "1", "RAY_COLOR_PREFIX": "0"}


def test_quiet_before_the_command_too(verbosity, tmp_path):
    main(["-q", "show", str(tmp_path / "nowhere")])
    assert _logging.verbosity() == -1


def test_a_warning_says_distopt_once(verbosity, capfd):
    """The warnings a user must see start with "distopt: " (Python's last-resort handler prints
    them bare); the CLI's handler prefixes the others, and never both."""
    logger = logging.getLogger("distopt")
    logger.handlers[:] = []
    _logging.set_verbosity(0)
    logger.warning("distopt: 4 workers x 1 CPU asked on a machine with 2 cores")
    logger.warning("bayes: trials take 1 s")
    assert capfd.readouterr().err.splitlines() == [
        "distopt: 4 workers x 1 CPU asked on a machine with 2 cores",
        "distopt: bayes: trials take 1 s"]


def test_report_outside_a_trial_warns_once(monkeypatch):
    monkeypatch.setattr(_context, "_warned_outside", False)
    monkeypatch.setattr(_context, "last_reports", [])
    with pytest.warns(UserWarning, match=r"^distopt.report called outside a trial: rows are kept "
                                         r"on distopt._context.last_reports, not stored$"):
        distopt.report(step=0, loss=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distopt.report(step=1, loss=0.5)
    assert [r["loss"] for r in _context.last_reports] == [1.0, 0.5]


@pytest.fixture
def store(tmp_path):
    problem = Problem({"x": Float(0.0, 1.0), "act": Categorical(["relu", "gelu"])},
                      {"f1": "min", "f2": "min"}, {"g": ("<=", 0.5)})
    rows = [trial_row(0, "COMPLETE", {"x": 0.1, "act": "relu"}, {"f1": 0.1, "f2": 0.9, "g": 0.0},
                      start_time=100.0, end_time=102.5),
            trial_row(1, "COMPLETE", {"x": 0.9, "act": "gelu"}, {"f1": 0.9, "f2": 0.1, "g": 0.0},
                      start_time=101.0, end_time=103.0),
            trial_row(2, "COMPLETE", {"x": 0.5, "act": "relu"}, {"f1": 0.5, "f2": 0.5, "g": 1.0},
                      start_time=102.0, end_time=104.0),   # infeasible
            trial_row(3, "FAILED", {"x": 0.3, "act": "gelu"}, error="ValueError: no",
                      start_time=103.0, end_time=103.5)]
    metadata = {"problem": problem.to_dict(), "config_types": problem.space.arrow_types(),
                "metric_order": problem.metric_names}
    with StoreWriter(tmp_path / "s", metadata) as writer:
        writer.add_trials(rows)
    return open_store(tmp_path / "s")


def test_best_trials_is_the_front(store):
    assert store.best_trials == [
        {"trial_id": 0, "config": {"x": 0.1, "act": "relu"},
         "metrics": {"f1": 0.1, "f2": 0.9, "g": 0.0}},
        {"trial_id": 1, "config": {"x": 0.9, "act": "gelu"},
         "metrics": {"f1": 0.9, "f2": 0.1, "g": 0.0}}]


def test_trials_dataframe_has_optunas_columns(store):
    import pandas as pd

    frame = store.trials_dataframe()
    assert list(frame.columns) == ["number", "state", "values_f1", "values_f2", "metrics_g",
                                   "params_x", "params_act", "datetime_start",
                                   "datetime_complete", "duration", "error", "attempts"]
    assert frame["number"].tolist() == [0, 1, 2, 3]
    assert frame["state"].tolist() == ["COMPLETE", "COMPLETE", "COMPLETE", "FAILED"]
    assert frame["values_f1"].tolist()[:3] == [0.1, 0.9, 0.5] and pd.isna(frame["values_f1"][3])
    assert frame["params_act"].tolist() == ["relu", "gelu", "relu", "gelu"]
    assert frame["duration"].dt.total_seconds().tolist() == [2.5, 2.0, 2.0, 0.5]
    assert frame["datetime_start"][0] == pd.Timestamp(100.0, unit="s", tz="UTC")
    assert frame["error"].tolist()[3] == "ValueError: no"
    front = store.front_dataframe()
    assert list(front.columns) == list(frame.columns)
    assert front["number"].tolist() == [0, 1]


def test_argument_errors_are_one_line(capsys):
    for argv, line in [(["run", "s.yaml", "--seed", "x"],
                        "distopt run: error: argument --seed: invalid int value: 'x'; see "
                        "`distopt run --help`"),
                       (["show"], "distopt show: error: the following arguments are required: "
                                  "STORE; see `distopt show --help`")]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert capsys.readouterr().err.splitlines() == [line]


def test_the_documented_dotted_names_work_after_import_distopt():
    """README writes distopt.schedulers.MOASHA and distopt.strategies.register; in a fresh
    process (other tests import the subpackages, which would hide a missing import here)."""
    import subprocess
    import sys

    code = "import distopt; distopt.schedulers.MOASHA; distopt.strategies.register"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_quiet_drops_rays_raylet_error_lines(capsys):
    """Ray's driver prints "(raylet) A worker died ..." past log_to_driver and log levels; with
    -q (errors only, no Ray output) ray_session drops those lines, and puts Ray back after."""
    from ray._private import worker

    from distopt._ray import _quiet_raylet_errors

    original = worker.print_to_stdstream
    restore = _quiet_raylet_errors()
    try:
        worker.print_to_stdstream({"lines": ["A worker died or was killed"], "pid": "raylet",
                                   "is_err": False}, ignore_prefix=False)
        worker.print_to_stdstream({"lines": ["objective says hi"], "pid": 42, "is_err": False,
                                   "ip": "127.0.0.1"}, ignore_prefix=True)
    finally:
        restore()
    out = capsys.readouterr()
    assert "worker died" not in out.out + out.err and "objective says hi" in out.out + out.err
    assert worker.print_to_stdstream is original


def test_a_commands_warnings_are_one_line_each():
    """They carried the warning module's file and line and echoed its source line under them."""
    import warnings

    from distopt.cli import _plain_warnings

    before = warnings.formatwarning
    with _plain_warnings():
        shown = warnings.formatwarning("store runs/s: trials/part-1.parquet: 3 rows lost",
                                       RuntimeWarning, "/x/_rows.py", 38, "pieces = read()")
    assert shown == "RuntimeWarning: store runs/s: trials/part-1.parquet: 3 rows lost\n"
    assert warnings.formatwarning is before  # the library's own users keep Python's format
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: seen.append(str(message))
        with _plain_warnings():  # the same damage met by each of resume's three readers
            for _ in range(3):
                warnings.warn("store runs/s: part-1 damaged", RuntimeWarning, stacklevel=1)
            warnings.warn("store runs/s: part-2 damaged", RuntimeWarning, stacklevel=1)
    assert seen == ["store runs/s: part-1 damaged", "store runs/s: part-2 damaged"]
