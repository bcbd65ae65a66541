"""Each task's objective runs through distopt end to end, and every shipped study file is valid."""

from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import distopt
from distopt.cohort import BatchedObjective
from objectives import environments, mixed_symmetry, motion

ROOT = Path(__file__).resolve().parents[2]
SPACES = ROOT / "searchspaces"
STUDIES = sorted((SPACES / "studies").glob("*.yaml"))
load_study_file = (
    getattr(distopt, "load_study_file", None)
    or importlib.import_module("distopt._studyfile").load_study_file
)

TASKS = {
    "mixed_symmetry": (
        lambda: mixed_symmetry.make_task(
            alphas={"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}
        ),
        {"test_mse": "min", "equiv_err.rotation": "min"},
        "val_mse",
    ),
    "inertia": (
        lambda: mixed_symmetry.make_task(alphas={"o3": 0.5}, variant="inertia", n_train=256),
        {"test_mse": "min", "equiv_err.o2_z": "min"},
        "val_mse",
    ),
    "motion": (
        lambda: motion.make_task("charges", field=0.5, n_train=256),
        {"test_mse": "min", "equiv_err.translation": "min"},
        "val_mse",
    ),
    "environments": (
        lambda: environments.make_task("linear"),
        {"ood_risk": "min", "spurious_weight": "min"},
        "train_risk",
    ),
}


def _space(task: str, **constants) -> dict:
    space = yaml.safe_load((SPACES / f"{task}.yaml").read_text())["space"]
    return {**space, **constants}


@pytest.mark.parametrize("task", TASKS)
def test_task_runs_through_distopt(task, tmp_path, ray_local):
    make, objectives, curve_metric = TASKS[task]
    study = distopt.Study(
        space=_space(task, epochs=2),
        objectives=objectives,
        store=tmp_path / task,
        strategy="random",
        seed=0,
    )
    reader = study.optimize(make(), budget=2, workers=2)
    trials = reader.trials()
    assert trials.num_rows == 2
    assert trials.column("status").to_pylist() == ["COMPLETE", "COMPLETE"], trials.column(
        "error"
    ).to_pylist()
    for name in study.space.names:
        assert f"config/{name}" in trials.column_names
    for metric in objectives:
        values = trials.column(metric).to_pylist()
        assert all(math.isfinite(v) for v in values)
    curves = reader.curves()
    assert curves.num_rows == 4 and curve_metric in curves.column_names  # 2 trials x 2 epochs


def test_cohort_task_runs_through_distopt(tmp_path, ray_local):
    objectives = {"test_mse": "min", "equiv_err.rotation": "min"}
    study = distopt.Study(
        space=_space("mixed_symmetry", epochs=2, mode="weighted", width=16, depth=1),
        objectives=objectives, store=tmp_path / "cohort", strategy="random", seed=0,
    )
    objective = mixed_symmetry.make_cohort_task(
        alphas={"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}, n_train=128
    )
    reader = study.optimize(objective, budget=3, workers=1)
    trials = reader.trials()
    assert trials.column("status").to_pylist() == ["COMPLETE"] * 3, trials.column(
        "error"
    ).to_pylist()
    assert all(math.isfinite(v) for v in trials.column("test_mse").to_pylist())
    curves = reader.curves()
    assert sorted(curves.column("trial_id").to_pylist()) == sorted(
        trials.column("trial_id").to_pylist() * 2
    )


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_file_loads_and_its_objective_accepts_its_space(path):
    loaded = load_study_file(path)
    study, objective = loaded.study, loaded.objective
    assert loaded.run["budget"] >= 2
    problem = study.problem
    wanted = set(problem.objectives) | set(getattr(problem, "constraints", {}) or {})
    # Corners and centre of the space, trained for one epoch on the small size with few samples:
    # this checks that the space only produces keys and values the objective accepts, and that the
    # objective returns the metrics the study promises, not what they are worth.
    batched = objective if isinstance(objective, BatchedObjective) else None
    task = batched.fn.__self__ if batched is not None else objective
    if dataclasses.is_dataclass(task):
        task = dataclasses.replace(task, size="small")
        if "n_train" in {f.name for f in dataclasses.fields(task)}:
            task = dataclasses.replace(task, n_train=128)
        objective = distopt.batched(task.batch) if batched is not None else task
    configs = [{**config, "epochs": 1} for config in study.space.decode(
        np.array([[0.0] * study.space.dim, [0.5] * study.space.dim, [1.0] * study.space.dim])
    )]
    # A cohort objective trains the three configs in one call, as a worker would.
    results = objective.batch(configs) if batched is not None else map(objective, configs)
    for metrics in results:
        assert isinstance(metrics, dict), (path.name, metrics)
        assert wanted <= set(metrics), (path.name, wanted - set(metrics))
        assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.slow
def test_quickstart_study_file_runs_end_to_end(tmp_path, ray_local):
    loaded = load_study_file(
        STUDIES[[p.stem for p in STUDIES].index("quickstart")], store=str(tmp_path / "qs")
    )
    reader = loaded.optimize(budget=2, workers=2)
    assert reader.trials().column("status").to_pylist() == ["COMPLETE", "COMPLETE"]


def test_study_file_errors_name_the_field(tmp_path):
    text = (
        (SPACES / "studies" / "quickstart.yaml")
        .read_text()
        .replace("strategy: random", "strategy: annealing")
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match="strategy"):
        load_study_file(bad)
    bad.write_text(
        text.replace("strategy: annealing", "strategy: random").replace(
            "seed: 0}", "seed: 0, wrong: 1}"
        )
    )
    with pytest.raises(ValueError, match="objective.with"):
        load_study_file(bad)


@pytest.mark.parametrize("spec, field", [
    ({"lam.rotaton": {"type": "float", "low": 1.0e-3, "high": 10.0}}, "space.lam.rotaton"),
    ({"lam.rotation": {"type": "float", "low": -1.0, "high": 1.0}}, "space.lam.rotation"),
    ({"mode": {"type": "categorical", "choices": ["weighted", "weigthed"]}}, "space.mode"),
])
def test_a_space_the_task_cannot_run_is_refused_before_the_store(tmp_path, spec, field):
    """Every trial failed with the task's ValueError after the store was written, and the
    advice to resume repeated the bad space (a resume cannot change it)."""
    task = mixed_symmetry.make_task(alphas={"rotation": 0.0}, candidates=["rotation"])
    study = distopt.Study({"lr": distopt.Float(1e-3, 1e-2, log=True), **spec},
                          {"test_mse": "min"}, store=tmp_path / "never")
    with pytest.raises(distopt.ConfigError) as info:
        study.optimize(task, budget=2, workers=1)
    message = str(info.value)
    assert message.startswith(f"{field}: ") and "fix the study's space" in message, message
    assert "\n" not in message and not (tmp_path / "never").exists()
