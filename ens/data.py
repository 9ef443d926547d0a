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

Shards (``ens data generate --shard i/n``, or the ranks of ``torchrun``): :func:`shard_plan` deals
the files out to ``n`` shards by estimated cost and splits a file larger than one shard's share
into contiguous ranges of its chunks. A part is written like a file (``<name>.h5.part<k>of<m>``,
then a sidecar ``.json`` with its sha256); the run that completes a file's last part assembles the
file from the parts, chunk by chunk in the single-process order, so its bytes are identical, records
it under the manifest lock and deletes the parts. Shards share the data root (one machine, or
machines on one shared filesystem with working ``flock``).

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
from .checks import check_int
from .experiments import DatasetSpec
from .paths import data_root, fsync_path, locked, sha256sum, write_json
from .pdes import PDE

__all__ = ["GENERATOR_VERSION", "ELLIPTIC_SOLVER_RTOL", "TRUNCATION_FACTOR", "chunk_seed", "chunk_inputs", "sha256sum",
           "read_manifest", "generate_file", "generation_cost", "generate", "shard_plan", "part_chunks", "n_chunks", "relative_residuals", "FileReport",
           "file_status", "verify", "PDEDataset", "CorruptDataError", "load_dataset"]

#: version of the generation algorithm; bump it when the bytes a spec generates change.
#: 2: Darcy solved by preconditioned conjugate gradients instead of sparse LU (the ``ci`` and
#: ``default`` files keep their sha256; of the ``paper`` files' values about one in a million moves
#: by one float32 ulp, two float64 solutions ~1e-14 apart rounding to either side)
GENERATOR_VERSION = 2
#: solver term of the elliptic tolerance: above Newton's stop at ||R|| <= 1e-10 ||f||, Darcy's
#: conjugate gradients (stop at 1e-12, accepted up to 1e-10, else sparse LU) and the float64
#: round-off of the DST solves (~1e-13)
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
def _file_attrs(spec: DatasetSpec, device_type: str) -> dict:
    return {"spec": spec.to_json(), "params": json.dumps(spec.pde().params, sort_keys=True), "seed": spec.seed,
            "resolution": spec.resolution, "generator_version": GENERATOR_VERSION, "ens_version": __version__,
            "torch_version": str(torch.__version__), "device": device_type}


def _write_h5(path: Path, attrs: dict, shapes: dict[str, tuple], blocks: Iterable, progress: bool | None,
              desc: str) -> None:
    """Write the arrays ``shapes`` (name -> ``(n, ch, S, S)``) of an HDF5 file from ``blocks``, an
    iterable of ``(start, {name: float32 array})`` in sample order, via ``<path>.<pid>.tmp``, fsync
    and a rename (the temporary file is removed if anything raises). The bytes depend only on
    ``attrs``, the shapes, the data and the order of the writes, which is what makes a file assembled
    from shards (:func:`generate` with ``shard``) identical to one generated in one process."""
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"expected a folder for the {path.parent.name} datasets, found a "
                                 f"file (move it away)", str(path.parent))
    path.parent.mkdir(parents=True, exist_ok=True)
    need = 4 * sum(math.prod(s) for s in shapes.values()) * 1.02 + 2 ** 20  # the data, chunk index, header
    free = shutil.disk_usage(path.parent).free
    if free < need:  # HDF5 cannot recover from a full disk (h5py crashes at exit), so refuse before writing
        raise OSError(errno.ENOSPC, f"no space left for {path.name}: it needs about {need / 2 ** 20:.2f} MiB, "
                      f"{free / 2 ** 20:.2f} MiB are free; free some or choose another data root (--root)",
                      str(path.parent))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # a concurrent run writes its own
    n = next(iter(shapes.values()))[0]
    try:
        with h5py.File(tmp, "w") as f:
            for key, val in attrs.items():
                f.attrs[key] = val
            dsets = {name: f.create_dataset(name, shape, dtype="<f4", chunks=(1, *shape[1:]), track_times=False)
                     for name, shape in shapes.items()}
            with tqdm(total=n, desc=desc, unit="sample", disable=None if progress is None else not progress,
                      leave=False) as bar:
                for start, arrays in blocks:
                    for name, dset in dsets.items():
                        dset[start:start + len(arrays[name])] = arrays[name]
                    bar.update(len(arrays[name]))
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _shapes(spec: DatasetSpec, n: int) -> dict[str, tuple]:
    pde, S = spec.pde(), spec.resolution
    return {"inputs": (n, pde.in_channels, S, S), "solutions": (n, pde.out_channels, S, S)}


