"""Every notebook in notebooks/ runs top to bottom (nbclient, the test extra) in a scratch folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import needs_data

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@needs_data
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the test extra brings nbclient and nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extra brings nbclient and ipykernel")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 3                       # the notebook's own plots were drawn
    assert [p.stat().st_size > 1000 for p in (tmp_path / "out").glob("*.csv")] == [True]   # written where it ran
