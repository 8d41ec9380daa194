"""The notebooks run top to bottom in a fresh kernel, and what they save is committed and shown."""

import re
import runpy
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIGURES = ROOT / "notebooks" / "figures"
execute = runpy.run_path(str(ROOT / "notebooks" / "execute.py"))["execute"]


def test_there_are_five_notebooks():
    assert [path.name[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_a_fresh_kernel(path, tmp_path):
    execute(path, tmp_path)  # in a temporary folder: the committed notebook and figures stay untouched
    saved = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert saved, "every notebook saves its figures under figures/"
    assert set(saved) <= {p.name for p in FIGURES.glob("*.png")}, "figures missing from notebooks/figures"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_has_its_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), "execute it and save the outputs"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "run top to bottom"
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    sources = "\n".join(cell.source for cell in code)
    assert "import protoattn" in sources or "from protoattn" in sources


def test_readme_shows_committed_figures():
    shown = re.findall(r"\((notebooks/figures/[^)]+\.png)\)", (ROOT / "README.md").read_text())
    assert shown
    for link in shown:
        assert (ROOT / link).is_file(), link
