"""The walkthrough notebook runs top to bottom (nbclient, the project's own kernel), on its tiny sizes.

The notebook's own cells assert what it shows (two-tower beats popularity; gRPC and REST agree); this test
fails on any error output and wants at least one plot.
"""
import os

import nbformat
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks", "walkthrough.ipynb")


def test_walkthrough_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_NOTEBOOK_WORKDIR", str(tmp_path))
    monkeypatch.setenv("RECSYS_NOTEBOOK_TINY", "1")  # the notebook's smallest sizes (its own asserts still run)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
