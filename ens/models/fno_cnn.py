"""CNN-FNO-CNN backbone: convolutional lifting, neuraloperator's FNO blocks, convolutional projection.

The paper replaces the FNO's pointwise lifting and projection by small convolutional stacks
(3x3 convolutions see the local stencil of the residual and of the state). The spectral blocks
are :class:`neuralop.layers.fno_block.FNOBlocks` (spectral convolution + linear skip + channel
MLP per layer). Two coordinate channels ``(x, y)`` in ``[0, 1]`` are appended to the input, so
the network knows where the boundary is and runs at any grid size (the 3x3 convolutions act per
grid cell).

Resolution. A spectral convolution treats its input as periodic with the period ``N h`` of its
``N`` samples. On the torus that is the domain at every resolution. On the Dirichlet node grid
(``x_i = i / (S - 1)``, both boundaries included) it is ``S h = 1 + h``, which changes with the
grid, so a mode index of a network trained at ``S`` is another physical frequency on a finer
grid. Worse, neuraloperator 2.0.0's ``SpectralConv`` re-applies ``fftshift`` instead of
``ifftshift`` after the product (fixed upstream after that release, neuraloperator PR #688), which
moves every output frequency by one on an odd-sized axis; the super-resolution node grid
``2S - 1`` is odd. Measured with a trained ``default`` Poisson surrogate: one spectral layer maps
the same smooth field at ``S = 64`` and ``127`` to outputs 141 % apart, and the surrogate's
error rises from 5 % to 93 %. ``forward(x, wrap_pad=p)`` therefore appends ``p`` samples to each
axis of the lifted field before the spectral blocks (linear interpolation across the periodic
wrap, from the last node back to the first) and drops them after. With ``p`` from
:meth:`ens.models.NeuralSolver.wrap_pad` (``0`` at the training grid, ``1`` at ``2S - 1``) the
padded grid has the training period and an even size: the same layer then agrees to 0.2 % and
the surrogate's error at ``2S - 1`` is 11 % (Poisson), 9 % (Helmholtz), 6 % (Darcy).
"""

from __future__ import annotations

import torch
from neuralop.layers.fno_block import FNOBlocks
from torch import nn

from ..checks import check_int

__all__ = ["FNOCNN", "coordinate_channels", "wrap_padded"]


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` coordinates in ``[0, 1]`` on the grid of ``x`` (axis -2 is ``x``)."""
    B, _, H, W = x.shape
    gx = torch.linspace(0.0, 1.0, H, dtype=x.dtype, device=x.device)
    gy = torch.linspace(0.0, 1.0, W, dtype=x.dtype, device=x.device)
    X, Y = torch.meshgrid(gx, gy, indexing="ij")
    return torch.stack([X, Y]).expand(B, 2, H, W)


def wrap_padded(h: torch.Tensor, p: int) -> torch.Tensor:
    """``h`` (``(..., H, W)``) with ``p`` samples appended to both axes, interpolated linearly
    across the periodic wrap from the last sample back to the first (``p = 0``: ``h`` itself)."""
    check_int(p, "wrap_pad", 0)
    if p == 0:
        return h
    frac = torch.arange(1, p + 1, dtype=h.dtype, device=h.device) / (p + 1)
    for dim in (-2, -1):
        last, first = h.narrow(dim, h.shape[dim] - 1, 1), h.narrow(dim, 0, 1)
        shape = [1] * h.dim()
        shape[dim] = p
        h = torch.cat([h, last + (first - last) * frac.view(shape)], dim)
    return h


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
            check_int(val, name)
        hidden = lifting_channels or width
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, modes
        self.lifting = _conv_stack(in_channels + 2, hidden, width)
        self.blocks = FNOBlocks(width, width, n_modes=(modes, modes), n_layers=layers)
        self.projection = _conv_stack(width, hidden, out_channels)

    def forward(self, x: torch.Tensor, wrap_pad: int = 0) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, S, S), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 2 * self.modes:
            raise ValueError(f"grid {x.shape[-2]}x{x.shape[-1]} is too coarse for {self.modes} Fourier modes "
                             f"(need S >= {2 * self.modes})")
        H, W = x.shape[-2:]
        h = wrap_padded(self.lifting(torch.cat([x, coordinate_channels(x)], dim=1)), wrap_pad)
        for i in range(self.blocks.n_layers):
            h = self.blocks(h, i)
        return self.projection(h[..., :H, :W])
