"""The guided tours in notebooks/ run top to bottom on the shipped data, in a kernel of this interpreter."""

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_five_tours_are_there():
    assert [p.stem for p in NOTEBOOKS] == ["01_sweep", "02_fit", "03_predict", "04_paper_figures", "05_live_tracking"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path):
    book = nbformat.read(path, as_version=4)
    # Runs last: which interpreter and which copy of the package the kernel used.
    book.cells.append(
        nbformat.v4.new_code_cell("import sys, dynamics\nprint(sys.executable)\nprint(dynamics.__file__)")
    )
    # The kernelspec's "python" is replaced by this interpreter; the kernel starts in the repository root.
    NotebookClient(book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [out for cell in book.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors
    executable, package = book.cells[-1].outputs[0]["text"].split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(package).resolve().is_relative_to(ROOT)
    images = [out for cell in book.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert images, "every tour draws at least one figure"
