"""Pseudo-spectral helpers of the periodic flows on the unit torus (``rfft2`` layout, even ``S``):
the Fourier multipliers of one grid (:func:`spectral`, cached), the velocity and vorticity
gradients of a spectrum, and the 2/3-rule dealiased advection term ``v . grad w``.

Axis -2 is ``x``, axis -1 is ``y``; ``v = (d psi/dy, -d psi/dx)`` with ``-Lap psi = w``. The
product is formed on the grid from the truncated fields and truncated again (Orszag's rule: keep
integer wavenumbers with ``3 |k_x| < S`` and ``3 |k_y| < S``), so it carries no aliasing error.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

__all__ = ["Spectral", "spectral", "gradients", "grid_dot", "advection_hat"]


class Spectral(NamedTuple):
    ikx: torch.Tensor     # (S, 1) complex, i 2 pi k_x (Nyquist zeroed: its derivative is not real)
    iky: torch.Tensor     # (1, S//2+1) complex, i 2 pi k_y
    k2: torch.Tensor      # (S, S//2+1) real, |2 pi k|^2 (so that Lap = -k2)
    inv_k2: torch.Tensor  # 1 / k2, 0 for the mean mode (psi has zero mean)
    mask: torch.Tensor    # 2/3-rule dealiasing mask, 1 where 3|k_x| < S and 3|k_y| < S
    grad: torch.Tensor    # (4, S, S//2+1) complex: w_hat -> (v_x, v_y, dw/dx, dw/dy) of the truncated w


@functools.lru_cache(maxsize=32)
def spectral(S: int, dtype: torch.dtype, device: torch.device) -> Spectral:
    kx = torch.fft.fftfreq(S, 1.0 / S, dtype=torch.float64)[:, None]
    ky = torch.fft.rfftfreq(S, 1.0 / S, dtype=torch.float64)[None, :]
    k2 = 4 * math.pi ** 2 * (kx ** 2 + ky ** 2)
    inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
    mask = ((3 * kx.abs() < S) & (3 * ky < S)).double()
    ctype = torch.complex128 if dtype == torch.float64 else torch.complex64

    def deriv(k):
        return 2j * math.pi * torch.where(2 * k.abs() == S, 0.0, k)

    dx, dy = deriv(kx), deriv(ky)
    # v = (d psi/dy, -d psi/dx), psi = w / k2; all four 2/3-truncated, in one multiplier
    grad = torch.stack(torch.broadcast_tensors(dy * inv_k2, -dx * inv_k2, dx, dy)) * mask
    real = dict(dtype=dtype, device=device)
    cplx = dict(dtype=ctype, device=device)
    return Spectral(dx.to(**cplx), dy.to(**cplx), k2.to(**real), inv_k2.to(**real), mask.to(**real),
                     grad.to(**cplx))


def gradients(w_hat: torch.Tensor, sp: Spectral, S: int) -> torch.Tensor:
    """``(v_x, v_y, dw/dx, dw/dy)`` of the 2/3-truncated ``w`` on the grid, ``(..., 4, S, S)``."""
    return torch.fft.irfft2(w_hat.unsqueeze(-3) * sp.grad, s=(S, S))


def grid_dot(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``g_v . h_grad`` (``g_0 h_2 + g_1 h_3``) on the grid, of two :func:`gradients`."""
    return g[..., 0, :, :] * h[..., 2, :, :] + g[..., 1, :, :] * h[..., 3, :, :]


def advection_hat(w_hat: torch.Tensor, sp: Spectral, S: int) -> torch.Tensor:
    """Spectrum of ``v . grad w``, dealiased by the 2/3 rule (inputs and product truncated)."""
    g = gradients(w_hat, sp, S)
    return torch.fft.rfft2(grid_dot(g, g)) * sp.mask
