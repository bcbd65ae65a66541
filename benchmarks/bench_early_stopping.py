"""Early stopping on the mixed-symmetry task: the front's hypervolume reached per CPU-second.

Three arms, each a random search over the quickstart space (regulariser strengths, mode, width,
learning rate; 60 epochs; objectives ``test_mse`` and ``equiv_err.rotation``), on 2 workers of one
local Ray, for several seeds:

- ``none``: no early stopping, ``--budget`` trials;
- ``moasha-val``: MO-ASHA on what the task reports every epoch (``val_mse``; one metric, so
  this is plain ASHA);
- ``moasha-2d``: MO-ASHA on ``val_mse`` and ``equiv_err.rotation`` (non-dominated sorting +
  crowding). The task reports only ``val_mse`` per epoch, so this arm wraps the objective to also
  report the rotation equivariance error of the model being trained every 4th epoch (on 64
  validation inputs, 2 group samples; its cost is counted in this arm's CPU-seconds).

All arms report the trial's process CPU time every epoch (``cpu_s``, see :class:`Instrumented`),
so CPU-seconds do not depend on what else the machine runs; wall time is shown too.

The early-stopping arms run (resuming their store, which also replays MO-ASHA's rungs) in chunks of
8 trials until they have used as many CPU-seconds as the ``none`` arm of the same seed. An arm's
CPU-seconds are the summed ``cpu_s`` of its finished trials, PRUNED ones included.
Every arm's hypervolume uses one reference point: the nadir of all arms' feasible points, widened
by 10%. The table reports the hypervolume reached within the CPU-seconds the ``none`` arm needed
for a quarter, half and all of its trials, the final hypervolume and HV per CPU-second.

    python benchmarks/bench_early_stopping.py [--seeds 0 1 2] [--budget 16] [--n-train 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import distopt
from distopt import pareto
from distopt.schedulers import MOASHA

ALPHAS = {"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}
OBJECTIVES = {"test_mse": "min", "equiv_err.rotation": "min"}
EPOCHS = 60
RESULTS = Path(__file__).resolve().parent / "results"


def space() -> dict[str, Any]:
    out: dict[str, Any] = {f"lam.{g}": distopt.Float(1e-3, 10.0, log=True, off=0.0)
                           for g in ALPHAS}
    out.update({"mode": distopt.Categorical(["weighted", "auto"]),
                "width": distopt.Int(16, 64, log=True),
                "lr": distopt.Float(1e-3, 1e-2, log=True), "depth": 2, "epochs": EPOCHS})
    return out


@dataclass(frozen=True)
class Instrumented:
    """The task's objective, also reporting its CPU time (and optionally ``equiv_err.<group>``)
    every epoch.

    It wraps ``objectives.runner.fit`` for the duration of one trial (in the worker process), so
    that each epoch first reports ``cpu_s`` (process CPU time since the trial began: immune to
    other load on the machine) and, with ``symmetry``, the equivariance error of the model being
    trained every ``every`` epochs, then the task's own ``train_mse``/``val_mse`` row. A PRUNED
    trial keeps the latest ``cpu_s`` it reported; a COMPLETE one returns its total.
    """

    task: Any
    symmetry: bool = False
    group: str = "rotation"
    n_eval: int = 64
    samples: int = 2
    every: int = 4

    def __call__(self, config: dict[str, Any]) -> dict[str, float]:
        import objectives.runner as runner
        from objectives.regularisers import equivariance_error

        began = time.process_time()
        group = self.task.groups()[self.group]
        x_eval = self.task.data().x_val[: self.n_eval] if self.symmetry else None
        original = runner.fit
        name = f"equiv_err.{self.group}"

        def fit(model, terms, plan, settings, n_train, *, generator, on_epoch=None, **more):
            def on_epoch_too(epoch, summary):
                extra = {}
                if self.symmetry and epoch % self.every == 0:
                    device = next(model.parameters()).device
                    extra[name] = equivariance_error(model, [group], x_eval.to(device),
                                                     self.samples, seed=epoch)[group.name]
                runner.report(epoch, cpu_s=time.process_time() - began, **extra)
                if on_epoch is not None:
                    on_epoch(epoch, summary)

            return original(model, terms, plan, settings, n_train, generator=generator,
                            on_epoch=on_epoch_too, **more)  # device=, and what comes later

        runner.fit = fit
        try:
            metrics = self.task(config)
        finally:
            runner.fit = original
        return {**metrics, "cpu_s": time.process_time() - began}


def run_arm(arm: str, seed: int, budget: int, folder: Path, cpu_target: float | None = None,
            n_train: int | None = None) -> distopt.StoreReader:
    """Run one arm; with ``cpu_target``, resume in chunks of 8 trials until it is used."""
    from objectives.mixed_symmetry import make_task

    task = make_task(alphas=ALPHAS, seed=0, n_train=n_train)
    objective = Instrumented(task, symmetry=arm == "moasha-2d")
    scheduler = None
    if arm == "moasha-val":
        scheduler = MOASHA(metrics={"val_mse": "min"}, grace_period=8, reduction_factor=3,
                           max_step=EPOCHS)
    elif arm == "moasha-2d":
        scheduler = MOASHA(metrics={"val_mse": "min", "equiv_err.rotation": "min"},
                           grace_period=8, reduction_factor=3, max_step=EPOCHS)
    store = folder / f"{arm}-{seed}"
    while True:
        study = distopt.Study(space(), OBJECTIVES, strategy="random", seed=seed, store=store)
        reader = study.optimize(objective, budget=budget, workers=2, scheduler=scheduler)
        if cpu_target is None or trace(reader)[0][-1] >= cpu_target:
            return reader
        budget += 8
        scheduler = type(scheduler)(**scheduler.to_dict()["options"])  # rebuilt by replay


def trace(reader: distopt.StoreReader) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per finished trial (by end time): cumulative CPU-seconds, objective points, statuses."""
    table = reader.trials()
    ends = np.asarray(table["end_time"].cast("int64").to_numpy(), dtype=float) / 1e6
    order = np.argsort(ends, kind="stable")
    used = np.nan_to_num(np.asarray(table["cpu_s"].to_numpy(zero_copy_only=False), dtype=float))
    cpu = np.cumsum(used[order])
    points = np.stack([np.asarray(table[m].to_numpy(zero_copy_only=False), dtype=float)
                       for m in OBJECTIVES], axis=1)[order]
    statuses = [table["status"].to_pylist()[i] for i in order]
    return cpu, points, statuses


