"""A plain U-Net backbone (two 3x3 convolutions per level, max-pool down, transposed-conv up).

Grids whose size is not divisible by ``2**depth`` (the elliptic node grids have odd sizes at
super-resolution, e.g. 127) are zero-padded on the high side and cropped back, so the network
runs at any resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int
from .fno_cnn import coordinate_channels

__all__ = ["UNet"]


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU())


class UNet(nn.Module):
    """``(B, in_channels, S, S) -> (B, out_channels, S, S)``; ``width`` channels at the top level,
    doubled per level down, ``depth`` poolings."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 16, depth: int = 3):
        super().__init__()
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                          ("depth", depth)):
            check_int(val, name)
        self.in_channels, self.depth = in_channels, depth
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_channels + 2, chans[0])] +
                                  [_double_conv(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_double_conv(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor, wrap_pad: int = 0) -> torch.Tensor:
        """``wrap_pad`` is accepted for the common backbone interface and ignored: the U-Net has
        no Fourier layer whose period depends on the grid (see :mod:`ens.models.fno_cnn`)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, S, S), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        m = 2 ** self.depth
        h = F.pad(torch.cat([x, coordinate_channels(x)], dim=1), (0, -W % m, 0, -H % m))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            h = merge(torch.cat([up(h), skip], dim=1))
        return self.head(h)[..., :H, :W]
