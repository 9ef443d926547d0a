"""Publishing a ``make reproduce`` run: the committed notebooks, their result tables and the
README's result tables, all from one execution, so that they cannot drift apart.

``make reproduce`` (profile ``default``) executes every notebook into ``results/``; ``make publish``
(:func:`publish`) then

1. checks that each ``results/NN_name.ipynb`` ran at the notebooks' own defaults (no papermill
   injected parameters: profile ``default``), finished (its provenance record carries a wall time),
   and holds no error output;
2. copies them over ``notebooks/NN_name.ipynb`` (the jupytext pairs a reader opens first);
3. copies the tables the notebooks computed into ``reports/default/`` (:data:`TABLES`);
4. rewrites the README's generated blocks (between ``<!-- generated: NAME -->`` and
   ``<!-- end generated -->``) from those tables with :func:`readme_blocks`.

A test re-renders the blocks from ``reports/default/`` and compares them with the README, so a
retyped number fails ``make test``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pandas as pd

from .experiments import in_distribution_setting
from .methods import LABELS, METHOD_SPECS, METHODS
from .notebook import sig2, sig3
from .paths import checkout

__all__ = ["TABLES", "REPORT_DIR", "publish", "readme_blocks", "render_readme", "check_executed_notebook"]

#: where the published tables live in the checkout
REPORT_DIR = Path("reports") / "default"
#: published table -> where the notebooks of a default run wrote it under results/
TABLES = {
    "02_validation.csv": "02_default/summary.csv",
    "03_summary.csv": "03_default/summary.csv",
    "04_zero_shot.csv": "04_default/zero_shot/summary.csv",
    "04_cross_equation.csv": "04_default/cross_equation/summary.csv",
    "04_superres.csv": "04_default/superres/summary.csv",
    "04_sensitivity.csv": "04_default/sensitivity/choices.csv",
    "times.csv": "times.csv",
}
_BEGIN = re.compile(r"<!-- generated: (\w+) -->\n.*?<!-- end generated -->", re.DOTALL)


def _columns() -> dict[str, str]:
    """The comparison table's method columns (every default method, the reference solver last),
    read from ens.methods when a table is drawn (a registered method is among them)."""
    return {**{m: LABELS[m] for m in METHODS if m != "reference"}, "reference": LABELS["reference"]}


def _competitors() -> tuple[str, ...]:
    """The methods that compete for a table's bold entry: all but the reference solver."""
    return tuple(m for m in METHOD_SPECS if m != "reference")


