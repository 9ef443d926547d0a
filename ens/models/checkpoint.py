"""Checkpoint files: everything needed to rebuild a trained solver, and nothing executable.

A checkpoint is a plain dict saved with :func:`torch.save` and read with ``weights_only=True``
(tensors, numbers, strings, lists and dicts only)::

    format, format_version, ens_version, kind ("ens" | "surrogate"), family, pde_params,
    in_channels, out_channels, resolution,
    predictor / corrector: {"backbone": name, "kwargs": constructor arguments, "state_dict": ...}
    normalization, scaling          the explicit input scalings (ens.models.neural_solver)
    config                          the training configuration (ens.train.TrainConfig as a dict)
    history                         one dict per epoch (losses, validation errors, wall time)
    inference                       alpha and steps chosen on the validation split, with the table
    resume                          (only in the "last" file of a running job) optimiser state etc.
    digest                          sha256 of everything above (:func:`content_digest`)

Files are written to a temporary name, flushed and renamed, so an interrupted save never leaves a
half-written checkpoint. Two checks make a corrupted file fail instead of loading changed weights
(torch itself reads a flipped byte of a tensor without complaint):

* every checkpoint carries the sha256 of its content (tensors' bytes, dtypes and shapes, numbers,
  strings), recomputed on load;
* the finished checkpoints of a folder are listed in its ``manifest.json`` (file sha256 and size,
  kind, family, profile), written by :func:`record_checkpoint` and verified on load, which also
  catches changed bytes that carry no content (zip headers and padding). The shipped checkpoints
  are listed this way.

A checkpoint whose weights are not all finite is refused as well, and callers that load a
checkpoint *for a role* pass the ``family``, ``kind`` and ``profile`` it must have
(:func:`ens.train.load_trained`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..paths import locked, sha256sum, write_json
from ..pdes import FAMILIES, get_pde
from .neural_solver import NeuralSolver, Normalization, ResidualScaling

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "CheckpointError", "Checkpoint", "save_checkpoint",
           "load_checkpoint", "read_checkpoint", "record_checkpoint", "content_digest", "solver_state",
           "build_solver"]

FORMAT = "ens-checkpoint"
#: 2: with the content digest (version 1 files had none)
FORMAT_VERSION = 2
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or for another problem."""


def solver_state(model: NeuralSolver, backbone: str, predictor_kwargs: dict, corrector_kwargs: dict | None) -> dict:
    """The model part of a checkpoint (state dicts on the CPU, constructor arguments, scalings)."""
    def part(net, kwargs):
        return {"backbone": backbone, "kwargs": dict(kwargs),
                "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}
    return {"predictor": part(model.predictor, predictor_kwargs),
            "corrector": part(model.corrector, corrector_kwargs) if model.is_ens else None,
            "normalization": {"input_mean": list(model.normalization.input_mean),
                              "input_std": list(model.normalization.input_std),
                              "state_scale": model.normalization.state_scale,
                              "resolution": model.normalization.resolution},
            "scaling": model.scaling.to_dict() if model.scaling is not None else None}


def build_solver(state: dict) -> NeuralSolver:
    """Rebuild a :class:`NeuralSolver` from :func:`solver_state`'s dict (weights loaded)."""
    from . import build_backbone
    nets = {}
    for key in ("predictor", "corrector"):
        part = state[key]
        if part is None:
            nets[key] = None
            continue
        net = build_backbone(part["backbone"], **part["kwargs"])
        net.load_state_dict(part["state_dict"])
        nets[key] = net
    norm = state["normalization"]
    scaling = ResidualScaling(**state["scaling"]) if state["scaling"] is not None else None
    return NeuralSolver(nets["predictor"], nets["corrector"],
                        Normalization(tuple(norm["input_mean"]), tuple(norm["input_std"]), float(norm["state_scale"]),
                                      norm.get("resolution")),
                        scaling)


def content_digest(payload) -> str:
    """sha256 of a checkpoint's content: dict keys (sorted), list items, numbers and strings by type
    and ``repr`` (exact for floats), tensors by dtype, shape and bytes. Lists and tuples hash alike
    (the file does not keep the difference)."""
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(f"D{len(x)}:".encode())
            for key in sorted(x, key=repr):
                walk(key)
                walk(x[key])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}:".encode())
            for item in x:
                walk(item)
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    walk(payload)
    return h.hexdigest()


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """Write ``payload`` with its :func:`content_digest` atomically (temporary file, fsync, rename);
    returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "ens_version": __version__,
               **{k: v for k, v in payload.items() if k not in ("format", "format_version", "digest")}}
    payload["digest"] = content_digest(payload)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model plus its metadata."""

    path: Path
    model: NeuralSolver
    kind: str
    family: str
    pde_params: dict
    resolution: int
    config: dict
    history: list
    inference: dict
    raw: dict = field(repr=False)

    def pde(self, **overrides):
        """The training PDE, optionally with shifted parameters (e.g. ``k=3.0``)."""
        return get_pde(self.family, **{**self.pde_params, **overrides})


