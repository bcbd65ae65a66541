"""The worker without Ray: metric validation and TrialWorker.run called directly."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import distopt
from distopt._context import current_context
from distopt._worker import MAX_ERROR_CHARS, TrialWorker, check_metrics
from distopt.store._schema import RESERVED

REQUIRED = ["f1", "f2"]


# -- check_metrics --------------------------------------------------------------------------------

def test_valid_metrics_are_floats_and_extras_are_kept():
    metrics, error = check_metrics({"f1": 1, "f2": np.float32(0.5), "extra": np.int64(3),
                                    "flag": True}, REQUIRED, RESERVED)
    assert error is None
    assert metrics == {"f1": 1.0, "f2": 0.5, "extra": 3.0, "flag": 1.0}
    assert all(type(v) is float for v in metrics.values())


def test_zero_dim_arrays_and_tensors_are_numbers():
    torch = pytest.importorskip("torch")
    metrics, error = check_metrics({"f1": np.array(0.25), "f2": torch.tensor(0.5)}, REQUIRED,
                                   RESERVED)
    assert error is None and metrics == {"f1": 0.25, "f2": 0.5}


@pytest.mark.parametrize("returned, reason", [
    (None, "objective returned NoneType"),
    ([1.0, 2.0], "objective returned list"),
    (0.5, "objective returned float"),
    (lambda config: {}, "objective returned function (a factory's product? name the factory as "
                        "objective: {call: module:factory}"),
    ({"f1": 1.0}, "did not return metric(s) ['f2']"),
    ({}, "did not return metric(s) ['f1', 'f2']"),
    ({"f1": math.nan, "f2": 1.0}, "['f1'] are not finite"),
    ({"f1": 1.0, "f2": -math.inf}, "['f2'] are not finite"),
    ({"f1": "high", "f2": 1.0}, "metric 'f1' is not a number: 'high'"),
    ({"f1": None, "f2": 1.0}, "metric 'f1' is not a number: None"),
    ({"f1": [1.0, 2.0], "f2": 1.0}, "metric 'f1' is not a number"),
    ({"f1": 1.0, "f2": 1.0, "status": 0.0}, "metric name 'status' is reserved"),
    ({"f1": 1.0, "f2": 1.0, "config/x": 0.0}, "metric name 'config/x' is reserved"),
    ({"f1": 1.0, "f2": 1.0, 3: 0.0}, "metric name 3 is not a string (int)"),
])
def test_bad_returns_give_a_reason(returned, reason):
    _, error = check_metrics(returned, REQUIRED, RESERVED)
    assert error is not None and reason in error


def test_several_problems_are_all_reported():
    _, error = check_metrics({"f1": "x", "error": 1.0}, REQUIRED, RESERVED)
    assert "'f1' is not a number" in error and "'error' is reserved" in error
    assert "['f2']" in error


def test_non_finite_extra_metric_is_allowed():
    metrics, error = check_metrics({"f1": 1.0, "f2": 2.0, "diverged": math.nan}, REQUIRED,
                                   RESERVED)
    assert error is None and math.isnan(metrics["diverged"])


def test_an_objective_named_like_a_reserved_column_can_never_complete():
    # why Problem should refuse such names up front (see test_problem.py)
    _, error = check_metrics({"status": 1.0}, ["status"], RESERVED)
    assert error is not None


def test_numeric_text_is_not_a_number():
    _, error = check_metrics({"f1": "0.5", "f2": 1.0}, REQUIRED, RESERVED)
    assert error is not None and "'f1' is not a number" in error


# -- TrialWorker.run ------------------------------------------------------------------------------

def make_worker(objective, required=REQUIRED) -> TrialWorker:
    return TrialWorker(objective, required, RESERVED, "worker-7")


def curve_objective(config):
    for epoch in range(3):
        distopt.report(step=epoch, loss=config["x"] * (epoch + 1))
    return {"f1": config["x"], "f2": 1 - config["x"]}


def test_run_returns_rows_with_their_curves():
    worker = make_worker(curve_objective)
    before = time.time()
    rows = worker.run([(4, {"x": 0.25}, 1), (5, {"x": 0.5}, 2)])
    after = time.time()
    assert [r["trial_id"] for r in rows] == [4, 5]
    first, second = rows
    assert first["status"] == "COMPLETE" and first["error"] is None
    assert first["metrics"] == {"f1": 0.25, "f2": 0.75}
    assert first["config"] == {"x": 0.25}
    assert first["attempts"] == 1 and second["attempts"] == 2
    assert first["worker"] == "worker-7"
    assert before <= first["start_time"] <= first["end_time"] <= second["start_time"] <= after
    assert [(c["trial_id"], c["step"], c["loss"]) for c in first["curves"]] == [
        (4, 0, 0.25), (4, 1, 0.5), (4, 2, 0.75)]
    assert [c["trial_id"] for c in second["curves"]] == [5, 5, 5]
    assert current_context() is None  # nothing left behind after the trials


def test_objective_gets_a_copy_of_the_config():
    def mutating(config):
        config["x"] = 99.0
        return {"f1": 1.0, "f2": 1.0}

    config = {"x": 0.5}
    [result] = make_worker(mutating).run([(0, config, 1)])
    assert config == {"x": 0.5} and result["config"] == {"x": 0.5}


def raising(config):
    raise ValueError(f"objective failed on purpose at x={config['x']}")


@pytest.mark.parametrize("objective, reason", [
    (raising, "ValueError: objective failed on purpose at x=0.5"),
    (lambda c: None, "objective returned NoneType"),
    (lambda c: {"f1": math.nan, "f2": 0.0}, "are not finite"),
    (lambda c: {"f1": 0.0}, "did not return metric(s) ['f2']"),
    (lambda c: {"f1": "high", "f2": 0.0}, "is not a number"),
    (lambda c: 1 / 0, "ZeroDivisionError"),
    (lambda c: sys.exit(3), "SystemExit: 3"),  # was a dead worker, restarted 3 times
])
def test_failures_become_failed_rows(objective, reason):
    [result] = make_worker(objective).run([(0, {"x": 0.5}, 1)])
    assert result["status"] == "FAILED"
    assert reason in result["error"]
    assert current_context() is None


def test_failure_keeps_the_traceback_and_the_curve_so_far():
    def half_way(config):
        distopt.report(step=0, loss=1.0)
        raise RuntimeError("diverged")

    [result] = make_worker(half_way).run([(3, {"x": 0.5}, 1)])
    assert result["status"] == "FAILED"
    assert result["error"].startswith("Traceback")
    assert "half_way" in result["error"] and result["error"].endswith("RuntimeError: diverged")
    assert [(c["trial_id"], c["loss"]) for c in result["curves"]] == [(3, 1.0)]


def test_long_errors_are_cut():
    def verbose(config):
        raise ValueError("x" * (3 * MAX_ERROR_CHARS))

    [result] = make_worker(verbose).run([(0, {}, 1)])
    assert result["status"] == "FAILED"
    assert len(result["error"]) <= MAX_ERROR_CHARS


def test_one_failure_does_not_stop_the_batch():
    def picky(config):
        if config["x"] > 0.5:
            raise ValueError("too big")
        return {"f1": config["x"], "f2": 0.0}

    rows = make_worker(picky).run([(0, {"x": 0.1}, 1), (1, {"x": 0.9}, 1), (2, {"x": 0.2}, 1)])
    assert [r["status"] for r in rows] == ["COMPLETE", "FAILED", "COMPLETE"]


def test_drain_streams_rows_without_duplicating_them():
    holder = {}

    def streaming(config):
        distopt.report(step=0, loss=3.0)
        distopt.report(step=1, loss=2.0)
        holder["drained"] = holder["worker"].drain()  # what the driver's drain call would get
        distopt.report(step=2, loss=1.0)
        return {"f1": 0.0, "f2": 0.0}

    worker = make_worker(streaming)
    holder["worker"] = worker
    [result] = worker.run([(9, {}, 1)])
    assert [(r["trial_id"], r["step"]) for r in holder["drained"]] == [(9, 0), (9, 1)]
    assert [(r["trial_id"], r["step"]) for r in result["curves"]] == [(9, 2)]
    assert worker.drain() == []  # idle


def test_stop_prunes_the_running_trial_with_its_last_report():
    holder = {}

    def long_training(config):
        for epoch in range(10):
            if epoch == 2:
                assert holder["worker"].stop(123) is False  # not the running trial
                assert distopt.should_stop() is False
                assert holder["worker"].stop(8) is True
                assert distopt.should_stop() is True
            distopt.report(step=epoch, f1=10.0 - epoch, f2=float(epoch))
        return {"f1": 0.0, "f2": 9.0}

    worker = make_worker(long_training)
    holder["worker"] = worker
    [result] = worker.run([(8, {}, 1)])
    assert result["status"] == "PRUNED"
    assert result["metrics"] == {"f1": 8.0, "f2": 2.0}  # the report that raised TrialPruned
    assert [r["step"] for r in result["curves"]] == [0, 1, 2]
    assert worker.stop(8) is False  # finished


def test_device_inside_a_trial_is_the_workers():
    torch = pytest.importorskip("torch")

    def uses_device(config):
        return {"f1": float(distopt.device() == torch.device("cpu")), "f2": 0.0}

    [result] = make_worker(uses_device).run([(0, {}, 1)])
    assert result["status"] == "COMPLETE" and result["metrics"]["f1"] == 1.0


def test_ready_describes_the_worker():
    info = make_worker(curve_objective).ready()
    assert info["worker"] == "worker-7" and info["device"] == "cpu"
    assert isinstance(info["pid"], int)


def test_creating_a_worker_outside_ray_does_not_start_ray():
    code = textwrap.dedent("""
        import ray
        calls = []
        def refuse(*args, **kwargs):
            calls.append(1)
            raise RuntimeError("ray.init called")
        ray.init = refuse
        from distopt._worker import TrialWorker
        worker = TrialWorker(lambda c: {}, [], frozenset(), "w")
        print(len(calls), worker.ready()["node_id"], worker.ready()["device"])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0", "None", "cpu"]


