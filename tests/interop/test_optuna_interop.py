"""Stores to Optuna studies (sqlite) and back, and Optuna-made studies into stores."""

from __future__ import annotations

import math

import numpy as np
import pytest

import distopt
from distopt.store import StoreWriter

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def space():
    return {"lam": distopt.Float(1e-3, 10.0, log=True, off=0.0), "lr": distopt.Float(0.0, 1.0),
            "width": distopt.Int(8, 64, log=True), "act": distopt.Categorical(["relu", "silu"]),
            "epochs": 5}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """12 trials of every status, a constraint, a curve per trial and a recorded ref point."""
    study = distopt.Study(space(), {"f1": "min", "acc": "max"}, {"g": ("<=", 0.5)},
                          ref_point={"f1": 2.0, "acc": 0.0})
    path = tmp_path_factory.mktemp("optuna") / "store"
    writer = StoreWriter(path, study.metadata({}))
    rng = np.random.default_rng(0)
    statuses = ["COMPLETE"] * 8 + ["FAILED", "TIMEOUT", "PRUNED", "PRUNED"]
    rows, curves = [], []
    for i, status in enumerate(statuses):
        config = {"lam": 0.0 if i % 4 == 0 else float(10 ** rng.uniform(-3, 1)),
                  "lr": float(rng.random()), "width": int(rng.integers(8, 65)),
                  "act": ["relu", "silu"][i % 2], "epochs": 5}
        f1, acc, g = float(rng.random()), float(rng.random()), float(rng.random())
        metrics = {} if status in ("FAILED", "TIMEOUT") else {"f1": f1, "acc": acc, "g": g,
                                                                "extra.metric": 1.5 * i}
        if status == "PRUNED":
            metrics = {"f1": f1}  # the last report had only f1
        rows.append({"trial_id": i, "status": status, "config": config, "metrics": metrics,
                     "error": None if status == "COMPLETE" else f"{status.lower()} on purpose",
                     "attempts": 2 if i == 3 else 1, "start_time": 1.7e9 + 10 * i,
                     "end_time": 1.7e9 + 10 * i + 3.25, "worker": "w", "node_id": "node-a"})
        curves += [{"trial_id": i, "step": s, "time": 1.7e9 + 10 * i + s, "f1": f1 + 1 / (s + 1)}
                   for s in range(3)]
    writer.add_curves(curves)
    writer.add_trials(rows)
    writer.close()
    return distopt.open_store(path)


def test_export_maps_params_values_constraints_and_states(store, tmp_path):
    from distopt.interop.optuna import TRIAL_ID, export_store

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    export_store(store, url, "demo")
    study = optuna.load_study(storage=url, study_name="demo")   # read back from sqlite
    names = list(store.problem.objectives)              # the store's order of objectives
    assert study.metric_names == names and set(names) == {"f1", "acc"}
    assert [d.name for d in study.directions] == [
        {"f1": "MINIMIZE", "acc": "MAXIMIZE"}[n] for n in names]
    trials = sorted(study.trials, key=lambda t: t.user_attrs[TRIAL_ID])
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8 + ["FAIL", "FAIL", "PRUNED", "PRUNED"]
    table = store.trials().to_pylist()
    for trial, row in zip(trials, table, strict=True):
        assert trial.params == {k: row[f"config/{k}"] for k in ("lam", "lr", "width", "act")}
        if row["status"] == "COMPLETE":
            assert trial.values == [row[n] for n in names]
            assert trial.system_attrs["constraints"] == [pytest.approx(row["g"] - 0.5)]
        assert sorted(trial.intermediate_values) == [0, 1, 2]
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        assert seconds == pytest.approx(3.25, abs=1e-3)
    off = trials[0].distributions["lam"]
    assert off.low == 0.0 and off.high == 10.0 and not off.log        # widened for off = 0.0
    assert trials[1].distributions["width"].log
    # Optuna's own constrained Pareto front is distopt's front.
    optuna_front = {t.user_attrs[TRIAL_ID] for t in study.best_trials}
    assert optuna_front == set(store.pareto_front()["trial_id"].to_pylist())
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        export_store(store, url, "demo")


def test_round_trip_gives_back_the_same_store(store, tmp_path):
    from distopt.interop.optuna import export_store, import_study

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    export_store(store.path, url)                       # study name: the folder's name
    back = import_study(url, "store", tmp_path / "back")
    assert back.problem.to_dict() == store.problem.to_dict()
    assert back.ref_point == store.ref_point
    original, again = store.trials(), back.trials()
    keep = ["trial_id", "status", "error", "attempts", "node_id", "start_time", "end_time"]
    keep += [c for c in original.column_names if c.startswith("config/")]
    assert again.select(keep).to_pylist() == original.select(keep).to_pylist()
    for name in ("f1", "acc", "g", "extra.metric"):
        assert again[name].to_pylist() == original[name].to_pylist()
    assert back.pareto_front()["trial_id"].to_pylist() == \
        store.pareto_front()["trial_id"].to_pylist()
    assert back.hypervolume() == pytest.approx(store.hypervolume())
    assert back.curves().select(["trial_id", "step", "f1"]).to_pylist() == \
        store.curves().select(["trial_id", "step", "f1"]).to_pylist()