_REQUIRED = ("kind", "family", "pde_params", "in_channels", "out_channels", "resolution", "predictor",
             "corrector", "normalization", "scaling", "config", "history", "inference")


def _manifest_entry(path: Path) -> dict | None:
    """The entry of ``path`` in its folder's manifest (None if the folder has none or lacks it)."""
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
        entry = files.get(path.name)
        if entry is not None and not (isinstance(entry.get("sha256"), str) and isinstance(entry.get("bytes"), int)):
            raise TypeError("an entry without sha256 and bytes")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{manifest} is not a checkpoint manifest ({type(err).__name__}: {err}); restore it "
                              f"with `git checkout -- {manifest}` or delete it (the files' own digests still "
                              f"apply)") from err
    return entry


def _restore_hint(path: Path) -> str:
    return (f"restore the shipped file with `git checkout -- {path}`, or retrain it with `ens train` "
            f"and --no-resume")


def read_checkpoint(path: str | os.PathLike, map_location="cpu", use_manifest: bool = True) -> dict:
    """The verified raw dict of a checkpoint file (the ``.last.pt`` of a running job too);
    ``use_manifest=False`` skips the manifest entry (for a file about to replace it there).

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for one that is
    not a file, unreadable, truncated, foreign, of another format version, whose content digest
    or manifest entry does not match, or whose weights are not all finite.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train it with `ens train` "
                                f"(or restore the shipped file with `git checkout -- {path}`)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file (expected a .pt file written by `ens train`)")
    entry = _manifest_entry(path) if use_manifest else None
    if entry is not None and (path.stat().st_size != entry["bytes"] or sha256sum(path) != entry["sha256"]):
        raise CheckpointError(f"checkpoint {path} is corrupt: its sha256 differs from {path.parent / MANIFEST}; "
                              + _restore_hint(path))
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt, truncated or not a torch file "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                              + _restore_hint(path)) from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ENS checkpoint (expected a dict with format={FORMAT!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {raw.get('format_version')!r}; "
                              f"this ens reads version {FORMAT_VERSION}: retrain it with `ens train`")
    if raw.get("digest") != content_digest({k: v for k, v in raw.items() if k != "digest"}):
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its digest; "
                              + _restore_hint(path))
    bad = [f"{part}.{name}" for part in ("predictor", "corrector") if isinstance(raw.get(part), dict)
           for name, t in raw[part].get("state_dict", {}).items()
           if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path} has non-finite weights ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}): its training diverged; retrain it with "
                              f"`ens train` and --no-resume")
    return raw


def record_checkpoint(path: str | os.PathLike) -> None:
    """List a finished checkpoint in its folder's manifest (sha256, size, kind, family, profile);
    the manifest is rewritten atomically, under a lock."""
    path = Path(path)
    raw = read_checkpoint(path, use_manifest=False)  # a retrained file replaces its old entry; its digest is checked
    entry = {"sha256": sha256sum(path), "bytes": path.stat().st_size, "kind": raw["kind"],
             "family": raw["family"], "profile": raw["config"].get("profile")}
    with locked(path.parent):
        manifest_path = path.parent / MANIFEST
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            manifest = {"files": {}}
        manifest["files"][path.name] = entry
        write_json(manifest, manifest_path)


def load_checkpoint(path: str | os.PathLike, family: str | None = None, in_channels: int | None = None,
                    out_channels: int | None = None, kind: str | None = None, profile: str | None = None,
                    map_location="cpu") -> Checkpoint:
    """Load, verify (:func:`read_checkpoint`) and rebuild a checkpoint with ``weights_only=True``.

    ``family``, ``in_channels``, ``out_channels``, ``kind`` and ``profile`` (of its training
    configuration), when given, must match the checkpoint; otherwise :class:`CheckpointError` says
    what the checkpoint is for. A missing file raises ``FileNotFoundError``; a truncated, corrupt
    or foreign file raises :class:`CheckpointError`.
    """
    path = Path(path)
    raw = read_checkpoint(path, map_location)
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}")
    if raw["family"] not in FAMILIES:
        raise CheckpointError(f"checkpoint {path} is for an unknown family {raw['family']!r}")
    have = {"family": raw["family"], "in_channels": raw["in_channels"], "out_channels": raw["out_channels"],
            "kind": raw["kind"], "profile": raw["config"].get("profile")}
    for name, want in (("family", family), ("in_channels", in_channels), ("out_channels", out_channels),
                       ("kind", kind), ("profile", profile)):
        if want is not None and have[name] != want:
            at = f" trained at the {have['profile']!r} profile" if have["profile"] else ""
            raise CheckpointError(f"checkpoint {path} has {name}={have[name]!r}, expected {want!r}: it is the "
                                  f"{have['kind']} of {have['family']}{at} ({have['in_channels']} -> "
                                  f"{have['out_channels']} channels)")
    try:
        model = build_solver(raw)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not rebuild its model: {err}") from err
    model.eval()
    return Checkpoint(path, model, raw["kind"], raw["family"], dict(raw["pde_params"]), int(raw["resolution"]),
                      dict(raw["config"]), list(raw["history"]), dict(raw["inference"]), raw)
