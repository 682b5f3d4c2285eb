"""notebooks/grpo.ipynb runs headless on CPU with the tiny model and data, and is stored without outputs."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "grpo.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_runs_headless_on_the_tiny_model(tiny_recipe, tmp_path, monkeypatch):
    overrides = tiny_recipe(tmp_path, name="notebook", max_steps=1, **{"sft.enabled": "false"})
    monkeypatch.setenv("NOTEBOOK_OVERRIDES", " ".join(overrides))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    assert (tmp_path / "notebook" / "merged" / "READY").exists()
    outputs = "".join(str(output) for cell in notebook.cells for output in cell.get("outputs", []))
    assert "image/png" in outputs and "after status" in outputs
