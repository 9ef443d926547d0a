"""The residual / error bound ``||r|| / ||A|| <= ||e|| <= ||A^-1|| ||r||`` checked on samples and
error shapes.

See :mod:`ens.theory` for the mathematics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..pdes.stencil import dst2
from .spectra import check_grid_size, helmholtz

__all__ = ["ErrorModel", "error_bound", "BOUND_ERROR_MODELS", "bound_on_samples"]

# ---------------------------------------------------------------------------------------------
# the residual / error bound on samples
# ---------------------------------------------------------------------------------------------
def interior_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm over the interior nodes of ``(B, 1, S, S)`` -> ``(B,)``."""
    return x[..., 1:-1, 1:-1].flatten(1).norm(dim=1)


@dataclass(frozen=True)
class ErrorModel:
    r"""What a trained network's prediction error looks like: smooth bias plus small rough noise.

    ``e = e_smooth + e_noise`` with

    * ``e_smooth = sum_{1 <= i, j <= smooth_modes} xi_ij (i^2 + j^2)^(-smooth_decay/2) phi_ij``,
      ``xi_ij ~ N(0, 1)``, ``phi_ij`` the orthonormal DST modes -- a low-frequency error such as a
      slightly wrong amplitude or phase of the solution's large structures;
    * ``e_noise`` white Gaussian noise on the interior nodes -- the high-frequency roughness of a
      network's output;

    each rescaled per sample to the exact relative size ``||e_smooth|| = smooth_amplitude ||u*||``
    and ``||e_noise|| = noise_amplitude ||u*||`` (the two are nearly orthogonal, so
    ``||e|| / ||u*|| ~ sqrt(smooth_amplitude^2 + noise_amplitude^2)``). Setting one amplitude to
    zero gives a purely smooth or purely rough error.
    """

    smooth_amplitude: float = 0.05
    noise_amplitude: float = 0.005
    smooth_modes: int = 4
    smooth_decay: float = 2.0

    def __post_init__(self):
        if not (self.smooth_amplitude >= 0 and self.noise_amplitude >= 0):
            raise ValueError(f"expected non-negative amplitudes, got smooth={self.smooth_amplitude}, "
                             f"noise={self.noise_amplitude}")
        if self.smooth_amplitude == 0 and self.noise_amplitude == 0:
            raise ValueError("expected at least one positive amplitude (the error would be zero)")
        if not isinstance(self.smooth_modes, int) or self.smooth_modes < 1:
            raise ValueError(f"expected smooth_modes to be a positive int, got {self.smooth_modes!r}")

    def sample(self, u_star: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``e`` for each sample of ``u_star`` ``(B, 1, S, S)``; zero on the boundary."""
        if u_star.dim() != 4 or u_star.shape[1] != 1:
            raise ValueError(f"expected u_star of shape (B, 1, S, S), got {tuple(u_star.shape)}")
        B, _, S, _ = u_star.shape
        n = S - 2
        if self.smooth_modes > n:
            raise ValueError(f"smooth_modes={self.smooth_modes} exceeds the {n} DST modes per axis at S={S}")
        scale = interior_norm(u_star).view(B, 1, 1, 1)
        m = self.smooth_modes
        idx = torch.arange(1, m + 1, dtype=torch.float64)
        w = (idx[:, None] ** 2 + idx[None, :] ** 2) ** (-self.smooth_decay / 2)
        coef = torch.zeros(B, 1, n, n, dtype=torch.float64)
        coef[..., :m, :m] = torch.randn(B, 1, m, m, dtype=torch.float64, generator=generator) * w
        smooth = F.pad(dst2(coef), (1, 1, 1, 1))
        noise = F.pad(torch.randn(B, 1, n, n, dtype=torch.float64, generator=generator), (1, 1, 1, 1))
        e = (self.smooth_amplitude * smooth / interior_norm(smooth).view(B, 1, 1, 1)
             + self.noise_amplitude * noise / interior_norm(noise).view(B, 1, 1, 1))
        return (e * scale).to(u_star)


def error_bound(pde, u: torch.Tensor, u_star: torch.Tensor, f: torch.Tensor) -> pd.DataFrame:
    r"""Evaluate ``||r||/||A|| <= ||e|| <= ||A^-1|| ||r||`` and the relative bound per sample.

    Parameters
    ----------
    pde
        A linear Helmholtz/Poisson object (``operator_eigenvalues`` gives ``||A||`` and ``||A^-1||``).
    u, u_star, f
        Approximation, exact discrete solution and forcing, ``(B, 1, S, S)``.

    Returns
    -------
    DataFrame, one row per sample, with ``error = ||e||``, ``residual = ||r||`` (``r = R(u; f)``
    from ``pde.residual``), ``error_lower = ||r|| / sigma_max``, ``error_upper = ||r|| / sigma_min``,
    ``rel_l2 = ||e|| / ||u*||``, ``rel_residual = ||r|| / ||b||`` (``b = f`` on the
    interior), ``kappa``, ``bound = kappa * rel_residual`` and ``tightness = rel_l2 /
    bound`` (1 would be a sharp bound; it lies in ``(0, 1]`` whenever the bound holds).

    The slack of the relative bound factors into two parts, ``1 / tightness = slack_error *
    slack_solution``:

    * ``slack_error = error_upper / error = ||r|| / (sigma_min ||e||) >= 1``, which is 1 exactly when
      ``e`` is a lowest singular vector (the error hides where ``A`` is weakest);
    * ``slack_solution = sigma_max ||u*|| / ||b|| >= 1``, which is 1 when ``u*`` is a highest
      singular vector -- far from the case for the smooth solutions of an elliptic problem.
    """
    pde.check_state(u, f)
    pde.check_state(u_star, f)
    S = f.shape[-1]
    s = pde.operator_eigenvalues(S).abs()
    smin, smax = float(s.min()), float(s.max())
    kappa = smax / smin
    r = pde.residual(u, f)
    err, res = interior_norm(u - u_star), interior_norm(r)
    rel_err, rel_res = err / interior_norm(u_star), res / interior_norm(f)
    out = pd.DataFrame({
        "sample": np.arange(u.shape[0]),
        "error": err.numpy(), "residual": res.numpy(),
        "error_lower": (res / smax).numpy(), "error_upper": (res / smin).numpy(),
        "rel_l2": rel_err.numpy(), "rel_residual": rel_res.numpy(),
        "kappa": kappa, "bound": (kappa * rel_res).numpy(),
    })
    out["tightness"] = out["rel_l2"] / out["bound"]
    out["slack_error"] = out["error_upper"] / out["error"]
    out["slack_solution"] = (smax * interior_norm(u_star) / interior_norm(f)).numpy()
    return out


#: the error shapes compared by :func:`bound_on_samples`
BOUND_ERROR_MODELS = {
    "lowest mode": ErrorModel(smooth_amplitude=0.05, noise_amplitude=0.0, smooth_modes=1),
    "smooth": ErrorModel(smooth_amplitude=0.05, noise_amplitude=0.0),
    "rough": ErrorModel(smooth_amplitude=0.0, noise_amplitude=0.005),
    "network-like": ErrorModel(),
}


def bound_on_samples(k_values: Iterable[float], S: int, n_samples: int = 8, seed: int = 0,
                     error_models: dict[str, ErrorModel] | None = None) -> pd.DataFrame:
    """:func:`error_bound` on real samples: draw ``f``, solve for ``u*`` with the DST, perturb.

    For each ``k`` the same seed draws ``n_samples`` forcings from the Helmholtz input law; each
    error model (default :data:`BOUND_ERROR_MODELS`: the lowest DST mode alone, purely smooth,
    purely rough, network-like)
    perturbs ``u*``. Returns the :func:`error_bound` rows with ``k``, ``S`` and ``error_type``.
    """
    S = check_grid_size(S)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"expected n_samples to be a positive int, got {n_samples!r}")
    error_models = BOUND_ERROR_MODELS if error_models is None else error_models
    frames = []
    for k in k_values:
        pde = helmholtz(k)
        gen = torch.Generator().manual_seed(int(seed))
        f = pde.sample_inputs(n_samples, S, generator=gen)
        u_star = pde.solve(f)
        for name, model in error_models.items():
            df = error_bound(pde, u_star + model.sample(u_star, generator=gen), u_star, f)
            df.insert(0, "error_type", name)
            df.insert(0, "S", S)
            df.insert(0, "k", float(k))
            frames.append(df)
    return pd.concat(frames, ignore_index=True)
