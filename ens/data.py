"""Datasets on disk: generation, HDF5 files, a checksummed manifest, verification, a torch Dataset.

Layout under the data root (argument ``root``, else the environment variable ``ENS_DATA_DIR``,
else ``data/`` at the repository root)::

    <root>/<profile>/manifest.json                      sha256, size, spec and PDE parameters of every file
    <root>/<profile>/<family>/<split>_<setting>.h5      one ens.experiments.DatasetSpec each

File format: ``inputs (N, C_in, S, S)`` and ``solutions (N, C_out, S, S)``, float32, uncompressed,
HDF5-chunked one sample per chunk (reading a sample reads one chunk); root attributes ``spec``
(JSON of the spec), ``params`` (JSON of all PDE parameters), ``seed``, ``resolution``,
``generator_version``, ``ens_version``, ``torch_version`` and ``device``. Objects are created
without modification times (``track_times=False``), so generating a spec twice gives
byte-identical files with the same torch version on the same device type.

Generation. Chunk ``i`` of a spec holds samples ``[i c, (i + 1) c)`` (``c = spec.chunk_size``),
drawn with ``pde.sample_inputs`` from a ``torch.Generator`` seeded with ``chunk_seed(spec.seed,
i)`` and solved with ``pde.solve`` in float64, then stored as float32. A file is written to
``<name>.h5.<pid>.tmp``, flushed to disk (fsync), renamed over ``<name>.h5`` and only then entered
in the manifest, which is itself rewritten atomically (temporary file, fsync, rename) under a lock.
Each file is generated under its own lock (``.<family>__<name>.h5.lock`` in the profile folder), so
two runs on one root never write the same file at once. A run killed at any point leaves complete,
recorded files, stale ``.tmp`` files (removed by the next run that takes the file's lock) and at
most one complete file not yet recorded; a rerun keeps every file whose sha256 matches
the manifest and regenerates the others from scratch. Since a file depends only on its spec,
the interrupted and resumed run ends with the same checksums as an uninterrupted one. A file
whose checksum does not match the manifest is *corrupt*: it is reported and never used or
overwritten unless ``repair=True`` (``ens data generate --repair``).

Verification recomputes every checksum and, in float64 from the stored float32 data, the
relative residual of every sample (:func:`relative_residuals`), and compares it with a
tolerance that says why the residual is not zero:

* elliptic families (``||R|| / ||f||`` on the interior nodes): storing ``u`` and ``f`` in
  float32 perturbs them by at most ``2^-24`` relative, which moves the residual by at most
  ``2^-24 (||A|| ||u|| + ||f||)``, with ``||A|| <= 8 a_max / h^2 + 3 |lam| max u^2`` (``PDE.operator_norm_bound``) for the
  5-point operators (``a_max = 1`` except for Darcy's permeability); the tolerance is that
  bound times 1.1 plus ``ELLIPTIC_SOLVER_RTOL`` for the solvers themselves. It is a worst case:
  the largest residual of a file is 4 -- 6 times below it (ci and default sets), while scaling
  ``u`` by 1.01 exceeds it 19x (Helmholtz k = 4, the least sensitive), 52x (Darcy), 100x (Poisson)
  at S = 64.
* Navier--Stokes / Kolmogorov (``||R|| / ||N(w)||`` over the snapshots): the trapezoidal-in-time
  residual does not vanish on the reference trajectory (:mod:`ens.pdes.navier_stokes`); on
  each snapshot interval it is the truncation error ``-dt^2 / 12 d^3w/dt^3``, which the stored
  trajectory itself estimates by its third differences, ``E_j = (w_{j+2} - 3 w_{j+1} + 3 w_j -
  w_{j-1}) / (12 dt)`` (the end intervals take their neighbour's). The floor is bursty (on the
  Kolmogorov sets ``||R|| / ||N||`` ranges from 1e-3 to 2e-2 between samples), so a fixed
  tolerance would either fail good samples or pass wrong ones; instead each sample must satisfy
  ``||R|| <= TRUNCATION_FACTOR ||E|| + 4 * 2^-24 ||w|| / dt`` (the last term: float32 storage
  of the snapshots). Measured ``||R|| / ||E||``: 1.01 -- 1.10 on every ci and default set;
  data solved with a viscosity off by 1.5x gives >= 4.9.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .experiments import DatasetSpec
from .paths import data_root, fsync_path, locked, sha256sum, write_json
from .pdes import PDE

__all__ = ["GENERATOR_VERSION", "ELLIPTIC_SOLVER_RTOL", "TRUNCATION_FACTOR", "chunk_seed", "chunk_inputs", "sha256sum",
           "read_manifest", "generate_file", "generation_cost", "generate", "relative_residuals", "FileReport",
           "file_status", "verify", "PDEDataset", "CorruptDataError", "load_dataset"]

#: version of the generation algorithm; bump it when the bytes a spec generates change
GENERATOR_VERSION = 1
#: solver term of the elliptic tolerance: above Newton's stop at ||R|| <= 1e-10 ||f|| and above
#: the float64 round-off of the DST and sparse direct solves (~1e-13)
ELLIPTIC_SOLVER_RTOL = 1e-9
#: time-dependent families: allowed ||R|| / (third-difference estimate of the truncation error),
#: measured 1.01 -- 1.10 on the ci and default sets (see the module docstring); 1.5 leaves
#: margin for the larger paper sets and still fails a viscosity off by 1.5x (ratio >= 4.9)
TRUNCATION_FACTOR = 1.5
MANIFEST = "manifest.json"
_F32_EPS = 2.0 ** -24  # unit round-off of float32: |fl(x) - x| <= 2^-24 |x|
#: why a present file is not usable, per file_status value
_WHY = {"unrecorded": "not in the manifest",
        "stale": "recorded for another spec, other PDE parameters or another generator version",
        "corrupt": "sha256 differs from the manifest"}


class CorruptDataError(RuntimeError):
    """A dataset file that is missing from the manifest, stale or fails its checksum."""


def chunk_seed(seed: int, index: int) -> int:
    """Seed of chunk ``index`` of a spec with seed ``seed``: 8 bytes of ``sha256("seed/index")``, 63 bits."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:8], "big") >> 1


