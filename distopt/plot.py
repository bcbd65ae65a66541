"""Plots of a store: Pareto front, hypervolume, parallel coordinates, learning curves, strengths.

Every function takes a :class:`~distopt.StoreReader` (or a store path) and returns a
:class:`matplotlib.figure.Figure` built without pyplot (no global state, no GUI backend: it renders
with Agg, is shown inline by Jupyter by itself, and is saved with ``fig.savefig(path)``)::

    import distopt.plot as dplot
    dplot.pareto_front("runs/demo")                 # feasible, infeasible and front points
    dplot.hypervolume("runs/demo")                  # over finished trials and over time
    dplot.parallel_coordinates("runs/demo")         # hyperparameters against objectives
    dplot.learning_curves("runs/demo")              # report() curves of the front's members
    dplot.symmetry_strengths("runs/mixed")          # mixed-symmetry task: lam.<g> vs true level
    dplot.save_all("runs/demo", "plots/")           # all of them as PNG (``distopt plot``)

Only COMPLETE trials have objective values; FAILED, TIMEOUT and PRUNED trials are left out of the
front and the hypervolume, as everywhere in distopt.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.cm
import matplotlib.colors
import matplotlib.figure  # fails at import, with a clear error, when matplotlib is missing
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import pareto
from ._plottext import axis_ticks, finite_range, fit_title
from .store import StoreReader
from .trial import COMPLETE, CONFIG_PREFIX, CURVE_COLUMNS, status_counts

Store = StoreReader | str | os.PathLike

FRONT_COLOR = "tab:blue"
FEASIBLE_COLOR = "0.65"
INFEASIBLE_COLOR = "tab:red"
#: Labels of the point sets of :func:`pareto_front` (tests and legends find them by label).
FRONT, FEASIBLE, INFEASIBLE = "Pareto front", "feasible (dominated)", "infeasible"


def _reader(store: Store) -> StoreReader:
    """A snapshot: a plot of a live store reads it once, so its parts agree (its title's counts,
    its points)."""
    return (store if isinstance(store, StoreReader) else StoreReader(store)).snapshot()


class PlotFigure(matplotlib.figure.Figure):
    """A matplotlib Figure that Jupyter shows inline by itself (no pyplot, no %matplotlib)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def _figure(**kwargs: Any) -> PlotFigure:
    return PlotFigure(**kwargs)


def _axis_label(reader: StoreReader, metric: str) -> str:
    direction = reader.problem.objectives.get(metric)
    return f"{metric} ({direction})" if direction else metric


def _column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, math.nan)
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=float)


def _points(reader: StoreReader, table: pa.Table, objectives: Sequence[str]) -> np.ndarray:
    if not objectives:
        return np.zeros((table.num_rows, 0))
    return np.stack([_column(table, m) for m in objectives], axis=1)


def require_trials(reader: StoreReader, *, feasible: bool = False) -> None:
    """Refuse, in one line, a plot with nothing to draw (not empty axes): no COMPLETE trial, or
    with ``feasible`` no COMPLETE feasible one."""
    statuses = reader.trials()["status"].to_pylist()
    found = reader.pareto_front().num_rows if feasible else statuses.count(COMPLETE.value)
    if found == 0:
        status = status_counts(statuses) or "no trials"
        raise ValueError(f"{reader.path} has no COMPLETE {'feasible ' * feasible}trial yet, so "
                         f"nothing to plot ({status}); see `distopt show {reader.path} --failed`")


