"""Time to propose points against the number of observations and the batch size.

DTLZ2 (d=6, two objectives, or three with ``--problem DTLZ2_d6_M3``; maximised as BoTorch's
``negate=True``), one torch thread, no reference point given (``bayes`` infers its own, as a
user's study would). Half of the observations are scrambled Sobol points, half lie near the
Pareto set (``x[k-1:]`` near 0.5 with ``k`` objectives), as a study late in its run would
have. For each size ``n`` and device:

- ``bayes (first)``: a strategy rebuilt from the ``n`` observations asks once (a cold GP fit,
  what a resumed study pays once);
- ``bayes (steady)``: then one observation is told and one point asked, ``--repeats`` times
  (warm-started fits: what every suggestion of a running study costs); median, with its
  split into GP fit and acquisition, and the number of points the GP was trained on;
- ``batch q``: after those, one ``ask(q)`` for each ``--batch`` size (a cohort of workers
  asking at once): seconds for the whole batch and its ratio to ``q`` single asks;
- ``botorch``: one step of the tutorial loop (fit a ModelListGP from scratch, optimise
  qLogNEHVI with 10 restarts, 512 raw samples, 128 MC samples).

GPU rows (``device=cuda``) are added when torch sees CUDA.

``--busy``: a real study instead (``distopt.Study(..., strategy="bayes").optimize`` of an
objective that sleeps ``--sleep`` seconds, ``--budget`` trials, ``--workers`` workers); each
worker's busy fraction is its summed trial time over the span from the end of the Sobol start
to the last trial's end (the store's ``start_time``, ``end_time``, ``worker`` columns).

Usage::

    python benchmarks/bench_suggest.py                       # n = 25 ... 800, q = 1, 16, 64
    python benchmarks/bench_suggest.py --sizes 25 100 --repeats 2 --botorch-max 100
    python benchmarks/bench_suggest.py --busy --budget 48 --workers 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"

from bench_quality import BoTorchTutorial, DistoptMethod, make_problem  # noqa: E402

SIZES = (25, 50, 100, 200, 400, 800)
PROBLEMS = ("DTLZ2_d6_M2", "DTLZ2_d6_M3")


class Clock:
    """Wall and CPU seconds of a block (CPU time is what a busy machine inflates least)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def observations(problem, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (half Sobol, half near DTLZ2's Pareto set) and their objective values."""
    import torch
    from scipy.stats import qmc

    rng = np.random.default_rng(seed)
    sobol = qmc.Sobol(problem.dim, scramble=True, seed=seed).random(n - n // 2)
    k = problem.num_objectives  # DTLZ2's Pareto set: x[k - 1:] = 0.5, the rest free
    near = np.clip(np.column_stack([rng.random((n // 2, k - 1)), 0.5 + 0.05 * rng.standard_normal(
        (n // 2, problem.dim - k + 1))]), 0, 1)
    X = np.concatenate([sobol, near])
    Y = problem(torch.tensor(X, dtype=torch.double)).numpy()
    return X, Y


def time_bayes(problem, n: int, repeats: int, seed: int, batches: list[int],
               device: str) -> dict[str, float]:
    X, Y = observations(problem, n + repeats, seed)
    method = DistoptMethod("bayes", problem, seed, {"device": device})
    # register the configs as if asked, then tell them
    for x, y in zip(X[:n], Y[:n], strict=True):
        key = tuple(x)
        method.configs[key] = (len(method.configs), {f"x{j}": float(v) for j, v in enumerate(x)})
        method.tell(x, y, np.zeros(0))
    with Clock() as first:
        method.ask(1, [])
    steady, cpu, fits, acqs = [], [], [], []
    for x, y in zip(X[n:], Y[n:], strict=True):
        key = tuple(x)
        method.configs[key] = (len(method.configs), {f"x{j}": float(v) for j, v in enumerate(x)})
        method.tell(x, y, np.zeros(0))
        with Clock() as clock:
            method.ask(1, [])
        steady.append(clock.wall)
        cpu.append(clock.cpu)
        timing = method.strategy.last_timing
        fits.append(timing["fit"])
        acqs.append(timing["acquisition"])
    out = {"first": first.wall, "first_cpu": first.cpu, "steady": float(np.median(steady)),
           "steady_cpu": float(np.median(cpu)), "fit": float(np.median(fits)),
           "acq": float(np.median(acqs)), "n_train": method.strategy.last_timing["n_train"]}
    for q in batches:
        with Clock() as clock:
            points = method.ask(q, [])
        assert len({tuple(p) for p in points}) == q
        out[f"batch{q}"] = clock.cpu
    return out


def time_botorch(problem, n: int, seed: int) -> Clock:
    import torch

    X, Y = observations(problem, n, seed)
    loop = BoTorchTutorial(problem, seed, problem.ref_point.numpy())
    loop.handed_out = loop.n_init  # past its Sobol start
    for x, y in zip(X, Y, strict=True):
        loop.tell(x, y, np.zeros(0))
    torch.manual_seed(seed)
    with Clock() as clock:
        loop.ask(1, [])
    return clock


def busy(budget: int, workers: int, sleep: float, seed: int) -> str:
    """Busy fraction of each worker after the Sobol start, from the store's trials table; the
    same study with suggestions in the background (the default) and inline, in one run."""
    import tempfile

    import distopt
    from distopt.strategies import make_strategy

    def objective(config: dict[str, float]) -> dict[str, float]:
        time.sleep(sleep)
        x, y = config["x"], config["y"]
        return {"f1": x * x + y * y, "f2": (x - 1) ** 2 + (y - 1) ** 2}

    space = {"x": {"type": "float", "low": 0.0, "high": 1.0},
             "y": {"type": "float", "low": 0.0, "high": 1.0}}
    lines = ["| suggestions | worker | trials | busy fraction after the Sobol start | span (s) |",
             "| --- | --- | --- | --- | --- |"]
    means, interim = {}, {}
    for background in (True, False):
        strategy = make_strategy("bayes", seed=seed)
        strategy.background_ask = background
        mode = "background" if background else "inline"
        with tempfile.TemporaryDirectory() as folder:
            study = distopt.Study(space, {"f1": "min", "f2": "min"}, strategy=strategy,
                                  seed=seed, store=os.path.join(folder, "study"))
            reader = study.optimize(objective, budget=budget, workers=workers)
            trials = reader.trials().to_pandas()
            interim[mode] = len(reader.metadata.get("interim_trials", []))
        trials = trials.sort_values("trial_id")
        n_initial = 2 * (len(space) + 1)
        begin = trials["end_time"].iloc[:n_initial].max()  # the model's first suggestion
        span = (trials["end_time"].max() - begin).total_seconds()
        fractions = []
        for worker, rows in trials.groupby("worker"):
            start = rows["start_time"].clip(lower=begin)
            stop = rows["end_time"].clip(lower=begin)
            fraction = float((stop - start).dt.total_seconds().sum() / span) if span > 0 else 0.
            fractions.append(fraction)
            lines.append(f"| {mode} | {worker} | {len(rows)} | {fraction:.2f} | {span:.1f} |")
        means[mode] = float(np.mean(fractions))
        lines.append(f"| {mode} | mean | {len(trials)} | {means[mode]:.2f} | {span:.1f} |")
    verdict = "met" if means["background"] >= 0.9 else "not met"
    return (f"budget {budget}, {workers} workers, objective sleeps {sleep} s, seed {seed}\n\n"
            + "\n".join(lines) + f"\n\nmean busy fraction: background {means['background']:.2f}"
            f" vs inline {means['inline']:.2f} (target >= 0.90: {verdict}); interim (Sobol) "
            f"points while the model thought: {interim['background']} of {budget} trials")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64],
                        help="batch sizes q of one ask(q) after the steady asks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--botorch-max", type=int, default=400,
                        help="largest n for the (slow) tutorial loop")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, and cuda when torch sees it")
    parser.add_argument("--problem", default="DTLZ2_d6_M2", choices=PROBLEMS,
                        help="DTLZ2 with 2 or 3 objectives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="bench_suggest")
    parser.add_argument("--busy", action="store_true", help="busy fractions of a real study")
    parser.add_argument("--budget", type=int, default=48)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=1.0)
    args = parser.parse_args(argv)
    import torch

    if "cuda" in (args.devices or []) and not torch.cuda.is_available():
        parser.error("--devices cuda, but torch sees no CUDA device here; run it on a GPU "
                     "machine, or leave --devices out")

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.busy:
        text = busy(args.budget, args.workers, args.sleep, args.seed)
        print(text)
        (RESULTS / f"{args.name}_busy.md").write_text(f"# {args.name} --busy\n\n{text}\n")
        return
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    problem = make_problem(args.problem)
    batch_cols = "".join(f" batch q={q}: cpu (/ {q} single) |" for q in args.batch)
    lines = ["| device | observations | bayes steady: wall (fit / acq) | cpu | GP points | "
             "bayes first (cold fit): wall / cpu |" + batch_cols +
             " BoTorch tutorial: wall / cpu | ratio steady / tutorial (cpu) |",
             "| --- " * (8 + len(args.batch)) + "|"]
    print("\n".join(lines), flush=True)
    for device in devices:
        for n in args.sizes:
            bayes = time_bayes(problem, n, args.repeats, args.seed, args.batch, device)
            tutorial = (time_botorch(problem, n, args.seed)
                        if n <= args.botorch_max and device == "cpu" else None)
            ratio = f"{bayes['steady_cpu'] / tutorial.cpu:.2f}" if tutorial else "-"
            tutorial_text = f"{tutorial.wall:.2f} s / {tutorial.cpu:.2f} s" if tutorial else "-"
            single = bayes["steady_cpu"]
            batches = "".join(f" {bayes[f'batch{q}']:.2f} s "
                              f"({bayes[f'batch{q}'] / (q * single):.2f}) |" for q in args.batch)
            line = (f"| {device} | {n} | {bayes['steady']:.2f} s ({bayes['fit']:.2f} / "
                    f"{bayes['acq']:.2f}) | {bayes['steady_cpu']:.2f} s | "
                    f"{int(bayes['n_train'])} | "
                    f"{bayes['first']:.2f} s / {bayes['first_cpu']:.2f} s |{batches} "
                    f"{tutorial_text} | {ratio} |")
            lines.append(line)
            print(line, flush=True)
    header = (f"# {args.name}\n\nDTLZ2 (d=6, {problem.num_objectives} objectives), one torch "
              f"thread, {os.cpu_count()} CPUs; median of {args.repeats} steady-state suggestions; "
              f"batch: one ask(q), its CPU seconds and, in brackets, that over q steady "
              f"asks' CPU.\n\n")
    (RESULTS / f"{args.name}.md").write_text(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
