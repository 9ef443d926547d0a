"""CNN-FNO-CNN backbone: convolutional lifting, neuraloperator's FNO blocks, convolutional projection.

The paper replaces the FNO's pointwise lifting and projection by small convolutional stacks
(3x3 convolutions see the local stencil of the residual and of the state). The spectral blocks
are :class:`neuralop.layers.fno_block.FNOBlocks` (spectral convolution + linear skip + channel
MLP per layer). Two coordinate channels ``(x, y)`` in ``[0, 1]`` are appended to the input, so
the network knows where the boundary is and runs at any grid size (resolution-invariant
spectral weights; the 3x3 convolutions act per grid cell).
"""

from __future__ import annotations

import torch
from neuralop.layers.fno_block import FNOBlocks
from torch import nn

__all__ = ["FNOCNN", "coordinate_channels"]


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` coordinates in ``[0, 1]`` on the grid of ``x`` (axis -2 is ``x``)."""
    B, _, H, W = x.shape
    gx = torch.linspace(0.0, 1.0, H, dtype=x.dtype, device=x.device)
    gy = torch.linspace(0.0, 1.0, W, dtype=x.dtype, device=x.device)
    X, Y = torch.meshgrid(gx, gy, indexing="ij")
    return torch.stack([X, Y]).expand(B, 2, H, W)


def _conv_stack(c_in: int, c_hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_hidden, 3, padding=1), nn.GELU(),
                         nn.Conv2d(c_hidden, c_out, 3, padding=1))


class FNOCNN(nn.Module):
    """``(B, in_channels, S, S) -> (B, out_channels, S, S)``.

    Parameters
    ----------
    in_channels, out_channels : channel counts of the input and output fields.
    width : channels of the FNO blocks (the paper: 64).
    modes : Fourier modes kept per dimension (the paper: 20); at most ``S // 2``.
    layers : number of FNO blocks (the paper: 4).
    lifting_channels : hidden channels of the lifting and projection stacks (default ``width``).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, modes: int = 12,
                 layers: int = 4, lifting_channels: int | None = None):
        super().__init__()
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                          ("modes", modes), ("layers", layers)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"expected {name} to be a positive int, got {val!r}")
        hidden = lifting_channels or width
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, modes
        self.lifting = _conv_stack(in_channels + 2, hidden, width)
        self.blocks = FNOBlocks(width, width, n_modes=(modes, modes), n_layers=layers)
        self.projection = _conv_stack(width, hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, S, S), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 2 * self.modes:
            raise ValueError(f"grid {x.shape[-2]}x{x.shape[-1]} is too coarse for {self.modes} Fourier modes "
                             f"(need S >= {2 * self.modes})")
        h = self.lifting(torch.cat([x, coordinate_channels(x)], dim=1))
        for i in range(self.blocks.n_layers):
            h = self.blocks(h, i)
        return self.projection(h)