def test_a_shipped_objective_loads_where_its_folder_is_not_on_the_path(tmp_path):
    """A worker of a cluster lacks the study file's folder on sys.path; Ray unpickled the
    objective before any distopt code ran there (ModuleNotFoundError). Shipped with the
    folders, it loads in a fresh interpreter that knows only distopt."""
    import pickle
    from pathlib import Path

    from distopt._codepath import ShippedObjective

    folder = tmp_path / "study_folder"
    folder.mkdir()
    (folder / "objmod_shipped.py").write_text("def f(config):\n    return {'y': 2 * config['x']}\n")
    sys.path.insert(0, str(folder))
    try:
        import objmod_shipped  # as the driver has it: imported, so pickled by reference

        for folders in ([str(folder)], []):
            shipped = ShippedObjective(objmod_shipped.f, folders)
            (tmp_path / f"shipped{len(folders)}.pkl").write_bytes(pickle.dumps(shipped))
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("objmod_shipped", None)
    root = Path(distopt.__file__).resolve().parents[1]
    # the objective's own subprocesses (a spawn DataLoader's workers) find its module too
    code = ("import os, pickle, sys; shipped = pickle.load(open(sys.argv[1], 'rb'));"
            "print(shipped.load()({'x': 21}), sys.argv[2] in os.environ['PYTHONPATH'])")
    for folders, expected in (([str(folder)], "{'y': 42} True"), ([], "ModuleNotFoundError")):
        path = tmp_path / f"shipped{len(folders)}.pkl"
        done = subprocess.run([sys.executable, "-c", code, str(path), str(folder)],
                              capture_output=True,
                              text=True, cwd=tmp_path, env={"PYTHONPATH": str(root)}, timeout=120)
        assert expected in done.stdout + done.stderr


