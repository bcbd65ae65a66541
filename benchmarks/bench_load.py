"""Load: 10,000 trials of an instant objective on 2 workers; driver memory and store read time.

One search of ``--trials`` (10,000) trials, ``distopt.examples:instant``, 2 workers, random
strategy, one embedded local Ray, store on. Memory is the driver process's, read from
``/proc/self/status``: ``VmRSS`` (resident now) and ``VmHWM`` (peak resident so far), sampled in
that one search when 1,000, 2,500, 5,000 and 10,000 trials have finished. The progress hook
(``on_progress``) fires only every 0.5 s, too coarse at ~10,000 trials/s, so the samples are
taken by a wrapper around ``Orchestrator._finish`` (the method that writes finished trials to
the store) right after the count crosses each mark. A background thread also samples ``VmRSS``
every 50 ms to catch peaks in between. The search runs as ``distopt run`` does, with the
progress hook on (a no-op recorder instead of the tqdm bar), so the running front is kept too.

Then the store of 10,000 trials is read in a fresh Python process (imports done before the
clock starts): ``open_store(path)`` + ``pareto_front()`` + ``hypervolume()``, best and median of
5 runs. Target: under 1 s; memory flat between 1,000 and 10,000 trials.

    python benchmarks/bench_load.py [--trials 10000] [--workers 2] [--one-per-call]

It runs twice, each in a fresh process: as is (short trials are batched, up to 16 per Ray actor
call, so a store write carries several trials), and with a (never reached) ``trial_timeout``,
which turns batching off: one actor call and one store write per trial, as with real trials that
finish one at a time, ~16x more calls to expose any per-call growth. ``--one-per-call`` runs only
the second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from _report import publish  # benchmarks/, the script's own folder, is on sys.path

CHECKPOINTS = (1000, 2500, 5000, 10000)


def memory_mib() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class Recorder:
    """Memory at the checkpoints; also stands in for the progress bar (``update`` is a no-op)."""

    samples: dict[int, tuple[int, float, float, float]] = {}
    checkpoints: tuple[int, ...] = CHECKPOINTS
    started = 0.0

    def __init__(self, budget: int, stored: int = 0):  # ProgressBar's signature
        self.budget = budget

    def update(self, progress) -> None:
        pass

    def close(self) -> None:
        pass

    @classmethod
    def sample(cls, finished: int) -> None:
        for mark in cls.checkpoints:
            if finished >= mark and mark not in cls.samples:
                rss, hwm = memory_mib()
                cls.samples[mark] = (finished, rss, hwm, time.perf_counter() - cls.started)


def instrument() -> None:
    """Sample memory each time the orchestrator has written a batch of finished trials."""
    from distopt._orchestrator import Orchestrator

    finish = Orchestrator._finish

    def sampled_finish(self, rows, curves):
        finish(self, rows, curves)
        Recorder.sample(self.n_finished)

    Orchestrator._finish = sampled_finish


class Sampler(threading.Thread):
    """Peak VmRSS between hooks, sampled every 50 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, memory_mib()[0])


READ_SCRIPT = r"""
import json, statistics, sys, time
import distopt
import numpy, pyarrow, pyarrow.compute  # imports are not part of opening a store
from distopt import pareto
runs = []
for _ in range(5):
    start = time.perf_counter()
    reader = distopt.open_store(sys.argv[1])
    front = reader.pareto_front()
    hv = reader.hypervolume()
    runs.append(time.perf_counter() - start)
rows = reader.trials().num_rows
print(json.dumps({"best": min(runs), "median": statistics.median(runs), "rows": rows,
                  "front": front.num_rows, "hv": hv}))
"""