def front_sets(store: Store, objectives: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The three point sets :func:`pareto_front` draws: ``{FRONT, FEASIBLE, INFEASIBLE}`` ->
    ``(n, n_objectives)`` arrays of COMPLETE trials (feasible dominated ones exclude the front)."""
    reader = _reader(store)
    objectives = list(objectives or reader.problem.objectives)
    maximize = [reader.problem.objectives.get(m) == "max" for m in objectives]
    trials = reader.trials()
    complete = trials.filter(pc.equal(trials["status"], COMPLETE.value))
    points = _points(reader, complete, objectives)
    finite = np.all(np.isfinite(points), axis=1)
    feasible = reader._feasible_mask(complete) & finite
    on_front = np.zeros(len(points), dtype=bool)
    if feasible.any():
        on_front[feasible] = pareto.is_non_dominated(points[feasible], maximize=maximize)
    return {FRONT: points[on_front], FEASIBLE: points[feasible & ~on_front],
            INFEASIBLE: points[~feasible & finite]}


def pareto_front(store: Store, objectives: Sequence[str] | None = None):
    """Objective space: the feasible front, dominated feasible and infeasible COMPLETE trials.

    Two objectives: one scatter with the front's attainment staircase. Three: a 3-D scatter. More:
    a grid of every pair (the front is the one of all objectives, so a pair may show front points
    that look dominated). ``objectives`` picks and orders the metrics (default: the study's).
    """
    reader = _reader(store)
    objectives = list(objectives or reader.problem.objectives)
    require_trials(reader)
    sets = front_sets(reader, objectives)
    styles = {FEASIBLE: {"color": FEASIBLE_COLOR, "marker": "o", "s": 18},
              INFEASIBLE: {"color": INFEASIBLE_COLOR, "marker": "x", "s": 22},
              FRONT: {"color": FRONT_COLOR, "marker": "o", "s": 32, "edgecolors": "k"}}
    counts = {name: len(points) for name, points in sets.items()}
    title = (f"Pareto front: {counts[FRONT]} of {counts[FRONT] + counts[FEASIBLE]} feasible "
             f"trials, {counts[INFEASIBLE]} infeasible")
    if len(objectives) == 1:
        raise ValueError("pareto_front needs two or more objectives; use hypervolume() or the "
                         "trial table for one")
    if len(objectives) == 2:
        fig = _figure(figsize=(6, 4.5), layout="constrained")
        ax = fig.add_subplot()
        for name in (FEASIBLE, INFEASIBLE, FRONT):
            if len(sets[name]):
                ax.scatter(sets[name][:, 0], sets[name][:, 1], label=name, **styles[name])
        front = sets[FRONT]
        if len(front) > 1:
            maximize = [reader.problem.objectives.get(m) == "max" for m in objectives]
            order = np.argsort(front[:, 0] * (-1 if maximize[0] else 1))
            ax.step(front[order, 0], front[order, 1], where="post", color=FRONT_COLOR, lw=1,
                    alpha=0.6)
        ax.set_xlabel(_axis_label(reader, objectives[0]))
        ax.set_ylabel(_axis_label(reader, objectives[1]))
        ax.legend(loc="best", fontsize="small")
        fit_title(ax, title, 6)
        return fig
    if len(objectives) == 3:
        fig = _figure(figsize=(6.5, 5.5), layout="constrained")
        ax = fig.add_subplot(projection="3d")
        for name in (FEASIBLE, INFEASIBLE, FRONT):
            if len(sets[name]):
                ax.scatter(*sets[name].T, label=name, **styles[name])
        ax.set_xlabel(_axis_label(reader, objectives[0]))
        ax.set_ylabel(_axis_label(reader, objectives[1]))
        ax.set_zlabel(_axis_label(reader, objectives[2]))
        ax.legend(loc="upper left", fontsize="small")
        fit_title(ax, title, 6.5)
        return fig
    pairs = [(i, j) for i in range(len(objectives)) for j in range(i + 1, len(objectives))]
    ncols = min(3, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig = _figure(figsize=(4 * ncols, 3.5 * nrows), layout="constrained")
    for k, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for name in (FEASIBLE, INFEASIBLE, FRONT):
            if len(sets[name]):
                ax.scatter(sets[name][:, i], sets[name][:, j], label=name, **styles[name])
        ax.set_xlabel(_axis_label(reader, objectives[i]))
        ax.set_ylabel(_axis_label(reader, objectives[j]))
        if k == 0:
            ax.legend(loc="best", fontsize="small")
    fit_title(fig, title, 4 * ncols)
    return fig


# -- hypervolume ----------------------------------------------------------------------------------

def hypervolume_trace(store: Store) -> dict[str, np.ndarray]:
    """Hypervolume of the feasible front after each finished trial, in order of finishing.

    Returns ``{"trials": 1..n, "seconds": end time since the first start, "hypervolume": ...}``,
    with the store's recorded reference point (inferred from all feasible points if none).
    """
    reader = _reader(store)
    table = reader.trials()
    if table.num_rows == 0:
        empty = np.zeros(0)
        return {"trials": empty, "seconds": empty, "hypervolume": empty}
    order = np.argsort(_seconds(table, "end_time"), kind="stable")
    table = table.take(pa.array(order))
    end = _seconds(table, "end_time")
    start = float(np.nanmin(_seconds(table, "start_time")))
    objectives = list(reader.problem.objectives)
    maximize = reader.problem.maximize
    points = _points(reader, table, objectives)
    usable = (np.asarray(table["status"].to_pylist()) == COMPLETE.value) \
        & reader._feasible_mask(table) & np.all(np.isfinite(points), axis=1)
    ref = reader._ref_vector(None, points[usable]) if usable.any() else None
    values = np.zeros(table.num_rows)
    front = np.zeros((0, len(objectives)))
    current = 0.0
    for i in range(table.num_rows):
        if ref is not None and usable[i]:
            candidate = np.vstack([front, points[i]])
            mask = pareto.is_non_dominated(candidate, maximize=maximize)
            if mask[-1]:
                front = candidate[mask]
                current = pareto.hypervolume(front, ref, maximize=maximize)
        values[i] = current
    return {"trials": np.arange(1, table.num_rows + 1), "seconds": end - start,
            "hypervolume": values}


def _seconds(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=float) / 1e6


def hypervolume(store: Store):
    """Hypervolume of the feasible front over finished trials (left) and over time (right)."""
    reader = _reader(store)
    require_trials(reader, feasible=True)  # else zero throughout
    trace = hypervolume_trace(reader)
    fig = _figure(figsize=(10, 3.8), layout="constrained")
    by_trial, by_time = fig.subplots(1, 2, sharey=True)
    by_trial.step(trace["trials"], trace["hypervolume"], where="post", color=FRONT_COLOR)
    by_trial.set_xlabel("finished trials")
    by_trial.set_ylabel("hypervolume")
    by_time.step(trace["seconds"], trace["hypervolume"], where="post", color=FRONT_COLOR)
    by_time.set_xlabel("seconds since the first trial started")
    ref = reader.ref_point
    fit_title(fig, "hypervolume of the feasible front" + (f" (ref_point {_short(ref)})" if ref
                                                          else " (inferred ref_point)"), 10)
    return fig


def _short(mapping: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in mapping.items())


# -- parallel coordinates -------------------------------------------------------------------------

def parallel_coordinates(store: Store, params: Sequence[str] | None = None,
                         metrics: Sequence[str] | None = None):
    """One line per COMPLETE trial across its hyperparameters and objectives.

    Every axis is scaled to ``[0, 1]`` over the plotted trials (log-scaled parameters in log
    space, categorical ones by choice index; a ``Float(off=...)`` value sits below the range).
    Front members are drawn on top in colour, the other trials in grey.
    """
    reader = _reader(store)
    space = reader.problem.space
    params = list(params or space.names)
    metrics = list(metrics or reader.problem.objectives)
    require_trials(reader)
    table = reader.trials()
    table = table.filter(pc.equal(table["status"], COMPLETE.value))
    columns, labels = [], []
    for name in params:
        param = space.params.get(name)
        values = table.column(CONFIG_PREFIX + name).to_pylist()
        columns.append(_unit_column(param, values))
        labels.append(name)
    for name in metrics:
        columns.append(_scale(_column(table, name)))
        labels.append(_axis_label(reader, name))
    data = np.stack(columns, axis=1) if columns else np.zeros((table.num_rows, 0))
    front_ids = set(reader.pareto_front()["trial_id"].to_pylist())
    is_front = np.array([t in front_ids for t in table["trial_id"].to_pylist()], dtype=bool)
    width = max(6, 1.3 * len(labels) + 2)
    fig = _figure(figsize=(width, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    for row in data[~is_front]:
        ax.plot(x, row, color=FEASIBLE_COLOR, lw=0.8, alpha=0.6, gid="trial")
    if is_front.any() and metrics:
        cmap = matplotlib.colormaps["viridis"]
        first = data[is_front, len(params)]
        for row, colour in zip(data[is_front], cmap(np.nan_to_num(first, nan=0.5)), strict=True):
            ax.plot(x, row, color=colour, lw=2, gid="front")
        low, high = finite_range(_column(table, metrics[0]))
        mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(low, high), cmap)
        # An inset axes, not a new one of the figure: fig.axes stays the one plot.
        bar = ax.inset_axes((1.07, 0.0, 0.025, 1.0))
        fig.colorbar(mappable, cax=bar, label=_axis_label(reader, metrics[0]))
    for position in x:
        ax.axvline(position, color="k", lw=0.6)
    for position, name in enumerate(params):
        axis_ticks(ax, position, space.params.get(name),
                    table.column(CONFIG_PREFIX + name).to_pylist())
    for position, name in enumerate(metrics, start=len(params)):
        low, high = finite_range(_column(table, name))
        axis_ticks(ax, position, None, [low, high], scaled=True)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_yticks([])
    ax.set_ylabel("each axis: lowest (bottom) to highest (top)")
    ax.set_ylim(-0.08, 1.08)
    fit_title(ax, f"parallel coordinates: {table.num_rows} COMPLETE trials, "
               f"{int(is_front.sum())} on the front (coloured by "
               f"{metrics[0] if metrics else '-'})", width - 1.5)
    return fig


def _scale(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return np.full(len(values), 0.5)
    low, high = values[finite].min(), values[finite].max()
    return (values - low) / (high - low) if high > low else np.full(len(values), 0.5)


def _unit_column(param: Any, values: list[Any]) -> np.ndarray:
    """A parameter's values on ``[0, 1]``: its own encoding when it is searched, else scaled."""
    if param is None:  # a constant
        return np.full(len(values), 0.5)
    kind = type(param).__name__
    if kind == "Categorical":
        return np.array([param.index(v) / max(1, len(param.choices) - 1) for v in values], float)
    low, high, log = float(param.low), float(param.high), bool(getattr(param, "log", False))
    out = np.empty(len(values))
    for i, value in enumerate(values):
        value = float(value)
        if not low <= value <= high:  # Float(off=...) below the range
            out[i] = -0.03
        elif log:
            out[i] = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
        else:
            out[i] = (value - low) / (high - low) if high > low else 0.5
    return out


# -- learning curves ------------------------------------------------------------------------------

def curve_metrics(store: Store) -> list[str]:
    """Metrics found in the store's ``report`` rows (objectives first)."""
    reader = _reader(store)
    names = [c for c in reader.curves().column_names if c not in CURVE_COLUMNS]
    first = [m for m in reader.problem.objectives if m in names]
    return first + [m for m in names if m not in first]


def learning_curves(store: Store, metric: str | None = None, *, log: bool | None = None):
    """The ``distopt.report`` curve of ``metric`` for each member of the feasible front.

    ``metric`` defaults to the first reported objective, else the first reported metric. The
    y axis is logarithmic when every value is positive and they span over two decades (or as
    ``log`` says).
    """
    reader = _reader(store)
    available = curve_metrics(reader)
    if metric is None:
        if not available:
            raise ValueError(f"{reader.path} has no report() rows; objectives must call "
                             f"distopt.report(step=..., metric=...) for learning curves")
        metric = available[0]
    elif metric not in available:
        raise ValueError(f"metric {metric!r} was never reported; reported: {available}")
    front = reader.pareto_front()
    curves = reader.curves()
    fig = _figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(1, front.num_rows)))
    values_seen = []
    first_objective = next(iter(reader.problem.objectives))
    for colour, (trial_id, value) in zip(colours, zip(front["trial_id"].to_pylist(),
                                                      _column(front, first_objective),
                                                      strict=True), strict=False):
        rows = curves.filter(pc.equal(curves["trial_id"], trial_id))
        if rows.num_rows == 0:
            continue
        y = _column(rows, metric)
        values_seen.append(y[np.isfinite(y)])
        ax.plot(rows["step"].to_numpy(), y, color=colour, lw=1.5, gid="front",
                label=f"trial {trial_id} ({first_objective}={value:.3g})")
    seen = np.concatenate(values_seen) if values_seen else np.zeros(0)
    if log is None:
        log = bool(len(seen)) and (seen > 0).all() and seen.max() / seen.min() > 100
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if 0 < len(ax.lines) <= 12:
        ax.legend(fontsize="x-small", loc="best")
    fit_title(ax, f"learning curves of the {len(ax.lines)} front members with report() rows",
              fig.get_figwidth())
    return fig


