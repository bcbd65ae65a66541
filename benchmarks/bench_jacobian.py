"""Jacobian descent across trials against random (and bayes) on the mixed-symmetry task.

One run, in process (no Ray: the objective is called directly, one trial at a time, so every
strategy's CPU time is measured the same way, its own ask/tell included): hypervolume of the front
against the number of trials and against CPU-seconds, for

- ``jacobian (hypergrad)``: Jacobian from hypergradients returned by each trial
  (``hypergrad: true``: implicit function theorem with a Neumann inverse-Hessian, about a tenth
  of a trial's CPU time);
- ``jacobian (differences)``: Jacobian from central differences of perturbed trials (shared seed);
- ``jacobian (forward differences)``: the same with forward differences (half the trials);
- ``random``: the scrambled Sobol baseline;
- ``bayes``: BoTorch qLogNEHVI, when ``distopt.strategies._bayes`` imports.

Task: ``make_task(alphas={rotation: 0, scaling: 0.3, permutation: 1})``, the three regulariser
strengths searched as in ``searchspaces/mixed_symmetry.yaml`` (log, without ``off``), objectives
``test_mse`` and ``equiv_err.permutation`` (min, min): permutation symmetry is broken in the data,
so enforcing it costs accuracy and the two conflict. Hypervolumes share one reference point (the
nadir of the pooled front of all runs, 10% out) and are divided by the pooled front's hypervolume.

Target (issue): ``jacobian`` beats ``random`` at equal trials and at equal CPU time. The verdict
says "met" only when the mean difference over seeds exceeds two standard errors ("ahead within
noise" when it is positive but does not). 120 trials by default: central differences spend
``2 * 3`` trials on each of the 8 members' first Jacobian and draw level only at about 100.

CPU-seconds are ``time.process_time`` of the process that runs the strategy and its trials
(``--jobs`` runs several at once; cores shared with other work inflate them for every strategy).
The raw runs go to a JSON beside ``--out``; ``--reuse`` tabulates them again with fresh runs, which
replace the reused runs of the same label and seed (e.g. after a change to the jacobian strategy,
re-run only its rows; or add seeds with ``--first-seed``).

    python benchmarks/bench_jacobian.py [--quick] [--trials N] [--seeds S] [--first-seed K]
        [--jobs J] [--only LABELS] [--jacobian-options JSON] [--hypergrad-options JSON]
        [--reuse FILE.json ...] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OBJECTIVES = {"test_mse": "min", "equiv_err.permutation": "min"}
ALPHAS = {"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}


def search_space(quick: bool, hypergrad: bool, off: bool = False,
                 hypergrad_options: dict[str, Any] | None = None) -> dict[str, Any]:
    import distopt

    space: dict[str, Any] = {
        f"lam.{g}": distopt.Float(1e-3, 10.0, log=True, off=0.0 if off else None)
        for g in ("rotation", "scaling", "permutation")
    }
    space.update({"width": 32, "epochs": 30} if quick else {"width": 64, "epochs": 60})
    space["seed"] = 0  # one training seed for every trial: differences measure the strengths
    if hypergrad:
        space["hypergrad"] = True
        space["hypergrad.metrics"] = "+".join(OBJECTIVES)
        space.update({f"hypergrad.{k}": v for k, v in (hypergrad_options or {}).items()})
    return space


@dataclass
class Run:
    label: str
    seed: int
    values: list[list[float]] = field(default_factory=list)  # objectives per trial (NaN: failed)
    cpu: list[float] = field(default_factory=list)            # cumulative CPU-seconds after each
    wall: float = 0.0
    failed: int = 0
    note: str = ""


LABELS = ("jacobian (hypergrad)", "jacobian (differences)", "jacobian (forward differences)",
          "random", "bayes")


def variants() -> list[str]:
    """The labels that can run here (bayes only when its module imports)."""
    try:
        import distopt.strategies._bayes  # noqa: F401
    except Exception as error:  # not written yet, or its dependencies are missing
        print(f"bayes left out: {type(error).__name__}: {error}", file=sys.stderr)
        return list(LABELS[:-1])
    return list(LABELS)


def make_strategy(label: str, options: dict[str, Any], seed: int) -> Any:
    """A fresh strategy for ``label``; ``options`` go to the jacobian ones."""
    if label == "jacobian (hypergrad)":
        from distopt.strategies._jacobian import JacobianStrategy

        return JacobianStrategy(seed=seed, **{"source": "auto", **options})
    if label == "jacobian (differences)":
        from distopt.strategies._jacobian import JacobianStrategy

        return JacobianStrategy(seed=seed, **{**options, "source": "fd"})
    if label == "jacobian (forward differences)":
        from distopt.strategies._jacobian import JacobianStrategy

        return JacobianStrategy(seed=seed, **{**options, "source": "fd", "differences": "forward"})
    if label == "random":
        from distopt.strategies._random import RandomStrategy

        return RandomStrategy(seed=seed)
    from distopt.strategies._bayes import BayesStrategy

    return BayesStrategy(seed=seed)


def run_one(label: str, options: dict[str, Any], seed: int, trials: int, quick: bool,
            hypergrad_options: dict[str, Any] | None = None) -> Run:
    """One strategy, one seed: ``trials`` trials one after another, CPU time of this process."""
    import torch

    torch.set_num_threads(1)  # CPU-seconds of one core per trial, as a worker would run it
    from distopt._context import last_reports
    from distopt._problem import Problem, TrialResult
    from objectives.mixed_symmetry import make_task

    task = make_task(alphas=ALPHAS, seed=0, n_train=256 if quick else None)
    problem = Problem(search_space(quick, label == "jacobian (hypergrad)",
                                   hypergrad_options=hypergrad_options), OBJECTIVES)
    strategy = make_strategy(label, options, seed)
    run = Run(label, seed)
    start_wall = time.perf_counter()
    cpu = 0.0
    strategy.bind(problem)  # library imports happen here: not counted
    for trial in range(trials):
        t0 = time.process_time()
        config = strategy.ask(1)[0]
        try:
            metrics = task(config)
            status = "COMPLETE"
        except FloatingPointError:  # training diverged: the trial fails, the search goes on
            metrics, status = {}, "FAILED"
            run.failed += 1
        strategy.tell([TrialResult(trial, config, status, metrics)])
        cpu += time.process_time() - t0
        last_reports.clear()
        run.cpu.append(cpu)
        run.values.append([metrics.get(m, math.nan) for m in OBJECTIVES])
    run.wall = time.perf_counter() - start_wall
    if hasattr(strategy, "stationary"):
        reasons: dict[str, int] = {}
        for end in strategy.stationary:
            reasons[end["reason"]] = reasons.get(end["reason"], 0) + 1
        steps = sum(1 for h in strategy.history if h["accepted"])
        run.note = f"{steps} accepted steps; ends: " + (
            ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none")
    return run


def hypervolume_after(run: Run, count: int, ref: np.ndarray) -> float:
    from distopt import pareto

    points = np.array(run.values[:count], dtype=float).reshape(-1, len(OBJECTIVES))
    return pareto.hypervolume(points, ref) if len(points) else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller task and budget (minutes)")
    parser.add_argument("--trials", type=int, default=None, help="trials per strategy and seed")
    parser.add_argument("--seeds", type=int, default=1, help="repetitions (strategy seeds)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first strategy seed (more seeds later: run the next ones and "
                             "tabulate both with --reuse)")
    parser.add_argument("--jacobian-options", default="{}",
                        help="JSON options of the jacobian strategy, e.g. '{\"population\": 4}'")
    parser.add_argument("--hypergrad-options", default="{}",
                        help="JSON hypergrad.* settings of the objective for the hypergrad "
                             "label, e.g. '{\"iterations\": 10}'")
    parser.add_argument("--only", default=None, help="comma-separated labels to run")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs in parallel processes (CPU-seconds stay per process)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "bench_jacobian.md"))
    parser.add_argument("--reuse", nargs="+", default=[], metavar="JSON",
                        help="JSON files of earlier runs (each written beside its --out): their "
                             "runs join the table unless a fresh run has their label and seed, "
                             "so one strategy can be re-run alone (--seeds 0: only tabulate them)")
    args = parser.parse_args(argv)
    trials = args.trials or (40 if args.quick else 120)

    from distopt import pareto

    options = json.loads(args.jacobian_options)
    jobs = [(label, seed) for label in variants()
            for seed in range(args.first_seed, args.first_seed + args.seeds)
            if not args.only or label in args.only.split(",")]
    runs: list[Run] = []
    fresh = set(jobs)
    for path in args.reuse:
        with open(path) as handle:
            earlier = [Run(**r) for r in json.load(handle)["runs"]]
        runs += [r for r in earlier if (r.label, r.seed) not in fresh and len(r.values) == trials]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, label, options, seed, trials, args.quick,
                               json.loads(args.hypergrad_options))
                   for label, seed in jobs]
        for future in futures:  # in submission order: the table's order does not depend on timing
            run = future.result()
            print(f"{run.label:24s} seed {run.seed}: {trials} trials, {run.cpu[-1]:7.1f} CPU-s, "
                  f"{run.wall:7.1f} s wall, {run.failed} failed. {run.note}",
                  file=sys.stderr, flush=True)
            runs.append(run)

    runs.sort(key=lambda r: (LABELS.index(r.label), r.seed))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as handle:
        json.dump({"trials": trials, "quick": args.quick, "jacobian_options": options,
                   "hypergrad_options": json.loads(args.hypergrad_options),
                   "runs": [asdict(r) for r in runs]}, handle)

    pooled = np.array([v for r in runs for v in r.values], dtype=float)
    finite = pooled[np.all(np.isfinite(pooled), axis=1)]
    ref = pareto.reference_point(finite)
    best = pareto.hypervolume(finite, ref)
    labels = list(dict.fromkeys(r.label for r in runs))

    step = 20 if trials >= 80 else 10
    trial_marks = sorted({*range(step, trials + 1, step), trials})
    cpu_budget = min(r.cpu[-1] for r in runs)
    cpu_marks = [cpu_budget * k / 4 for k in (1, 2, 3, 4)]

    def hv_per_run(label: str, counts: list[int]) -> np.ndarray:
        """Each run of ``label``'s hypervolume after its count of trials, over the pooled one."""
        group = [r for r in runs if r.label == label]
        return np.array([hypervolume_after(r, c, ref)
                         for r, c in zip(group, counts, strict=True)]) / best

    def mean_hv(label: str, counts: list[int]) -> float:
        return float(np.mean(hv_per_run(label, counts)))

    def within(run: Run, cpu: float) -> int:
        """Trials ``run`` had finished within ``cpu`` CPU-seconds."""
        return int(np.searchsorted(run.cpu, cpu, side="right"))

    def counts_at(label: str, cpu: float) -> list[int]:
        return [within(r, cpu) for r in runs if r.label == label]

    n_seeds = max(sum(r.label == label for r in runs) for label in labels)
    lines = [
        "Jacobian descent across trials: mixed-symmetry task "
        f"({'quick' if args.quick else 'small'} "
        f"size), objectives {', '.join(f'{k} ({v})' for k, v in OBJECTIVES.items())}, 3 strengths "
        f"searched; {trials} trials per strategy, {n_seeds} seed(s), one trial at a time, "
        f"1 thread; hypervolume / pooled-front hypervolume (higher is better)",
        "",
        "Hypervolume against trials:",
        "",
        "| strategy | " + " | ".join(f"{m} trials" for m in trial_marks)
        + " | per seed at the end |",
        "| --- | " + " | ".join("---" for _ in trial_marks) + " | --- |",
    ]
    for label in labels:
        group = [r for r in runs if r.label == label]
        per_seed = ", ".join(f"{hypervolume_after(r, trials, ref) / best:.3f}" for r in group)
        lines.append(f"| {label} | " + " | ".join(
            f"{mean_hv(label, [m] * len(group)):.3f}" for m in trial_marks) + f" | {per_seed} |")
    lines += ["", "Hypervolume against CPU-seconds (ask + trial + tell, cumulative):", "",
              "| strategy | " + " | ".join(f"{c:.0f} CPU-s" for c in cpu_marks)
              + " | CPU-s per trial |",
              "| --- | " + " | ".join("---" for _ in cpu_marks) + " | --- |"]
    for label in labels:
        group = [r for r in runs if r.label == label]
        cells = []
        for mark in cpu_marks:
            cells.append(f"{mean_hv(label, counts_at(label, mark)):.3f}")
        per_trial = np.mean([r.cpu[-1] / len(r.cpu) for r in group])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {per_trial:.2f} |")
    lines += ["", "Notes: " + "; ".join(f"{r.label} seed {r.seed}: {r.note}"
                                        for r in runs if r.note)]

    def versus_random(label: str, cpu: float) -> str:
        """Mean hypervolume difference to random and its standard error. The two strategies
        draw their points independently for a seed, so the runs are two independent samples."""
        mine = hv_per_run(label, counts_at(label, cpu))
        base = hv_per_run("random", counts_at("random", cpu))
        if min(len(mine), len(base)) < 2:
            return "too few seeds to tell"
        gap = float(mine.mean() - base.mean())
        spread = math.sqrt(mine.var(ddof=1) / len(mine) + base.var(ddof=1) / len(base))
        # "met" asks for two standard errors: a mean ahead by less is as likely to be noise.
        verdict = "met" if gap > 2 * spread else "ahead within noise" if gap > 0 else "not met"
        return f"{verdict} ({gap:+.4f}, standard error {spread:.4f})"

    verdicts = [f"{label} vs random: at {trials} trials {versus_random(label, math.inf)}, at "
                f"{cpu_budget:.0f} CPU-s {versus_random(label, cpu_budget)}"
                for label in labels if label.startswith("jacobian") and "random" in labels]
    lines += ["", "Target (jacobian beats random at equal trials and at equal CPU time): "
              + "; ".join(verdicts) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