def chunk_inputs(pde: PDE, S: int, seed: int, index: int, n: int, device="cpu") -> torch.Tensor:
    """The ``n`` inputs of chunk ``index`` of a spec with seed ``seed`` (float64), as
    :func:`generate_file` draws them. The draws can depend on ``n``: the first Poisson samples of
    ``n = 1`` or ``3`` differ from those of ``n = 16`` (measured), so a file's sample is reproduced by
    drawing its whole chunk."""
    g = torch.Generator().manual_seed(chunk_seed(seed, index))
    return pde.sample_inputs(n, S, g, dtype=torch.float64, device=device)


# ---- manifest ---------------------------------------------------------------------------------
def read_manifest(profile_dir: Path) -> dict:
    """The manifest ``{"files": {relative path: entry}}`` of a profile directory (empty if absent)."""
    path = Path(profile_dir) / MANIFEST
    if not path.exists():
        return {"files": {}}
    fix = "delete it and rerun `ens data generate` to rebuild it (every file is then regenerated)"
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptDataError(f"{path} is not valid JSON ({err}); {fix}") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CorruptDataError(f"{path} is not a dataset manifest (expected an object with a \"files\" "
                               f"object); {fix}")
    for name, entry in manifest["files"].items():
        kinds = {"sha256": str, "bytes": int, "spec": dict, "generator_version": int}
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in kinds.items()):
            raise CorruptDataError(f"{path}: the entry of {name!r} lacks one of {sorted(kinds)} (expected what "
                                   f"`ens data generate` records); {fix}")
    return manifest


