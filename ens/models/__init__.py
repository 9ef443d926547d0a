"""Backbones (FNO-CNN on neuraloperator, U-Net), the learned solver, checkpoint I/O."""

from __future__ import annotations

from torch import nn

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    record_checkpoint,
    save_checkpoint,
)
from .fno_cnn import FNOCNN
from .neural_solver import SCALINGS, NeuralSolver, Normalization, ResidualScaling, grid_spacing, lowpass
from .unet import UNet

__all__ = ["BACKBONES", "build_backbone", "FNOCNN", "UNet", "NeuralSolver", "Normalization", "ResidualScaling",
           "SCALINGS", "grid_spacing", "lowpass", "Checkpoint", "CheckpointError", "load_checkpoint",
           "read_checkpoint", "record_checkpoint", "save_checkpoint"]

#: backbone name -> class; constructor arguments are (in_channels, out_channels, **kwargs)
BACKBONES: dict[str, type[nn.Module]] = {"fno_cnn": FNOCNN, "unet": UNet}


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a backbone by name, e.g. ``build_backbone("fno_cnn", in_channels=1, out_channels=1)``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    try:
        return BACKBONES[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for backbone {name!r}: {err}") from err
