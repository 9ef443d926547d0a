"""Where the companion's files live: the checkout, the data and checkpoint roots, the shipped
studies and the results folder. Every default path of the package comes from here.

* the checkout: the directory above the ``ens`` package when it holds ``pyproject.toml`` (a clone,
  or an editable install); otherwise (a plain install) the current directory;
* the data root: an explicit ``root``, else ``$ENS_DATA_DIR``, else ``<checkout>/data``;
* the checkpoint root: an explicit ``root``, else ``$ENS_CHECKPOINT_DIR``, else
  ``<checkout>/data/checkpoints`` (the shipped checkpoints);
* the shipped studies: ``<checkout>/data/studies``; the results: ``<checkout>/results``.

:func:`write_csv` writes a table so that a killed job never leaves half of one behind.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["checkout", "data_root", "checkpoint_root", "studies_dir", "results_dir", "write_csv"]


def checkout() -> Path:
    """The repository the package runs from (see the module docstring)."""
    repo = Path(__file__).resolve().parents[1]
    return repo if (repo / "pyproject.toml").exists() else Path.cwd()


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$ENS_DATA_DIR``, else ``<checkout>/data``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("ENS_DATA_DIR") or checkout() / "data")


def checkpoint_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$ENS_CHECKPOINT_DIR``, else ``<checkout>/data/checkpoints``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("ENS_CHECKPOINT_DIR") or checkout() / "data" / "checkpoints")


def studies_dir() -> Path:
    """The shipped study tables, ``<checkout>/data/studies``."""
    return checkout() / "data" / "studies"


def results_dir() -> Path:
    """The default results folder, ``<checkout>/results``."""
    return checkout() / "results"


def write_csv(df, path: str | os.PathLike) -> None:
    """Write the data frame ``df`` to ``path`` (no index) through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