def _record(profile_dir: Path, spec: DatasetSpec, entry: dict) -> None:
    """Set a file's manifest entry; the manifest is rewritten atomically, under a lock."""
    with locked(profile_dir):
        manifest = read_manifest(profile_dir)
        manifest["profile"] = spec.profile
        manifest["files"][spec.path] = entry
        write_json(manifest, profile_dir / MANIFEST)


# ---- generation -------------------------------------------------------------------------------
def generate_file(spec: DatasetSpec, path: str | os.PathLike, device="cpu", progress: bool | None = None) -> None:
    """Generate ``spec`` into the HDF5 file ``path`` (via ``<path>.<pid>.tmp``, fsync and rename).

    The temporary file is removed if generation raises. ``progress=None`` shows a tqdm bar on a
    terminal only.
    """
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"expected a folder for the {spec.family} datasets, found a file "
                                 f"(move it away)", str(path.parent))
    path.parent.mkdir(parents=True, exist_ok=True)
    pde, S, n = spec.pde(), spec.resolution, spec.n_samples
    need = 4 * n * (pde.in_channels + pde.out_channels) * S * S * 1.02 + 2 ** 20  # the data, chunk index, header
    free = shutil.disk_usage(path.parent).free
    if free < need:  # HDF5 cannot recover from a full disk (h5py crashes at exit), so refuse before writing
        raise OSError(errno.ENOSPC, f"no space left for {spec.path}: it needs about {need / 2 ** 20:.2f} MiB, "
                      f"{free / 2 ** 20:.2f} MiB are free; free some or choose another data root (--root)",
                      str(path.parent))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # a concurrent run writes its own
    attrs = {"spec": spec.to_json(), "params": json.dumps(pde.params, sort_keys=True), "seed": spec.seed,
             "resolution": S, "generator_version": GENERATOR_VERSION, "ens_version": __version__,
             "torch_version": str(torch.__version__), "device": torch.device(device).type}
    try:
        with h5py.File(tmp, "w") as f:
            for key, val in attrs.items():
                f.attrs[key] = val
            dsets = [f.create_dataset(name, (n, ch, S, S), dtype="<f4", chunks=(1, ch, S, S), track_times=False)
                     for name, ch in (("inputs", pde.in_channels), ("solutions", pde.out_channels))]
            with tqdm(total=n, desc=spec.path, unit="sample", disable=None if progress is None else not progress,
                      leave=False) as bar:
                for i, start in enumerate(range(0, n, spec.chunk_size)):
                    m = min(spec.chunk_size, n - start)
                    c = chunk_inputs(pde, S, spec.seed, i, m, device)
                    u = pde.solve(c)
                    for dset, x in zip(dsets, (c, u)):
                        dset[start:start + m] = x.to(torch.float32).cpu().numpy()
                    bar.update(m)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_status(spec: DatasetSpec, root=None, manifest: dict | None = None, check_hash: bool = True) -> str:
    """State of a spec's file: ``"ok"``, ``"missing"``, ``"unrecorded"`` (no manifest entry),
    ``"stale"`` (recorded for another spec, other PDE parameters -- e.g. a changed family
    default -- or another generator version) or ``"corrupt"`` (sha256, or
    without ``check_hash`` the size, differs from the manifest)."""
    profile_dir = data_root(root) / spec.profile
    path = profile_dir / spec.path
    if not path.exists():
        return "missing"
    if not path.is_file():
        raise CorruptDataError(f"{path} is not a file (expected the HDF5 file of {spec.path}); move it away and "
                               f"rerun `ens data generate --profile {spec.profile}`")
    entry = (manifest if manifest is not None else read_manifest(profile_dir))["files"].get(spec.path)
    if entry is None:
        return "unrecorded"
    if (entry["spec"] != spec.to_dict() or entry.get("params") != spec.pde().params
            or entry["generator_version"] != GENERATOR_VERSION):
        return "stale"
    if path.stat().st_size != entry["bytes"] or (check_hash and sha256sum(path) != entry["sha256"]):
        return "corrupt"
    return "ok"