# -- the mixed-symmetry task ----------------------------------------------------------------------

def breaking_levels(store: Store) -> dict[str, float]:
    """True breaking level per symmetry of a mixed-symmetry store, from the ``alphas`` its
    objective was built with (``objective: {call: ...make_task, with: {alphas: {...}}}``) by the
    task's rule (``objectives.mixed_symmetry.true_levels``): a group no term breaks is exact (0).

    Empty when the store records no such call (an objective built in Python, or another task's):
    the levels are then unknown, not 0.
    """
    reader = _reader(store)
    spec = reader.metadata.get("objective")
    given = (spec.get("with") or {}) if isinstance(spec, Mapping) else {}
    if not (isinstance(spec, Mapping) and ("alphas" in given
                                           or "mixed_symmetry" in str(spec.get("call")))):
        return {}
    alphas = dict(given.get("alphas") or {})
    groups = [n[4:] for n in reader.problem.space.names if n.startswith("lam.")]
    try:  # the task's own rule (the inertia variant's o3 term breaks o2_x too)
        from objectives.mixed_symmetry import true_levels
    except ImportError:
        return {g: float(alphas.get(g, 0.0)) for g in groups}
    return true_levels(str(given.get("variant", "points")), alphas, groups)


def symmetry_strengths(store: Store, alphas: Mapping[str, float] | None = None):
    """Discovered regulariser strength ``lam.<g>`` of the front's members against each symmetry's
    true breaking level ``alpha_g`` (mixed-symmetry task).

    A search that finds the symmetries puts large strengths on exact ones (``alpha = 0``) and small
    or zero strengths on strongly broken ones. ``alphas`` defaults to :func:`breaking_levels`.
    Each front member is one dot per group; the diamond is the group's median strength.
    """
    reader = _reader(store)
    levels = dict(alphas) if alphas is not None else breaking_levels(reader)
    groups = [g for g in levels if f"lam.{g}" in reader.problem.space.params]
    if not groups:
        raise ValueError("no lam.<group> parameter with a known breaking level (the store "
                         "records none unless its study file built the mixed-symmetry task); "
                         "pass alphas={group: level}")
    front = reader.pareto_front()
    fig = _figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["tab10"](np.arange(len(groups)) % 10)
    medians = []
    rng = np.random.default_rng(0)
    span = max(levels[g] for g in groups) - min(levels[g] for g in groups) or 1.0
    for colour, group in zip(colours, groups, strict=True):
        lam = strengths_in_use(front, group)
        x = levels[group] + rng.uniform(-0.015, 0.015, len(lam)) * span
        ax.scatter(x, lam, color=colour, s=26, alpha=0.8,
                   label=f"{group} (alpha={levels[group]:g})",
                   gid="member")
        median = float(np.median(lam)) if len(lam) else math.nan
        medians.append(median)
        ax.scatter([levels[group]], [median], color=colour, marker="D", s=90, edgecolors="k",
                   gid="median")
    ax.set_yscale("symlog", linthresh=_linthresh(front, groups))
    ax.set_xlabel("true breaking level alpha (0 = exact symmetry)")
    ax.set_ylabel("discovered strength lam on the front")
    ax.legend(fontsize="small", loc="best")
    note = ""
    if len(groups) > 2 and np.isfinite(medians).all():
        rho = _spearman([levels[g] for g in groups], medians)
        if math.isfinite(rho):
            note = f"\nSpearman rho(alpha, median lam) = {rho:.2f}"
    fit_title(ax, f"strength per symmetry, {front.num_rows} front members{note}", 5.5)
    return fig


