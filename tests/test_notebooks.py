"""The notebook contract: jupytext pairs in sync, executed outputs committed, papermill runs.

nbval (``make test`` passes ``--nbval-lax``) re-executes the committed notebooks and compares the
cells marked ``# NBVAL_CHECK_OUTPUT``; it silently checks nothing in an unexecuted notebook, which
is why the executed-outputs test below exists.
"""

import json
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells if c.source.strip()]


def test_there_are_notebooks():
    assert SOURCES, "no notebooks/NN_name.py sources found"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_pair_is_in_sync_and_executed(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{source.name} has no paired {ipynb.name}; run `make sync`"
    committed = nbformat.read(ipynb, as_version=4)
    assert _cells(jupytext.read(source)) == _cells(committed), \
        f"{source.name} and {ipynb.name} differ; run `make notebooks` (or `make sync`)"
    code = [c for c in committed.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.get("execution_count") for c in code), f"{ipynb.name} has unexecuted code cells"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{ipynb.name} carries error outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{ipynb.name} needs exactly one cell tagged 'parameters' for papermill"
    assert any("NBVAL_CHECK_OUTPUT" in c.source for c in code), \
        f"{ipynb.name} has no cell marked NBVAL_CHECK_OUTPUT: nbval would compare nothing"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_papermill_executes_under_the_ci_profile(source, tmp_path):
    out = tmp_path / source.with_suffix(".ipynb").name
    pm.execute_notebook(str(source.with_suffix(".ipynb")), str(out), cwd=str(NOTEBOOK_DIR),
                        parameters={"profile": "ci", "results_dir": str(tmp_path)},
                        kernel_name="python3", progress_bar=False)
    executed = json.loads(out.read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected, "papermill found no parameters cell to inject after"
    figures = sorted((tmp_path / "figures").glob(f"{source.stem[:2]}_*.png"))
    assert figures, f"{source.stem} wrote no figure under results_dir/figures"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_bad_papermill_parameter_is_refused_clearly(source, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="profile"):
        pm.execute_notebook(str(source.with_suffix(".ipynb")), str(tmp_path / "bad.ipynb"),
                            cwd=str(NOTEBOOK_DIR), parameters={"profile": "huge", "results_dir": str(tmp_path)},
                            kernel_name="python3", progress_bar=False)