def generation_cost(spec: DatasetSpec) -> float:
    """Estimated seconds to generate ``spec`` on one core: the family's
    :attr:`~ens.pdes.PDE.generation_cost` per sample at S = 64, times the samples and the grid's
    cells relative to 64 x 64."""
    return spec.pde().generation_cost * spec.n_samples * (spec.resolution / 64) ** 2


def _generate_job(job: tuple) -> float | None:
    """Generate one spec's file and record it in the manifest; returns the seconds it took, or None
    when a concurrent run on the same data root wrote it meanwhile (the file is locked while it is
    generated, so the second run waits for the first and then keeps its file)."""
    spec, root, device, progress, repair = job
    t0 = time.perf_counter()
    profile_dir = data_root(root) / spec.profile
    path = profile_dir / spec.path
    profile_dir.mkdir(parents=True, exist_ok=True)
    with locked(profile_dir, f".{spec.path.replace('/', '__')}.lock"):
        for stale in path.parent.glob(f"{path.name}.*.tmp"):  # left by a killed run: nobody else holds the lock
            stale.unlink(missing_ok=True)
        status = file_status(spec, root)
        if status == "ok" or (status == "corrupt" and not repair):
            return None
        generate_file(spec, path, device=device, progress=progress)
        _record(profile_dir, spec, {"sha256": sha256sum(path), "bytes": path.stat().st_size,
                                    "spec": spec.to_dict(), "params": spec.pde().params,
                                    "generator_version": GENERATOR_VERSION,
                                    "device": torch.device(device).type, "torch_version": str(torch.__version__)})
    return time.perf_counter() - t0


def generate(specs: Iterable[DatasetSpec], *, root=None, repair: bool = False, device="cpu",
             progress: bool | None = None, workers: int = 1,
             log: Callable[[str], None] | None = None) -> dict[DatasetSpec, str]:
    """Generate every missing, unrecorded or stale dataset of ``specs`` (e.g. ``datasets("ci")``).

    Files whose checksum matches the manifest are kept. Corrupt files are regenerated only with
    ``repair=True``; otherwise they are left untouched and reported as ``"refused"``.
    Returns ``{spec: action}`` with action ``"kept"``, ``"generated"``,
    ``"regenerated"`` (stale or unrecorded), ``"repaired"`` or ``"refused"``; ``log`` receives
    a line per file and a summary per family. ``workers > 1`` generates the files in that many
    processes of one torch thread each (:func:`ens.workers.map_jobs`; the bytes do not depend on
    the thread count, and the manifest is updated under a lock). Runs on one data root may overlap:
    each file is generated under its own lock, so a second run waits for it and keeps it.
    """
    from .workers import map_jobs
    log = log or (lambda msg: None)
    specs = list(specs)
    actions, totals, todo = {}, {}, []
    for k, spec in enumerate(specs, 1):
        status = file_status(spec, root)
        tag = f"[{k}/{len(specs)}] {spec.path}"
        if status == "ok":
            actions[spec] = "kept"
            log(f"{tag}: ok (checksum matches the manifest), kept")
        elif status == "corrupt" and not repair:
            actions[spec] = "refused"
            log(f"{tag}: CORRUPT (checksum differs from the manifest); not used or overwritten: "
                f"rerun with --repair to regenerate it")
        else:
            todo.append((tag, spec, status))
    def done(item, dt):
        tag, spec, status = item
        path = data_root(root) / spec.profile / spec.path
        if dt is None:
            actions[spec] = "kept"
            log(f"{tag}: written by a concurrent run on this data root meanwhile (checksum matches), kept")
            return
        actions[spec] = {"missing": "generated", "corrupt": "repaired"}.get(status, "regenerated")
        n, total = totals.get(spec.family, (0, 0.0))
        totals[spec.family] = (n + spec.n_samples, total + dt)
        log(f"{tag}: {actions[spec]} ({status} before), {spec.n_samples} samples at "
            f"S={spec.resolution}, {path.stat().st_size / 2 ** 20:.1f} MiB, {dt:.1f} s")

    if workers == 1:  # one file after the other, each reported when it is written
        for item in todo:
            done(item, _generate_job((item[1], root, device, progress, repair)))
    else:  # the longest first, so that no worker is left alone with a long file at the end
        todo.sort(key=lambda item: -generation_cost(item[1]))
        jobs = [(spec, root, device, False, repair) for _, spec, _ in todo]
        for item, dt in zip(todo, map_jobs(_generate_job, jobs, workers=workers, threads=1)):
            done(item, dt)
    for fam, (n, total) in totals.items():
        log(f"{fam}: generated {n} samples in {total:.1f} s")
    return actions


