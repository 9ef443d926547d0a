"""The one set-up call of every notebook: checked parameters, output folders, the plot style,
inline figures, and a provenance record as the notebook's first output.

A notebook starts with::

    nb = notebook.setup("03", profile, results_dir, families=families, workers=workers)
    families, workers = nb.params["families"], nb.params["workers"]   # checked, None filled in
    ...
    plots.plot_error_vs_time(frame, path=nb.figure("error_vs_time"));
    ...
    nb.finish()                                         # adds the wall time to the first output

The provenance record says which commit (and which uncommitted files, if any), when, which
profile, on which machine and with which library versions the outputs were computed; ``finish``
updates that first output in place with the notebook's wall time (``update_display``, which
Jupyter and papermill's executor both apply), so a reader of the executed notebook sees it before
any result.

Figures are shown inline *and* saved under ``<results_dir>/figures/``. The set-up call switches a
kernel to the inline backend even when ``MPLBACKEND`` names a non-interactive one (a kernel started
with ``MPLBACKEND=agg`` would otherwise show no figure at all).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import plots
from .checks import check_choice, check_choices, check_optional_int
from .experiments import PROFILES
from .paths import checkout
from .workers import default_workers, tune_allocator

__all__ = ["Notebook", "setup", "check_parameters", "provenance", "sig2", "sig3", "machine_stable", "PUBLISHED_PATHS"]

#: files that ``make publish`` rewrites after an execution; changes to them do not make the
#: recorded commit "dirty" (they are the outputs, not the code that computed them)
PUBLISHED_PATHS = ("notebooks/*.ipynb", "reports/", "README.md")


def sig3(x) -> str:
    """Three significant figures, keeping trailing zeros (1.00, 0.240, 119, 6.51e+12); "—" for NaN/None."""
    return f"{x:#.3g}".rstrip(".") if x is not None and x == x else "—"


def sig2(x) -> str:
    """Two significant figures: the precision of the tables nbval checks (float32 iterative
    methods run with another thread count or CPU round differently in the third digit)."""
    return f"{x:#.2g}".rstrip(".") if x is not None and x == x else "—"


#: relative residuals below this are float32 round-off: their digits are the CPU's, not the method's
#: (Newton's nonlinear Helmholtz residual at the ``ci`` profile: 5.3e-06 with AVX2 kernels, 5.7e-06
#: with AVX-512; the float64 reference solver's 2.6e-14 against 2.7e-14)
ROUNDOFF_RESIDUAL = 1e-5


def machine_stable(table, column: str = "family"):
    """``(stable, chaotic)``: the rows of ``table`` whose family (``column``) generates the same data
    on every machine, for a checked table, and the rows of chaotic families
    (:attr:`ens.pdes.PDE.chaotic`), whose digits depend on the CPU and are shown unchecked."""
    from .pdes import FAMILIES
    chaotic = table[column].map(lambda f: FAMILIES[f][0].chaotic).astype(bool)
    return table[~chaotic], table[chaotic]


def residual2(x) -> str:
    """:func:`sig2`, except that a relative residual below :data:`ROUNDOFF_RESIDUAL` prints as
    ``"<1e-05"``, so a checked table does not depend on the CPU's vector width."""
    return f"<{ROUNDOFF_RESIDUAL:.0e}" if x is not None and x == x and x < ROUNDOFF_RESIDUAL else sig2(x)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=checkout(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.rstrip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(profile: str) -> dict:
    """Where the outputs come from: commit, uncommitted code files, UTC date, profile, machine
    (CPU model and cores, torch threads, GPU if any), Python, torch and neuraloperator versions."""
    import neuralop

    commit = _git("rev-parse", "--short=12", "HEAD")
    changed = []
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no") or ""
        published = [p.rstrip("/") for p in PUBLISHED_PATHS]
        for line in status.splitlines():
            path = line[3:].split(" -> ")[-1]
            if not any(Path(path).match(p) or path.startswith(p + "/") or path == p for p in published):
                changed.append(path)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"commit": commit or "unknown (not a git checkout)", "uncommitted": changed,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "profile": profile,
            "machine": f"{_cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
                       f"{default_workers()} worker processes for the method runs"
                       + (f", GPU {gpu}" if gpu else ", no GPU"),
            "python": platform.python_version(), "torch": torch.__version__, "neuraloperator": neuralop.__version__}


