"""Throughput of mixed-symmetry trials on one device: lone trials, packed processes, cohorts.

    python benchmarks/bench_gpu.py                      # CPU: small task, about 3 min on 2 cores
    python benchmarks/bench_gpu.py --size large --epochs 20 --cohorts 16,64,256 --packs 8,16
    python benchmarks/bench_gpu.py --device cuda --cpu-reference   # on a GPU machine

Rows, all on the same sampled configs (weighted mode by default: random strengths, lr, seeds):

* ``single``: trials one after another in this process (the lone path, ``make_task(...)``).
* ``packed P``: P processes (``multiprocessing``, spawn) each running trials one after another on
  the same device; on a CPU each process uses one thread.
* ``cohort K``: K trials as one call of the cohort objective (``make_cohort_task(...).batch``).
* ``cpu reference`` (``--cpu-reference``): one lone trial on the CPU with every core, the peer of
  the GPU's lone trial.

Columns: trials per minute (wall clock from the first trial's start to the last one's end, data
generation and evaluation included), CPU seconds per trial (this process's CPU time, for the
rows that run in it), epoch time (one lone trial's training epoch; for a cohort the
epoch of all K members together), peak device memory per trial (CUDA only) and, for cohorts, the
largest relative difference of a member's ``test_mse`` from the same config trained alone (the
cohort trains the same trials). Verdicts, all ratios inside one run: on a CPU, a cohort of 16 on
one thread against the same 16 trials one after another on one thread (target >= 3x, in CPU time,
which a shared machine does not inflate as it does wall time); on a GPU,
cohort trials per minute (target >= 450 for the large task at 20 epochs) and the lone GPU epoch
against the 16-core CPU epoch (target >= 5x). Only torch, numpy and this repository are needed
(no Ray). Output is also written to benchmarks/results/bench_gpu_<device>.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._report import publish  # noqa: E402
from objectives.mixed_symmetry import make_cohort_task, make_task  # noqa: E402

ALPHAS = {"rotation": 0.0, "scaling": 0.3, "permutation": 1.0}
GROUPS = ("rotation", "scaling", "permutation")


def sample_configs(n: int, epochs: int, mode: str, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` configs of one architecture: log-uniform strengths in [1e-3, 10] and lr in
    [3e-4, 1e-2], seeds 0..n-1."""
    rng = np.random.default_rng(seed)
    return [{"epochs": epochs, "mode": mode, "seed": i, "lr": float(10 ** rng.uniform(-3.5, -2)),
             **{f"lam.{g}": float(10 ** rng.uniform(-3, 1)) for g in GROUPS}} for i in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def run_single(task_args: dict, configs: list[dict], device: torch.device) -> dict[str, Any]:
    """Lone trials one after another: throughput, epoch time, peak memory."""
    task = make_task(ALPHAS, **task_args)
    _peak_reset(device)
    start, cpu = time.perf_counter(), time.process_time()
    results = [task(c) for c in configs]
    _sync(device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    epochs = configs[0]["epochs"]
    return {"trials": len(configs), "wall": wall, "cpu": cpu,
            "epoch": float(np.mean([r["train_seconds"] for r in results])) / epochs,
            "memory": _peak(device), "results": results}


def _pack_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _pack_job(job: tuple[dict, list[dict]]) -> tuple[list[float], float | None]:
    task_args, configs = job
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _peak_reset(device)
    task = make_task(ALPHAS, **task_args)
    seconds = [task(c)["train_seconds"] for c in configs]
    return seconds, _peak(device)


def run_packed(task_args: dict, configs: list[dict], processes: int,
               threads: int) -> dict[str, Any]:
    """``processes`` spawned processes share the device, each running its trials in turn."""
    context = multiprocessing.get_context("spawn")
    jobs = [(task_args, configs[p::processes]) for p in range(processes)]
    with context.Pool(processes, initializer=_pack_init, initargs=(threads,)) as pool:
        pool.map(_pack_job, [(task_args, [])] * processes)  # start-up and imports, untimed
        start = time.perf_counter()
        done = pool.map(_pack_job, jobs)
        wall = time.perf_counter() - start
    seconds = [s for part, _ in done for s in part]
    memories = [m for _, m in done if m is not None]
    epochs = configs[0]["epochs"]
    return {"trials": len(seconds), "wall": wall, "epoch": float(np.mean(seconds)) / epochs,
            "memory": float(np.mean(memories)) if memories else None}


def run_cohort(task_args: dict, configs: list[dict], device: torch.device) -> dict[str, Any]:
    """One call of the cohort objective training every config."""
    objective = make_cohort_task(ALPHAS, **task_args)
    _peak_reset(device)
    start, cpu = time.perf_counter(), time.process_time()
    results = objective.batch(configs)
    _sync(device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"{len(failed)} cohort members failed, first: {failed[0]!r}")
    epochs = configs[0]["epochs"]
    # train_seconds is each member's share of the cohort's training time.
    epoch = sum(r["train_seconds"] for r in results) / epochs
    memory = _peak(device)
    return {"trials": len(configs), "wall": wall, "cpu": cpu, "epoch": epoch,
            "memory": memory / len(configs) if memory is not None else None, "results": results}


def count_syncs(task_args: dict, config: dict) -> dict[str, int]:
    """Host synchronisations (``torch.cuda.set_sync_debug_mode``) of one 2-epoch lone trial
    and one 2-epoch cohort of 4: the step loops should have none, only one per epoch and the
    final evaluation's."""
    import warnings

    config = {**config, "epochs": 2}
    counts = {}
    for label, run in (("lone trial", lambda: make_task(ALPHAS, **task_args)(config)),
                       ("cohort of 4", lambda: make_cohort_task(ALPHAS, **task_args).batch(
                           [{**config, "seed": s} for s in range(4)]))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[label] = sum("synchroniz" in str(w.message) for w in caught)
    return counts


def _rate(row: dict[str, Any]) -> float:
    return 60.0 * row["trials"] / row["wall"]


def _fmt(value: float | None, digits: str = ".3g") -> str:
    return "n/a" if value is None else format(value, digits)


def _agreement(cohort: list[dict], lone: list[dict]) -> float:
    pairs = list(zip(cohort, lone, strict=False))
    return max(abs(c["test_mse"] - single["test_mse"]) / abs(single["test_mse"])
               for c, single in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--size", default=None, choices=("small", "large"),
                        help="task size (default: large on a GPU, small on a CPU)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per trial (default: 20 on a GPU, 10 on a CPU)")
    parser.add_argument("--n-train", type=int, default=None, help="override the training sets")
    parser.add_argument("--mode", default="weighted", choices=("weighted", "auto"))
    parser.add_argument("--single", type=int, default=None,
                        help="lone trials in the single row (default: 4 on a GPU; on a CPU the "
                             "largest cohort, the baseline of the verdict)")
    parser.add_argument("--packs", default=None,
                        help="process counts, e.g. 8,16 (default: 8,16 on a GPU, 2 on a CPU; "
                             "'' for none)")
    parser.add_argument("--pack-trials", type=int, default=2, help="trials per packed process")
    parser.add_argument("--cohorts", default=None,
                        help="cohort sizes (default: 16,64,256 on a GPU, 16 on a CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in this process (default: 1 on a CPU)")
    parser.add_argument("--cpu-reference", action="store_true",
                        help="also time one lone trial on the CPU with every core")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device here; run it on a GPU "
                     "machine, or leave --device out")

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    size = args.size or ("large" if cuda else "small")
    epochs = args.epochs or (20 if cuda else 10)
    packs = [int(p) for p in (args.packs if args.packs is not None
                              else ("8,16" if cuda else "2")).split(",") if p]
    cohorts = [int(k) for k in (args.cohorts or ("16,64,256" if cuda else "16")).split(",")]
    threads = args.threads or (torch.get_num_threads() if cuda else 1)
    torch.set_num_threads(threads)
    n_single = args.single or (4 if cuda else max(cohorts))
    task_args = {"size": size, **({"n_train": args.n_train} if args.n_train else {})}
    configs = sample_configs(max([n_single, *cohorts, *(p * args.pack_trials for p in packs)]),
                             epochs, args.mode)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.perf_counter()
    # One-off costs a worker process pays once, not per trial or per call: the CUDA context and
    # cuBLAS handles, and the modules torch.func imports on its first vmap (about a CPU second).
    warm = {**task_args, "n_train": 256}
    make_task(ALPHAS, **warm)({**configs[0], "epochs": 1})
    make_cohort_task(ALPHAS, **warm).batch([{**configs[0], "epochs": 1}])

    rows: list[tuple[str, dict[str, Any]]] = []
    single = run_single(task_args, configs[:n_single], device)
    rows.append((f"single ({n_single} trials in turn, {threads} thread(s))", single))
    for processes in packs:
        packed = run_packed(task_args, configs[: processes * args.pack_trials], processes,
                            1 if not cuda else max(1, threads // processes))
        rows.append((f"packed {processes} processes", packed))
    cohort_rows = {}
    for k in cohorts:
        cohort_rows[k] = run_cohort(task_args, configs[:k], device)
        rows.append((f"cohort {k}", cohort_rows[k]))
    reference = None
    if args.cpu_reference:
        torch.set_num_threads(os.cpu_count() or 1)
        with _cpu_only():  # the objective picks CUDA when it can: hide it for the CPU peer
            reference = run_single(task_args, configs[:1], torch.device("cpu"))
        rows.append((f"cpu reference (1 trial, {os.cpu_count()} threads)", reference))
        torch.set_num_threads(threads)
    syncs = count_syncs(task_args, configs[0]) if cuda else None
    total = time.perf_counter() - started

    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    lines = [
        "## bench_gpu",
        "",
        f"{'GPU ' + name if cuda else 'CPU only'}; torch {torch.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start {load:.1f}; "
        f"total {total:.0f} s",
        "",
        f"Task: mixed symmetry, points variant, size {size}"
        f"{f' (n_train {args.n_train})' if args.n_train else ''}, {epochs} epochs, "
        f"{args.mode} mode, width/depth of the size's defaults; configs sample strengths, lr and "
        "seed.",
        "",
        "| row | trials | trials/min | CPU seconds per trial | epoch time (s) | "
        "peak memory per trial (MiB) | cohort vs lone test_mse (max rel. diff) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in rows:
        agree = ""
        if "results" in row and label.startswith("cohort"):
            agree = _fmt(_agreement(row["results"], single["results"]), ".1e")
        cpu = row["cpu"] / row["trials"] if "cpu" in row else None
        lines.append(f"| {label} | {row['trials']} | {_rate(row):.1f} | {_fmt(cpu)} | "
                     f"{_fmt(row['epoch'])} | "
                     f"{_fmt(row['memory'])} | {agree} |")
    lines += ["", "Epoch time: one lone trial's training epoch; for a cohort, one epoch of all "
              "its members together.", ""]
    if syncs is not None:
        lines += ["Host synchronisations in 2 epochs (CUDA sync debug mode): "
                  + ", ".join(f"{k} {v}" for k, v in syncs.items()) + ".", ""]
    lines += _verdicts(cuda, size, epochs, single, cohort_rows, reference)
    out = args.out or str(ROOT / "benchmarks" / "results" / f"bench_gpu_{device.type}.md")
    publish("\n".join(lines), out)


class _cpu_only:
    """Run the lone objective on the CPU on a CUDA machine (``distopt.device`` asks CUDA)."""

    def __enter__(self) -> None:
        import objectives.mixed_symmetry as module

        self.module, self.saved = module, module.trial_device
        module.trial_device = lambda: torch.device("cpu")

    def __exit__(self, *exc: object) -> None:
        self.module.trial_device = self.saved


def _verdicts(cuda: bool, size: str, epochs: int, single: dict, cohorts: dict,
              reference: dict | None) -> list[str]:
    lines = []
    lone_rate = _rate(single)
    for k, row in cohorts.items():
        lines.append(f"- cohort {k}: {_rate(row):.1f} trials/min, {_rate(row) / lone_rate:.1f}x "
                     "the lone trials in turn")
    if not cuda and 16 in cohorts and single["trials"] >= 16:
        # Same 16 configs both ways (the single row ran at least the first 16 in turn). On one
        # thread the process's CPU time is what an idle core would take; wall time on a shared
        # machine also counts other people's work, so both are shown and CPU time decides.
        ratio = 16 * single["cpu"] / single["trials"] / cohorts[16]["cpu"]
        wall = 16 * single["wall"] / single["trials"] / cohorts[16]["wall"]
        lines.append(f"- **CPU target** (cohort of 16 on one thread finishes >= 3x sooner than the "
                     f"same 16 trials in turn): {ratio:.1f}x in CPU time ({wall:.1f}x in wall "
                     f"time), **{'met' if ratio >= 3 else 'not met'}**")
    if not cuda:
        lines += ["", "Not measured in this run (no GPU): the GPU rows and targets (on one H200, "
                  "large task, 20 epochs: cohorts >= 450 trials/min; a lone trial's epoch >= 5x "
                  "faster than 16 CPU cores) and GPU memory per trial. On a GPU machine: "
                  "`python benchmarks/bench_gpu.py --device cuda --cpu-reference`."]
    if cuda:
        best = max(_rate(row) for row in cohorts.values()) if cohorts else 0.0
        note = "" if (size, epochs) == ("large", 20) else " (target set for large, 20 epochs)"
        lines.append(f"- **GPU target** cohorts >= 450 trials/min{note}: best {best:.0f}, "
                     f"**{'met' if best >= 450 else 'not met'}**")
        if reference is not None:
            ratio = reference["epoch"] / single["epoch"]
            lines.append(f"- **GPU target** lone epoch >= 5x faster than all CPU cores: "
                         f"{ratio:.1f}x, **{'met' if ratio >= 5 else 'not met'}**")
    return lines


if __name__ == "__main__":
    main()