def _solved_chunks(spec: DatasetSpec, chunks: range, device, offset: int = 0):
    """``(start - offset, {"inputs", "solutions"})`` of the chunks ``chunks`` of ``spec``, sampled and solved."""
    pde = spec.pde()
    for i in chunks:
        start = i * spec.chunk_size
        c = chunk_inputs(pde, spec.resolution, spec.seed, i, min(spec.chunk_size, spec.n_samples - start), device)
        u = pde.solve(c)
        yield start - offset, {"inputs": c.to(torch.float32).cpu().numpy(), "solutions": u.to(torch.float32).cpu().numpy()}


def n_chunks(spec: DatasetSpec) -> int:
    """The number of chunks of ``spec`` (``ceil(n_samples / chunk_size)``); chunk ``i`` holds samples
    ``[i c, (i + 1) c)`` and is generated from its own seed (:func:`chunk_seed`)."""
    return math.ceil(spec.n_samples / spec.chunk_size)


def generate_file(spec: DatasetSpec, path: str | os.PathLike, device="cpu", progress: bool | None = None) -> None:
    """Generate ``spec`` into the HDF5 file ``path`` (via ``<path>.<pid>.tmp``, fsync and rename).

    The temporary file is removed if generation raises. ``progress=None`` shows a tqdm bar on a
    terminal only.
    """
    _write_h5(Path(path), _file_attrs(spec, torch.device(device).type), _shapes(spec, spec.n_samples),
              _solved_chunks(spec, range(n_chunks(spec)), device), progress, spec.path)


# ---- shards -----------------------------------------------------------------------------------
def shard_plan(specs: Iterable[DatasetSpec], n_shards: int) -> list[list[tuple[DatasetSpec, int, int]]]:
    """Which shard generates what: ``plan[i]`` lists the units ``(spec, part, parts)`` of shard ``i``.

    A unit is a whole file (``parts == 1``) or the ``part``-th of ``parts`` contiguous ranges of a
    file's chunks (:func:`part_chunks`). A file whose estimated cost (:func:`generation_cost`) exceeds
    a shard's fair share (the total over ``n_shards``) is split into the fewest parts of whole chunks
    that cost at most a share each (one chunk a part where a chunk costs more), so one large
    Navier--Stokes or Kolmogorov file does not hold back every other shard. The units are then
    dealt out longest first, each to the least loaded shard (ties: the lowest shard). The plan depends on the specs and ``n_shards`` only, never on what is
    on disk, so every shard computes the same plan independently.
    """
    check_int(n_shards, "number of shards")
    specs = list(specs)
    costs = [generation_cost(s) for s in specs]
    share = sum(costs) / n_shards
    units = []  # (cost, order, spec, part, parts)
    for order, (spec, cost) in enumerate(zip(specs, costs)):
        parts = 1
        if n_shards > 1 and cost > share:  # parts of at most `per_part` chunks (part_chunks: sizes differ by <= 1)
            per_part = max(1, math.floor(share / (cost / n_chunks(spec)) * (1 + 1e-12)))
            parts = math.ceil(n_chunks(spec) / per_part)
        for part in range(parts):
            units.append((cost * len(part_chunks(spec, part, parts)) / n_chunks(spec), order, spec, part, parts))
    units.sort(key=lambda u: (-u[0], u[1], u[3]))
    plan, load = [[] for _ in range(n_shards)], [0.0] * n_shards
    for cost, order, spec, part, parts in units:
        i = min(range(n_shards), key=lambda k: (load[k], k))
        plan[i].append((spec, part, parts))
        load[i] += cost
    return plan


def part_chunks(spec: DatasetSpec, part: int, parts: int) -> range:
    """The chunks of part ``part`` of ``parts`` of ``spec``: contiguous, sizes differing by at most one."""
    n = n_chunks(spec)
    return range(part * n // parts, (part + 1) * n // parts)


def _part_path(path: Path, part: int, parts: int) -> Path:
    return path.with_name(f"{path.name}.part{part + 1}of{parts}")


def _part_is_valid(spec: DatasetSpec, path: Path) -> bool:
    """A part file is used only if its sidecar (written after it) names this spec and its sha256 matches."""
    sidecar = path.with_name(path.name + ".json")
    try:
        entry = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(entry, dict) and entry.get("spec") == spec.to_dict()
            and entry.get("generator_version") == GENERATOR_VERSION and path.is_file()
            and entry.get("sha256") == sha256sum(path))


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


def _record_file(profile_dir: Path, spec: DatasetSpec, path: Path, device_type: str) -> None:
    _record(profile_dir, spec, {"sha256": sha256sum(path), "bytes": path.stat().st_size, "spec": spec.to_dict(),
                                "params": spec.pde().params, "generator_version": GENERATOR_VERSION,
                                "device": device_type, "torch_version": str(torch.__version__)})