def test_a_dead_worker_s_cause_is_short():
    """Ray's one line for a worker process that died is ~600 characters (three guesses at the
    end); every FAILED row and the summary repeated it."""
    from distopt._pool import cause

    ray_text = ("The actor died unexpectedly before finishing this task.\n\tclass_name: "
                "TrialWorker\nThe actor is dead because its worker process has died. Worker exit "
                "type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a "
                "connection error code 2. End of LOG stream. (1) The process is killed by SIGKILL "
                "by OOM killer due to high memory usage. (2) ray stop --force is called. (3) The "
                "worker is crashed unexpectedly due to SIGSEGV or other unexpected errors.")
    assert cause(RuntimeError(ray_text)) == ("the worker process died (SYSTEM_ERROR: Worker "
                                             "unexpectedly exits with a connection error code 2)")
    assert cause(RuntimeError("Traceback ...\nValueError: bad")) == "ValueError: bad"


@pytest.mark.parametrize("returned, cause", [
    (lambda configs: [{"f1": 0.0, "f2": 0.0}] * (len(configs) - 1),
     "ValueError: batched objective wrong returned 2 results for 3 configs; return one per "
     "config, in order"),
    (lambda configs: {"f1": 0.0, "f2": 0.0},  # the plain objective's habit
     "TypeError: batched objective wrong returned dict; return a list with one dict of metrics "
     "(or an exception) per config, in order"),
    (lambda configs: None, "TypeError: batched objective wrong returned NoneType"),
])
def test_a_batched_objective_returning_the_wrong_thing_fails_each_member_once(returned, cause):
    """It surfaced as "worker died 3 times" (a ValueError of zip() out of the worker, taken
    for its death, retried with halved cohorts) or as "'NoneType' object is not iterable"."""
    from distopt._summary import error_cause

    def wrong(configs):
        return returned(configs)

    rows = make_worker(distopt.batched(wrong)).run([(i, {"x": 0.5}, 1) for i in range(3)])
    assert [r["status"] for r in rows] == ["FAILED"] * 3
    assert all(error_cause(r["error"]).startswith(cause) for r in rows), rows[0]["error"]


def test_a_batched_objective_ships_by_reference_like_a_function(tmp_path):
    """The decorator takes the function's name, so cloudpickle shipped it by value with the
    module globals it uses: a module-level lock was refused; now it ships as ``module:name``
    (and a worker's traceback shows the user's file, not <dynamic-code>)."""
    import cloudpickle

    from distopt._codepath import ShippedObjective

    (tmp_path / "locked_batched.py").write_text(
        "import threading\nimport distopt\nLOCK = threading.Lock()\n\n"
        "@distopt.batched(max_size=4)\ndef objective(configs):\n    with LOCK:\n"
        "        return [{'y': c['x']} for c in configs]\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import locked_batched

        shipped = ShippedObjective(locked_batched.objective, [])
        assert len(shipped.payload) < 300  # a reference, not the function and its globals
        assert shipped.load() is locked_batched.objective
        local = distopt.batched(lambda configs: [{"y": 1.0} for _ in configs], max_size=2)
        again = cloudpickle.loads(cloudpickle.dumps(local))  # not importable: by value
        assert again.spec == local.spec and again.batch([{"x": 0}]) == [{"y": 1.0}]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("locked_batched", None)