def hv_at(cpu: np.ndarray, points: np.ndarray, statuses: list[str], ref: np.ndarray,
          limit: float) -> float:
    keep = (cpu <= limit + 1e-9) & np.array([s == "COMPLETE" for s in statuses])
    keep &= np.all(np.isfinite(points), axis=1)
    return pareto.hypervolume(points[keep], ref) if keep.any() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--n-train", type=int, default=1024,
                        help="training-set size (the task's small default is 256; 1024 makes an "
                             "epoch ~0.15 s, closer to real training than the 0.25 s decision "
                             "latency)")
    parser.add_argument("--arms", nargs="+", default=["none", "moasha-val", "moasha-2d"])
    parser.add_argument("--name", default="bench_early_stopping",
                        help="results/<name>.md and .json (default: the committed results)")
    args = parser.parse_args()

    import ray

    # its own Ray, never a cluster another process left recorded on the machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    folder = Path(tempfile.mkdtemp(prefix="distopt-es-"))
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for seed in args.seeds:
            for arm in args.arms:
                target = None
                if arm != "none" and ("none", seed) in runs:
                    target = float(runs[("none", seed)]["cpu"][-1])
                began = time.perf_counter()
                reader = run_arm(arm, seed, args.budget if arm == "none" else 8, folder, target,
                                 args.n_train)
                wall = time.perf_counter() - began
                cpu, points, statuses = trace(reader)
                runs[(arm, seed)] = {"cpu": cpu, "points": points, "statuses": statuses,
                                     "wall": wall}
                print(f"{arm:>10} seed {seed}: {len(statuses)} trials "
                      f"({statuses.count('PRUNED')} pruned), {cpu[-1]:.1f} CPU-s, "
                      f"{wall:.1f} s wall", flush=True)
    finally:
        ray.shutdown()

    every = np.vstack([r["points"][[s == "COMPLETE" for s in r["statuses"]]]
                       for r in runs.values()])
    every = every[np.all(np.isfinite(every), axis=1)]
    ref = pareto.reference_point(every, front_only=False)
    rows = []
    for arm in args.arms:
        per_seed = []
        for seed in args.seeds:
            base = runs[("none", seed)]["cpu"][-1] if ("none", seed) in runs else None
            run = runs[(arm, seed)]
            marks = [base * f for f in (0.25, 0.5, 1.0)] if base else []
            hv_marks = [hv_at(run["cpu"], run["points"], run["statuses"], ref, m) for m in marks]
            final = hv_at(run["cpu"], run["points"], run["statuses"], ref, np.inf)
            per_seed.append({"seed": seed, "hv_marks": hv_marks, "hv_final": final,
                             "cpu": float(run["cpu"][-1]), "wall": run["wall"],
                             "trials": len(run["statuses"]),
                             "pruned": run["statuses"].count("PRUNED")})
        rows.append((arm, per_seed))

    def mean(values):
        return statistics.fmean(values) if values else float("nan")

    lines = [
        "Early stopping on the mixed-symmetry task (quickstart space, 60 epochs, "
        f"n_train={args.n_train}, random search, 2 workers, {os.cpu_count()} CPUs, "
        f"seeds {args.seeds}, MO-ASHA grace 8 epochs, reduction factor 3)",
        "",
        f"Reference point (all arms): test_mse={ref[0]:.4g}, equiv_err.rotation={ref[1]:.4g}. "
        "HV at x% = hypervolume of the COMPLETE trials finished within x% of the CPU-seconds the "
        "`none` arm used for all its trials (mean over seeds).",
        "",
        "| arm | trials (pruned) | CPU-s | wall s | HV at 25% | HV at 50% | HV at 100% | "
        "final HV | final HV per CPU-s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, per_seed in rows:
        marks = np.array([s["hv_marks"] for s in per_seed]) if per_seed[0]["hv_marks"] else None
        hv_cols = [f"{v:.4f}" for v in marks.mean(axis=0)] if marks is not None else ["-"] * 3
        cpu = mean([s["cpu"] for s in per_seed])
        final = mean([s["hv_final"] for s in per_seed])
        lines.append(
            f"| {arm} | {mean([s['trials'] for s in per_seed]):.0f} "
            f"({mean([s['pruned'] for s in per_seed]):.0f}) | {cpu:.1f} | "
            f"{mean([s['wall'] for s in per_seed]):.0f} | " + " | ".join(hv_cols)
            + f" | {final:.4f} | {final / cpu:.5f} |")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(text)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(
        {"ref_point": ref.tolist(), "arms": {arm: per_seed for arm, per_seed in rows}},
        indent=2))


if __name__ == "__main__":
    main()
