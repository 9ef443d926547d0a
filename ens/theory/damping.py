"""Gradient descent's damping of each eigenmode of the error, and the eigenmode bands the
experiment splits the error into.

See :mod:`ens.theory` for the mathematics."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..pdes.stencil import dst2
from .spectra import helmholtz_spectrum, singular_values

__all__ = ["stable_step", "gd_damping_factors", "gd_mode_error", "gd_steps_to_reduce", "gd_damping_table", "MODE_BANDS", "mode_band_masks", "band_errors"]

# ---------------------------------------------------------------------------------------------
# gradient descent mode damping
# ---------------------------------------------------------------------------------------------
def stable_step(S: int, k: float) -> float:
    r"""The step ``eta = 1 / sigma_max^2`` for gradient descent on ``0.5 ||A u - b||^2``.

    Any ``0 < eta < 2 / sigma_max^2`` converges; ``1 / sigma_max^2`` damps the stiffest mode
    completely in one step and every other mode monotonically.
    """
    return 1.0 / float(helmholtz_spectrum(S, k).abs().max()) ** 2


def check_step(eta, S, k) -> float:
    """Gradient descent's step: the stable default for ``eta = None``, else ``eta`` checked to be
    in ``(0, 2 / sigma_max^2)``."""
    if eta is None:
        return stable_step(S, k)
    smax2 = float(helmholtz_spectrum(S, k).abs().max()) ** 2
    if not (isinstance(eta, (int, float)) and 0 < eta < 2 / smax2):
        raise ValueError(f"expected a step 0 < eta < 2 / sigma_max^2 = {2 / smax2:.4g} (larger steps make "
                         f"gradient descent diverge), got {eta!r}")
    return float(eta)


def gd_damping_factors(S: int, k: float, eta: float | None = None) -> torch.Tensor:
    r"""Per-step error factor ``1 - eta sigma_ij^2`` of every DST mode, ``(S-2, S-2)``.

    Gradient descent ``u <- u - eta A^T (A u - b)`` gives ``e <- (I - eta A^T A) e``, and ``A^T A``
    is diagonal in the DST basis with entries ``sigma_ij^2 = lambda_ij^2``. Default ``eta``:
    :func:`stable_step`.
    """
    eta = check_step(eta, S, k)
    return 1.0 - eta * helmholtz_spectrum(S, k) ** 2


def gd_mode_error(e0: torch.Tensor, k: float, t: int, eta: float | None = None) -> torch.Tensor:
    r"""DST coefficients of the error after ``t`` gradient-descent steps: ``(1 - eta sigma^2)^t e0_hat``.

    ``e0`` is the initial error ``(B, 1, S, S)`` (zero boundary); returns ``(B, 1, S-2, S-2)``.
    """
    if not isinstance(t, int) or t < 0:
        raise ValueError(f"expected a number of steps t >= 0, got {t!r}")
    S = e0.shape[-1]
    g = gd_damping_factors(S, k, eta).to(e0)
    return dst2(e0[..., 1:-1, 1:-1]) * g ** t


def gd_steps_to_reduce(S: int, k: float, factor: float = 2.0, eta: float | None = None) -> float:
    r"""Gradient-descent steps needed to cut the error in the lowest mode by ``factor``.

    ``ceil(log(factor) / -log(1 - eta sigma_min^2))``, about ``log(factor) kappa^2`` for
    ``eta = 1 / sigma_max^2``; ``inf`` at a resonance (``sigma_min = 0``).
    """
    if not factor > 1:
        raise ValueError(f"expected factor > 1, got {factor!r}")
    eta = check_step(eta, S, k)
    smin = float(helmholtz_spectrum(S, k).abs().min())
    rate = -math.log1p(-eta * smin ** 2)
    return math.inf if rate == 0 else float(math.ceil(math.log(factor) / rate))


def gd_damping_table(S: int, k: float, steps: Sequence[int] = (1, 10, 100, 1000, 10000),
                     eta: float | None = None, n_grid: int | None = None) -> pd.DataFrame:
    """Tidy table of the fraction of each mode's error left after ``t`` GD steps.

    One row per (distinct singular value, t): ``sigma``, ``sigma_rel = sigma / sigma_max``,
    ``t``, ``remaining = |1 - eta sigma^2|^t``. With ``n_grid`` the rows use a geometric grid of
    ``n_grid`` values from ``sigma_min`` to ``sigma_max`` instead of the operator's singular values
    (the same function, sampled evenly for plotting; the low end of the true spectrum is sparse).
    """
    eta = check_step(eta, S, k)
    s = np.unique(np.round(singular_values(S, k), 10))
    if n_grid is not None:
        s = np.geomspace(s[0], s[-1], int(n_grid))
    rows = [pd.DataFrame({"sigma": s, "sigma_rel": s / s.max(), "t": int(t),
                          "remaining": np.abs(1 - eta * s ** 2) ** int(t)}) for t in steps]
    return pd.concat(rows, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# eigenmode bands
# ---------------------------------------------------------------------------------------------
#: the eigenmode bands of :func:`mode_band_masks`, from the smoothest to the roughest
MODE_BANDS = ("lowest", "low", "mid", "high")


def mode_band_masks(S: int, k: float, edges: tuple[float, float] = (1 / 8, 1 / 2)) -> dict[str, torch.Tensor]:
    r"""Boolean ``(S-2, S-2)`` masks over the DST modes ``(i, j)``, partitioning them into bands.

    * ``lowest``: the single mode with the smallest ``|lambda_ij|`` -- the mode that sets
      ``||A^-1||`` (``(1, 1)`` for every ``k`` below the first resonance);
    * ``low``: the other modes with ``max(i, j) <= edges[0] * n``;
    * ``mid``: ``edges[0] n < max(i, j) <= edges[1] n``;
    * ``high``: ``max(i, j) > edges[1] n`` (up to the grid's Nyquist mode ``n = S - 2``).
    """
    if not 0 < edges[0] < edges[1] <= 1:
        raise ValueError(f"expected band edges 0 < e0 < e1 <= 1 (fractions of n), got {edges!r}")
    lam = helmholtz_spectrum(S, k).abs()
    n = S - 2
    idx = torch.arange(1, n + 1)
    m = torch.maximum(idx[:, None], idx[None, :])
    lowest = torch.zeros(n, n, dtype=torch.bool)
    lowest.view(-1)[int(torch.argmin(lam))] = True
    return {"lowest": lowest,
            "low": (m <= edges[0] * n) & ~lowest,
            "mid": (m > edges[0] * n) & (m <= edges[1] * n) & ~lowest,
            "high": (m > edges[1] * n) & ~lowest}


def band_errors(e: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-sample norm ``||P_band e||`` of the error in each band, ``{band: (B,)}``.

    The DST is orthonormal, so the squares of the band norms add up to ``||e||^2``.
    """
    coef = dst2(e[..., 1:-1, 1:-1]).flatten(2)[:, 0]
    return {b: coef[:, m.reshape(-1)].norm(dim=1) for b, m in masks.items()}
