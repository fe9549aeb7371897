"""``examples/demo.ipynb``: committed without outputs, and runs top to bottom at tiny sizes (``DEMO_TINY=1``),
its Ray Tune cell included (a local Ray cluster and four one-iteration trials: about 65 s of the test's
70 s on a loaded 2-core machine). ``DEMO_SKIP_TUNE=1`` skips that cell (a machine without Ray); the sweep
machinery itself is tested in ``tests/test_tune.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DEV = "the notebook test needs the dev extras (nbformat, nbclient, ipykernel)"
nbformat = pytest.importorskip("nbformat", reason=DEV)
nbclient = pytest.importorskip("nbclient", reason=DEV)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "demo.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    source = "\n".join(c.source for c in code)
    assert 'TINY = os.environ.get("DEMO_TINY") == "1"' in source and "# %pip install -e" in source


def _execute(tmp_path: Path, monkeypatch):
    """Run the notebook in a fresh kernel (it inherits this environment) with outputs under ``tmp_path``."""
    monkeypatch.setenv("DEMO_TINY", "1")
    monkeypatch.setenv("DEMO_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("DEMO_SKIP_TUNE", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=400, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def _outputs(nb) -> tuple[str, int]:
    """All stream / markdown text of the executed notebook, and the number of images it displayed."""
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") + out.get("data", {}).get("text/markdown", ""))
            images += "image/png" in out.get("data", {})
    return "\n".join(text), images


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_notebook_runs_at_tiny_size(tmp_path, monkeypatch):
    nb = _execute(tmp_path, monkeypatch)
    text, images = _outputs(nb)
    assert "| standard |" in text and "| hybrid |" in text and "| MAML 2017 (published) |" in text
    assert "Sweep demo_tiny: 4 trial(s)" in text and images == 3  # adaptation plot, paths plot, heatmap
    for f in (tmp_path / "train" / "adaptation.png", tmp_path / "paths.png",
              tmp_path / "tune" / "demo_tiny" / "heatmap.png"):
        assert f.read_bytes()[:8] == PNG
    assert (tmp_path / "train" / "checkpoint" / "weights.pt").is_file()
