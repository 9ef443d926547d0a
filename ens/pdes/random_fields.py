"""Gaussian random fields on the unit square with covariance ``sigma^2 (-Delta + tau^2 I)^(-alpha)``.

The field is the truncated Karhunen--Loeve expansion

    g(x) = sum_m  sigma (lambda_m + tau^2)^(-alpha / 2)  xi_m  phi_m(x),    xi_m ~ N(0, 1),

over the L2-orthonormal eigenfunctions ``phi_m`` of ``-Delta`` for the chosen boundary condition,
with ``sigma = tau^(alpha - d/2)`` (``d = 2``) so that the variance stays O(1) as ``tau`` varies
(the normalisation of the FNO / PDEBench generators):

* ``"dirichlet"``: ``phi_kl = 2 sin(pi k x) sin(pi l y)``, ``k, l >= 1``, ``lambda = pi^2 (k^2+l^2)``,
  sampled on the node grid ``x_i = i / (S-1)`` (the field vanishes on the boundary);
* ``"neumann"``: ``phi_kl = c_k c_l cos(pi k x) cos(pi l y)``, ``k, l >= 0`` except ``k = l = 0``,
  ``c_0 = 1``, ``c_k = sqrt 2``, on the node grid (zero mean);
* ``"periodic"``: real Fourier modes ``sqrt 2 cos / sin(2 pi (k x + l y))`` on the torus cell grid
  ``x_i = i / S``, ``lambda = 4 pi^2 (k^2 + l^2)``, zero mean.

Modes are truncated at the grid's Nyquist index. Sampling uses a ``torch.Generator`` on the CPU
in float64, so a seed fixes the field bit for bit whatever the target device.
"""

from __future__ import annotations

import math

import torch

__all__ = ["gaussian_random_field"]

BOUNDARIES = ("dirichlet", "neumann", "periodic")


def _basis(kind: str, S: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (eigenfunction table ``P[m, i]`` (1-D), eigenvalue table ``lam[m]``) in float64."""
    if kind == "dirichlet":
        x = torch.linspace(0.0, 1.0, S, dtype=torch.float64)
        k = torch.arange(1, S - 1, dtype=torch.float64)
        P = math.sqrt(2.0) * torch.sin(math.pi * torch.outer(k, x))
        P[:, [0, -1]] = 0.0  # exact zeros on the boundary (sin(pi k) is only ~1e-16 in floating point)
        return P, (math.pi * k) ** 2
    if kind == "neumann":
        x = torch.linspace(0.0, 1.0, S, dtype=torch.float64)
        k = torch.arange(0, S - 1, dtype=torch.float64)
        P = math.sqrt(2.0) * torch.cos(math.pi * torch.outer(k, x))
        P[0] = 1.0
        return P, (math.pi * k) ** 2
    raise AssertionError(kind)


def gaussian_random_field(n: int, S: int, alpha: float, tau: float, boundary: str = "periodic",
                          generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                          device="cpu") -> torch.Tensor:
    """Draw ``n`` fields of shape ``(n, S, S)``; see the module docstring for the law."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; expected one of {BOUNDARIES}")
    if not alpha > 1.0 or not tau > 0.0:
        raise ValueError(f"expected alpha > 1 (a field with finite variance in 2-D) and tau > 0, "
                         f"got alpha={alpha}, tau={tau}")
    sigma = tau ** (alpha - 1.0)
    if boundary == "periodic":
        # Fourier modes -S/2 .. S/2-1 per axis. Re(sum_k (a_k + i b_k) amp_k e^{2 pi i k.x}) with
        # a, b ~ N(0, 1) has variance amp_k^2 per wave vector, 2 amp_k^2 per pair (k, -k): the
        # variance of the real expansion over sqrt(2) cos and sqrt(2) sin with N(0, 1) weights.
        k = torch.fft.fftfreq(S, d=1.0 / S, dtype=torch.float64)
        lam = 4 * math.pi ** 2 * (k[:, None] ** 2 + k[None, :] ** 2)
        amp = sigma * (lam + tau ** 2) ** (-alpha / 2)
        amp[0, 0] = 0.0
        xi = torch.randn(n, S, S, 2, dtype=torch.float64, generator=generator)
        coef = torch.complex(xi[..., 0], xi[..., 1]) * amp
        field = torch.fft.ifft2(coef, norm="forward").real
    else:
        P, lam1 = _basis(boundary, S)
        lam = lam1[:, None] + lam1[None, :]
        amp = sigma * (lam + tau ** 2) ** (-alpha / 2)
        if boundary == "neumann":
            amp[0, 0] = 0.0
        xi = torch.randn(n, *amp.shape, dtype=torch.float64, generator=generator)
        field = P.T @ (xi * amp) @ P
    return field.to(dtype=dtype, device=device)
