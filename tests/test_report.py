"""Publishing (ens.report): the README's result tables are rendered from the committed tables of
the published run, and only a finished default-profile run at the notebooks' defaults is published."""

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from ens.report import REPORT_DIR, TABLES, check_executed_notebook, publish, readme_blocks, render_readme

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_are_the_published_tables():
    """A number retyped in the README (or a table published without its README update) fails here."""
    readme = (ROOT / "README.md").read_text()
    assert render_readme(readme, readme_blocks()) == readme, \
        "README result tables differ from reports/default/; run `make publish` after `make reproduce`"


def test_published_tables_are_complete():
    for name in TABLES:
        table = pd.read_csv(ROOT / REPORT_DIR / name)
        assert len(table) > 0, name
    comparison = pd.read_csv(ROOT / REPORT_DIR / "03_summary.csv")
    assert set(comparison.family) == {"poisson", "helmholtz", "nonlinear_helmholtz", "darcy", "navier_stokes",
                                      "kolmogorov"}
    assert comparison.rel_l2.notna().all() and (comparison.ms_per_sample > 0).all()


def test_render_readme_replaces_only_the_generated_blocks():
    text = "# T\n<!-- generated: a -->\nold\n<!-- end generated -->\nkept\n"
    assert render_readme(text, {"a": "| new |"}) == "# T\n<!-- generated: a -->\n| new |\n<!-- end generated -->\nkept\n"
    with pytest.raises(ValueError, match="do not match"):
        render_readme(text, {"a": "x", "b": "y"})


def _notebook(tmp_path, first_output: str, injected: bool = False) -> Path:
    cell = nbformat.v4.new_code_cell("nb = notebook.setup('01', profile, results_dir)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": first_output, "text/plain": ""})]
    cells = [cell]
    if injected:
        cells.insert(0, nbformat.v4.new_code_cell('profile = "ci"', execution_count=1,
                                                  metadata={"tags": ["injected-parameters"]}))
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_only_a_finished_default_run_at_the_defaults_is_publishable(tmp_path):
    done = "**Provenance.** profile `default` · commit `abc` · wall time 12 s"
    assert check_executed_notebook(_notebook(tmp_path, done)) == done
    with pytest.raises(ValueError, match="papermill parameters"):
        check_executed_notebook(_notebook(tmp_path, done, injected=True))
    with pytest.raises(ValueError, match="finished default-profile provenance"):
        check_executed_notebook(_notebook(tmp_path, done.replace("12 s", "running…")))
    with pytest.raises(ValueError, match="finished default-profile provenance"):
        check_executed_notebook(_notebook(tmp_path, done.replace("`default`", "`ci`")))


def test_publish_copies_notebooks_tables_and_rewrites_the_readme(tmp_path):
    repo, results = tmp_path / "repo", tmp_path / "results"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "notebooks" / "01_x.py").write_text("# %%\n")
    readme = "\n\n".join(f"<!-- generated: {n} -->\nstale\n<!-- end generated -->" for n in readme_blocks())
    (repo / "README.md").write_text(readme)
    with pytest.raises(FileNotFoundError, match="run `make reproduce` first"):
        publish(results, repo=repo, log=lambda msg: None)
    for name, rel in TABLES.items():
        if rel != "times.csv":
            (results / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / REPORT_DIR / name, results / rel)
    (results / "times.txt").write_text("01_x 12 s\ntotal 12 s\n")
    nb = _notebook(results, "**Provenance.** profile `default` · wall time 12 s")
    publish(results, repo=repo, log=lambda msg: None)
    assert (repo / "notebooks" / "01_x.ipynb").read_bytes() == nb.read_bytes()
    assert "stale" not in (repo / "README.md").read_text()
    assert "| `01_x` | 12 s |" in (repo / "README.md").read_text()
    assert pd.read_csv(repo / REPORT_DIR / "times.csv").seconds.tolist() == [12, 12]