def _markdown(record: dict, wall_time_s: float | None) -> str:
    changed = record["uncommitted"]
    code = record["commit"] + (f" with uncommitted changes to {', '.join(changed[:4])}"
                               + (f" and {len(changed) - 4} more files" if len(changed) > 4 else "")
                               if changed else "")
    wall = f"{wall_time_s:.0f} s" if wall_time_s is not None else "running…"
    return (f"**Provenance.** profile `{record['profile']}` · commit `{code}` · {record['date']} · "
            f"{record['machine']} · Python {record['python']}, torch {record['torch']}, "
            f"neuraloperator {record['neuraloperator']} · wall time {wall}")


@dataclass
class Notebook:
    """What :func:`setup` returns: the notebook's number, profile, folders and provenance."""

    number: str
    profile: str
    results_dir: Path
    record: dict
    params: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    _display: object = None

    @property
    def figures(self) -> Path:
        return self.results_dir / "figures"

    def figure(self, name: str) -> Path:
        """Path of a figure of this notebook: ``<results_dir>/figures/<number>_<name>.png``."""
        return self.figures / f"{self.number}_{name}.png"

    def tables(self) -> Path:
        """This notebook's table folder ``<results_dir>/<number>_<profile>/``."""
        return self.results_dir / f"{self.number}_{self.profile}"

    def cache(self) -> Path:
        """The evaluation cache shared by every notebook, ``<results_dir>/cache/`` (see
        :func:`ens.evaluate.evaluate_profile`: content-keyed, never stale)."""
        return self.results_dir / "cache"

    def finish(self) -> float:
        """Print the wall time and write it into the provenance output; returns it in seconds."""
        elapsed = time.perf_counter() - self.started
        if self._display is not None:
            from IPython.display import Markdown
            self._display.update(Markdown(_markdown(self.record, elapsed)))
        print(f"notebook run time: {elapsed:.0f} s")
        return elapsed


def _families(value, name):
    from .pdes import FAMILIES
    return check_choices(name, value, FAMILIES, "family") or list(FAMILIES)


def _family(value, name):
    from .pdes import FAMILIES
    check_choice(name, value, FAMILIES)
    return value


def _studies(value, name):
    from .generalization import STUDIES
    return check_choices(name, value, STUDIES, "study") or list(STUDIES)


def _workers(value, name):
    return check_optional_int(value, name) or default_workers()


def _flag(value, name):
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"expected {name} to be True, False or None, got {value!r}")
    return value


#: every notebook's papermill parameters besides ``profile`` and ``results_dir``, each with its
#: check (the CLI's rules: a family is one of ens.pdes.FAMILIES, a list is a list and not its text,
#: a count is a positive int, ``None`` is the only "unset"); notebook 01's go through
#: :func:`ens.theory.resolve_parameters`
PARAMETERS = {
    "01": ("resolutions", "k_values", "seed", "n_samples"),
    "02": {"live_family": _family, "live_epochs": check_optional_int, "families": _families},
    "03": {"families": _families, "workers": _workers},
    "04": {"families": _families, "studies": _studies, "workers": _workers},
    "05": {"family": _family, "questions": _flag},
}


def check_parameters(number: str, profile: str, results_dir, **params) -> dict:
    """The parameters of notebook ``number`` checked, with ``None`` filled in where it means a
    default (all families, all studies, :func:`ens.workers.default_workers`); ``ValueError`` (or
    ``TypeError``) names the first wrong one, what was expected and what was given."""
    check_choice("notebook", number, PARAMETERS)
    check_choice("profile", profile, PROFILES)
    if not isinstance(results_dir, (str, os.PathLike)) or not str(results_dir):
        raise ValueError(f"expected results_dir to be a folder (a non-empty string or path), got {results_dir!r}")
    expected = PARAMETERS[number]
    if set(params) != set(expected):
        raise TypeError(f"notebook {number} has the parameters {sorted(expected)}, setup got {sorted(params)}")
    if number == "01":
        from .theory import resolve_parameters
        return resolve_parameters(profile, **params)
    return {"profile": profile, **{name: check(params[name], name) for name, check in expected.items()}}


def setup(number: str, profile: str, results_dir, **params) -> Notebook:
    """Check the notebook's parameters (:func:`check_parameters`; the result is ``nb.params``),
    create ``<results_dir>/figures``, apply the plot style, switch to inline figures and display
    the provenance record (updated by :meth:`Notebook.finish`)."""
    checked = check_parameters(number, profile, results_dir, **params)
    tune_allocator()
    nb = Notebook(number, profile, Path(results_dir), provenance(profile), checked)
    nb.figures.mkdir(parents=True, exist_ok=True)
    plots.set_style()
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        shell.run_line_magic("matplotlib", "inline")  # even if MPLBACKEND names a non-interactive one
    if shell is not None:
        nb._display = display(Markdown(_markdown(nb.record, None)), display_id=True)
    else:
        print(_markdown(nb.record, None))
    return nb
