"""How few evaluations each strategy needs to find the front, side by side with the peers.

Problems are BoTorch's test functions with ``negate=True`` (every objective maximised, the
problem's own ``ref_point`` and ``max_hv``): BraninCurrin, ZDT2 (d=6) and DTLZ2 (d=6, two
objectives). The score after ``n`` evaluations is ``log10(max_hv - hv_n)`` (lower is better),
median over seeds; ``suggest_ms/eval`` is the time spent proposing points over the first 40
evaluations divided by 40, mean over seeds, with one torch thread per run (``cpu_ms/eval``: the
same in CPU time of the run's process, which a busy machine inflates much less).

Methods: the distopt strategies (``random``, ``pareto``, ``tpe``, ``bayes``; ``bayes`` is given
the problem's reference point, as the tutorial loop is), Optuna's samplers (random, NSGA-II,
multivariate TPE, GPSampler) and BoTorch's tutorial qLogNEHVI loop (ModelListGP of
SingleTaskGPs, 2*(d+1) Sobol points, 10 restarts, 512 raw samples, 128 MC samples; run to 40
evaluations only, as in the tutorial, since it is the slowest by far). ``botorch_shared_start``
is the same loop started from the Sobol points distopt's strategies start from with that seed:
with 5 seeds, which starting design a method draws moves a median by about 0.1, so this pairs
the comparison of what comes after the start.

``workers=1`` proposes one point, evaluates it, tells it. ``workers=4`` is asynchronous: four
points are kept pending; the oldest is evaluated and told, then one point is asked to refill,
given the three still pending (for BoTorch: ``X_pending``; for Optuna: trials still running).

Usage::

    python benchmarks/bench_quality.py              # everything, 5 seeds (long: run it nohup)
    python benchmarks/bench_quality.py --quick      # 2 seeds, BraninCurrin only
    python benchmarks/bench_quality.py --methods bayes botorch --seeds 3 --jobs 2
    python benchmarks/bench_quality.py --methods bayes --include results/peers.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

PROBLEMS = ("BraninCurrin", "ZDT2_d6", "DTLZ2_d6_M2")
METHODS = ("random", "pareto", "tpe", "bayes", "optuna_random", "optuna_nsga2", "optuna_tpe",
           "optuna_gp", "botorch", "botorch_shared_start")
#: Evaluations per run; the tutorial loop stops at 40 as in the BoTorch tutorial.
BUDGET = {"botorch": 40, "botorch_shared_start": 40}
DEFAULT_BUDGET = 60
CHECKPOINTS = (20, 40, 60)
TIME_WINDOW = 40


def make_problem(name: str) -> Any:
    from botorch.test_functions.multi_objective import DTLZ2, ZDT2, BraninCurrin

    if name == "BraninCurrin":
        return BraninCurrin(negate=True)
    if name == "ZDT2_d6":
        return ZDT2(dim=6, num_objectives=2, negate=True)
    if name == "DTLZ2_d6_M2":
        return DTLZ2(dim=6, num_objectives=2, negate=True)
    raise ValueError(f"unknown problem {name!r}; choose from {PROBLEMS}")


# --- adapters: ask(n, pending unit-cube points) -> points; tell(point, values) ---------------

class DistoptMethod:
    """A distopt strategy over ``x0..x{d-1}`` in [0, 1], objectives ``f0, f1`` maximised."""

    def __init__(self, name: str, problem: Any, seed: int, options: dict[str, Any]):
        from distopt._problem import Problem
        from distopt.strategies import make_strategy

        d = problem.dim
        self.names = [f"x{j}" for j in range(d)]
        space = {n: {"type": "float", "low": 0.0, "high": 1.0} for n in self.names}
        self.problem = Problem(space, {"f0": "max", "f1": "max"})
        self.strategy = make_strategy({"name": name, "options": options}, seed=seed)
        self.strategy.bind(self.problem)
        self.configs: dict[tuple[float, ...], tuple[int, dict[str, Any]]] = {}

    def ask(self, n: int, pending: list[np.ndarray]) -> list[np.ndarray]:
        running = [self.configs[tuple(x)][1] for x in pending]
        out = []
        for config in self.strategy.ask(n, running):
            x = np.array([config[k] for k in self.names], dtype=float)
            self.configs[tuple(x)] = (len(self.configs), config)
            out.append(x)
        return out

    def tell(self, x: np.ndarray, y: np.ndarray) -> None:
        from distopt._problem import TrialResult

        trial_id, config = self.configs[tuple(x)]
        self.strategy.tell([TrialResult(trial_id, config, "COMPLETE",
                                        {"f0": float(y[0]), "f1": float(y[1])})])


class OptunaMethod:
    """An Optuna sampler driven through ask/tell; running trials stay RUNNING."""

    def __init__(self, name: str, problem: Any, seed: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        samplers = {
            "optuna_random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "optuna_nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
            "optuna_tpe": lambda: optuna.samplers.TPESampler(multivariate=True, seed=seed),
            "optuna_gp": lambda: optuna.samplers.GPSampler(seed=seed),
        }
        self.study = optuna.create_study(directions=["maximize"] * 2, sampler=samplers[name]())
        self.dim = problem.dim
        self.trials: dict[tuple[float, ...], Any] = {}

    def ask(self, n: int, pending: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            trial = self.study.ask()
            x = np.array([trial.suggest_float(f"x{j}", 0.0, 1.0) for j in range(self.dim)])
            self.trials[tuple(x)] = trial
            out.append(x)
        return out

    def tell(self, x: np.ndarray, y: np.ndarray) -> None:
        self.study.tell(self.trials[tuple(x)], [float(v) for v in y])


class BoTorchTutorial:
    """BoTorch's multi-objective tutorial loop (qLogNEHVI), with pending points for workers>1."""

    def __init__(self, problem: Any, seed: int, shared_start: bool = False):
        import torch
        from botorch.utils.sampling import draw_sobol_samples

        self.problem, self.seed = problem, seed
        self.tkwargs = {"dtype": torch.double}
        self.bounds = problem.bounds.to(**self.tkwargs)
        self.n_init = 2 * (problem.dim + 1)
        torch.manual_seed(seed)
        if shared_start:  # the Sobol points distopt's strategies start from with this seed
            from distopt._problem import Problem
            from distopt.strategies._sobol import SobolStart

            cube = Problem({f"x{j}": {"type": "float", "low": 0.0, "high": 1.0}
                            for j in range(problem.dim)}, {"f0": "max", "f1": "max"})
            unit = torch.tensor(SobolStart(problem.dim, seed).take(0, self.n_init, set(), cube),
                                **self.tkwargs)
            self.init = self.bounds[0] + unit * (self.bounds[1] - self.bounds[0])
        else:
            self.init = draw_sobol_samples(bounds=self.bounds, n=self.n_init, q=1,
                                           seed=seed).squeeze(1)
        self.X: list[np.ndarray] = []
        self.Y: list[np.ndarray] = []
        self.handed_out = 0

    def ask(self, n: int, pending: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        while len(out) < n and self.handed_out < self.n_init:
            out.append(self.init[self.handed_out].numpy())
            self.handed_out += 1
        if len(out) < n:
            out += self._bo(n - len(out), pending + out)
        return out

    def _bo(self, q: int, pending: list[np.ndarray]) -> list[np.ndarray]:
        import torch
        from botorch.acquisition.multi_objective.logei import (
            qLogNoisyExpectedHypervolumeImprovement,
        )
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import ModelListGP, SingleTaskGP
        from botorch.models.transforms import Standardize
        from botorch.optim import optimize_acqf
        from botorch.sampling import SobolQMCNormalSampler
        from botorch.utils.transforms import normalize, unnormalize
        from gpytorch.mlls import SumMarginalLogLikelihood

        train_x = torch.tensor(np.array(self.X), **self.tkwargs)
        train_y = torch.tensor(np.array(self.Y), **self.tkwargs)
        x_norm = normalize(train_x, self.bounds)
        models = [SingleTaskGP(x_norm, train_y[:, i:i + 1], outcome_transform=Standardize(m=1))
                  for i in range(train_y.shape[-1])]
        model = ModelListGP(*models)
        fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
        X_pending = (normalize(torch.tensor(np.array(pending), **self.tkwargs), self.bounds)
                     if pending else None)
        acq = qLogNoisyExpectedHypervolumeImprovement(
            model=model, ref_point=self.problem.ref_point.tolist(), X_baseline=x_norm,
            prune_baseline=True, sampler=SobolQMCNormalSampler(sample_shape=torch.Size([128])),
            X_pending=X_pending)
        standard = torch.zeros(2, self.problem.dim, **self.tkwargs)
        standard[1] = 1
        candidates, _ = optimize_acqf(acq, bounds=standard, q=q, num_restarts=10,
                                      raw_samples=512, options={"batch_limit": 5, "maxiter": 200},
                                      sequential=True)
        return list(unnormalize(candidates.detach(), self.bounds).numpy())

    def tell(self, x: np.ndarray, y: np.ndarray) -> None:
        self.X.append(np.asarray(x, dtype=float))
        self.Y.append(np.asarray(y, dtype=float))


def make_method(method: str, problem: Any, seed: int, options: dict[str, Any]) -> Any:
    if method in ("botorch", "botorch_shared_start"):
        return BoTorchTutorial(problem, seed, shared_start=method == "botorch_shared_start")
    if method.startswith("optuna_"):
        return OptunaMethod(method, problem, seed)
    name = method.split(":")[0]
    opts = dict(options.get(method, {}))
    if name == "bayes" and "ref_point" not in opts and not opts.pop("infer_ref_point", False):
        opts["ref_point"] = {f"f{i}": float(v) for i, v in enumerate(problem.ref_point)}
    return DistoptMethod(name, problem, seed, opts)


# --- one run ------------------------------------------------------------------------------

def run_one(job: tuple[str, str, int, int, dict[str, Any]]) -> dict[str, Any]:
    """Evaluate one method on one problem with one seed; returns the hypervolume trace."""
    problem_name, method, seed, workers, options = job
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from distopt.pareto import hypervolume

    problem = make_problem(problem_name)
    budget = BUDGET.get(method.split(":")[0], DEFAULT_BUDGET)
    runner = make_method(method, problem, seed, options)
    lower = problem.bounds[0].numpy()
    span = (problem.bounds[1] - problem.bounds[0]).numpy()
    ref = problem.ref_point.numpy()
    pending: deque[np.ndarray] = deque()
    values: list[np.ndarray] = []
    gaps: list[float] = []
    ask_seconds: list[float] = []  # wall time per point asked, in order of asking
    ask_cpu: list[float] = []  # CPU time of this process per point (robust to a busy machine)
    asked = 0
    start = time.perf_counter()
    while len(values) < budget:
        k = min(workers - len(pending), budget - asked)
        if k > 0:
            t0, c0 = time.perf_counter(), time.process_time()
            new = runner.ask(k, list(pending))
            ask_seconds += [(time.perf_counter() - t0) / k] * k
            ask_cpu += [(time.process_time() - c0) / k] * k
            pending.extend(np.asarray(x, dtype=float) for x in new)
            asked += k
        x = pending.popleft()
        point = torch.tensor(lower + np.clip(x, 0.0, 1.0) * span, dtype=torch.double)
        y = problem(point.unsqueeze(0))[0].numpy()
        runner.tell(x, y)
        values.append(y)
        hv = hypervolume(np.array(values), ref, maximize=True)
        gaps.append(math.log10(max(problem.max_hv - hv, 1e-12)))
    return {"problem": problem_name, "method": method, "seed": seed, "workers": workers,
            "gaps": gaps, "ask_seconds": ask_seconds, "ask_cpu": ask_cpu,
            "wall": time.perf_counter() - start}


# --- tables ---------------------------------------------------------------------------------

def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["problem"], run["method"], run["workers"])].append(run)
    rows = []
    for (problem, method, workers), group in groups.items():
        row: dict[str, Any] = {"problem": problem, "method": method, "workers": workers,
                               "seeds": len(group)}
        for c in CHECKPOINTS:
            gaps = [r["gaps"][c - 1] for r in group if len(r["gaps"]) >= c]
            row[f"gap@{c}"] = float(np.median(gaps)) if len(gaps) == len(group) else None
        for key, column in (("ask_seconds", "suggest_ms"), ("ask_cpu", "suggest_cpu_ms")):
            row[column] = 1000 * float(np.mean(
                [np.sum(r.get(key, [np.nan])[:TIME_WINDOW]) / TIME_WINDOW for r in group]))
        rows.append(row)
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r["workers"], PROBLEMS.index(r["problem"]),
                             order.get(r["method"].split(":")[0], 99), r["method"]))
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(rows: list[dict[str, Any]]) -> str:
    lines = []
    for workers in sorted({r["workers"] for r in rows}):
        lines += [f"### workers={workers}", "",
                  "| problem | method | seeds | log10gap@20 | @40 | @60 | suggest_ms/eval | "
                  "cpu_ms/eval |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in (r for r in rows if r["workers"] == workers):
            lines.append(f"| {r['problem']} | {r['method']} | {r['seeds']} | "
                         f"{_fmt(r['gap@20'])} | {_fmt(r['gap@40'])} | {_fmt(r['gap@60'])} | "
                         f"{r['suggest_ms']:.1f} | {r['suggest_cpu_ms']:.1f} |")
        lines.append("")
    lines += render_targets(rows)
    return "\n".join(lines)


#: Medians of 5 seeds of the same method move by about this much between two runs, so a
#: difference this small is reported as a match, not as a loss.
MATCH_TOLERANCE = 0.05


def render_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets: bayes vs the tutorial loop at 40 evaluations, and speed."""
    index = {(r["problem"], r["method"], r["workers"]): r for r in rows}
    lines = ["### targets (bayes vs BoTorch tutorial qLogNEHVI at 40 evaluations)", "",
             "| problem | bayes w1 | botorch w1 | w1: bayes - botorch (<= 0) | bayes w4 | "
             "botorch w4 | w4: bayes - botorch w1 (<= 0.2) | time ratio w1 (cpu; <= 0.33) | "
             "w1, w4: bayes - botorch from the same start |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    found = False
    for problem in PROBLEMS:
        b1, t1 = index.get((problem, "bayes", 1)), index.get((problem, "botorch", 1))
        b4, t4 = index.get((problem, "bayes", 4)), index.get((problem, "botorch", 4))
        if not (b1 and t1):
            continue
        found = True
        d1 = b1["gap@40"] - t1["gap@40"]
        verdict1 = "beats" if d1 < -MATCH_TOLERANCE else (
            "matches" if d1 <= MATCH_TOLERANCE else "loses")
        w4 = "-"
        if b4:
            d4 = b4["gap@40"] - t1["gap@40"]
            w4 = f"{d4:+.2f} {'met' if d4 <= 0.2 else 'not met'}"
        ratio = b1["suggest_cpu_ms"] / t1["suggest_cpu_ms"]
        shared = []
        for b, w in ((b1, 1), (b4, 4)):
            same = index.get((problem, "botorch_shared_start", w))
            shared.append(f"{b['gap@40'] - same['gap@40']:+.2f}" if b and same else "-")
        lines.append(f"| {problem} | {_fmt(b1['gap@40'])} | {_fmt(t1['gap@40'])} | "
                     f"{d1:+.2f} {verdict1} | {_fmt(b4['gap@40'] if b4 else None)} | "
                     f"{_fmt(t4['gap@40'] if t4 else None)} | {w4} | {ratio:.2f} | "
                     f"{', '.join(shared)} |")
    return lines + [""] if found else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help="names above; 'name:variant' with --options for variants")
    parser.add_argument("--seeds", type=int, default=5, help="0: only tabulate --include")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed + seeds - 1 (more seeds for a "
                             "table: run the extra ones and --include the earlier file)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--options", type=json.loads, default={},
                        help='strategy options per method, e.g. \'{"bayes:cold": '
                             '{"warm_start": false}}\'')
    parser.add_argument("--quick", action="store_true", help="2 seeds, BraninCurrin only")
    parser.add_argument("--name", default="bench_quality", help="results/<name>.md and .json")
    parser.add_argument("--note", default="", help="a sentence for the header (how it was run)")
    parser.add_argument("--include", nargs="+", default=[], type=Path,
                        help="runs (.json of earlier invocations) to tabulate with these; "
                             "runs made here, then later files, replace the same (problem, "
                             "method, workers, seed) runs of earlier files (after changing a "
                             "method, re-run all of its seeds)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.problems = 2, ["BraninCurrin"]
    jobs = [(p, m, s, w, args.options) for w in args.workers for p in args.problems
            for m in args.methods
            for s in range(args.first_seed, args.first_seed + args.seeds)]
    # slowest first, so that parallel jobs finish together
    jobs.sort(key=lambda j: (not j[1].startswith(("botorch", "bayes", "optuna_gp")),))
    runs = []
    print(f"{len(jobs)} runs, {args.jobs} at a time", flush=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs) as pool:
        for run in pool.imap_unordered(run_one, jobs):
            runs.append(run)
            print(f"  {run['problem']:12s} {run['method']:14s} seed={run['seed']} "
                  f"w={run['workers']} gap@end={run['gaps'][-1]:.2f} "
                  f"ask={sum(run['ask_seconds']):.1f}s cpu={sum(run['ask_cpu']):.1f}s "
                  f"wall={run['wall']:.1f}s", flush=True)
    def group(run: dict[str, Any]) -> tuple[str, str, int, int]:
        return run["problem"], run["method"], run["workers"], run["seed"]

    taken = {group(r) for r in runs}
    for path in reversed(args.include):  # a later file's runs replace an earlier file's
        older = [r for r in json.loads(path.read_text()) if group(r) not in taken]
        runs += older
        taken |= {group(r) for r in older}
    table = render(summarize(runs))
    header = (f"# {args.name}\n\nlog10(max_hv - hv) after n evaluations, median over the "
              f"seeds (lower is better); suggest_ms/eval: time to propose over the "
              f"first {TIME_WINDOW} evaluations / {TIME_WINDOW}, one torch thread"
              + (f", {args.jobs} run(s) in parallel on {os.cpu_count()} CPUs" if jobs else "")
              + f". {args.note}\n\n")
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(header + table + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps(runs))


if __name__ == "__main__":
    main()
