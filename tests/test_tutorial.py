"""docs/tutorial.ipynb runs from top to bottom, makes the files it promises, and is committed clean."""

from __future__ import annotations

import os
import re

import pytest

from conftest import REPO

NOTEBOOK = REPO / "docs" / "tutorial.ipynb"

# The parameter cell's tiny values: 256 digits, one epoch, 8-channel networks, 64 images evaluated.
TINY = {"EPOCHS": "1", "LIMIT": "256", "WIDTH": "8", "EVAL_N": "64"}


def _read():
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
    return nbformat.read(NOTEBOOK, as_version=4)


def shrink(source: str, values: dict[str, str]) -> str:
    """The parameter cell's source with each `NAME = value` line's value replaced, the comment kept."""
    for name, value in values.items():
        source, count = re.subn(rf"^({name}\s*=\s*)[^#\n]*?(\s*#.*)?$", rf"\g<1>{value}\g<2>", source, flags=re.M)
        if count != 1:  # a renamed parameter would otherwise silently run the full-size tutorial
            raise AssertionError(f"the parameters cell has no single `{name} = ...` line")
    return source


def test_shrink_replaces_values_and_refuses_a_missing_name():
    assert shrink("EPOCHS = 25   # why\nLIMIT = 0\n", {"EPOCHS": "1", "LIMIT": "256"}) == \
        "EPOCHS = 1   # why\nLIMIT = 256\n"
    with pytest.raises(AssertionError, match="WIDTH"):
        shrink("EPOCHS = 25\n", {"WIDTH": "8"})


def test_committed_notebook_has_no_outputs():
    nb = _read()
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"code cells {dirty} of {NOTEBOOK.name} hold outputs or execution counts: clear them"
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert params.cell_type == "code"


@pytest.mark.slow
def test_tutorial_runs_and_makes_what_it_promises(tmp_path):
    pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
    pytest.importorskip("ipykernel", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
    from nbclient import NotebookClient
    from PIL import Image

    nb = _read()
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = shrink(params.source, TINY)
    # The kernel is another process: it gets this test's isolated cache (conftest) and this checkout's code.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               MPLBACKEND="Agg")
    client = NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, on any error

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    run = tmp_path / "runs" / "tutorial"
    for name in ("samples/epoch_0001.png", "loss_curves.png", "class_grid.png", "generator.pt", "exported.png",
                 "config.yaml", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert (run / "samples" / "epoch_0002.png").exists() is False  # EPOCHS = 1 reached the kernel

    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    shown = sum(o.output_type == "display_data" and "image/png" in o.data
                for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert shown == 4  # last epoch's grid, loss curves, the class grid, the exported model's digits
    for metric in ("cls-fid", "cls-is", "cls-acc"):
        assert re.search(rf"^{metric}\s+\d+\.\d{{4}}$", text, flags=re.M), metric

    # One row per digit: make_grid's 2-pixel padding around 28-pixel images, 8 columns.
    assert "10 rows (digits 0 to 9), 8 samples each" in text
    assert Image.open(run / "class_grid.png").size == (8 * 30 + 2, 10 * 30 + 2)
    assert "(10, 1, 28, 28)" in text  # the exported file ran: one image per digit
