"""The README's pandas / polars / DuckDB example runs as written and agrees with the reader."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.compute as pc
import pytest

import distopt
from distopt.store import StoreWriter

pytest.importorskip("pandas")
pytest.importorskip("duckdb")
pytest.importorskip("polars")

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Interop", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return next(b for b in blocks if "import distopt, duckdb, pandas as pd, polars as pl" in b)


def make_store(path: Path) -> None:
    study = distopt.Study({"x": distopt.Float(0, 1), "act": distopt.Categorical(["a", "b"])},
                          {"f1": "min", "f2": "min"})
    writer = StoreWriter(path, study.metadata({}))
    rows, curves = [], []
    for i in range(10):
        x = i / 9
        status = "FAILED" if i == 4 else "COMPLETE"
        rows.append({"trial_id": i, "status": status, "config": {"x": x, "act": "ab"[i % 2]},
                     "metrics": {} if status == "FAILED" else {"f1": x, "f2": (1 - x) ** 2 + i % 3},
                     "error": "boom" if status == "FAILED" else None, "attempts": 1,
                     "start_time": 100.0 + i, "end_time": 100.5 + i, "worker": "w",
                     "node_id": None})
        curves += [{"trial_id": i, "step": s, "time": 100.0 + i, "train_loss": (i + 1) / (s + 1)}
                   for s in range(4)]
    writer.add_curves(curves)
    writer.add_trials(rows)
    writer.close()


def test_readme_dataframe_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_store(tmp_path / "runs" / "readme-demo")
    namespace: dict = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)  # noqa: S102 - our README
    reader = distopt.open_store(tmp_path / "runs" / "readme-demo")
    trials = reader.trials()
    assert len(namespace["trials"]) == trials.num_rows == 10
    assert namespace["curves"].height == reader.curves().num_rows == 40
    counts = namespace["counts"]
    assert dict(zip(counts["status"], counts["n"], strict=True)) == {"COMPLETE": 9, "FAILED": 1}
    front = namespace["front"]
    assert sorted(front["trial_id"].to_list()) == sorted(
        reader.pareto_front()["trial_id"].to_pylist())
    assert list(namespace["live"]["trial_id"]) == list(range(10))
    assert namespace["live"]["config/act"].tolist() == trials["config/act"].to_pylist()
    best = namespace["best"]
    curve = reader.curves()
    expected = [pc.min(curve.filter(pc.equal(curve["trial_id"], i))["train_loss"]).as_py()
                for i in range(10)]
    assert best["trial_id"].tolist() == list(range(10))
    assert best["best"].tolist() == pytest.approx(expected)
