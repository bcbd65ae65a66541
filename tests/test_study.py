"""Study.optimize end to end on the session's local Ray, with 2 workers.

Every claim is checked against values recomputed here: the objective's formulas, a brute-force
Pareto front, the Sobol sequence the random strategy promises, and the reference-point rule.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import distopt
from distopt import Categorical, Float, Int, Study, pareto
from distopt.examples import flaky, two_bowls
from distopt.store._segments import read_table
from distopt.strategies import RandomStrategy

SPACE = {"x": Float(-0.5, 1.5), "y": Float(-1.0, 1.0), "width": Int(1, 4),
         "act": Categorical(["relu", "gelu"]), "epochs": 3, "sleep": 0.03}
# min-min: 11 of the 12 trials are feasible, enough to fix the reference point from the first 10;
# min-max: 9 are, too few, so the reader infers it from the front.
STUDIES = {
    "min-min": ({"f1": "min", "f2": "min"}, {"g": ("<=", 1.4)}),
    "min-max": ({"f1": "min", "g": "max"}, {"f2": ("<=", 1.5)}),
}
BUDGET = 12
EPOCHS = 3


# -- helpers written for the tests ----------------------------------------------------------------

def expected_metrics(config: dict) -> dict:
    x, y = config["x"], config["y"]
    return {"f1": x**2 + y**2, "f2": (x - 1) ** 2 + y**2, "g": x}


def configs_of(table: pa.Table) -> list[dict]:
    names = [c for c in table.column_names if c.startswith("config/")]
    return [{n[len("config/"):]: r[n] for n in names} for r in table.to_pylist()]


def sobol_configs(space: dict, n: int, seed: int = 0) -> list[dict]:
    """What the random strategy promises: the first n points of its seeded Sobol sequence."""
    strategy = RandomStrategy(seed=seed)
    strategy.bind(distopt.Problem(space, {"f1": "min"}))
    return strategy.ask(n)


def brute_front(points: np.ndarray, maximize: list[bool]) -> np.ndarray:
    q = np.where(maximize, -points, points)
    return np.array([not any(np.all(q[j] <= q[i]) and np.any(q[j] < q[i])
                             for j in range(len(q)) if j != i) for i in range(len(q))], bool)


def brute_hypervolume_2d(points: np.ndarray, ref: np.ndarray, maximize: list[bool]) -> float:
    q = np.where(maximize, -points, points)
    r = np.where(maximize, -ref, ref)
    q = q[(q < r).all(axis=1)]
    q = q[np.argsort(q[:, 0])]
    area, best = 0.0, r[1]
    for i, (x, y) in enumerate(q):
        best = min(best, y)
        area += ((q[i + 1, 0] if i + 1 < len(q) else r[0]) - x) * (r[1] - best)
    return area


def is_feasible(metrics: dict, constraints: dict) -> bool:
    return all((metrics[m] <= t) if op == "<=" else (metrics[m] >= t)
               for m, (op, t) in constraints.items())


# -- one study per definition, shared by the tests that read it -----------------------------------

@pytest.fixture(scope="module", params=list(STUDIES))
def finished(request, ray_local, tmp_path_factory):
    objectives, constraints = STUDIES[request.param]
    store = tmp_path_factory.mktemp(request.param) / "store"
    study = Study(SPACE, objectives, constraints, store=store, seed=0)
    reader = study.optimize(two_bowls, budget=BUDGET, workers=2)
    return study, reader


def test_one_row_per_trial(finished):
    _, reader = finished
    table = reader.trials()
    assert table.num_rows == BUDGET
    assert table["trial_id"].to_pylist() == list(range(BUDGET))
    assert set(table["status"].to_pylist()) == {"COMPLETE"}
    assert table["error"].null_count == BUDGET
    assert table["attempts"].to_pylist() == [1] * BUDGET


def test_columns_and_types(finished):
    _, reader = finished
    schema = reader.trials().schema
    timestamp = pa.timestamp("us", tz="UTC")
    assert [(f.name, f.type) for f in schema] == [
        ("trial_id", pa.int64()), ("status", pa.string()),
        ("config/x", pa.float64()), ("config/y", pa.float64()), ("config/width", pa.int64()),
        ("config/act", pa.string()), ("config/epochs", pa.int64()), ("config/sleep", pa.float64()),
        *[(m, pa.float64()) for m in reader.problem.metric_names],
        ("error", pa.string()), ("attempts", pa.int64()), ("start_time", timestamp),
        ("end_time", timestamp), ("worker", pa.string()), ("node_id", pa.string()),
    ]
    assert set(reader.problem.metric_names) == {"f1", "f2", "g"}


def test_configs_are_in_the_space_and_follow_the_sobol_sequence(finished):
    study, reader = finished
    configs = configs_of(reader.trials())
    for config in configs:
        study.space.validate(config)
        assert config["epochs"] == EPOCHS and config["sleep"] == 0.03
    assert configs == sobol_configs(SPACE, BUDGET)


def test_metrics_are_what_the_objective_returned(finished):
    _, reader = finished
    table = reader.trials()
    for config, row in zip(configs_of(table), table.to_pylist(), strict=True):
        for name, value in expected_metrics(config).items():
            assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-15)


def test_two_workers_share_the_trials(finished, ray_local):
    _, reader = finished
    rows = reader.trials().to_pylist()
    assert {r["worker"] for r in rows} == {"worker-0", "worker-1"}
    assert {r["node_id"] for r in rows} == {ray_local.get_runtime_context().get_node_id()}
    spans = {}
    for r in rows:
        assert r["start_time"] <= r["end_time"]
        spans.setdefault(r["worker"], []).append((r["start_time"], r["end_time"]))
    for worker, intervals in spans.items():  # one trial at a time per worker
        intervals.sort()
        pairs = zip(intervals, intervals[1:], strict=False)
        assert all(end <= start for (_, end), (start, _) in pairs), worker
    # and the two workers really ran at the same time
    (a, b) = spans.values()
    assert any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


def test_curves(finished):
    _, reader = finished
    curves = reader.curves()
    assert curves.num_rows == BUDGET * EPOCHS
    table = reader.trials()
    configs = dict(zip(table["trial_id"].to_pylist(), configs_of(table), strict=True))
    for trial_id, config in configs.items():
        rows = reader.curves(trial_id).to_pylist()
        assert [r["step"] for r in rows] == list(range(EPOCHS))
        base = config["x"] ** 2 + config["y"] ** 2
        assert [r["train_loss"] for r in rows] == pytest.approx(
            [base * (1 + 1 / (e + 1)) for e in range(EPOCHS)])


def test_pareto_front_is_the_brute_force_front(finished):
    study, reader = finished
    objectives = list(study.problem.objectives)
    maximize = study.problem.maximize
    rows = [r for r in reader.trials().to_pylist()
            if r["status"] == "COMPLETE" and is_feasible(r, study.problem.constraints)]
    assert 0 < len(rows) < BUDGET  # the constraint cuts something off, but not everything
    assert reader.feasible_trials()["trial_id"].to_pylist() == [r["trial_id"] for r in rows]
    points = np.array([[r[m] for m in objectives] for r in rows])
    keep = brute_front(points, maximize)
    expected = {r["trial_id"] for r, kept in zip(rows, keep, strict=True) if kept}
    front = reader.pareto_front()
    assert set(front["trial_id"].to_pylist()) == expected
    first = front[objectives[0]].to_pylist()
    assert first == sorted(first, reverse=maximize[0])


def test_hypervolume_and_recorded_reference_point(finished, request):
    study, reader = finished
    objectives = list(study.problem.objectives)
    maximize = study.problem.maximize
    # the reference point is fixed from the first 2 * (dim + 1) feasible trials, in write order
    written = read_table(Path(reader.path) / "trials").to_pylist()
    feasible = [r for r in written
                if r["status"] == "COMPLETE" and is_feasible(r, study.problem.constraints)]
    needed = min(BUDGET, 2 * (study.space.dim + 1))
    points = np.array([[r[m] for m in objectives] for r in feasible])
    recorded = {"min-min": True, "min-max": False}[request.node.callspec.params["finished"]]
    assert (len(feasible) >= needed) is recorded
    if recorded:
        initial = points[:needed]
        worst = np.where(maximize, initial.min(axis=0), initial.max(axis=0))
        span = np.ptp(initial, axis=0)
        ref = np.where(maximize, worst - 0.1 * span, worst + 0.1 * span)
        assert reader.ref_point == pytest.approx(dict(zip(objectives, ref, strict=True)))
        assert json.loads((Path(reader.path) / "study.json").read_text())["ref_point"] == \
            pytest.approx(dict(zip(objectives, ref, strict=True)))
    else:
        assert reader.ref_point is None
        ref = pareto.reference_point(points, maximize=maximize)
    hv = reader.hypervolume()
    assert hv > 0
    assert hv == pytest.approx(pareto.hypervolume(points, ref, maximize=maximize))
    assert hv == pytest.approx(brute_hypervolume_2d(points, ref, maximize))


def test_study_definition_in_metadata(finished):
    study, reader = finished
    data = json.loads((Path(reader.path) / "study.json").read_text())
    assert data["problem"] == study.problem.to_dict()
    assert data["problem"]["constraints"] == {
        k: [op, t] for k, (op, t) in study.problem.constraints.items()}
    assert data["strategy"] == "random" and data["seed"] == 0
    assert data["objective"] == "distopt.examples:two_bowls"
    assert data["run"]["budget"] == BUDGET and data["run"]["workers"] == 2
    import numpy
    import pyarrow
    import ray

    assert data["versions"]["distopt"] == distopt.__version__
    assert data["versions"]["ray"] == ray.__version__
    assert data["versions"]["pyarrow"] == pyarrow.__version__
    assert data["versions"]["numpy"] == numpy.__version__


def test_snapshot_matches_reader(finished):
    import duckdb
    import pandas as pd

    _, reader = finished
    path = Path(reader.path) / "trials.parquet"
    expected = reader.trials().to_pandas()
    frame = pd.read_parquet(path).sort_values("trial_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(frame[expected.columns], expected)
    assert duckdb.sql(f"select count(*) from '{path}'").fetchall() == [(BUDGET,)]


# -- failures inside the objective ----------------------------------------------------------------

MODES = ["raise", "nan", "missing", "text", "none", "ok"]
REASONS = {
    "nan": "['f1'] are not finite",
    "missing": "did not return metric(s) ['f2']",
    "text": "metric 'f1' is not a number: 'high'",
    "none": "objective returned NoneType",
}


def test_failed_trials_are_recorded_and_the_study_goes_on(ray_local, tmp_path):
    study = Study({"x": Float(0.0, 1.0), "mode": Categorical(MODES)}, {"f1": "min", "f2": "min"},
                  store=tmp_path / "flaky", seed=0)
    reader = study.optimize(flaky, budget=24, workers=2)
    table = reader.trials()
    assert table.num_rows == 24
    assert table["trial_id"].to_pylist() == list(range(24))
    rows = table.to_pylist()
    assert {r["config/mode"] for r in rows} == set(MODES)  # every way of failing was tried
    for r in rows:
        mode, x = r["config/mode"], r["config/x"]
        if mode == "ok":
            assert r["status"] == "COMPLETE" and r["error"] is None
            assert (r["f1"], r["f2"]) == (x, pytest.approx(1 - x))
        elif mode == "raise":
            assert r["status"] == "FAILED"
            assert f"ValueError: objective failed on purpose at x={x:.3f}" in r["error"]
        else:
            assert r["status"] == "FAILED"
            assert REASONS[mode] in r["error"], (mode, r["error"])
        assert r["attempts"] == 1
    ok = {r["trial_id"] for r in rows if r["config/mode"] == "ok"}
    # the ok trials lie on f1 + f2 = 1: all of them, and only them, make the front
    assert set(reader.pareto_front()["trial_id"].to_pylist()) == ok
    assert {r.trial_id for r in reader.results() if r.status == "COMPLETE"} == ok


def dying_objective(threshold: float):
    """An objective that kills its worker process when x > threshold (made in a closure, so Ray
    ships it by value and no worker needs to import this test module)."""
    def objective(config):
        import os

        if config["x"] > threshold:
            os._exit(3)
        return {"f1": config["x"], "f2": 1 - config["x"]}

    return objective


def _wait_for_free_cpus(ray, n: int, timeout: float = 30.0) -> None:
    """Until the shared local Ray has ``n`` CPUs free: an earlier test's killed actors give
    theirs back asynchronously, and with fewer free a second trial queues behind the first on
    one worker, whose death is then not charged to either (one more hand-out, by design)."""
    import time

    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0.0) < n and time.monotonic() < deadline:
        time.sleep(0.1)


def test_dead_worker_is_retried_then_failed(ray_local, tmp_path):
    _wait_for_free_cpus(ray_local, 2)
    study = Study({"x": Float(0.0, 1.0)}, {"f1": "min", "f2": "min"}, store=tmp_path / "dies")
    with pytest.raises(distopt.DistoptError, match="no trial completed"):  # all FAILED
        study.optimize(dying_objective(-1.0), budget=2, workers=2, max_retries=1)
    reader = distopt.open_store(tmp_path / "dies")
    rows = reader.trials().to_pylist()
    assert [r["trial_id"] for r in rows] == [0, 1]
    for r in rows:
        assert r["status"] == "FAILED" and r["attempts"] == 2
        assert r["error"].startswith("worker died 2 times; last cause: ")
    dispatched = reader.dispatched()
    ids, attempts = dispatched["trial_id"].to_pylist(), dispatched["attempt"].to_pylist()
    assert sorted(zip(ids, attempts, strict=True)) == \
        [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_trials_queued_on_a_dying_worker_are_not_charged(ray_local, tmp_path):
    # the random strategy queues a second trial on each worker: trial 2 waits behind trial 0
    # (x > 0.5) on worker 0 and must not be FAILED when trial 0 kills that worker
    study = Study({"x": Float(0.0, 1.0)}, {"f1": "min", "f2": "min"}, store=tmp_path / "queued")
    reader = study.optimize(dying_objective(0.5), budget=4, workers=2, max_retries=0)
    rows = reader.trials().to_pylist()
    assert [r["trial_id"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        if r["config/x"] > 0.5:
            assert r["status"] == "FAILED" and r["error"].startswith("worker died")
        else:
            assert r["status"] == "COMPLETE", r


def test_trial_timeout(ray_local, tmp_path):
    space = {"x": Float(0.0, 1.0), "y": 0.0, "epochs": 3, "sleep": 0.5}
    study = Study(space, {"f1": "min", "f2": "min"}, store=tmp_path / "slow")
    with pytest.raises(distopt.DistoptError, match="no trial completed"):  # all TIMEOUT
        study.optimize(two_bowls, budget=2, workers=2, trial_timeout=0.4)
    reader = distopt.open_store(tmp_path / "slow")
    rows = reader.trials().to_pylist()
    assert [r["status"] for r in rows] == ["TIMEOUT", "TIMEOUT"]
    assert all(r["error"] == "stopped after trial_timeout=0.4 s" for r in rows)
    assert all(r["f1"] is None for r in rows)
    assert reader.pareto_front().num_rows == 0 and reader.hypervolume() == 0.0


# -- resume ---------------------------------------------------------------------------------------

RESUME_SPACE = {"x": Float(-0.5, 1.5), "y": Float(-1.0, 1.0), "epochs": 2}


def resume_study(store: Path) -> Study:
    return Study(RESUME_SPACE, {"f1": "min", "f2": "min"}, {"g": ("<=", 1.0)}, store=store,
                 seed=0)


def test_resume_adds_trials_and_keeps_the_first_ones(ray_local, tmp_path):
    store = tmp_path / "resumed"
    first = resume_study(store).optimize(two_bowls, budget=6, workers=2).trials()
    assert first.num_rows == 6
    reader = resume_study(store).optimize(two_bowls, budget=10, workers=2)
    table = reader.trials()
    assert table.num_rows == 10
    assert table["trial_id"].to_pylist() == list(range(10))
    assert table.slice(0, 6).equals(first)
    # the resumed strategy continued its sequence instead of repeating the first points
    assert configs_of(table) == sobol_configs(RESUME_SPACE, 10)
    assert reader.curves().num_rows == 10 * 2
    data = json.loads((store / "study.json").read_text())
    assert data["resumed"] == 1 and data["run"]["budget"] == 10

    # a budget already met runs nothing
    again = resume_study(store).optimize(two_bowls, budget=8, workers=2)
    assert again.trials().equals(table)

    # a different study on the same store is refused, and no byte of it changes
    before = {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}
    other = Study({**RESUME_SPACE, "y": Float(-2.0, 2.0)}, {"f1": "min", "f2": "min"},
                  {"g": ("<=", 1.0)}, store=store)
    with pytest.raises(distopt.StoreError, match="different study"):
        other.optimize(two_bowls, budget=12, workers=2)
    assert {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()} == before


def test_resume_reruns_trials_that_were_in_flight(ray_local, tmp_path):
    from distopt.store import StoreWriter
    from distopt.store._metadata import read_metadata

    store = tmp_path / "crashed"
    resume_study(store).optimize(two_bowls, budget=4, workers=2)
    # as a crash leaves it: trial 4 handed to a worker, never finished
    lost = {"x": 0.125, "y": -0.25, "epochs": 2}
    with StoreWriter(store, read_metadata(store)) as writer:
        writer.add_dispatched([{"trial_id": 4, "attempt": 1, "time": 0.0, "config": lost}])
    reader = resume_study(store).optimize(two_bowls, budget=6, workers=2)
    table = reader.trials()
    assert table["trial_id"].to_pylist() == [0, 1, 2, 3, 4, 5]
    configs = configs_of(table)
    assert configs[4] == lost
    assert table["f1"][4].as_py() == pytest.approx(0.125**2 + 0.25**2)
    # The lost trial used up sequence position 4 (in a real crash it was handed Sobol point 4),
    # so the first new trial continues at position 5 rather than repeating point 4.
    assert configs[5] == sobol_configs(RESUME_SPACE, 6)[5]


def test_given_reference_point_is_kept(ray_local, tmp_path):
    study = Study(RESUME_SPACE, {"f1": "min", "f2": "max"}, store=tmp_path / "ref",
                  ref_point={"f1": 2.0, "f2": 0.0})
    reader = study.optimize(two_bowls, budget=4, workers=2)
    assert reader.ref_point == {"f1": 2.0, "f2": 0.0}
    assert json.loads((tmp_path / "ref" / "study.json").read_text())["ref_point"] == \
        {"f1": 2.0, "f2": 0.0}
    table = reader.trials()
    points = np.stack([table["f1"].to_numpy(), table["f2"].to_numpy()], axis=1)
    expected = brute_hypervolume_2d(points, np.array([2.0, 0.0]), [False, True])
    assert expected > 0
    assert reader.hypervolume() == pytest.approx(expected)


# -- bad input ------------------------------------------------------------------------------------

def _cuda_is_allowed_here() -> bool:
    """Whether ``device: cuda`` would not be refused: torch sees a CUDA device (or is absent,
    and ``bayes`` cannot run at all)."""
    try:
        import torch
    except ImportError:
        return True
    return torch.cuda.is_available()


BAD_INPUTS = [
    ({}, {"budget": 0}, "budget"),
    ({}, {"budget": 2.5}, "budget"),
    ({}, {"budget": True}, "budget"),
    ({}, {"workers": "2"}, "workers"),
    ({}, {"workers": 0}, "workers"),
    ({}, {"resources_per_trial": {"gpu": -1}}, "resources_per_trial.gpu"),
    ({}, {"resources_per_trial": {"gpu": 1.5}}, "resources_per_trial.gpu"),
    ({}, {"resources_per_trial": {"cpu": "1"}}, "resources_per_trial.cpu"),
    ({}, {"resources_per_trial": {"cpu": math.nan}}, "resources_per_trial.cpu"),
    ({}, {"resources_per_trial": [("gpu", 1)]}, "resources_per_trial"),
    ({}, {"max_retries": -1}, "max_retries"),
    ({}, {"trial_timeout": 0}, "trial_timeout"),
    ({}, {"trial_timeout": "10"}, "trial_timeout"),
    ({}, {"address": 5}, "address"),
    ({}, {"objective": 42}, "objective"),
    ({"strategy": "nope"}, {}, "strategy"),
    ({"strategy": {"name": "random", "opts": {}}}, {}, "strategy"),
    ({"strategy": {"name": "random", "options": {"bogus": 1}}}, {}, "strategy.options"),
    ({"strategy": {"name": "bayes", "options": {"ref_point": {"f1": 1.0}}}}, {},
     "strategy.options.ref_point"),
    pytest.param({"strategy": {"name": "bayes", "options": {"device": "cuda"}}}, {},
                 "strategy.options.device", marks=pytest.mark.skipif(
                     _cuda_is_allowed_here(), reason="CUDA is there (or torch is not)")),
    ({"objectives": {"f1": "minimize", "f2": "min"}}, {}, "objectives.f1"),
    ({"objectives": {}}, {}, "objectives"),
    ({"constraints": {"g": ("<", 1.0)}}, {}, "constraints.g"),
    ({"constraints": {"g": ("<=", "1")}}, {}, "constraints.g"),
    ({"seed": "0"}, {}, "seed"),
    ({"seed": -1}, {}, "seed"),           # scipy's Sobol raised once the store was written
    ({"seed": 2**32}, {}, "seed"),        # Optuna's samplers raised
    ({"space": {"x": Float(0, 1)}, "objectives": {"f1": "min"}, "constraints": {"x": (">=", 0.5)}},
     {}, "constraints.x"),                # two columns titled x
    ({"ref_point": {"f1": 1.0}}, {}, "ref_point"),
    ({"ref_point": {"f1": 1.0, "f2": math.inf}}, {}, "ref_point.f2"),
    ({"space": {"x": {"type": "float", "low": 1, "high": 0}}}, {}, "space.x"),
]


@pytest.mark.parametrize("study_kwargs, optimize_kwargs, field", BAD_INPUTS)
def test_bad_input_names_the_field(tmp_path, study_kwargs, optimize_kwargs, field):
    store = tmp_path / "never"
    kwargs = {"space": {"x": Float(0, 1)}, "objectives": {"f1": "min", "f2": "min"},
              "store": store, **study_kwargs}
    run = {"objective": two_bowls, "budget": 4, "workers": 2, **optimize_kwargs}
    with pytest.raises(distopt.ConfigError) as info:
        Study(**kwargs).optimize(**run)
    message = str(info.value)
    assert message.startswith(f"{field}: "), message
    assert "\n" not in message
    assert not store.exists()  # refused before anything was written


@pytest.mark.parametrize("resources, field", [
    ({"gpu": 1}, "resources_per_trial.gpu"),
    ({"gpu": 0.25}, "resources_per_trial.gpu"),
    ({"tpu_v9": 1}, "resources_per_trial.tpu_v9"),
])
def test_resources_the_cluster_lacks(ray_local, tmp_path, resources, field):
    if "gpu" in resources and ray_local.cluster_resources().get("GPU"):
        pytest.skip("this Ray cluster has a GPU")
    study = Study({"x": Float(0, 1)}, {"f1": "min", "f2": "min"}, store=tmp_path / "gpu")
    with pytest.raises(distopt.ConfigError) as info:
        study.optimize(two_bowls, budget=2, workers=2, resources_per_trial=resources)
    message = str(info.value)
    assert message.startswith(f"{field}: ") and "\n" not in message
    assert "the Ray cluster has 0" in message
    assert not (tmp_path / "gpu").exists()  # refused before anything was written (issue 20)
    assert ray_local.is_initialized()  # the session's Ray is left running
