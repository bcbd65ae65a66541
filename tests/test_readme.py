"""The README's Python API example runs as written (docs that drift are worse than none)."""

from __future__ import annotations

import re
from pathlib import Path

import distopt

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_example() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_example_runs_and_prints_what_it_claims(ray_local, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_api_example(), str(README), "exec"), {})  # noqa: S102 - our own README
    printed = capsys.readouterr().out.split("\n")
    assert printed[0] == "16"   # one row per trial
    assert printed[1] == "48"   # 3 epochs reported per trial
    assert printed[2].startswith("['trial_id', 'status', 'config/x', 'config/y'")
    assert printed[3] == "True"
    assert printed[4] == str(distopt.open_store(tmp_path / "runs" / "readme-demo")
                             .pareto_front().num_rows)
    assert printed[5] == "['number', 'state', 'values_f1', 'values_f2']"
    assert (tmp_path / "runs" / "readme-demo" / "trials.parquet").exists()
