"""The notebook contract: one jupytext source, two executed copies, every figure inline.

* ``notebooks/NN_name.py`` is the source; ``notebooks/NN_name.ipynb`` is its jupytext pair, committed
  with the outputs of the ``default`` profile as ``make reproduce`` produced them (what a reader
  opens first), with a provenance record as its first output.
* ``tests/nbval/NN_name.ipynb`` is the same source executed at the ``ci`` profile (``make
  references``): nbval (``make test`` passes ``--nbval-lax``) re-executes it and compares the
  cells marked ``# NBVAL_CHECK_OUTPUT``. nbval silently checks nothing in an unexecuted notebook,
  which is why the executed-outputs tests below exist.
* Every ``plots.plot_*`` call of a cell puts exactly one PNG into that cell's outputs, in the
  committed notebooks and in a fresh papermill run (a kernel started with a non-interactive
  ``MPLBACKEND`` once removed every figure while all tests passed).
"""

import json
import re
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
REFERENCE_DIR = ROOT / "tests" / "nbval"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
_PLOT_CALL = re.compile(r"^[^#\n]*\bplots\.plot_\w+\(", re.MULTILINE)


def _is_injected(cell) -> bool:
    return "injected-parameters" in cell.get("metadata", {}).get("tags", [])


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells if c.source.strip() and not _is_injected(c)]


def _figure_mismatches(nb) -> list[str]:
    """Code cells whose number of inline PNG outputs differs from their number of plot calls."""
    bad = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        expected = len(_PLOT_CALL.findall(cell.source))
        got = sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))
        if got != expected:
            bad.append(f"cell {i} ({cell.source.strip().splitlines()[0][:60]!r}): {got} PNG, {expected} plot calls")
    return bad


def _check_executed(nb, name: str) -> None:
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.get("execution_count") for c in code), f"{name} has unexecuted code cells"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name} carries error outputs"
    mismatches = _figure_mismatches(nb)
    assert not mismatches, f"{name}: figures missing or extra: {mismatches}"


def _first_output_text(nb) -> str:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            return data.get("text/markdown", "") or data.get("text/plain", "") or out.get("text", "")
    return ""


def test_there_are_notebooks():
    assert SOURCES, "no notebooks/NN_name.py sources found"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_published_notebook_is_the_paired_default_run_with_figures_and_provenance(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{source.name} has no paired {ipynb.name}; run `make sync`"
    committed = nbformat.read(ipynb, as_version=4)
    assert not any(_is_injected(c) for c in committed.cells), \
        f"{ipynb.name} carries papermill's injected parameters: publish a run at the source's defaults"
    assert _cells(jupytext.read(source)) == _cells(committed), \
        f"{source.name} and {ipynb.name} differ; run `make reproduce publish` (or `make sync`)"
    _check_executed(committed, ipynb.name)
    code = [c for c in committed.cells if c.cell_type == "code" and c.source.strip()]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{ipynb.name} needs exactly one cell tagged 'parameters' for papermill"
    assert any("NBVAL_CHECK_OUTPUT" in c.source for c in code), \
        f"{ipynb.name} has no cell marked NBVAL_CHECK_OUTPUT: nbval would compare nothing"
    first = _first_output_text(committed)
    assert first.startswith("**Provenance.** profile `default`"), \
        f"{ipynb.name}: the first output should be the default profile's provenance record, got {first[:80]!r}"
    assert "wall time running" not in first and re.search(r"wall time \d+ s", first), \
        f"{ipynb.name}: the provenance record has no wall time (the run did not finish)"
    assert _PLOT_CALL.search(source.read_text()), f"{source.name} draws no figure"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_nbval_reference_is_the_ci_run_of_the_same_source(source):
    ref = REFERENCE_DIR / source.with_suffix(".ipynb").name
    assert ref.exists(), f"no nbval reference {ref.relative_to(ROOT)}; run `make references`"
    nb = nbformat.read(ref, as_version=4)
    assert _cells(jupytext.read(source)) == _cells(nb), \
        f"{ref.relative_to(ROOT)} is not an execution of {source.name}; run `make references`"
    injected = [c for c in nb.cells if _is_injected(c)]
    assert len(injected) == 1 and re.search(r"^profile = \"ci\"$", injected[0].source, re.MULTILINE), \
        f"{ref.name} should be executed with papermill's injected profile = \"ci\""
    assert re.search(r"^results_dir = \"[^\"/][^\"]*\"$", injected[0].source, re.MULTILINE), \
        f"{ref.name}: results_dir must be a relative path (no absolute paths in committed files)"
    _check_executed(nb, ref.name)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_papermill_executes_under_the_ci_profile_with_every_figure_inline(source, tmp_path):
    out = tmp_path / source.with_suffix(".ipynb").name
    pm.execute_notebook(str(source.with_suffix(".ipynb")), str(out), cwd=str(NOTEBOOK_DIR),
                        parameters={"profile": "ci", "results_dir": str(tmp_path)},
                        kernel_name="python3", progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    assert any(_is_injected(c) for c in executed.cells), "papermill found no parameters cell to inject after"
    _check_executed(executed, out.name)
    assert _first_output_text(executed).startswith("**Provenance.** profile `ci`")
    n_calls = len(_PLOT_CALL.findall(source.read_text()))
    figures = sorted((tmp_path / "figures").glob(f"{source.stem[:2]}_*.png"))
    assert len(figures) == n_calls, f"{source.stem} wrote {len(figures)} figures under results_dir/figures, " \
                                    f"expected one per plot call ({n_calls})"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_bad_papermill_parameter_is_refused_clearly(source, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="profile"):
        pm.execute_notebook(str(source.with_suffix(".ipynb")), str(tmp_path / "bad.ipynb"),
                            cwd=str(NOTEBOOK_DIR), parameters={"profile": "huge", "results_dir": str(tmp_path)},
                            kernel_name="python3", progress_bar=False)


def test_figure_count_detects_a_missing_figure():
    """The checker itself: a plot call without its PNG output is reported."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("plots.plot_shift(df);  # one figure")])
    assert _figure_mismatches(nb) == ["cell 0 ('plots.plot_shift(df);  # one figure'): 0 PNG, 1 plot calls"]
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "", "text/plain": ""})]
    assert _figure_mismatches(nb) == []
    json.dumps(nb)  # stays a valid notebook
