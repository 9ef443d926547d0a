"""The theory notebook's parameters per profile, and the spectrum and condition number of the
5-point Helmholtz operator (closed form from the DST-I, and numerically for any PDE object).

See :mod:`ens.theory` for the mathematics."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..checks import check_int
from ..pdes import get_pde
from ..pdes.helmholtz import Helmholtz

__all__ = ["PROFILE_RESOLUTIONS", "profile_resolutions", "resolve_parameters", "helmholtz", "first_resonance", "helmholtz_spectrum", "singular_values", "condition_number", "condition_table", "dense_operator", "numerical_spectrum"]

#: profile -> grid sizes S used by the theory notebook (a profile scales sizes only)
PROFILE_RESOLUTIONS: dict[str, tuple[int, ...]] = {
    "ci": (32, 64),
    "default": (64, 128),
    "paper": (128, 256),
}


def profile_resolutions(profile: str) -> tuple[int, ...]:
    """Default grid sizes of a run profile (``"ci"``, ``"default"`` or ``"paper"``).

    Raises ``ValueError`` naming the valid profiles for anything else.
    """
    if not isinstance(profile, str) or profile not in PROFILE_RESOLUTIONS:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILE_RESOLUTIONS)}")
    return PROFILE_RESOLUTIONS[profile]


def resolve_parameters(profile: str, resolutions=None, k_values=(0.0, 1.0, 2.0, 3.0, 4.0),
                       seed: int = 0, n_samples: int = 4) -> dict:
    """Validate the theory notebook's parameters and fill in profile defaults.

    Returns ``{"profile", "resolutions", "k_values", "seed", "n_samples"}`` with
    ``resolutions`` from :func:`profile_resolutions` when None. Raises ``ValueError`` (or
    ``TypeError``) saying which parameter is wrong and what is expected.
    """
    default = profile_resolutions(profile)
    if resolutions is None:
        resolutions = default
    if isinstance(resolutions, (int, str)) or not len(resolutions):
        raise ValueError(f"expected resolutions to be None or a non-empty list of ints >= 4, got {resolutions!r}")
    resolutions = tuple(check_grid_size(S) for S in resolutions)
    if isinstance(k_values, (int, float, str)) or not len(k_values):
        raise ValueError(f"expected k_values to be a non-empty list of wavenumbers, got {k_values!r}")
    k_values = tuple(check_wavenumber(k) for k in k_values)
    return {"profile": profile, "resolutions": resolutions, "k_values": k_values,
            "seed": check_int(seed, "seed", 0), "n_samples": check_int(n_samples, "n_samples")}


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def check_wavenumber(k) -> float:
    """``k`` as a float, or a clear error for a non-real, negative or non-finite wavenumber."""
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected the wavenumber k to be a real number, got {type(k).__name__} {k!r}")
    k = float(k)
    if not math.isfinite(k) or k < 0:
        raise ValueError(f"expected a finite wavenumber k >= 0 (the operator depends on k^2 only), got {k}")
    return k


def check_grid_size(S) -> int:
    """``S`` as an int, or a clear error for a grid with fewer than 2x2 interior nodes."""
    if isinstance(S, bool) or not isinstance(S, (int, np.integer)) or S < 4:
        raise ValueError(f"expected the grid size S to be an int >= 4 (at least 2x2 interior nodes), got {S!r}")
    return int(S)


def helmholtz(k: float, **params) -> Helmholtz:
    """The linear Helmholtz PDE object ``Delta u + k^2 u = f`` (``get_pde("helmholtz", k=k)``)."""
    k = check_wavenumber(k)
    if params.get("lam", 0.0):
        raise ValueError("the theory module is about the linear operator; expected lam = 0")
    return get_pde("helmholtz", k=k, **params)


def first_resonance(S: int | None = None) -> float:
    r"""Smallest wavenumber at which ``Delta_h + k^2`` is singular: ``k = sqrt(-2 mu_1)``.

    With ``S = None`` the continuum value ``sqrt(2) pi ~ 4.443`` (``k^2 = 2 pi^2``).
    """
    if S is None:
        return math.sqrt(2.0) * math.pi
    S = check_grid_size(S)
    return math.sqrt(8.0) * (S - 1) * math.sin(math.pi / (2 * (S - 1)))


# ---------------------------------------------------------------------------------------------
# spectrum and condition number
# ---------------------------------------------------------------------------------------------
def helmholtz_spectrum(S: int, k: float) -> torch.Tensor:
    r"""Closed-form eigenvalues ``lambda_ij = mu_i + mu_j + k^2`` of ``Delta_h + k^2 I``, ``(S-2, S-2)``.

    Entry ``[i-1, j-1]`` belongs to the DST mode ``sin(pi i x) sin(pi j y)`` (``i, j = 1 .. S-2``).
    """
    return helmholtz(k).operator_eigenvalues(check_grid_size(S))


def singular_values(S: int, k: float) -> np.ndarray:
    """Singular values ``|lambda_ij|`` of ``Delta_h + k^2 I``, sorted ascending, shape ``((S-2)^2,)``."""
    return np.sort(helmholtz_spectrum(S, k).abs().flatten().numpy())


def condition_number(S: int, k: float) -> float:
    r"""2-norm condition number ``kappa = sigma_max / sigma_min`` (``inf`` at a resonance)."""
    s = singular_values(S, k)
    return float(s[-1] / s[0]) if s[0] > 0 else math.inf


def condition_table(resolutions: Iterable[int], k_values: Iterable[float]) -> pd.DataFrame:
    """Tidy table, one row per ``(S, k)``: ``S, k, sigma_min, sigma_max, kappa``.

    Computed from the closed-form DST eigenvalues; ``kappa = inf`` where ``k^2`` is an eigenvalue
    of ``-Delta_h``.
    """
    resolutions, k_values = list(resolutions), list(k_values)
    if not resolutions or not k_values:
        raise ValueError(f"expected non-empty resolutions and k_values, got {resolutions!r} and {k_values!r}")
    rows = []
    for S in resolutions:
        for k in k_values:
            s = singular_values(S, k)
            rows.append({"S": check_grid_size(S), "k": check_wavenumber(k), "sigma_min": float(s[0]),
                         "sigma_max": float(s[-1]),
                         "kappa": float(s[-1] / s[0]) if s[0] > 0 else math.inf})
    return pd.DataFrame(rows)


def dense_operator(pde, S: int) -> np.ndarray:
    r"""Dense matrix of the PDE's linear residual map on the interior nodes, ``(n^2, n^2)``, ``n = S-2``.

    Built from the PDE's own ``residual`` (not from the stencil formula) as the Jacobian
    ``dR(u; 0) / du`` restricted to interior nodes, with ``torch.func.jacrev``; row-major
    (C-order) flattening of the ``(n, n)`` interior. Meant for small ``S`` (the matrix is dense).
    """
    S = check_grid_size(S)
    n = S - 2
    c = torch.zeros(1, 1, S, S, dtype=torch.float64)

    def interior_residual(x: torch.Tensor) -> torch.Tensor:
        u = F.pad(x.reshape(1, 1, n, n), (1, 1, 1, 1))
        return pde.residual(u, c, check=False)[0, 0, 1:-1, 1:-1].reshape(-1)

    J = torch.func.jacrev(interior_residual)(torch.zeros(n * n, dtype=torch.float64))
    return J.numpy()


def numerical_spectrum(pde, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (``numpy.linalg.eigvals``) and singular values (``numpy.linalg.svd``) of
    :func:`dense_operator`, each sorted ascending. The general (non-symmetric) eigensolver is used
    on purpose: it does not assume the symmetry that the closed form relies on."""
    A = dense_operator(pde, S)
    ev = np.linalg.eigvals(A)
    if np.abs(ev.imag).max() > 1e-8 * np.abs(ev).max():
        raise AssertionError("the discrete operator has complex eigenvalues; expected a symmetric operator")
    return np.sort(ev.real), np.sort(np.linalg.svd(A, compute_uv=False))