def bench(args: argparse.Namespace) -> str:
    """One search in this process; its results as markdown."""
    checkpoints = tuple(sorted({c for c in CHECKPOINTS if c < args.trials} | {args.trials}))
    Recorder.checkpoints = checkpoints

    import distopt
    import distopt._progress
    from distopt.examples import instant

    distopt._progress.ProgressBar = Recorder  # Study.optimize looks it up at each call
    instrument()
    folder = tempfile.mkdtemp(prefix="distopt-load-")
    store = os.path.join(folder, "store")
    try:
        rss_before, _ = memory_mib()
        study = distopt.Study({"x": distopt.Float(0.0, 1.0)}, {"f1": "min", "f2": "min"},
                              strategy="random", store=store, seed=0)
        sampler = Sampler()
        sampler.start()
        Recorder.started = time.perf_counter()
        reader = study.optimize(instant, budget=args.trials, workers=args.workers,
                                progress=True,
                                trial_timeout=3600.0 if args.one_per_call else None)
        elapsed = time.perf_counter() - Recorder.started
        sampler.stop.set()
        sampler.join()
        assert reader.trials().num_rows == args.trials
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store)
                   for f in fs)
        segments = {name: len(os.listdir(os.path.join(store, name)))
                    for name in ("trials", "dispatched")}
        read = json.loads(subprocess.run([sys.executable, "-c", READ_SCRIPT, store],
                                         capture_output=True, text=True, check=True).stdout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    samples = Recorder.samples
    first, last = samples[checkpoints[0]], samples[checkpoints[-1]]
    growth = last[1] - first[1]
    flat = growth <= max(20.0, 0.05 * first[1])
    rate = (last[0] - first[0]) / max(last[3] - first[3], 1e-9)
    lines = [
        f"Load: {args.trials:,} trials, instant objective, {args.workers} workers, random "
        f"strategy, local Ray, {os.cpu_count()} CPUs. {elapsed:.1f} s in all, of which Ray and "
        f"worker start-up until the first {first[0]:,} trials had finished: {first[3]:.1f} s; then "
        f"{rate:,.0f} trials/s"
        + (" (one actor call per trial: batching off)." if args.one_per_call else
           " (short trials batched, up to 16 per actor call)."),
        "",
        "Driver memory in one search, sampled as the finished count crosses each mark (MiB; "
        f"before the search: {rss_before:.0f}):",
        "",
        "| trials finished | RSS | peak RSS so far (VmHWM) | time (s) |",
        "| --- | --- | --- | --- |",
    ]
    for mark in checkpoints:
        finished, rss, hwm, at = samples[mark]
        lines.append(f"| {finished:,} | {rss:.0f} | {hwm:.0f} | {at:.1f} |")
    lines += [
        "",
        f"Peak RSS sampled every 50 ms over the whole search, closing the store (its final "
        f"Parquet snapshot) included: {sampler.peak:.0f} MiB. RSS from "
        f"{checkpoints[0]:,} to {checkpoints[-1]:,} trials: {growth:+.1f} MiB -> "
        f"{'flat' if flat else 'GROWS'} (criterion: at most max(20 MiB, 5%)).",
        "",
        f"Store: {size / 2**20:.1f} MiB on disk, {segments['trials']} trial and "
        f"{segments['dispatched']} dispatch segment(s).",
        "",
        "| read of the finished store (fresh process, imports excluded) | best | median of 5 |",
        "| --- | --- | --- |",
        f"| `open_store` + `pareto_front()` + `hypervolume()` on {read['rows']:,} trials "
        f"({read['front']} on the front) | {read['best'] * 1000:.0f} ms | "
        f"{read['median'] * 1000:.0f} ms |",
        "",
        f"Target: under 1 s -> {'met' if read['median'] < 1.0 else 'MISSED'}.",
    ]
    return "\n".join(lines)


RESULT = "---RESULT---\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--one-per-call", action="store_true",
                        help="only the run without batching of short trials")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "bench_load.md"))
    args = parser.parse_args()
    if args.single:  # one mode, in a fresh process: its memory is its own
        print(RESULT + bench(args))
        return
    texts = []
    for extra in ([["--one-per-call"]] if args.one_per_call else [[], ["--one-per-call"]]):
        done = subprocess.run([sys.executable, __file__, "--single", "--trials", str(args.trials),
                               "--workers", str(args.workers), *extra],
                              capture_output=True, text=True)
        if done.returncode != 0 or RESULT not in done.stdout:
            sys.exit(f"benchmark run {extra} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        texts.append(done.stdout.split(RESULT, 1)[1].strip())
    text = "\n\n".join(texts)
    publish(text, args.out)


if __name__ == "__main__":
    main()
