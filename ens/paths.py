"""Where the companion's files live: the checkout, the data and checkpoint roots, the shipped
studies and the results folder. Every default path of the package comes from here.

* the checkout: the directory above the ``ens`` package when it holds ``pyproject.toml`` (a clone,
  or an editable install); otherwise (a plain install) the current directory;
* the data root: an explicit ``root``, else ``$ENS_DATA_DIR``, else ``<checkout>/data``;
* the checkpoint root: an explicit ``root``, else ``$ENS_CHECKPOINT_DIR``, else
  ``<checkout>/data/checkpoints`` (the shipped checkpoints);
* the shipped studies: ``<checkout>/data/studies``; the results: ``<checkout>/results``.

:func:`write_csv` and :func:`write_json` write a file so that a killed job never leaves half of one
behind (temporary name, fsync, rename); :func:`locked` serialises the read-modify-write of a manifest
between processes; :func:`sha256sum` is the checksum of the data and checkpoint manifests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

__all__ = ["checkout", "data_root", "checkpoint_root", "studies_dir", "results_dir", "write_csv", "write_json",
           "locked", "fsync_path", "sha256sum"]


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


def sha256sum(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(folder: str | os.PathLike, name: str = ".manifest.lock"):
    """An exclusive lock (``flock`` on ``folder/name``), held for the block."""
    with open(Path(folder) / name, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def write_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented, key-sorted JSON through a temporary file, fsync and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
