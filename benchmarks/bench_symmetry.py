"""Benchmarks of the symmetry-aware objectives; prints markdown tables.

    python benchmarks/bench_symmetry.py            # about 10-15 min on 2 busy cores
    python benchmarks/bench_symmetry.py --quick    # under a minute

(a) Kim et al. (ICML 2023) on task 1: for one symmetry (rotation) broken by alpha in {0, small,
    large}, sweep its strength; the strength picked on validation data should fall as alpha grows,
    and tuned soft regularisation is compared with the unregularised MLP and the exactly invariant
    (frame-averaged) MLP on test MSE. The soft model is the residual-pathway model (frame-averaged
    MLP + free MLP, regulariser on the sum), so it has the hard model's inductive bias and the
    comparison is between constraints, not architectures; the regularised plain MLP is shown too.
(a2) the mixed setting of the issue: three symmetries with
    different breaking levels, where a hard model must choose which ones to build in.
(b) Cost of the regulariser with m sampled elements against a plain forward (+backward) of the same
    (m + 1) B inputs; target <= 1.2x.
(c) Cost of a jacobian-mode step (torchjd UPGrad) against a weighted step for 2 to 5 losses.
(d) Task 3: strong invariance penalties against ERM on spurious_weight and ood_risk.

Trials of (a) and (d) run in 2 processes with one thread each; the timings (b, c) run alone in the
main process with one thread and measure CPU time, so a busy machine does not distort the ratios.
Output is also written to benchmarks/results/bench_symmetry.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from objectives import environments, mixed_symmetry  # noqa: E402
from objectives.groups import Permutation, Rotation  # noqa: E402
from objectives.models import MLP  # noqa: E402
from objectives.regularisers import equivariance_terms  # noqa: E402
from objectives.training import backward_step, make_aggregator  # noqa: E402


def _init_worker() -> None:
    torch.set_num_threads(1)


def _run(job: tuple[str, dict[str, Any], dict[str, Any]]) -> dict[str, float]:
    kind, task_args, config = job
    module = mixed_symmetry if kind == "mixed" else environments
    return module.make_task(**task_args)(config)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append(
            "| " + " | ".join(_fmt(c) if isinstance(c, float) else str(c) for c in row) + " |"
        )
    return "\n".join(lines)


# -- (a) the paper's claim on task 1 -------------------------------------------------------------


RESIDUAL = {"model": "residual", "hard": "rotation"}


def claim(pool: ProcessPoolExecutor, quick: bool) -> str:
    alphas = (0.0, 0.3, 1.0)
    lams = (0.0, 0.1, 1.0, 10.0) if quick else (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    seeds = (0,) if quick else (0, 1, 2)
    epochs = 40 if quick else 100
    base = {"epochs": epochs}
    jobs, keys = [], []
    for alpha in alphas:
        for seed in seeds:
            task = {"alphas": {"rotation": alpha}, "candidates": ["rotation"], "seed": seed}
            for lam in lams:
                for family, extra in (("mlp", {}), ("residual", RESIDUAL)):
                    jobs.append(
                        ("mixed", task, {**base, **extra, "lam.rotation": lam, "seed": seed})
                    )
                    keys.append((alpha, seed, f"{family} lam={lam:g}"))
            for name, extra in (("hard", {"hard": "rotation"}), ("auto", {"mode": "auto"})):
                jobs.append(("mixed", task, {**base, **extra, "seed": seed}))
                keys.append((alpha, seed, name))
    results = dict(zip(keys, pool.map(_run, jobs), strict=True))

    def mean(alpha: float, name: str, metric: str) -> float:
        return statistics.fmean(results[alpha, s, name][metric] for s in seeds)

    def tuned(family: str, alpha: float) -> float:
        # Strength chosen on validation data (seed mean), its test error reported: no test-set
        # selection.
        return min(lams, key=lambda lam: mean(alpha, f"{family} lam={lam:g}", "val_mse"))

    def paired(alpha: float, name: str, other: str) -> str:
        """Seed-paired test_mse difference ``name - other``: mean +- standard error, seeds won."""
        diffs = [
            results[alpha, s, name]["test_mse"] - results[alpha, s, other]["test_mse"]
            for s in seeds
        ]
        error = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        won = sum(d < 0 for d in diffs)
        return f"{statistics.fmean(diffs):+.3f} +- {error:.3f} ({won}/{len(seeds)})"

    rows, best_residual, best_mlp = [], [], []
    for alpha in alphas:
        lam_r, lam_m = tuned("residual", alpha), tuned("mlp", alpha)
        best_residual.append(lam_r)
        best_mlp.append(lam_m)
        soft = f"residual lam={lam_r:g}"
        rows.append(
            [
                alpha,
                lam_r,
                mean(alpha, soft, "test_mse"),
                mean(alpha, "mlp lam=0", "test_mse"),
                mean(alpha, "residual lam=0", "test_mse"),
                mean(alpha, "hard", "test_mse"),
                lam_m,
                mean(alpha, f"mlp lam={lam_m:g}", "test_mse"),
                mean(alpha, "auto", "test_mse"),
                mean(alpha, soft, "equiv_err.rotation"),
                paired(alpha, soft, "mlp lam=0"),
                paired(alpha, soft, "hard"),
            ]
        )
    sweep_rows = [
        [alpha, family, *(mean(alpha, f"{family} lam={lam:g}", "test_mse") for lam in lams)]
        for alpha in alphas
        for family in ("residual", "mlp")
    ]

    def inverse(best: list[float]) -> str:
        ok = all(a >= b for a, b in zip(best, best[1:], strict=False))
        return f"**{'yes' if ok else 'no'}** ({best})"

    return "\n\n".join(
        [
            f"### (a) One symmetry (rotation, SO(3)) broken by alpha; {len(seeds)} seed(s), "
            f"{epochs} epochs, 1024 training sets of 3 points; strength picked by val_mse (mean "
            "over seeds), test_mse reported (mean over seeds)",
            "soft = residual-pathway model f = FA_rotation(MLP) + MLP (free pathway's last layer "
            "zero-initialised) with the rotation regulariser on the whole f; "
            "hard = FA_rotation(MLP) alone; unregularised = the plain MLP; "
            "soft MLP = the plain MLP with the regulariser. "
            "The last two columns are seed-paired differences in test_mse, mean +- standard error "
            "(seeds where soft is lower).",
            _table(
                [
                    "alpha",
                    "best lam (val)",
                    "soft (residual) test_mse",
                    "unregularised MLP",
                    "residual, lam=0",
                    "hard (frame-avg)",
                    "soft MLP best lam",
                    "soft MLP test_mse",
                    "auto",
                    "equiv_err soft",
                    "soft - unreg MLP",
                    "soft - hard",
                ],
                rows,
            ),
            f"Best strength non-increasing in alpha: residual {inverse(best_residual)}, "
            f"plain MLP {inverse(best_mlp)}.",
            "test_mse over the sweep:",
            _table(["alpha", "model", *(f"lam={lam:g}" for lam in lams)], sweep_rows),
        ]
    )


def mixed(pool: ProcessPoolExecutor, quick: bool) -> str:
    alphas = {"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}
    epochs = 40 if quick else 100
    task = {"alphas": alphas}
    n_random = 6 if quick else 16
    gen = torch.Generator().manual_seed(0)
    grid = [0.0, 0.01, 0.1, 1.0, 10.0]
    configs: dict[str, dict[str, Any]] = {
        "unregularised": {},
        "hard: rotation+scaling+permutation": {"hard": "rotation+scaling+permutation"},
        "hard: rotation only (oracle)": {"hard": "rotation"},
        "auto": {"mode": "auto"},
        "jacobian (UPGrad, all on)": {"mode": "jacobian", **{f"lam.{g}": 1.0 for g in alphas}},
    }
    every = "+".join(alphas)
    for i in range(n_random):
        picks = torch.randint(0, len(grid), (3,), generator=gen).tolist()
        configs[f"random {i}"] = {f"lam.{g}": grid[p] for g, p in zip(alphas, picks, strict=True)}
        # The same strengths on the residual model whose hard pathway builds in all three groups.
        configs[f"residual {i}"] = {
            **configs[f"random {i}"],
            "model": "residual",
            "hard": every,
        }
    names = list(configs)
    jobs = [("mixed", task, {"epochs": epochs, **configs[n]}) for n in names]
    out = dict(
        zip(
            names,
            pool.map(_run, jobs),
            strict=True,
        )
    )
    rows = [
        [n, out[n]["val_mse"], out[n]["test_mse"], *(out[n][f"equiv_err.{g}"] for g in alphas)]
        for n in names
        if not n.startswith(("random", "residual"))
    ]
    for prefix, label in (
        ("random", "soft MLP"),
        ("residual", f"soft residual (FA over {every} + MLP)"),
    ):
        best = min((n for n in names if n.startswith(prefix)), key=lambda n: out[n]["val_mse"])
        lam_text = ", ".join(f"{g} {configs[best].get(f'lam.{g}', 0.0):g}" for g in alphas)
        rows.append(
            [
                f"{label}, best of {n_random} random strengths by val ({lam_text})",
                out[best]["val_mse"],
                out[best]["test_mse"],
                *(out[best][f"equiv_err.{g}"] for g in alphas),
            ]
        )
    return "\n\n".join(
        [
            f"### (a2) Mixed symmetries: alphas {alphas}, {epochs} epochs (seed 0)",
            _table(["model", "val_mse", "test_mse", *(f"equiv_err.{g}" for g in alphas)], rows),
        ]
    )


# -- (b, c) costs --------------------------------------------------------------------------------


def _times(fns, repeats: int) -> list[float]:
    """Median CPU seconds of each function, timed in alternation.

    CPU time of this (single-threaded) process, not wall time: on a shared machine the wall clock
    also counts the time other processes held the core, which swamps millisecond differences.
    """
    for fn in fns:
        for _ in range(3):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples, strict=True):
            start = time.process_time()
            fn()
            out.append(time.process_time() - start)
    return [statistics.median(out) for out in samples]


def _plain_pass(model: MLP, stacked: torch.Tensor, backward: bool) -> None:
    if backward:
        model.zero_grad()
        model(stacked).square().mean().backward()
    else:
        with torch.no_grad():
            model(stacked)


def _regulariser_pass(model: MLP, group, x: torch.Tensor, m: int, backward: bool) -> None:
    if backward:
        model.zero_grad()
        fx, r = equivariance_terms(model, [group], x, m)
        (fx.square().mean() + r.sum()).backward()
    else:
        with torch.no_grad():
            equivariance_terms(model, [group], x, m)


def regulariser_cost(quick: bool) -> str:
    torch.manual_seed(0)
    batch, repeats = 256, 20 if quick else 60
    model = MLP((8, 3), (), width=256, depth=3)
    x = torch.randn(batch, 8, 3)
    rows = []
    for group in (Rotation(3), Permutation(8)):
        for m in (1, 2, 4, 8):
            stacked = torch.cat([x] * (m + 1))
            fns = [
                partial(_regulariser_pass, model, group, x, m, False),
                partial(_plain_pass, model, stacked, False),
                partial(_regulariser_pass, model, group, x, m, True),
                partial(_plain_pass, model, stacked, True),
            ]
            t_reg_fwd, t_fwd, t_reg_step, t_step = _times(fns, repeats)
            fwd, step = t_reg_fwd / t_fwd, t_reg_step / t_step
            ok = "yes" if max(fwd, step) <= 1.2 else "no"
            rows.append([type(group).__name__, m, f"{fwd:.2f}x", f"{step:.2f}x", ok])
    title = (
        f"### (b) Regulariser with m elements vs a plain pass over the same (m+1)*B = "
        f"(m+1)*{batch} "
        f"inputs (MLP 24-256-256-256-1, 1 thread, median CPU time of {repeats})"
    )
    header = ["group", "m", "forward ratio", "forward+backward ratio", "<= 1.2x"]
    return "\n\n".join([title, _table(header, rows)])


def _train_step(model, groups, x, y, optimizer, mode: str, aggregator) -> None:
    fx, regs = equivariance_terms(model, groups, x, 2)
    losses = torch.cat([(fx - y).square().mean()[None], regs])
    optimizer.zero_grad(set_to_none=True)
    params = list(model.parameters())
    backward_step(losses, torch.ones(losses.shape[0]), params, mode, aggregator)
    optimizer.step()


def jacobian_cost(quick: bool) -> str:
    torch.manual_seed(0)
    repeats = 20 if quick else 60
    rows = []
    groups = [Rotation(3), Permutation(3), Rotation(3, name="b"), Permutation(3, name="c")]
    for width, batch in ((64, 64), (256, 256)):
        model = MLP((3, 3), (), width=width, depth=2)
        x, y = torch.randn(batch, 3, 3), torch.randn(batch)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for n_losses in (2, 3, 4, 5):
            args = (model, groups[: n_losses - 1], x, y, optimizer)
            weighted, jacobian = _times(
                [
                    partial(_train_step, *args, "weighted", None),
                    partial(_train_step, *args, "jacobian", make_aggregator("UPGrad")),
                ],
                repeats,
            )
            rows.append(
                [
                    f"{width} / {batch}",
                    n_losses,
                    f"{weighted * 1e3:.2f}",
                    f"{jacobian * 1e3:.2f}",
                    f"{jacobian / weighted:.2f}x",
                ]
            )
    title = (
        "### (c) One training step (forward with regularisers, backward, Adam): jacobian (UPGrad) "
        f"vs weighted (1 thread, median CPU time of {repeats})"
    )
    header = ["MLP width / batch", "losses", "weighted ms", "jacobian ms", "ratio"]
    return "\n\n".join([title, _table(header, rows)])


# -- (d) task 3 ----------------------------------------------------------------------------------


def penalties(pool: ProcessPoolExecutor, quick: bool) -> str:
    methods = {
        "ERM": {"penalty": "none"},
        "IRMv1, weight 1e4": {"penalty": "irm", "penalty_weight": 1e4},
        "V-REx, weight 1e4": {"penalty": "vrex", "penalty_weight": 1e4},
        "MMD, weight 1e2": {"penalty": "mmd", "penalty_weight": 100.0},
        "IRMv1, jacobian (UPGrad)": {"penalty": "irm", "penalty_weight": 1.0, "mode": "jacobian"},
    }
    seeds = (0,) if quick else (0, 1, 2)
    variants = ("linear",) if quick else ("linear", "nonlinear")
    jobs, keys = [], []
    for variant in variants:
        for name, config in methods.items():
            for seed in seeds:
                jobs.append(("env", {"variant": variant, "seed": seed}, {**config, "seed": seed}))
                keys.append((variant, name, seed))
    out = dict(zip(keys, pool.map(_run, jobs), strict=True))
    rows = []
    for variant in variants:
        for name in methods:

            def mean(metric: str, variant: str = variant, name: str = name) -> float:
                return statistics.fmean(out[variant, name, s][metric] for s in seeds)

            rows.append(
                [
                    variant,
                    name,
                    mean("spurious_weight"),
                    mean("causal_weight"),
                    mean("train_risk"),
                    mean("ood_risk"),
                ]
            )
    return "\n\n".join(
        [
            f"### (d) Invariance penalties on task 3 (mean of {len(seeds)} seed(s)); "
            "the invariant predictor has "
            "risk 0.25 in every environment",
            _table(
                ["variant", "method", "spurious_weight", "causal_weight", "train_risk", "ood_risk"],
                rows,
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer seeds, strengths and epochs (< 1 min)"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_symmetry.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start, load = time.perf_counter(), os.getloadavg()[0]
    with ProcessPoolExecutor(max_workers=2, initializer=_init_worker) as pool:
        parts = [claim(pool, args.quick), mixed(pool, args.quick), penalties(pool, args.quick)]
    parts += [regulariser_cost(args.quick), jacobian_cost(args.quick)]
    header = (
        f"## bench_symmetry{' --quick' if args.quick else ''}\n\n"
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average at start {load:.1f}; "
        f"total {time.perf_counter() - start:.0f} s"
    )
    text = "\n\n".join([header, *parts]) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