def check_executed_notebook(path: Path) -> str:
    """The provenance record (first output) of an executed notebook that may be published;
    ``ValueError`` saying what is wrong otherwise."""
    nb = nbformat.read(path, as_version=4)
    if any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise ValueError(f"{path} was executed with papermill parameters; publish only a run at the notebooks' "
                         f"defaults (`make reproduce` with PROFILE=default and RESULTS=results)")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    if errors or not all(c.get("execution_count") for c in code):
        raise ValueError(f"{path} did not execute completely; rerun `make reproduce`")
    first = next((o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", [])), "")
    if not first.startswith("**Provenance.** profile `default`") or not re.search(r"wall time \d+ s", first):
        raise ValueError(f"{path}: its first output is not a finished default-profile provenance record")
    return first


def _bold_min(values: dict[str, float], among) -> str | None:
    finite = {m: v for m, v in values.items() if m in among and v == v}
    return min(finite, key=finite.get) if finite else None


def _setting(row) -> str:
    if row.test_family != row.family:
        return f"{row.family} model → {row.test_family} {row.setting}"
    return f"{row.family} {row.setting}"


def _comparison(summary: pd.DataFrame) -> str:
    columns = _columns()
    lines = ["| setting | " + " | ".join(columns.values()) + " |", "|---" * (len(columns) + 1) + "|"]
    for _, g in summary.groupby(["family", "test_family", "setting"], sort=False):
        by = g.set_index("method")
        best = _bold_min(by.rel_l2.to_dict(), _competitors())
        cells = []
        for m in columns:
            if m not in by.index:
                cells.append("—")
                continue
            text = f"{sig2(by.rel_l2[m])} ({sig2(by.ms_per_sample[m])})"
            cells.append(f"**{text}**" if m == best else text)
        lines.append(f"| {_setting(g.iloc[0])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _validation(table: pd.DataFrame) -> str:
    lines = ["| family | surrogate, ENS's epochs | surrogate, ENS's training time | ENS | surrogate / ENS "
             "| matched surrogate / ENS | α_test, T_test | training: ENS, surrogate, matched surrogate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| `{r.family}` | {sig2(r.surrogate_rel_l2)} | {sig2(r.matched_rel_l2)} | {sig2(r.ens_rel_l2)} | "
                     f"{sig3(r.surrogate_over_ens)} | {sig3(r.matched_over_ens)} | {r.alpha_test:g}, {r.T_test} | "
                     f"{sig3(r.ens_train_min)}, {sig3(r.surrogate_train_min)}, {sig3(r.matched_train_min)} min "
                     f"({r.matched_epochs} epochs) |")
    return "\n".join(lines)


def _generalisation(studies: list[pd.DataFrame], choices: pd.DataFrame) -> str:
    lines = ["| test set | surrogate | surrogate, ENS's training time | ENS, validation α/T | ENS, residual rule "
             "| ENS+ | oracle α/T (test labels)¹ | best other method |", "|---|---|---|---|---|---|---|---|"]
    oracle = {(r.family, r.test_family, str(r.setting)): r.oracle_rel_l2 for r in choices.itertuples()}
    for summary in studies:
        summary = summary.astype({"setting": str})
        for key, g in summary.groupby(["family", "test_family", "setting"], sort=False):
            if g.study.iloc[0] == "zero_shot" and key[2] == in_distribution_setting(key[0]):
                continue  # the in-distribution rows are notebook 03's table
            by = g.set_index("method").rel_l2
            shown = ("surrogate", "surrogate_matched", "ens", "ens_residual", "ens_plus")
            others = {m: v for m, v in by.items() if m not in shown + ("reference",)}
            other = min(others, key=others.get)
            best = _bold_min(by.to_dict(), _competitors())
            text = [f"**{sig2(by.get(m))}**" if m == best else sig2(by.get(m)) for m in shown]
            best_other = f"{LABELS.get(other, other)} {sig2(others[other])}"
            lines.append(f"| {_setting(g.iloc[0])} | " + " | ".join(text) + f" | {sig2(oracle.get(key))} | "
                         + (f"**{best_other}**" if other == best else best_other) + " |")
    return "\n".join(lines)


def _times(times: pd.DataFrame) -> str:
    lines = ["| step | wall time |", "|---|---|"]
    lines += [f"| `{r.notebook}` | {r.seconds:.0f} s |" for r in times.itertuples()]
    return "\n".join(lines)


def readme_blocks(report_dir: Path | None = None) -> dict[str, str]:
    """The README's generated blocks, rendered from the published tables in ``report_dir``
    (default ``reports/default/`` of the checkout)."""
    d = Path(report_dir) if report_dir is not None else checkout() / REPORT_DIR
    return _blocks({name: pd.read_csv(d / name) for name in TABLES})


def _blocks(read: dict[str, pd.DataFrame]) -> dict[str, str]:
    studies = [read[f"04_{study}.csv"].assign(study=study) for study in ("zero_shot", "cross_equation", "superres")]
    return {"validation": _validation(read["02_validation.csv"]), "comparison": _comparison(read["03_summary.csv"]),
            "generalisation": _generalisation(studies, read["04_sensitivity.csv"]),
            "times": _times(read["times.csv"])}


def render_readme(text: str, blocks: dict[str, str]) -> str:
    """``text`` with every generated block replaced by ``blocks[name]``; ``ValueError`` for a block
    name without a table or a table without its block."""
    found = set(_BEGIN.findall(text))
    if found != set(blocks):
        raise ValueError(f"README generated blocks {sorted(found)} do not match the tables {sorted(blocks)}")
    return _BEGIN.sub(lambda m: f"<!-- generated: {m.group(1)} -->\n{blocks[m.group(1)]}\n<!-- end generated -->",
                      text)


def _times_table(results: Path) -> pd.DataFrame:
    rows = []
    for line in (results / "times.txt").read_text().splitlines():
        name, seconds, _unit = line.split()
        rows.append({"notebook": name, "seconds": int(seconds)})
    return pd.DataFrame(rows)


def publish(results_dir="results", repo: Path | None = None, log=print) -> None:
    """Publish a finished default-profile ``make reproduce`` run from ``results_dir`` (module docstring)."""
    repo = Path(repo) if repo is not None else checkout()
    results = Path(results_dir)
    sources = sorted((repo / "notebooks").glob("[0-9][0-9]_*.py"))
    executed = [results / s.with_suffix(".ipynb").name for s in sources]
    missing = [str(p) for p in executed if not p.exists()] + [str(results / t) for t in TABLES.values()
                                                              if t != "times.csv" and not (results / t).exists()]
    if missing or not (results / "times.txt").exists():
        raise FileNotFoundError(f"nothing to publish: missing {missing or [str(results / 'times.txt')]}; "
                                f"run `make reproduce` first")
    for path in executed:
        check_executed_notebook(path)
    # everything is read and rendered before anything is written
    tables = {name: _times_table(results) if rel == "times.csv" else pd.read_csv(results / rel)
              for name, rel in TABLES.items()}
    readme = repo / "README.md"
    text = render_readme(readme.read_text(), _blocks(tables))
    out = repo / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
    readme.write_text(text)
    for src, path in zip(sources, executed):
        shutil.copyfile(path, src.with_suffix(".ipynb"))
    log(f"published {len(executed)} notebooks, {len(TABLES)} tables in {out} and the README's result tables")
