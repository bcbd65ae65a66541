"""Every notebook in notebooks/ runs top to bottom in a fresh kernel and shows its figures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook():
    assert any(path.name == "pareto_front.ipynb" for path in NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_plots(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit notebooks without outputs"
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}})   # the store lands in tmp_path
    started = time.monotonic()
    client.execute()                                       # raises CellExecutionError on error
    seconds = time.monotonic() - started
    outputs = [out for cell in notebook.cells if cell.cell_type == "code"
               for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    # No library noise (TqdmWarning, Ray's "Missing packages", matplotlib warnings) on screen.
    streams = [out.text for out in outputs if out.output_type == "stream"]
    assert not [text for text in streams if "Warning" in text or "Missing packages" in text], \
        streams
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    plot_cells = [cell for cell in notebook.cells
                  if cell.cell_type == "code" and "dplot." in cell.source]
    assert len(images) >= len(plot_cells) >= 5, (len(images), len(plot_cells))
    if path.name == "pareto_front.ipynb":
        text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
        assert "24 trials" in text and "on the front" in text
        assert (tmp_path / "runs" / "pareto-notebook" / "trials.parquet").is_file()
        # About 40 s on 2 idle cores; the bound only catches a notebook grown far too big.
        assert seconds < 300, f"the notebook took {seconds:.0f} s; keep it under a minute"
