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

Files are written to a temporary name, flushed and renamed, so an interrupted save never leaves a
half-written checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..pdes import FAMILIES, get_pde
from .neural_solver import NeuralSolver, Normalization, ResidualScaling

__all__ = ["FORMAT", "FORMAT_VERSION", "CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint",
           "solver_state", "build_solver"]

FORMAT = "ens-checkpoint"
FORMAT_VERSION = 1


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


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """Write ``payload`` atomically (temporary file, fsync, rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "ens_version": __version__, **payload}
    tmp = path.with_name(path.name + ".tmp")
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


def load_checkpoint(path: str | os.PathLike, family: str | None = None, in_channels: int | None = None,
                    out_channels: int | None = None, map_location="cpu") -> Checkpoint:
    """Load and rebuild a checkpoint with ``weights_only=True``.

    ``family``, ``in_channels`` and ``out_channels``, when given, must match the checkpoint;
    otherwise :class:`CheckpointError` says what the checkpoint is for. A missing file raises
    ``FileNotFoundError``; a truncated, corrupt or foreign file raises :class:`CheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train it with `ens train` "
                                f"(or restore the shipped file with `git checkout -- {path}`)")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt, truncated or not a torch file "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ENS checkpoint (expected a dict with format={FORMAT!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {raw.get('format_version')!r}; "
                              f"this ens reads version {FORMAT_VERSION}: retrain it with `ens train`")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}")
    if raw["family"] not in FAMILIES:
        raise CheckpointError(f"checkpoint {path} is for an unknown family {raw['family']!r}")
    for name, want in (("family", family), ("in_channels", in_channels), ("out_channels", out_channels)):
        if want is not None and raw[name] != want:
            raise CheckpointError(f"checkpoint {path} has {name}={raw[name]!r}, expected {want!r}: it was "
                                  f"trained for {raw['family']} ({raw['in_channels']} -> {raw['out_channels']} channels)")
    try:
        model = build_solver(raw)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not rebuild its model: {err}") from err
    model.eval()
    return Checkpoint(path, model, raw["kind"], raw["family"], dict(raw["pde_params"]), int(raw["resolution"]),
                      dict(raw["config"]), list(raw["history"]), dict(raw["inference"]), raw)