# ---- verification -----------------------------------------------------------------------------
def relative_residuals(pde: PDE, c: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample relative residual ``||R(u; c)|| / scale`` and its tolerance, both ``(B,)`` float64.

    ``c`` and ``u`` are the stored (float32) data; the residual is evaluated in float64. The
    scale and tolerance are described in the module docstring.
    """
    c, u = c.double(), u.double()
    res = pde.residual(u, c).flatten(1).norm(dim=1)
    if pde.periodic:
        w, dt = torch.cat([c, u], dim=1), pde.dt_snapshot
        if w.shape[1] < 4:
            raise ValueError(f"the truncation estimate needs >= 3 snapshots, got {u.shape[1]}")
        d3 = w[:, 3:] - 3 * w[:, 2:-1] + 3 * w[:, 1:-2] - w[:, :-3]
        trunc = torch.cat([d3[:, :1], d3, d3[:, -1:]], dim=1).flatten(1).norm(dim=1) / (12 * dt)
        scale = pde.tendency(u).flatten(1).norm(dim=1)
        tol = TRUNCATION_FACTOR * trunc + 4 * _F32_EPS * w.flatten(1).norm(dim=1) / dt
        return res / scale, tol / scale
    f = c[:, -1, 1:-1, 1:-1].flatten(1)  # the forcing is the last input channel
    scale = f.norm(dim=1)
    storage = pde.operator_norm_bound(c, u) * u.flatten(1).norm(dim=1) / scale + 1
    tol = 1.1 * _F32_EPS * storage + ELLIPTIC_SOLVER_RTOL
    return res / scale, tol


@dataclass(frozen=True)
class FileReport:
    """Outcome of verifying one file: ``status`` is ``"ok"``, a :func:`file_status` value,
    ``"residual"`` (a sample exceeds its tolerance) or ``"unreadable"``."""

    path: str
    status: str
    max_residual: float = math.nan  # largest relative residual of a sample
    tolerance: float = math.nan     # largest per-sample tolerance
    worst_ratio: float = math.nan   # largest residual / tolerance of a sample (<= 1 passes)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _verify_file(spec: DatasetSpec, path: Path) -> FileReport:
    pde = spec.pde()
    worst, worst_ratio, tol_max = 0.0, 0.0, 0.0
    try:
        with h5py.File(path, "r") as f:
            if f.attrs["spec"] != spec.to_json():
                return FileReport(spec.path, "stale", message="the file's spec attribute differs from the config")
            for start in range(0, spec.n_samples, spec.chunk_size):
                sl = slice(start, start + spec.chunk_size)
                rel, tol = relative_residuals(pde, torch.from_numpy(f["inputs"][sl]),
                                              torch.from_numpy(f["solutions"][sl]))
                worst = max(worst, float(rel.max()))
                worst_ratio = max(worst_ratio, float((rel / tol).max()))
                tol_max = max(tol_max, float(tol.max()))
    except (OSError, KeyError, ValueError) as err:
        return FileReport(spec.path, "unreadable", message=f"{type(err).__name__}: {err}")
    if not worst_ratio <= 1.0:
        return FileReport(spec.path, "residual", worst, tol_max, worst_ratio,
                          f"a sample's relative residual exceeds its tolerance by {worst_ratio:.3g}x")
    return FileReport(spec.path, "ok", worst, tol_max, worst_ratio)


def verify(specs: Iterable[DatasetSpec], *, root=None, progress: bool | None = None) -> list[FileReport]:
    """Recompute the checksum and the residual of every dataset of ``specs`` (e.g. ``datasets("ci")``)."""
    reports = []
    for spec in tqdm(list(specs), desc="verify", unit="file", disable=None if progress is None else not progress):
        status = file_status(spec, root)
        if status == "ok":
            reports.append(_verify_file(spec, data_root(root) / spec.profile / spec.path))
        elif status == "missing":
            reports.append(FileReport(spec.path, status, message="no such file: run `ens data generate`"))
        else:
            fix = "ens data generate --repair" if status == "corrupt" else "ens data generate"
            reports.append(FileReport(spec.path, status, message=f"{_WHY[status]}: `{fix}` regenerates it"))
    return reports


# ---- torch Dataset ----------------------------------------------------------------------------
class PDEDataset(torch.utils.data.Dataset):
    """Lazily read ``(input, solution)`` float32 tensor pairs of one generated dataset.

    The file's sha256 is checked against the manifest when the dataset is built (``verify=True``;
    ``verify=False`` checks its size only, without reading it); a missing, unrecorded, stale or corrupt file raises :class:`CorruptDataError` (or
    ``FileNotFoundError``) saying how to fix it. The HDF5 file is opened on first access, once
    per process (so each DataLoader worker opens its own handle), and ``dataset[i]`` reads the
    two one-sample chunks of sample ``i`` only. ``params`` holds all PDE parameters of the file.
    """

    def __init__(self, spec: DatasetSpec, root=None, verify: bool = True):
        self.spec = spec
        self.path = data_root(root) / spec.profile / spec.path
        status = file_status(spec, root, check_hash=verify)
        hint = f"ens data generate --profile {spec.profile} --family {spec.family}"
        if status == "missing":
            raise FileNotFoundError(f"{self.path} does not exist; generate it with `{hint}`")
        if status != "ok":
            fix = f"{hint} --repair" if status == "corrupt" else hint
            raise CorruptDataError(f"refusing to load {self.path}: it is {status} ({_WHY[status]}); "
                                   f"regenerate it with `{fix}`")
        with h5py.File(self.path, "r") as f:
            self.n_samples = f["inputs"].shape[0]
            self.params = json.loads(f.attrs["params"])
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return self.n_samples

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.n_samples <= i < self.n_samples:
            raise IndexError(f"index {i} out of range for a dataset of {self.n_samples} samples")
        f = self._h5()
        i = int(i) % self.n_samples
        return torch.from_numpy(np.asarray(f["inputs"][i])), torch.from_numpy(np.asarray(f["solutions"][i]))

    def tensors(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``[start, stop)`` as two float32 tensors, read with one slice each (for sets
        that fit in memory, e.g. a training split loaded once)."""
        stop = self.n_samples if stop is None else min(stop, self.n_samples)
        if not 0 <= start < stop:
            raise IndexError(f"empty or invalid range [{start}, {stop}) of a dataset of {self.n_samples} samples")
        f = self._h5()
        return (torch.from_numpy(np.asarray(f["inputs"][start:stop])),
                torch.from_numpy(np.asarray(f["solutions"][start:stop])))

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}


def load_dataset(spec: DatasetSpec, root=None, generate_missing: bool = False, verify: bool = True,
                 log: Callable[[str], None] | None = None) -> PDEDataset:
    """The :class:`PDEDataset` of ``spec``; with ``generate_missing`` a missing (never a corrupt)
    file is generated first, so notebooks and training jobs can start from a fresh clone."""
    if generate_missing and file_status(spec, root, check_hash=False) == "missing":
        generate([spec], root=root, log=log)
    return PDEDataset(spec, root, verify=verify)