def _file_lock(spec: DatasetSpec) -> str:
    return f".{spec.path.replace('/', '__')}.lock"


def _remove_stale_tmp(path: Path) -> None:
    for stale in path.parent.glob(f"{path.name}.*.tmp"):  # left by a killed run: nobody else holds the lock
        stale.unlink(missing_ok=True)


def _generate_job(job: tuple) -> tuple[float | None, bool]:
    """Generate one unit of :func:`shard_plan` (a file, or one part of a file's chunks) and record
    the file in the manifest once it is complete. Returns ``(seconds, complete)``: seconds is None
    when there was nothing to do (a concurrent run on the same data root wrote it meanwhile: each
    file and part is generated under its own lock, so a second run waits and then keeps it);
    ``complete`` says whether the file now exists (a part's file is assembled by whichever run
    writes its last part)."""
    spec, part, parts, root, device, progress, repair = job
    t0 = time.perf_counter()
    profile_dir = data_root(root) / spec.profile
    path = profile_dir / spec.path
    device_type = torch.device(device).type
    profile_dir.mkdir(parents=True, exist_ok=True)

    def wanted() -> bool:
        status = file_status(spec, root)
        return not (status == "ok" or (status == "corrupt" and not repair))

    if parts == 1:
        with locked(profile_dir, _file_lock(spec)):
            _remove_stale_tmp(path)
            if not wanted():
                return None, True
            generate_file(spec, path, device=device, progress=progress)
            _record_file(profile_dir, spec, path, device_type)
        return time.perf_counter() - t0, True
    ppath = _part_path(path, part, parts)
    with locked(profile_dir, f".{ppath.relative_to(profile_dir).as_posix().replace('/', '__')}.lock"):
        _remove_stale_tmp(ppath)
        if not wanted():
            return None, _assemble(spec, root, parts, repair)
        fresh = not _part_is_valid(spec, ppath)
        if fresh:  # a valid part of an earlier, interrupted run is kept
            chunks = part_chunks(spec, part, parts)
            offset = chunks.start * spec.chunk_size
            n = min(chunks.stop * spec.chunk_size, spec.n_samples) - offset
            attrs = {**_file_attrs(spec, device_type), "part": part, "parts": parts, "first_sample": offset}
            _write_h5(ppath, attrs, _shapes(spec, n), _solved_chunks(spec, chunks, device, offset), progress,
                      f"{spec.path} part {part + 1}/{parts}")
            write_json({"spec": spec.to_dict(), "generator_version": GENERATOR_VERSION, "device": device_type,
                        "sha256": sha256sum(ppath)}, ppath.with_name(ppath.name + ".json"))
    return (time.perf_counter() - t0) if fresh else None, _assemble(spec, root, parts, repair)


def _assemble(spec: DatasetSpec, root, parts: int, repair: bool) -> bool:
    """Write ``spec``'s file from its ``parts`` part files once all are present and valid, record it
    and remove the parts; returns whether the file exists now. The samples are written chunk by
    chunk in the order :func:`generate_file` writes them, so the bytes are the same."""
    profile_dir = data_root(root) / spec.profile
    path = profile_dir / spec.path
    paths = [_part_path(path, k, parts) for k in range(parts)]
    with locked(profile_dir, _file_lock(spec)):
        _remove_stale_tmp(path)
        status = file_status(spec, root)
        if not (status == "ok" or (status == "corrupt" and not repair)):
            if not all(_part_is_valid(spec, p) for p in paths):
                return False
            devices = {json.loads(p.with_name(p.name + ".json").read_text())["device"] for p in paths}
            if len(devices) > 1:
                raise CorruptDataError(f"the parts of {spec.path} were generated on different device types "
                                       f"{sorted(devices)}; generate every shard on one device type")

            def blocks():
                for k, p in enumerate(paths):
                    with h5py.File(p, "r") as f:
                        first = int(f.attrs["first_sample"])
                        for start in range(0, len(f["inputs"]), spec.chunk_size):
                            stop = start + spec.chunk_size
                            yield first + start, {name: f[name][start:stop] for name in ("inputs", "solutions")}

            device_type = devices.pop()
            _write_h5(path, _file_attrs(spec, device_type), _shapes(spec, spec.n_samples), blocks(), False, spec.path)
            _record_file(profile_dir, spec, path, device_type)
        for p in paths:  # the file is complete: its parts are not needed
            p.unlink(missing_ok=True)
            p.with_name(p.name + ".json").unlink(missing_ok=True)
    return True