def test_import_a_study_optuna_made(tmp_path):
    from distopt.interop.optuna import import_study

    named = hasattr(optuna.trial.Trial, "set_constraint")   # Optuna >= 5: named constraints

    def constraints(trial):
        return trial.user_attrs["c"]

    url = f"sqlite:///{tmp_path / 'native.db'}"
    sampler = optuna.samplers.NSGAIISampler(
        seed=0, **({} if named else {"constraints_func": constraints}))
    native = optuna.create_study(storage=url, study_name="native", sampler=sampler,
                                 directions=["minimize", "minimize"])

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        n = trial.suggest_int("n", 1, 8)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        if named:
            trial.set_constraint("x_max", x - 0.8)  # feasible when x <= 0.8
        else:
            trial.set_user_attr("c", [x - 0.8])
        if n == 8 and kind == "b":
            raise optuna.TrialPruned()
        return x**2 + n / 10, (1 - x) ** 2

    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        native.set_metric_names(["cost", "err"])
    native.optimize(objective, n_trials=20)
    reader = import_study(url, "native", tmp_path / "imported")
    problem = reader.problem
    assert problem.objectives == {"cost": "min", "err": "min"}
    assert set(problem.space.names) == {"x", "n", "kind"}
    constraint = "constraint_x_max" if named else "constraint_0"
    assert problem.constraints == {constraint: ("<=", 0.0)}
    trials = reader.trials()
    assert trials.num_rows == 20
    expected = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAIL": "FAILED"}
    assert trials["status"].to_pylist() == [expected[t.state.name] for t in native.trials]
    assert set(reader.pareto_front()["trial_id"].to_pylist()) == \
        {t.number for t in native.best_trials}
    x = trials["config/x"].to_pylist()
    slack = trials[constraint].to_pylist()
    assert any(c is not None for c in slack)
    assert all(math.isclose(c, xi - 0.8) for c, xi in zip(slack, x, strict=True) if c is not None)
    # A distopt strategy can carry on from the imported trials.
    strategy = distopt.strategies.make_strategy("random")
    strategy.bind(problem)
    strategy.tell(reader.results())
    assert problem.space.params["n"].contains(strategy.ask(1)[0]["n"])


def test_a_define_by_run_study_imports_once_and_a_distopt_search_goes_on(ray_local, tmp_path,
                                                                        caplog):
    """A parameter suggested in some trials only is null in the others and the search learns
    from the rest (it failed with Int.to_unit(None) once Ray had started); a step is said to be
    dropped; importing into a store that holds a study is refused (it overwrote the trials)."""
    import warnings

    from loop_objectives import quick

    from distopt.interop.optuna import import_study

    url = f"sqlite:///{tmp_path / 'dbr.db'}"
    native = optuna.create_study(storage=url, study_name="dbr", directions=["minimize"] * 2,
                                 sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        native.set_metric_names(["f1", "f2"])

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_int("n", 2, 8, step=2)
        if trial.suggest_categorical("kind", ["a", "b"]) == "a":
            trial.suggest_int("depth", 1, 3)  # conditional: only where kind is "a"
        return x, 1.0 - x

    for kind in ("a", "b", "a", "b"):
        native.enqueue_trial({"kind": kind})
    native.optimize(objective, n_trials=6)
    with pytest.warns(RuntimeWarning) as warned:
        reader = import_study(url, "dbr", tmp_path / "s")
    said = " ".join(str(w.message) for w in warned)
    assert "step=2" in said and "['depth'] are absent from some trials" in said
    depth = reader.trials()["config/depth"].to_pylist()
    assert None in depth and any(d is not None for d in depth)
    with pytest.raises(distopt.ConfigError, match=r"^store: .* already holds a study; import "
                                                  r"into a new folder$"):
        import_study(url, "dbr", tmp_path / "s")
    assert reader.trials().num_rows == 6  # untouched
    study = distopt.Study(reader.problem.space.to_dict(), reader.problem.objectives,
                          store=tmp_path / "s", strategy="random", seed=0)
    caplog.set_level("WARNING", logger="distopt")
    after = study.optimize(quick, budget=9, workers=1)
    assert after.trials()["status"].to_pylist() == ["COMPLETE"] * 9
    assert f"{depth.count(None)} stored trials lack a parameter of the space" in caplog.text
