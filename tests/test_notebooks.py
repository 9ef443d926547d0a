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

import ast
import json
import re
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest

from ens import notebook

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


def _parameters_and_setup_call(source: Path) -> tuple[list[str], list[str]]:
    """The names the parameters cell assigns, and the arguments the notebook passes to
    ``notebook.setup`` (its two positional ones named ``profile`` and ``results_dir``)."""
    cells = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    cell = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
    names = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    calls = [node for c in cells for node in ast.walk(ast.parse(c.source))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setup"]
    assert len(calls) == 1, f"{source.name} calls notebook.setup {len(calls)} times"
    (call,) = calls
    args = [a.id for a in call.args[1:]] + [k.arg for k in call.keywords if k.arg == k.value.id]
    return names, args


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_papermill_parameter_goes_through_the_checks(source):
    names, args = _parameters_and_setup_call(source)
    assert sorted(args) == sorted(names), f"{source.name}: parameters {names}, checked by setup: {args}"
    assert sorted(names) == sorted(["profile", "results_dir", *notebook.PARAMETERS[source.stem[:2]]])


# one refused parameter per notebook, besides an unknown profile (the CLI's rules: a list is a list,
# not its text; 0 is not "unset"; a flag is a bool)
BAD_PARAMETERS = {
    "01": ({"resolutions": "[32]"}, "expected resolutions to be None or a non-empty list of ints"),
    "02": ({"live_epochs": 0}, "expected live_epochs to be None or a positive int, got 0"),
    "03": ({"families": '["poisson"]'}, "expected families to be None or a list such as"),
    "04": ({"studies": "superres"}, "expected studies to be None or a list such as"),
    "05": ({"questions": "yes"}, "expected questions to be True, False or None, got 'yes'"),
}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
@pytest.mark.parametrize("case", ["profile", "own"])
def test_bad_papermill_parameter_is_refused_clearly(source, case, tmp_path):
    params, message = BAD_PARAMETERS[source.stem[:2]]
    if case == "profile":
        params, message = {"profile": "huge"}, "unknown profile 'huge'; expected one of"
    with pytest.raises(pm.PapermillExecutionError, match=re.escape(message)):
        pm.execute_notebook(str(source.with_suffix(".ipynb")), str(tmp_path / "bad.ipynb"), cwd=str(NOTEBOOK_DIR),
                            parameters={"profile": "ci", "results_dir": str(tmp_path), **params},
                            kernel_name="python3", progress_bar=False)


GOOD = {"01": {"resolutions": None, "k_values": [0.0, 1.0], "seed": 0, "n_samples": 4},
        "02": {"live_family": "helmholtz", "live_epochs": None, "families": None},
        "03": {"families": None, "workers": None},
        "04": {"families": None, "studies": None, "workers": None},
        "05": {"family": "helmholtz", "questions": None}}


@pytest.mark.parametrize("number, bad, message", [
    ("02", {"families": '["poisson"]'}, "expected families to be None or a list such as ['poisson', 'helmholtz'] "
                                        "(papermill: -y 'families: [poisson, helmholtz]'), got the string '[\"poisson\"]'"),
    ("02", {"families": "poisson"}, "got the string 'poisson'"),
    ("02", {"families": []}, "expected families to be None or a non-empty list"),
    ("02", {"families": ["poisson", "heat"]}, "unknown family in families 'heat'; expected one of ['poisson'"),
    ("02", {"families": {"poisson": 1}}, "got dict {'poisson': 1}"),
    ("02", {"live_family": "heat"}, "unknown live_family 'heat'"),
    ("02", {"live_epochs": 0}, "expected live_epochs to be None or a positive int, got 0"),
    ("02", {"live_epochs": 2.5}, "got 2.5"),
    ("02", {"live_epochs": True}, "got True"),
    ("02", {"live_epochs": "3"}, "got '3'"),
    ("03", {"workers": 0}, "expected workers to be None or a positive int, got 0"),
    ("03", {"workers": -2}, "got -2"),
    ("03", {"families": "darcy"}, "got the string 'darcy'"),
    ("04", {"studies": ["zero_shot", "superresolution"]}, "unknown study in studies 'superresolution'"),
    ("04", {"studies": "zero_shot"}, "got the string 'zero_shot'"),
    ("04", {"workers": 1.0}, "got 1.0"),
    ("05", {"family": "heat"}, "unknown family 'heat'"),
    ("05", {"questions": 1}, "expected questions to be True, False or None, got 1"),
    ("01", {"seed": -1}, "expected seed to be a non-negative int, got -1"),
    ("01", {"n_samples": 0}, "expected n_samples to be a positive int, got 0"),
    ("01", {"k_values": "1"}, "expected k_values to be a non-empty list of wavenumbers"),
    ("01", {"k_values": [float("nan")]}, "expected a finite wavenumber k >= 0"),
    ("01", {"resolutions": [3]}, "3"),
])
def test_check_parameters_names_the_wrong_one(number, bad, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        notebook.check_parameters(number, "ci", "results", **{**GOOD[number], **bad})


def test_check_parameters_fills_in_the_defaults():
    from ens.generalization import STUDIES
    from ens.pdes import FAMILIES
    from ens.workers import default_workers
    assert notebook.check_parameters("02", "ci", "r", **GOOD["02"]) == {
        "profile": "ci", "live_family": "helmholtz", "live_epochs": None, "families": list(FAMILIES)}
    p = notebook.check_parameters("04", "ci", "r", **GOOD["04"])
    assert p["studies"] == list(STUDIES) and p["workers"] == default_workers()
    p = notebook.check_parameters("03", "ci", "r", families=("darcy", "poisson", "darcy"), workers=3)
    assert p["families"] == ["darcy", "poisson"] and p["workers"] == 3  # a tuple is a list; repeats dropped
    assert notebook.check_parameters("02", "ci", "r", **{**GOOD["02"], "live_epochs": 4})["live_epochs"] == 4
    with pytest.raises(ValueError, match="expected results_dir to be a folder"):
        notebook.check_parameters("03", "ci", 3, **GOOD["03"])
    with pytest.raises(TypeError, match="notebook 03 has the parameters"):
        notebook.check_parameters("03", "ci", "r", families=None)


def test_figure_count_detects_a_missing_figure():
    """The checker itself: a plot call without its PNG output is reported."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("plots.plot_shift(df);  # one figure")])
    assert _figure_mismatches(nb) == ["cell 0 ('plots.plot_shift(df);  # one figure'): 0 PNG, 1 plot calls"]
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "", "text/plain": ""})]
    assert _figure_mismatches(nb) == []
    json.dumps(nb)  # stays a valid notebook