def strengths_in_use(trials: pa.Table, group: str) -> np.ndarray:
    """The strength of ``group`` that trained each trial: the objective's ``lam_used.<group>``
    metric where it reports one (auto mode sets its strengths itself and ignores the
    ``lam.<group>`` parameter), else the parameter; trials in jacobian mode, which weigh no
    strength, are left out."""
    lam = _column(trials, CONFIG_PREFIX + f"lam.{group}")
    if f"lam_used.{group}" in trials.column_names:
        used = _column(trials, f"lam_used.{group}")
        lam = np.where(np.isnan(used), lam, used)
    if CONFIG_PREFIX + "mode" in trials.column_names:
        lam = lam[[m != "jacobian" for m in trials[CONFIG_PREFIX + "mode"].to_pylist()]]
    return lam


def _linthresh(front: pa.Table, groups: Sequence[str]) -> float:
    values = np.concatenate([strengths_in_use(front, g) for g in groups])
    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.min()) if len(positive) else 1e-3


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    def ranks(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = values.argsort(kind="stable")
        out = np.empty(len(values))
        out[order] = np.arange(len(values))
        for value in np.unique(values):  # average ranks of ties
            out[values == value] = out[values == value].mean()
        return out

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


# -- all of them ----------------------------------------------------------------------------------

def save_all(store: Store, out: str | os.PathLike, *, fmt: str = "png",
             dpi: int = 120) -> list[Path]:
    """Write every plot that applies to the store into ``out``; return the files written."""
    reader = _reader(store)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Any] = {"hypervolume": hypervolume,
                             "parallel_coordinates": parallel_coordinates}
    if len(reader.problem.objectives) >= 2:
        plots = {"pareto_front": pareto_front, **plots}
    if curve_metrics(reader):
        plots["learning_curves"] = learning_curves
    if any(f"lam.{g}" in reader.problem.space.params for g in breaking_levels(reader)):
        plots["symmetry_strengths"] = symmetry_strengths
    written = []
    for name, make in plots.items():
        fig = make(reader)
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    return written


__all__ = ["FEASIBLE", "FRONT", "INFEASIBLE", "breaking_levels", "curve_metrics", "front_sets",
           "hypervolume", "hypervolume_trace", "learning_curves", "parallel_coordinates",
           "pareto_front", "require_trials", "save_all", "symmetry_strengths"]
