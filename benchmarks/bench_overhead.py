"""Orchestration overhead: trials per second with an instant objective, 2 workers, one local Ray.

Side by side in one run, on one Ray instance started once (its start-up is excluded for all):

- distopt: ``Study(strategy="random").optimize(instant, workers=2)``, store on (every trial row
  flushed to disk before it counts);
- Ray Tune: function trainable, ``reuse_actors=True``, per-trial loggers off, 2 concurrent trials;
- bare Ray: 2 actors driven by ``ActorPool.map_unordered`` (one call in flight per actor).

Targets (issue 3): distopt >= 30x Ray Tune and >= 0.5x the bare ActorPool loop.

    python benchmarks/bench_overhead.py [--trials 3000] [--tune-trials 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import publish  # benchmarks/, the script's own folder, is on sys.path

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def bench_distopt(trials: int, workers: int, folder: str, store: Any = None) -> float:
    """``store``: a ``distopt.store`` package to write with instead of this checkout's."""
    import distopt
    import distopt._study as study_module
    from distopt.examples import instant

    saved = study_module.StoreWriter, study_module.StoreReader
    if store is not None:
        study_module.StoreWriter, study_module.StoreReader = store.StoreWriter, store.StoreReader
    try:
        study = distopt.Study({"x": distopt.Float(0.0, 1.0)}, {"f1": "min", "f2": "min"},
                              strategy="random", store=tempfile.mkdtemp(dir=folder), seed=0)
        start = time.perf_counter()
        reader = study.optimize(instant, budget=trials, workers=workers)
        elapsed = time.perf_counter() - start
        assert reader.trials().num_rows == trials
    finally:
        study_module.StoreWriter, study_module.StoreReader = saved
    return trials / elapsed


def bench_store_formats(trials: int, workers: int, folder: str, base: str,
                        repeats: int) -> tuple[float, float]:
    """Median trials/s of distopt writing with ``base``'s store and with this checkout's,
    alternated on one Ray instance."""
    import statistics

    from bench_store import baseline_store

    old = baseline_store(base, Path(tempfile.mkdtemp(dir=folder)))
    rates: dict[str, list[float]] = {"base": [], "current": []}
    for _ in range(repeats):
        rates["base"].append(bench_distopt(trials, workers, folder, old))
        rates["current"].append(bench_distopt(trials, workers, folder))
        print(f"store {base[:10]}: {rates['base'][-1]:,.0f} trials/s; this checkout: "
              f"{rates['current'][-1]:,.0f} trials/s", flush=True)
    return statistics.median(rates["base"]), statistics.median(rates["current"])


def _tune_trainable(config):
    return {"f1": config["x"], "f2": 1.0 - config["x"]}


def bench_tune(trials: int, workers: int, folder: str) -> float:
    from ray import tune

    tuner = tune.Tuner(
        _tune_trainable,
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=workers,
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=os.path.join(folder, "tune"), verbose=0,
                                  callbacks=[]),
    )
    start = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(results) == trials
    return trials / elapsed


def bench_actor_pool(trials: int, workers: int) -> float:
    import ray
    from ray.util import ActorPool

    @ray.remote(num_cpus=1)
    class Runner:
        def run(self, x):
            return {"f1": x, "f2": 1.0 - x}

    actors = [Runner.remote() for _ in range(workers)]
    ray.get([a.run.remote(0.0) for a in actors])  # started, as distopt's and Tune's are
    start = time.perf_counter()
    pool = ActorPool(actors)
    count = sum(1 for _ in pool.map_unordered(lambda a, x: a.run.remote(x),
                                              [i / trials for i in range(trials)]))
    elapsed = time.perf_counter() - start
    assert count == trials
    for actor in actors:
        ray.kill(actor)
    return trials / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3000)
    parser.add_argument("--tune-trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "bench_overhead.md"))
    parser.add_argument("--store-baseline", metavar="REF", default=None,
                        help="instead: distopt with REF's store against this checkout's "
                             "(e.g. main), alternated --repeats times")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.store_baseline is not None:
        return compare_stores(args)

    import ray

    # its own Ray, never a cluster another process left recorded on the machine
    ray.init(address="local", num_cpus=max(2, args.workers), include_dashboard=False,
             log_to_driver=False)
    folder = tempfile.mkdtemp(prefix="distopt-bench-")
    try:
        pool = bench_actor_pool(args.trials, args.workers)
        ours = bench_distopt(args.trials, args.workers, folder)
        tune_rate = bench_tune(args.tune_trials, args.workers, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        ray.shutdown()

    lines = [
        f"Orchestration overhead: instant objective, {args.workers} workers, local Ray, "
        f"{os.cpu_count()} CPUs",
        "",
        "| system | trials | trials/s | distopt / system |",
        "| --- | --- | --- | --- |",
        f"| distopt (random, store on) | {args.trials} | {ours:,.0f} | 1.00 |",
        f"| Ray Tune (function, reuse_actors, no loggers) | {args.tune_trials} | "
        f"{tune_rate:,.1f} | {ours / tune_rate:,.1f}x |",
        f"| bare Ray ActorPool.map_unordered | {args.trials} | {pool:,.0f} | {ours / pool:.2f}x |",
        "",
        f"Targets: >= 30x Ray Tune -> {'met' if ours >= 30 * tune_rate else 'MISSED'}; "
        f">= 0.5x ActorPool -> {'met' if ours >= 0.5 * pool else 'MISSED'}.",
    ]
    text = "\n".join(lines)
    publish(text, args.out)


def compare_stores(args: argparse.Namespace) -> None:
    import ray

    ray.init(address="local", num_cpus=max(2, args.workers), include_dashboard=False,
             log_to_driver=False)  # its own Ray, never a cluster another process started
    folder = tempfile.mkdtemp(prefix="distopt-bench-")
    try:
        base, current = bench_store_formats(args.trials, args.workers, folder,
                                            args.store_baseline, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        ray.shutdown()
    out = args.out.replace("bench_overhead.md", "bench_overhead_store.md")
    publish("\n".join([
        f"distopt trials/s by store, instant objective, {args.workers} workers, one local Ray, "
        f"median of {args.repeats} alternated runs of {args.trials} trials", "",
        "| store | trials/s | this checkout / it |", "| --- | --- | --- |",
        f"| {args.store_baseline} | {base:,.0f} | {current / base:.2f} |",
        f"| this checkout | {current:,.0f} | 1.00 |"]), out)


if __name__ == "__main__":
    main()
