"""The README's readers (DuckDB, polars, pyarrow.dataset, pandas, distopt) run as written on a
store that another process is writing: each sees a growing prefix of the trials, never a torn file,
the late metric once it exists, and every row within a second of its write."""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from distopt import Float, Problem

README = Path(__file__).resolve().parents[2] / "README.md"
N = 400

WRITER = textwrap.dedent("""
    import json, sys, time
    from distopt.store import StoreWriter

    writer = StoreWriter(sys.argv[1], json.loads(sys.argv[2]))
    n = int(sys.argv[3])
    print("ready", flush=True)
    for i in range(n):
        metrics = {"f1": float(i), "f2": -float(i), "g": 0.0}
        if i >= n // 2:
            metrics["late"] = 2.0 * i  # a metric that first appears half way
        writer.add_curves([{"trial_id": i, "step": 0, "time": time.time(), "loss": float(i)}])
        writer.add_trials([{"trial_id": i, "status": "COMPLETE", "config": {"x": i / n},
                            "metrics": metrics, "start_time": time.time(),
                            "end_time": time.time()}])
        time.sleep(0.01)
    print("written", flush=True)
    sys.stdin.readline()
    writer.close()
""")


def _readers_block() -> str:
    section = README.read_text().split("## The store", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run_readers(block: str) -> dict[str, list[dict]]:
    """Rows (sorted by trial id) each tool of the README returned."""
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # distopt warns of torn or damaged files
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    tables = {
        "polars": namespace["trials_pl"].to_dicts(),
        "pyarrow.dataset": namespace["trials_ds"].to_pylist(),
        "pandas": namespace["trials_pd"].to_dict("records"),
        "distopt": namespace["trials"].to_pylist(),
    }
    out = {tool: sorted(rows, key=lambda r: r["trial_id"]) for tool, rows in tables.items()}
    counts = namespace["by_status"].set_index("status")["n"].to_dict()
    out["duckdb"] = [{"trial_id": i} for i in range(int(counts.get("COMPLETE", 0)))]
    assert set(counts) <= {"COMPLETE"}
    return out


def _check_prefix(tool: str, rows: list[dict]) -> int:
    ids = [r["trial_id"] for r in rows]
    assert ids == list(range(len(ids))), f"{tool} read a row twice or missed one"
    if tool == "duckdb":
        return len(ids)
    for r in rows:
        assert r["f1"] == float(r["trial_id"]), tool
        late = r.get("late")
        expected = 2.0 * r["trial_id"] if r["trial_id"] >= N // 2 else None
        assert (None if late != late else late) == expected, (tool, r)  # pandas: NaN for null
    return len(ids)


@pytest.fixture
def writer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "runs" / "readme-demo"
    store.parent.mkdir()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    problem = Problem({"x": Float(0, 1)}, {"f1": "min", "f2": "max"}, {"g": ("<=", 1.0)})
    metadata = {"problem": problem.to_dict(), "config_types": problem.space.arrow_types(),
                "metric_order": problem.metric_names}
    proc = subprocess.Popen([sys.executable, str(script), str(store), json.dumps(metadata),
                             str(N)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc, store
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    proc.stdin.close()
    proc.stdout.close()


def test_every_reader_of_the_readme_reads_a_store_being_written(writer):
    proc, store = writer
    block = _readers_block()
    while not list(store.glob("trials/part-*.parquet")):  # the first publication
        time.sleep(0.05)
    seen: dict[str, list[int]] = {}
    mid_write = 0
    written = False
    while not written:
        written = bool(select.select([proc.stdout], [], [], 0)[0])
        for tool, rows in _run_readers(block).items():
            seen.setdefault(tool, []).append(_check_prefix(tool, rows))
        mid_write += 0 < min(seen[t][-1] for t in seen) < N
    assert proc.stdout.readline().strip() == "written"
    time.sleep(0.6)  # every row is published at most half a second after its write
    final = _run_readers(block)
    assert {tool: _check_prefix(tool, rows) for tool, rows in final.items()} == {
        tool: N for tool in final}
    for tool, counts in seen.items():
        assert counts == sorted(counts), f"{tool}: rows disappeared"
    assert mid_write >= 2, seen  # reads really happened while the search wrote
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0
    final = _run_readers(block)  # closed: one merged part
    assert {tool: _check_prefix(tool, rows) for tool, rows in final.items()} == {
        tool: N for tool in final}
    assert len(list(store.glob("trials/part-*.parquet"))) == 1
