"""Every notebook in notebooks/ runs on the tiny mock: no cell raises and the last cell draws a figure."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_ends_in_a_figure(path, tiny_catalogs, monkeypatch, tmp_path):
    monkeypatch.setenv("DEXDB_CATALOG", str(tiny_catalogs))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "stored with outputs"
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    last = next(cell for cell in reversed(notebook.cells) if cell.cell_type == "code")
    assert any("image/png" in output.get("data", {}) for output in last.outputs)
