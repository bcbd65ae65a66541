"""What a user sees when trials fail: one line per cause, a stop on a repeating one, a summary,
exit status 2 naming the cause when no trial completed, ``show --failed``, ``plot`` refusing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cli_util import run_main

from distopt import DistoptError, Float, Problem, open_store
from distopt._summary import RunReport, error_cause, no_trial_completed_error, report_of
from distopt._worker import check_metrics
from distopt.cli import main
from distopt.store import StoreWriter
from distopt.trial import trial_row

PROBLEM = Problem({"x": Float(0.0, 1.0)}, {"f1": "min", "f2": "min"})
TRACEBACK = ("Traceback (most recent call last):\n  File \"myobj.py\", line 3, in bad\n"
             "    return 1 / x\n{line}\n")


def failed(trial_id: int, line: str = "ZeroDivisionError: division by zero") -> dict:
    return trial_row(trial_id, "FAILED", {"x": trial_id / 10},
                     error=TRACEBACK.format(line=line))


def complete(trial_id: int) -> dict:
    x = trial_id / 10
    return trial_row(trial_id, "COMPLETE", {"x": x}, {"f1": x, "f2": 1 - x})


def write_store(path: Path, rows: list[dict], **extra: object) -> Path:
    metadata = {"problem": PROBLEM.to_dict(), "config_types": PROBLEM.space.arrow_types(),
                "metric_order": PROBLEM.metric_names, **extra}
    with StoreWriter(path, metadata) as writer:
        writer.add_trials(rows)
    return path


# -- RunReport ------------------------------------------------------------------------------------

def test_the_cause_is_the_exception_line():
    assert error_cause(failed(0)["error"]) == "ZeroDivisionError: division by zero"
    assert error_cause("\n\n  ValueError: bad  \n\n") == "ValueError: bad"
    assert error_cause(None) is None and error_cause("") is None
    import traceback

    def text_of(error: BaseException) -> str:  # as a worker stores it
        try:
            raise error
        except BaseException as raised:  # noqa: BLE001
            return "".join(traceback.format_exception(raised)).strip()

    noted = ValueError("boom: bad things\nsecond line")
    noted.add_note("while training layer 2")
    assert error_cause(text_of(noted)) == "ValueError: boom: bad things"
    cuda = RuntimeError("CUDA error: device-side assert triggered\nFor debugging consider "
                        "passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to "
                        "enable device-side assertions.")
    assert error_cause(text_of(cuda)) == "RuntimeError: CUDA error: device-side assert triggered"
    assert error_cause(text_of(SystemExit(3))) == "SystemExit: 3"


def test_one_line_per_new_cause_and_a_reminder_for_repeats():
    out = io.StringIO()
    report = RunReport(out=out, max_consecutive_failures=None)
    report.trial_ended(complete(0))
    for i in range(1, 21):   # same cause with different numbers in it: folded
        report.trial_ended(failed(i, f"ValueError: x={i / 7:.3f} is too large"))
    report.trial_ended(failed(21, "KeyError: 'lr'"))
    lines = out.getvalue().splitlines()
    assert lines == ["trial 1 FAILED: ValueError: x=0.143 is too large",
                     "  (same cause: 10 trials so far)", "  (same cause: 20 trials so far)",
                     "trial 21 FAILED: KeyError: 'lr'"]
    summary = report.summary().splitlines()
    assert summary[0] == "trials: 1 COMPLETE, 21 FAILED"
    assert summary[1] == "  20 failed (e.g. trial 1): ValueError: x=0.143 is too large"
    assert summary[2] == "  1 failed (e.g. trial 21): KeyError: 'lr'"


def test_a_run_of_the_same_cause_stops_the_search():
    report = RunReport(out=None, max_consecutive_failures=5, store="runs/s", stored=3, budget=30)
    for i in range(4):
        report.trial_ended(failed(i))
    report.trial_ended(complete(4))       # a success resets the run
    report.trial_ended(failed(5, "KeyError: 'lr'"))
    for i in range(6, 10):
        report.trial_ended(failed(i))     # another cause resets it too: 4 in a row
    with pytest.raises(DistoptError) as stop:
        report.trial_ended(failed(10))
    # 3 stored + 11 here: the command asks for the run's 30 on top of the 14 (see below)
    assert str(stop.value) == (
        "stopping: 5 consecutive trials failed with the same cause: ZeroDivisionError: division "
        "by zero; fix the objective, then `distopt resume runs/s --budget 44` (failed trials "
        "count towards the budget)")


def test_the_resume_command_leaves_the_runs_budget_to_run():
    """--budget is the total wanted and failed trials count towards it, so a plain resume of a
    store that holds its budget runs nothing: the command names a budget that leaves the run's
    own (or, unknown, as many trials again as the store holds) still to run."""
    from distopt._budget import Budget
    from distopt._summary import resume_command

    for finished, more, expected in [(14, 30, 30), (8, None, 8), (4, 0, 1)]:
        command = resume_command("runs/s", finished, more)
        total = int(command.split("--budget ")[1].split("`")[0])
        assert Budget(total, stored=finished).remaining == expected
    assert resume_command(None, 2).startswith("`distopt resume STORE --budget 4`")


def test_timeouts_count_as_failures_and_pruned_trials_do_not():
    report = report_of([trial_row(0, "TIMEOUT", {}, error="stopped after trial_timeout=5 s"),
                        trial_row(1, "PRUNED", {}, {"f1": 1.0}, error="stopped early"),
                        trial_row(2, "TIMEOUT", {}, error="stopped after trial_timeout=5 s")])
    assert report.n_failed == 2
    assert report.summary().splitlines()[1] == \
        "  2 failed (e.g. trial 0): stopped after trial_timeout=5 s"


def test_no_trial_completed_names_the_first_cause(tmp_path):
    assert no_trial_completed_error([]) is None
    assert no_trial_completed_error([failed(1), complete(0)]) is None
    store = write_store(tmp_path / "store", [failed(3, "KeyError: 'lr'"), failed(2)])
    error = no_trial_completed_error(open_store(store), budget=5)
    assert str(error) == (f"no trial completed (2 FAILED); trial 2: ZeroDivisionError: division "
                          f"by zero; fix the objective, then `distopt resume {store} --budget 7` "
                          f"(failed trials count towards the budget)")


@pytest.mark.parametrize(("returned", "message"), [
    (None, "objective returned NoneType (nothing); return a dict of the metrics, e.g. "
           "{'f1': 0.1}; distopt does not read metrics from report() calls"),
    ({"f1": 1.0}, "objective did not return metric(s) ['f2']; returned ['f1']; return every "
                  "objective and constraint metric in the dict"),
])
def test_the_two_usual_mistakes_are_named(returned, message):
    assert check_metrics(returned, ["f1", "f2"], frozenset()) == ({"f1": 1.0} if returned else {},
                                                                  message)


# -- the command line on a store of failed trials ------------------------------------------------

def test_run_where_no_trial_completed_prints_the_summary_and_exits_2(tmp_path, monkeypatch):
    """The run itself is replaced by writing FAILED rows: what is tested is what `distopt run`
    prints and returns once the trials are in the store."""
    from distopt import _studyfile

    def optimize(self, **overrides):  # as Study.optimize ends when no trial completed
        from distopt._summary import no_trial_completed_error

        store = self.study.store_path
        write_store(store, [failed(i) for i in range(8)])
        raise no_trial_completed_error(open_store(store))

    monkeypatch.setattr(_studyfile.StudyFile, "optimize", optimize)
    study = tmp_path / "study.yaml"
    study.write_text("objective: distopt.examples:two_bowls\nspace: {x: {type: float, low: 0, "
                     "high: 1}}\nobjectives: {f1: min, f2: min}\nstore: " + str(tmp_path / "s"))
    code, out, err = run_main(["run", str(study), "--no-progress"])
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "trials: 8 FAILED",
        "  8 failed (e.g. trial 0): ZeroDivisionError: division by zero",
        "distopt: error: no trial completed (8 FAILED); trial 0: ZeroDivisionError: division by "
        f"zero; fix the objective, then `distopt resume {tmp_path / 's'} --budget 16` (failed "
        "trials count towards the budget)"]


@pytest.fixture
def mixed(tmp_path) -> Path:
    return write_store(tmp_path / "mixed", [complete(0), failed(1), complete(2),
                                            failed(3, "KeyError: 'lr'")])


def test_show_failed_lists_failed_trials_with_their_cause(mixed):
    code, out, _ = run_main(["show", str(mixed), "--failed"])
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["trial_id", "status", "x", "f1", "f2", "error"]
    assert lines[1].split()[:2] == ["1", "FAILED"]
    assert lines[1].endswith("ZeroDivisionError: division by zero")
    assert lines[2].endswith("KeyError: 'lr'") and lines[3] == ""
    assert lines[4].startswith("failed trials: 2 rows")


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_show_all_has_a_one_line_error_column(mixed, fmt, capsys):
    import csv

    code = main(["show", str(mixed), "--all", "--format", fmt])
    out = capsys.readouterr().out
    rows = json.loads(out)["rows"] if fmt == "json" else list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    errors = [r["error"] or None for r in rows]
    assert errors == [None, "ZeroDivisionError: division by zero", None, "KeyError: 'lr'"]


def test_plot_of_a_store_without_a_front_says_so(tmp_path):
    store = write_store(tmp_path / "store", [failed(0), failed(1)])
    code, out, err = run_main(["plot", str(store), "--out", str(tmp_path / "plots")])
    assert (code, out) == (2, "")
    assert err == (f"distopt: error: {store} has no COMPLETE feasible trial yet, so nothing to "
                   f"plot (2 FAILED); see `distopt show {store} --failed`\n")
    assert not (tmp_path / "plots").exists()


def test_a_finished_store_says_nothing_to_run_without_starting_ray(tmp_path, monkeypatch):
    from distopt import _studyfile

    def optimize(self, **overrides):
        raise AssertionError("a store that holds the budget must not start a run")

    monkeypatch.setattr(_studyfile.StudyFile, "optimize", optimize)
    store = write_store(tmp_path / "s", [complete(i) for i in range(4)],
                        objective="distopt.examples:two_bowls")
    study = tmp_path / "study.yaml"
    study.write_text("objective: distopt.examples:two_bowls\nspace: {x: {type: float, low: 0, "
                     "high: 1}}\nobjectives: {f1: min, f2: min}\nbudget: 4\nstore: " + str(store))
    code, out, err = run_main(["run", str(study), "--no-progress"])
    assert (code, err) == (0, "nothing to run (4/4 done; raise --budget to continue)\n")
    assert out.splitlines()[-1].startswith("Pareto front: 4 rows  |  trials: 4 COMPLETE")
    (store / "trials.parquet").unlink()  # as a search killed outright leaves a store
    code, _, err = run_main(["resume", str(store), "--budget", "3", "--no-progress"])
    assert (code, err) == (0, "nothing to run (4/3 done; raise --budget to continue)\n")
    assert (store / "trials.parquet").exists()  # what the kill left is published for every tool
    code, _, err = run_main(["resume", str(store), "--budget", "4", "--workers", "0",
                             "--no-progress"])
    assert (code, err) == (2, "distopt: error: workers: must be an int >= 1; got 0\n")
    monkeypatch.undo()   # the real run: it refuses a budget of 0 before starting anything
    code, _, err = run_main(["resume", str(store), "--budget", "0", "--no-progress"])
    assert code == 2 and err.startswith("distopt: error: budget: ")


def test_a_store_of_failures_only_that_holds_its_budget_names_the_budget_to_resume_with(
        tmp_path, monkeypatch):
    """The hint after a run where no trial completed used to be a plain `distopt resume`,
    which then had nothing to run (failed trials count towards the budget) and exited 0."""
    from distopt import Study, _studyfile, examples

    def optimize(self, **overrides):
        raise AssertionError("a store that holds the budget must not start a run")

    monkeypatch.setattr(_studyfile.StudyFile, "optimize", optimize)
    store = write_store(tmp_path / "s", [failed(i) for i in range(4)],
                        objective="distopt.examples:two_bowls")
    code, out, err = run_main(["resume", str(store), "--budget", "4", "--no-progress"])
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "nothing to run (4/4 done; raise --budget to continue)",
        "distopt: error: no trial completed (4 FAILED); trial 0: ZeroDivisionError: division by "
        f"zero; fix the objective, then `distopt resume {store} --budget 8` (failed trials count "
        "towards the budget)"]
    with pytest.raises(DistoptError, match=r"--budget 8` \(failed trials count"):
        Study({"x": Float(0.0, 1.0)}, {"f1": "min", "f2": "min"}, store=store).optimize(
            examples.two_bowls, budget=4)


def test_plot_out_that_is_not_a_folder_is_one_line(tmp_path):
    store = write_store(tmp_path / "store", [complete(0), complete(1)])
    (tmp_path / "afile").write_text("")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        code, stdout, err = run_main(["plot", str(store), "--out", str(out)])
        assert (code, stdout) == (2, "")
        assert err.startswith("distopt: error: --out: ") and err.count("\n") == 1, err


def test_show_of_a_store_without_trials_says_none_yet(tmp_path):
    store = write_store(tmp_path / "store", [])
    code, out, err = run_main(["show", str(store)])
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == ("Pareto front: 0 rows  |  trials: none yet  |  hypervolume: 0"
                                    "  (no ref_point: no feasible trial yet)")
    code, out, _ = run_main(["show", str(store), "--all"])
    assert out.splitlines()[-1].startswith("trials: 0 rows (none yet)  |")


def test_show_right_aligns_every_column_but_the_error(tmp_path):
    store = write_store(tmp_path / "store", [complete(i) for i in range(12)])
    _, out, _ = run_main(["show", str(store)])
    header, first = out.splitlines()[:2]
    assert header.startswith("trial_id") and first.startswith("       0 ")   # under the "d"


def test_statuses_are_counted_in_one_order_everywhere(tmp_path):
    rows = [failed(0), complete(1), failed(2)]
    store = write_store(tmp_path / "store", rows)
    report = RunReport(out=io.StringIO(), max_consecutive_failures=None)
    for row in rows:
        report.trial_ended(row)
    assert report.summary().splitlines()[0] == "trials: 1 COMPLETE, 2 FAILED"
    _, out, _ = run_main(["show", str(store)])
    assert "|  trials: 1 COMPLETE, 2 FAILED  |" in out.splitlines()[-1]


def test_a_reference_point_names_exactly_the_objectives(tmp_path):
    reader = open_store(write_store(tmp_path / "store", [complete(0), complete(1)]))
    assert reader.hypervolume({"f1": 2.0, "f2": 2.0}) == reader.hypervolume([2.0, 2.0]) > 0
    for bad in ({"f1": 2.0, "f2": 2.0, "f3": 1.0}, {"f1": 2.0}, [2.0, 2.0, 1.0]):
        with pytest.raises(DistoptError, match="^ref_point"):
            reader.hypervolume(bad)


def test_a_resume_whose_every_trial_failed_is_an_error_though_the_store_has_a_front():
    """It exited 0: the check read the whole store, where earlier trials had completed."""
    rows = [complete(i) for i in range(4)] + [failed(i) for i in range(4, 8)]
    assert no_trial_completed_error(rows, 8) is None  # the store as a whole has a front
    error = no_trial_completed_error(rows, 8, before=range(4))
    assert error is not None and str(error).startswith(
        "no trial of this run completed (4 FAILED; the 4 stored before are kept); trial 4: "
        "ZeroDivisionError: division by zero; fix the objective, then")
    assert no_trial_completed_error(rows[:6] + [complete(6)], 8, before=range(4)) is None
    pruned = trial_row(8, "PRUNED", {"x": 0.8}, {"f1": 0.8, "f2": 0.2})  # stopped early: a result
    assert no_trial_completed_error(rows[:4] + [pruned], 9, before=range(4)) is None
