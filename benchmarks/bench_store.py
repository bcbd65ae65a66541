"""Store write throughput: this checkout's ``StoreWriter`` against a baseline's, in one run.

The baseline's ``distopt/store`` is taken from git (default: the commit this branch started from,
``git merge-base HEAD main``) and imported beside the current one, so both write the same rows on
the same disk at the same moment, alternately. Each "finish" is what the orchestrator does when
trials come back: ``add_dispatched`` of the next batch, ``add_curves`` and ``add_trials``.

    python benchmarks/bench_store.py [--trials 20000] [--batch 16] [--repeats 3] [--base REF]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import publish  # benchmarks/, the script's own folder, is on sys.path

REPO = Path(__file__).resolve().parent.parent


def baseline_store(ref: str, folder: Path):
    """The ``distopt.store`` package of git ``ref``, imported as ``distopt._store_baseline``."""
    import distopt  # noqa: F401 - the parent package the baseline's relative imports need

    names = subprocess.run(["git", "ls-tree", "--name-only", ref, "distopt/store/"], cwd=REPO,
                           check=True, capture_output=True, text=True).stdout.split()
    package = folder / "store"
    package.mkdir()
    for name in names:
        source = subprocess.run(["git", "show", f"{ref}:{name}"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        (package / Path(name).name).write_text(source)
    spec = importlib.util.spec_from_file_location(
        "distopt._store_baseline", package / "__init__.py",
        submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _metadata() -> dict:
    import distopt

    return distopt.Study({"x": distopt.Float(0.0, 1.0)}, {"f1": "min", "f2": "min"},
                         store="unused").metadata({})


def run_once(writer_class, folder: Path, trials: int, batch: int) -> float:
    """Trials per second written (open, every finish, close included)."""
    metadata = _metadata()
    start = time.perf_counter()
    writer = writer_class(folder, metadata)
    for first in range(0, trials, batch):
        ids = range(first, min(first + batch, trials))
        writer.add_dispatched([{"trial_id": i, "attempt": 1, "time": time.time(),
                                "config": {"x": i / trials}} for i in ids])
        writer.add_curves([])
        writer.add_trials([{"trial_id": i, "status": "COMPLETE", "config": {"x": i / trials},
                            "metrics": {"f1": i / trials, "f2": 1 - i / trials}, "error": None,
                            "attempts": 1, "start_time": time.time(), "end_time": time.time(),
                            "worker": "worker-0", "node_id": "node"} for i in ids])
    writer.close()
    return trials / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default=None, help="git ref of the baseline store")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_store.md"),
                        help="the table's file (default: the committed results)")
    args = parser.parse_args()
    base = args.base or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO,
                                       check=True, capture_output=True,
                                       text=True).stdout.strip()
    import distopt.store._writer as writer_module
    from distopt.store import StoreWriter

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = baseline_store(base, Path(tmp))
        for batch in args.batch:
            trials = args.trials if batch > 1 else args.trials // 8
            rates: dict[str, list[float]] = {"baseline": [], "current": [], "lazy": []}
            for name in rates:  # untimed warm-up: the first run of a process paid imports and
                # the page cache for whichever came first (8x at --repeats 1 for equal code)
                writer_module.FSYNC_TRIALS = name != "lazy"
                cls = baseline.StoreWriter if name == "baseline" else StoreWriter
                run_once(cls, Path(tmp) / f"warm-{name}-{batch}", min(trials, 200), batch)
            for repeat in range(args.repeats):  # alternated, so all see the same disk and load
                for name in rates:
                    writer_module.FSYNC_TRIALS = name != "lazy"
                    cls = baseline.StoreWriter if name == "baseline" else StoreWriter
                    rates[name].append(run_once(cls, Path(tmp) / f"{name}-{batch}-{repeat}",
                                                trials, batch))
            old, new, lazy = (statistics.median(rates[name]) for name in rates)
            rows.append((batch, trials, old, new, lazy))
            print(f"batch {batch}: baseline {old:,.0f} trials/s, current {new:,.0f} trials/s "
                  f"({lazy:,.0f} with FSYNC_TRIALS off)", flush=True)
    lines = [f"Store write throughput: baseline `{base[:10]}` vs this checkout, one run, median "
             f"of {args.repeats} alternated repeats (open, every finish, close included)", "",
             "| trials per add_trials | trials | baseline trials/s | current trials/s | "
             "current / baseline | current, FSYNC_TRIALS off | it / baseline |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {b} | {n} | {o:,.0f} | {c:,.0f} | {c / o:.2f} | {z:,.0f} | {z / o:.2f} |"
              for b, n, o, c, z in rows]
    lines += ["", f"Baseline: `distopt/store` at `{base[:10]}`. Current: this checkout's, each "
              "add_trials fsynced before it returns (FSYNC_TRIALS), parts published every "
              "0.5 s and merged at close; one untimed warm-up run of each first."]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
