"""distopt.plot and `distopt plot`: figure contents (points, lines, labels), not pixels.

The stores are written directly with StoreWriter (no Ray), so every count is known.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import distopt
import distopt.plot as dplot
from distopt.store import StoreWriter

matplotlib = pytest.importorskip("matplotlib")


def write_store(path, study, trials, curves=()):
    writer = StoreWriter(path, study.metadata({}))
    writer.add_curves(list(curves))
    writer.add_trials(trials)
    writer.close()
    return distopt.open_store(path)


def row(trial_id, config, metrics, status="COMPLETE", t=None):
    t = float(trial_id) if t is None else t
    return {"trial_id": trial_id, "status": status, "config": config, "metrics": metrics,
            "error": None if status == "COMPLETE" else "x", "attempts": 1,
            "start_time": 1000.0 + t, "end_time": 1000.5 + t, "worker": "w", "node_id": None}


# Points (f1, f2, g): front = A, B, C (feasible, non-dominated); D, E feasible dominated;
# F, G infeasible (g > 0.5) although F would dominate everything; H FAILED; I PRUNED.
POINTS = {
    "A": (0.0, 1.0, 0.1), "B": (0.3, 0.4, 0.2), "C": (1.0, 0.0, 0.3),
    "D": (0.6, 0.9, 0.4), "E": (1.2, 0.5, 0.1),
    "F": (-1.0, -1.0, 0.9), "G": (2.0, 2.0, 0.8),
}


@pytest.fixture(scope="module")
def two_objective_store(tmp_path_factory):
    study = distopt.Study({"x": distopt.Float(0, 1), "lr": distopt.Float(1e-4, 1e-1, log=True),
                           "act": distopt.Categorical(["relu", "silu"]), "epochs": 3},
                          {"f1": "min", "f2": "min"}, {"g": ("<=", 0.5)})
    trials, curves = [], []
    for i, (f1, f2, g) in enumerate(POINTS.values()):
        config = {"x": i / 10, "lr": 10 ** (-1 - i / 3), "act": ["relu", "silu"][i % 2],
                  "epochs": 3}
        trials.append(row(i, config, {"f1": f1, "f2": f2, "g": g}))
        curves += [{"trial_id": i, "step": s, "time": 1000.0 + i, "train_loss": (f1 + 2) / (s + 1)}
                   for s in range(3)]
    trials.append(row(7, {"x": 0.9, "lr": 1e-3, "act": "relu", "epochs": 3}, {}, "FAILED"))
    trials.append(row(8, {"x": 0.8, "lr": 1e-3, "act": "relu", "epochs": 3},
                      {"f1": -5.0, "f2": -5.0, "g": 0.0}, "PRUNED"))
    return write_store(tmp_path_factory.mktemp("plot") / "two", study, trials, curves)


def offsets(ax, label):
    found = [c for c in ax.collections if c.get_label() == label]
    return np.zeros((0, 2)) if not found else np.asarray(found[0].get_offsets())


def test_pareto_front_2d_points_by_kind(two_objective_store):
    fig = dplot.pareto_front(two_objective_store)
    (ax,) = fig.axes
    assert sorted(map(tuple, offsets(ax, dplot.FRONT))) == [(0.0, 1.0), (0.3, 0.4), (1.0, 0.0)]
    assert sorted(map(tuple, offsets(ax, dplot.FEASIBLE))) == [(0.6, 0.9), (1.2, 0.5)]
    assert sorted(map(tuple, offsets(ax, dplot.INFEASIBLE))) == [(-1.0, -1.0), (2.0, 2.0)]
    # FAILED and PRUNED trials are not points; the staircase joins the 3 front points.
    assert sum(len(c.get_offsets()) for c in ax.collections) == 7
    assert ax.get_xlabel() == "f1 (min)" and ax.get_ylabel() == "f2 (min)"
    assert "3 of 5 feasible" in ax.get_title() and "2 infeasible" in ax.get_title()
    # The sets agree with the reader's own front.
    assert len(offsets(ax, dplot.FRONT)) == two_objective_store.pareto_front().num_rows


def test_hypervolume_over_trials_and_time(two_objective_store):
    trace = dplot.hypervolume_trace(two_objective_store)
    assert list(trace["trials"]) == list(range(1, 10))
    hv = trace["hypervolume"]
    assert np.all(np.diff(hv) >= 0) and hv[0] > 0
    assert hv[-1] == pytest.approx(two_objective_store.hypervolume())
    assert trace["seconds"][0] == pytest.approx(0.5) and np.all(np.diff(trace["seconds"]) > 0)
    fig = dplot.hypervolume(two_objective_store)
    by_trial, by_time = fig.axes
    assert by_trial.get_xlabel() == "finished trials" and by_trial.get_ylabel() == "hypervolume"
    assert "seconds" in by_time.get_xlabel()
    assert np.allclose(by_trial.lines[0].get_ydata(), hv)


def test_parallel_coordinates_one_line_per_complete_trial(two_objective_store):
    fig = dplot.parallel_coordinates(two_objective_store)
    (ax,) = fig.axes
    front = [line for line in ax.lines if line.get_gid() == "front"]
    others = [line for line in ax.lines if line.get_gid() == "trial"]
    assert len(front) == 3 and len(front) + len(others) == 7
    labels = [t.get_text() for t in ax.get_xticklabels()]
    # Searched parameters in the space's order (constants such as epochs left out), objectives.
    params = two_objective_store.problem.space.names
    assert sorted(params) == ["act", "lr", "x"]
    assert labels == params + ["f1 (min)", "f2 (min)"]
    for line in front + others:
        y = np.asarray(line.get_ydata(), dtype=float)
        assert len(y) == len(labels) and np.all((y >= -0.05) & (y <= 1.0))


def test_learning_curves_of_front_members(two_objective_store):
    fig = dplot.learning_curves(two_objective_store)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "train_loss" and ax.get_xlabel() == "step"
    assert len([line for line in ax.lines if line.get_gid() == "front"]) == 3
    first = ax.lines[0]
    assert list(first.get_xdata()) == [0, 1, 2]
    with pytest.raises(ValueError, match="never reported"):
        dplot.learning_curves(two_objective_store, metric="val_loss")


def test_three_and_four_objectives(tmp_path):
    rng = np.random.default_rng(0)
    for n_obj, expected_axes in ((3, 1), (4, 6)):
        names = [f"f{k}" for k in range(n_obj)]
        study = distopt.Study({"x": distopt.Float(0, 1)}, {n: "min" for n in names})
        points = rng.random((12, n_obj))
        trials = [row(i, {"x": 0.5}, dict(zip(names, p, strict=True)))
                  for i, p in enumerate(points)]
        reader = write_store(tmp_path / f"s{n_obj}", study, trials)
        fig = dplot.pareto_front(reader)
        assert len(fig.axes) == expected_axes
        on_front = reader.pareto_front().num_rows
        for ax in fig.axes:
            counts = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
            assert counts.get(dplot.FRONT, 0) == on_front
            assert counts.get(dplot.FRONT, 0) + counts.get(dplot.FEASIBLE, 0) == 12
        if n_obj == 3:
            assert fig.axes[0].name == "3d" and fig.axes[0].get_zlabel() == "f2 (min)"


@pytest.fixture(scope="module")
def symmetry_store(tmp_path_factory):
    """A mixed-symmetry-like store: exact rotation (alpha 0) gets large strengths on the front,
    broken permutation (alpha 1) small ones."""
    space = {f"lam.{g}": distopt.Float(1e-3, 10.0, log=True, off=0.0)
             for g in ("rotation", "scaling", "permutation")}
    study = distopt.Study(space, {"test_mse": "min", "equiv_err.rotation": "min"})
    study.objective_spec = {"call": "objectives.mixed_symmetry:make_task",
                            "with": {"alphas": {"rotation": 0.0, "scaling": 0.3,
                                                "permutation": 1.0}, "seed": 0}}
    trials = []
    for i in range(6):
        config = {"lam.rotation": 10 ** (i / 5), "lam.scaling": 0.1 * (i + 1),
                  "lam.permutation": 0.0 if i % 2 else 0.002}
        trials.append(row(i, config, {"test_mse": 0.1 * i, "equiv_err.rotation": 1.0 - 0.1 * i}))
    return write_store(tmp_path_factory.mktemp("sym") / "s", study, trials)


def test_symmetry_strengths_against_true_levels(symmetry_store):
    assert dplot.breaking_levels(symmetry_store) == {"rotation": 0.0, "scaling": 0.3,
                                                     "permutation": 1.0}
    fig = dplot.symmetry_strengths(symmetry_store)
    (ax,) = fig.axes
    members = [c for c in ax.collections if c.get_gid() == "member"]
    medians = [c for c in ax.collections if c.get_gid() == "median"]
    assert len(members) == len(medians) == 3
    front = symmetry_store.pareto_front().num_rows
    assert front == 6 and all(len(c.get_offsets()) == front for c in members)
    median_x = sorted(float(c.get_offsets()[0][0]) for c in medians)
    assert median_x == [0.0, 0.3, 1.0]
    by_level = {float(c.get_offsets()[0][0]): float(c.get_offsets()[0][1]) for c in medians}
    assert by_level[0.0] > by_level[0.3] > by_level[1.0]     # what the fixture encodes
    assert "rho(alpha, median lam) = -1.00" in ax.get_title()
    assert "alpha" in ax.get_xlabel() and "lam" in ax.get_ylabel()
    with pytest.raises(ValueError, match="mixed-symmetry"):
        dplot.symmetry_strengths(symmetry_store, alphas={"translation": 0.0})


def test_the_inertia_variants_o3_term_breaks_o2_x_too(tmp_path):
    """o2_x (the wrong axis) was plotted as exact (alpha 0), and rho computed against that."""
    space = {f"lam.{g}": distopt.Float(1e-3, 10.0, log=True) for g in ("o3", "o2_z", "o2_x")}
    study = distopt.Study(space, {"test_mse": "min"})
    study.objective_spec = {"call": "objectives.mixed_symmetry:make_task",
                            "with": {"variant": "inertia", "alphas": {"o3": 0.5}}}
    store = write_store(tmp_path / "s", study, [row(0, {g: 1.0 for g in space},
                                                    {"test_mse": 0.1})])
    assert dplot.breaking_levels(store) == {"o3": 0.5, "o2_z": 0.0, "o2_x": 0.5}


def test_strengths_in_use_are_auto_modes_own_and_none_for_jacobian():
    """Auto mode ignores its lam.* parameters (the plot showed them as discovered strengths)."""
    import pyarrow as pa

    trials = pa.table({"config/lam.rotation": [0.5, 7.0, 3.0, 0.1],
                       "config/mode": ["weighted", "auto", "jacobian", "weighted"],
                       "lam_used.rotation": [None, 2.5, None, None]})
    assert dplot.strengths_in_use(trials, "rotation").tolist() == [0.5, 2.5, 0.1]
    plain = pa.table({"config/lam.rotation": [0.5, 7.0]})  # another task: its parameters
    assert dplot.strengths_in_use(plain, "rotation").tolist() == [0.5, 7.0]


def test_save_all_and_the_cli(two_objective_store, symmetry_store, tmp_path):
    from distopt import cli

    written = dplot.save_all(symmetry_store, tmp_path / "sym")
    assert {p.stem for p in written} == {"pareto_front", "hypervolume", "parallel_coordinates",
                                         "symmetry_strengths"}   # no curves in that store
    assert cli.main(["plot", str(two_objective_store.path), "--out", str(tmp_path / "cli")]) == 0
    files = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert files == ["hypervolume.png", "learning_curves.png", "parallel_coordinates.png",
                     "pareto_front.png"]
    for name in files:
        data = (tmp_path / "cli" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert cli.main(["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_empty_and_single_objective_stores(tmp_path):
    study = distopt.Study({"x": distopt.Float(0, 1)}, {"loss": "min"})
    reader = write_store(tmp_path / "one", study, [row(0, {"x": 0.1}, {"loss": 0.5})])
    with pytest.raises(ValueError, match="two or more"):
        dplot.pareto_front(reader)
    trace = dplot.hypervolume_trace(reader)
    assert len(trace["hypervolume"]) == 1 and math.isfinite(trace["hypervolume"][0])
    assert [p.stem for p in dplot.save_all(reader, tmp_path / "out")] == [
        "hypervolume", "parallel_coordinates"]


def test_figures_show_inline_without_pyplot(two_objective_store):
    """Jupyter displays objects with ``_repr_png_``; no ``%matplotlib`` magic is needed."""
    fig = dplot.pareto_front(two_objective_store)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parallel_coordinates_name_categories_bounds_and_colours(two_objective_store):
    fig = dplot.parallel_coordinates(two_objective_store)
    (ax,) = fig.axes
    categories = {t.get_text(): t.get_position() for t in ax.texts if t.get_gid() == "category"}
    act = two_objective_store.problem.space.names.index("act")
    assert categories == {"relu": (act + 0.04, 0.0), "silu": (act + 0.04, 1.0)}
    bounds = [(t.get_position(), t.get_text()) for t in ax.texts if t.get_gid() == "bound"]
    lr = two_objective_store.problem.space.names.index("lr")
    assert ((lr + 0.04, 0.0), "0.0001") in bounds and ((lr + 0.04, 1.0), "0.1") in bounds
    complete = two_objective_store.trials().filter(
        pa_equal(two_objective_store.trials(), "COMPLETE"))
    f1 = complete["f1"].to_pylist()
    assert ((4 + 0.04, 0.0), f"{min(f1):.3g}") in bounds     # f1's axis: its lowest value
    (bar,) = ax.child_axes                                      # the colour bar, inside the plot
    assert bar.get_ylabel() == "f1 (min)"
    assert bar.get_ylim() == pytest.approx((min(f1), max(f1)))


def pa_equal(table, status):
    import pyarrow.compute as pc

    return pc.equal(table["status"], status)


def test_every_title_fits_its_figure_and_no_plot_warns(two_objective_store, symmetry_store):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figures = [dplot.pareto_front(two_objective_store), dplot.hypervolume(two_objective_store),
               dplot.parallel_coordinates(two_objective_store),
               dplot.learning_curves(two_objective_store),
               dplot.symmetry_strengths(symmetry_store)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fig in figures:
            renderer = FigureCanvasAgg(fig).get_renderer()
            fig.draw(renderer)
            titles = [ax.title for ax in fig.axes] + [t for t in [fig._suptitle] if t]
            titles = [t for t in titles if t.get_text()]
            assert titles
            for title in titles:
                box = title.get_window_extent(renderer)
                assert box.x0 >= 0 and box.x1 <= fig.bbox.width, title.get_text()


def test_a_store_without_a_recorded_task_has_no_true_levels(tmp_path):
    """A Python-built objective records no call: its breaking levels are unknown, not 0, so the
    strength plot is refused (and left out of save_all) instead of stacking every group at 0."""
    space = {f"lam.{g}": distopt.Float(1e-3, 10.0, log=True) for g in ("rotation", "scaling")}
    study = distopt.Study(space, {"test_mse": "min", "equiv_err.rotation": "min"})
    trials = [row(i, {"lam.rotation": 0.1 * (i + 1), "lam.scaling": 1.0 / (i + 1)},
                  {"test_mse": 0.1 * i, "equiv_err.rotation": 1.0 - 0.1 * i}) for i in range(4)]
    reader = write_store(tmp_path / "s", study, trials)
    assert dplot.breaking_levels(reader) == {}
    with pytest.raises(ValueError, match="pass alphas"):
        dplot.symmetry_strengths(reader)
    assert "symmetry_strengths" not in {p.stem for p in dplot.save_all(reader, tmp_path / "o")}
    fig = dplot.symmetry_strengths(reader, alphas={"rotation": 0.0, "scaling": 0.5})
    medians = [c for c in fig.axes[0].collections if c.get_gid() == "median"]
    assert sorted(float(c.get_offsets()[0][0]) for c in medians) == [0.0, 0.5]


def test_plots_with_nothing_to_draw_are_refused_in_one_line(tmp_path):
    study = distopt.Study({"x": distopt.Float(0, 1)}, {"f1": "min", "f2": "min"},
                          constraints={"g": ("<=", 0.0)})
    failed = write_store(tmp_path / "failed", study,
                         [row(0, {"x": 0.1}, {}, status="FAILED")])
    infeasible = write_store(tmp_path / "infeasible", study,
                             [row(0, {"x": 0.1}, {"f1": 1.0, "f2": 2.0, "g": 1.0})])
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no matplotlib "No artists with labels" either
        for plot in (dplot.pareto_front, dplot.parallel_coordinates, dplot.hypervolume):
            with pytest.raises(ValueError, match=r"no COMPLETE (feasible )?trial yet, so "
                                                 r"nothing to plot \(1 FAILED\)"):
                plot(failed)
        with pytest.raises(ValueError, match="no COMPLETE feasible trial yet"):
            dplot.hypervolume(infeasible)
        assert dplot.pareto_front(infeasible).axes   # infeasible points are worth a look
