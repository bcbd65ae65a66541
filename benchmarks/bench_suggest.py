"""Time to propose one point against the number of observations: ``bayes`` vs BoTorch's loop.

DTLZ2 (d=6, two objectives, maximised as BoTorch's ``negate=True``), one torch thread. Half
of the observations are scrambled Sobol points, half lie near the Pareto set (``x[1:]`` near
0.5), as a study late in its run would have. For each size ``n``:

- ``bayes (first)``: a strategy rebuilt from the ``n`` observations asks once (a cold GP fit,
  what a resumed study pays once);
- ``bayes (steady)``: then one observation is told and one point asked, ``--repeats`` times
  (warm-started fits: what every suggestion of a running study costs); median, with its
  split into GP fit and acquisition, and the number of points the GP was trained on;
- ``botorch``: one step of the tutorial loop (fit a ModelListGP from scratch, optimise
  qLogNEHVI with 10 restarts, 512 raw samples, 128 MC samples).

Usage::

    python benchmarks/bench_suggest.py                       # n = 25 ... 800
    python benchmarks/bench_suggest.py --sizes 25 100 --repeats 2 --botorch-max 100
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


class Clock:
    """Wall and CPU seconds of a block (CPU time is what a busy machine inflates least)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def observations(problem, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (half Sobol, half near the Pareto set) and their objective values."""
    import torch
    from scipy.stats import qmc

    rng = np.random.default_rng(seed)
    sobol = qmc.Sobol(problem.dim, scramble=True, seed=seed).random(n - n // 2)
    near = np.clip(np.column_stack([rng.random(n // 2), 0.5 + 0.05 * rng.standard_normal(
        (n // 2, problem.dim - 1))]), 0, 1)
    X = np.concatenate([sobol, near])
    Y = problem(torch.tensor(X, dtype=torch.double)).numpy()
    return X, Y


def time_bayes(problem, n: int, repeats: int, seed: int) -> dict[str, float]:
    X, Y = observations(problem, n + repeats, seed)
    method = DistoptMethod("bayes", problem, seed, {
        "ref_point": {f"f{i}": float(v) for i, v in enumerate(problem.ref_point)}})
    # register the configs as if asked, then tell them
    for x, y in zip(X[:n], Y[:n], strict=True):
        key = tuple(x)
        method.configs[key] = (len(method.configs), {f"x{j}": float(v) for j, v in enumerate(x)})
        method.tell(x, y)
    with Clock() as first:
        method.ask(1, [])
    steady, cpu, fits, acqs = [], [], [], []
    for x, y in zip(X[n:], Y[n:], strict=True):
        key = tuple(x)
        method.configs[key] = (len(method.configs), {f"x{j}": float(v) for j, v in enumerate(x)})
        method.tell(x, y)
        with Clock() as clock:
            method.ask(1, [])
        steady.append(clock.wall)
        cpu.append(clock.cpu)
        timing = method.strategy.last_timing
        fits.append(timing["fit"])
        acqs.append(timing["acquisition"])
    return {"first": first.wall, "first_cpu": first.cpu, "steady": float(np.median(steady)),
            "steady_cpu": float(np.median(cpu)), "fit": float(np.median(fits)),
            "acq": float(np.median(acqs)), "n_train": method.strategy.last_timing["n_train"]}


def time_botorch(problem, n: int, seed: int) -> Clock:
    import torch

    X, Y = observations(problem, n, seed)
    loop = BoTorchTutorial(problem, seed)
    loop.handed_out = loop.n_init  # past its Sobol start
    for x, y in zip(X, Y, strict=True):
        loop.tell(x, y)
    torch.manual_seed(seed)
    with Clock() as clock:
        loop.ask(1, [])
    return clock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--botorch-max", type=int, default=400,
                        help="largest n for the (slow) tutorial loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="bench_suggest")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    problem = make_problem("DTLZ2_d6_M2")
    lines = ["| observations | bayes steady: wall (fit / acq) | cpu | GP points | "
             "bayes first (cold fit): wall / cpu | BoTorch tutorial: wall / cpu | "
             "ratio steady / tutorial (cpu) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for n in args.sizes:
        bayes = time_bayes(problem, n, args.repeats, args.seed)
        tutorial = time_botorch(problem, n, args.seed) if n <= args.botorch_max else None
        ratio = f"{bayes['steady_cpu'] / tutorial.cpu:.2f}" if tutorial else "-"
        tutorial_text = f"{tutorial.wall:.2f} s / {tutorial.cpu:.2f} s" if tutorial else "-"
        line = (f"| {n} | {bayes['steady']:.2f} s ({bayes['fit']:.2f} / {bayes['acq']:.2f}) | "
                f"{bayes['steady_cpu']:.2f} s | {int(bayes['n_train'])} | "
                f"{bayes['first']:.2f} s / {bayes['first_cpu']:.2f} s | {tutorial_text} | "
                f"{ratio} |")
        lines.append(line)
        print(line, flush=True)
    header = (f"# {args.name}\n\nDTLZ2 (d=6, 2 objectives), one torch thread, "
              f"{os.cpu_count()} CPUs; median of {args.repeats} steady-state suggestions.\n\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