def generate(specs: Iterable[DatasetSpec], *, root=None, repair: bool = False, device="cpu",
             progress: bool | None = None, workers: int = 1, shard: tuple[int, int] | None = None,
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

    ``shard=(i, n)`` generates only shard ``i`` (``0 <= i < n``) of :func:`shard_plan` (every shard
    must be given the same ``specs``): whole files, and parts of the large files, written to
    ``<file>.part<k>of<m>`` with a checksummed sidecar. The run that writes a file's last part
    assembles the file, byte-identical to a single-process run, records it and removes the parts.
    Shards may run at the same time or one after another, on one machine or on several that share
    the data root; the action of a file another shard generates is ``"other shard"``, and of a file
    whose parts are not all written yet ``"partial"``.
    """
    from .workers import map_jobs
    log = log or (lambda msg: None)
    specs = list(specs)
    if shard is None:
        units = [(spec, 0, 1) for spec in specs]
    else:
        i, n = shard
        if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
            raise ValueError(f"expected shard (i, n) with 0 <= i < n, e.g. (0, 2), got {shard!r}")
        units = shard_plan(specs, n)[i]
        mine = {spec for spec, _, _ in units}
        cost = sum(generation_cost(s) * len(part_chunks(s, p, m)) / n_chunks(s) for s, p, m in units)
        log(f"shard {i}/{n}: {len(units)} of the units of {len(specs)} files ({len(mine)} files, "
            f"{sum(1 for _, _, m in units if m > 1)} of them parts), "
            f"{100 * cost / max(sum(map(generation_cost, specs)), 1e-12):.0f} % of the estimated work")
    actions, totals, todo, status_of = {}, {}, [], {}
    for k, spec in enumerate(specs, 1):
        status = status_of[spec] = file_status(spec, root)
        tag = f"[{k}/{len(specs)}] {spec.path}"
        if shard is not None and spec not in mine:
            actions[spec] = "other shard"
        elif status == "ok":
            actions[spec] = "kept"
            log(f"{tag}: ok (checksum matches the manifest), kept")
        elif status == "corrupt" and not repair:
            actions[spec] = "refused"
            log(f"{tag}: CORRUPT (checksum differs from the manifest); not used or overwritten: "
                f"rerun with --repair to regenerate it")
    tags = {spec: f"[{k}/{len(specs)}] {spec.path}" for k, spec in enumerate(specs, 1)}
    todo = [(tags[spec], spec, status_of[spec], part, parts) for spec, part, parts in units if spec not in actions]

    def done(item, result):
        tag, spec, status, part, parts = item
        dt, complete = result
        what = "" if parts == 1 else f" part {part + 1}/{parts}"
        path = data_root(root) / spec.profile / spec.path
        if complete:
            actions[spec] = {"missing": "generated", "corrupt": "repaired"}.get(status, "regenerated")
        else:
            actions[spec] = "partial"
        if dt is None:
            if complete and parts == 1:
                actions[spec] = "kept"
            if parts == 1:
                log(f"{tag}: written by a concurrent run on this data root meanwhile (checksum matches), kept")
            else:
                log(f"{tag}{what}: written by a concurrent or earlier run (checksum matches), kept"
                    + ("" if complete else "; the file waits for the other parts"))
            return
        n_samples = len(part_chunks(spec, part, parts)) * spec.chunk_size if parts > 1 else spec.n_samples
        n_samples = min(n_samples, spec.n_samples)
        fam_n, total = totals.get(spec.family, (0, 0.0))
        totals[spec.family] = (fam_n + n_samples, total + dt)
        log(f"{tag}{what}: {actions[spec]} ({status} before), {n_samples} samples at S={spec.resolution}, "
            + (f"{path.stat().st_size / 2 ** 20:.1f} MiB, " if complete else "")
            + f"{dt:.1f} s" + ("" if complete else "; the file waits for the other parts"))

    if workers == 1:  # one unit after the other, each reported when it is written
        for item in todo:
            done(item, _generate_job((item[1], item[3], item[4], root, device, progress, repair)))
    else:  # the longest first, so that no worker is left alone with a long file at the end
        todo.sort(key=lambda item: -generation_cost(item[1]) / item[4])
        jobs = [(spec, part, parts, root, device, False, repair) for _, spec, _, part, parts in todo]
        for item, result in zip(todo, map_jobs(_generate_job, jobs, workers=workers, threads=1)):
            done(item, result)
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
    """The :class:`PDEDataset` of ``spec``; with ``generate_missing`` a missing or stale file (one
    recorded for another spec, other parameters or an older generator; never a corrupt one) is
    generated first, so notebooks and training jobs start from a fresh clone or after an upgrade."""
    if generate_missing and file_status(spec, root, check_hash=False) in ("missing", "stale"):
        generate([spec], root=root, log=log)
    return PDEDataset(spec, root, verify=verify)
