"""The example notebooks run top to bottom in their CI configuration, and say SYNTHETIC wherever numbers show."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_example_notebook_runs_and_labels_synthetic(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SURFMAP_EXAMPLE_SIZE", "ci")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures as outputs
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    n_text = n_figures = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            text = ""
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text = out["text"]
            elif out.get("output_type") == "execute_result":
                text = out["data"].get("text/plain", "")
            if text.strip():
                n_text += 1
                assert "SYNTHETIC" in text, f"output without a SYNTHETIC label in {path.name}: {text[:200]!r}"
            if out.get("output_type") == "display_data" and "image/png" in out.get("data", {}):
                n_figures += 1
                assert "SYNTHETIC" in cell.source or "plot_occlusion" in cell.source
    assert n_text >= 4 and n_figures >= 3
