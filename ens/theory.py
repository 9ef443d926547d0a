r"""Why a small residual does not mean a small error: spectra, bounds and mode damping.

This module makes claim 3 of the paper computable on the linear Helmholtz problem
``Delta u + k^2 u = f`` with zero Dirichlet data on the unit square (``k = 0`` is Poisson),
discretised with the 5-point stencil on the node grid ``x_i = i / (S - 1)``. On the ``n = S - 2``
interior nodes per direction the discrete operator is the symmetric matrix

.. math::

    A = \Delta_h + k^2 I, \qquad A = (Q \otimes Q)\, \mathrm{diag}(\lambda_{ij})\, (Q \otimes Q),
    \qquad \lambda_{ij} = \mu_i + \mu_j + k^2,
    \qquad \mu_i = -\tfrac{4}{h^2} \sin^2\!\Big(\frac{\pi i}{2 (n + 1)}\Big),

with ``Q`` the orthonormal DST-I (``ens.pdes.stencil``). ``A`` is symmetric, so its singular values
are ``sigma_ij = |lambda_ij|`` and its singular vectors are the DST modes; ``A`` is negative
definite (``-A`` is SPD) while ``k^2 < -2 mu_1 ~ 2 pi^2``, the first resonance.

For ``A u* = b``, an approximation ``u = u* + e`` has the residual ``r = A u - b = A e`` and

.. math::

    \frac{\|r\|}{\|A\|} \le \|e\| \le \|A^{-1}\| \|r\|, \qquad
    \frac{1}{\kappa} \frac{\|r\|}{\|b\|} \le \frac{\|e\|}{\|u^*\|} \le \kappa \frac{\|r\|}{\|b\|},
    \qquad \kappa = \frac{\sigma_{\max}}{\sigma_{\min}}.

Gradient descent on ``0.5 ||A u - b||^2`` with step ``eta`` updates ``e <- (I - eta A^T A) e``: the
error along singular vector ``i`` is multiplied by ``(1 - eta sigma_i^2)`` per step, so with the
largest stable step ``eta ~ 1 / sigma_max^2`` the modes with ``sigma_i << sigma_max`` -- the smooth
modes, and above all the near-resonant one -- barely move, while they are also the modes the
residual hardly sees. :func:`residual_vs_error_experiment` shows the consequence for gradient
descent and for the Krylov methods (CG, and Gauss--Newton solved by CG on the normal equations).

All fields are batch-first torch tensors ``(B, 1, S, S)`` in float64 with zero boundary values;
norms are Euclidean norms over the interior nodes (the boundary entries are zero). Tables are tidy
(long-format where they hold trajectories) pandas DataFrames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .checks import check_int
from .pdes import get_pde
from .pdes.helmholtz import Helmholtz
from .pdes.stencil import dst2
from .solvers import gradient_descent
from .solvers._common import dot, residual_and_pullback, residual_fn, safe_div

__all__ = [
    "PROFILE_RESOLUTIONS", "profile_resolutions", "resolve_parameters",
    "helmholtz", "first_resonance", "helmholtz_spectrum", "singular_values", "condition_number",
    "condition_table", "dense_operator", "numerical_spectrum",
    "ErrorModel", "error_bound",
    "stable_step", "gd_damping_factors", "gd_mode_error", "gd_steps_to_reduce", "gd_damping_table",
    "MODE_BANDS", "mode_band_masks", "band_errors",
    "METHODS", "ExperimentResult", "residual_vs_error_experiment", "reduction_factors", "band_drop",
    "BOUND_ERROR_MODELS", "bound_on_samples",
]

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
    resolutions = tuple(_check_S(S) for S in resolutions)
    if isinstance(k_values, (int, float, str)) or not len(k_values):
        raise ValueError(f"expected k_values to be a non-empty list of wavenumbers, got {k_values!r}")
    k_values = tuple(_check_k(k) for k in k_values)
    return {"profile": profile, "resolutions": resolutions, "k_values": k_values,
            "seed": check_int(seed, "seed", 0), "n_samples": check_int(n_samples, "n_samples")}


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _check_k(k) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected the wavenumber k to be a real number, got {type(k).__name__} {k!r}")
    k = float(k)
    if not math.isfinite(k) or k < 0:
        raise ValueError(f"expected a finite wavenumber k >= 0 (the operator depends on k^2 only), got {k}")
    return k


def _check_S(S) -> int:
    if isinstance(S, bool) or not isinstance(S, (int, np.integer)) or S < 4:
        raise ValueError(f"expected the grid size S to be an int >= 4 (at least 2x2 interior nodes), got {S!r}")
    return int(S)


def helmholtz(k: float, **params) -> Helmholtz:
    """The linear Helmholtz PDE object ``Delta u + k^2 u = f`` (``get_pde("helmholtz", k=k)``)."""
    k = _check_k(k)
    if params.get("lam", 0.0):
        raise ValueError("the theory module is about the linear operator; expected lam = 0")
    return get_pde("helmholtz", k=k, **params)


def first_resonance(S: int | None = None) -> float:
    r"""Smallest wavenumber at which ``Delta_h + k^2`` is singular: ``k = sqrt(-2 mu_1)``.

    With ``S = None`` the continuum value ``sqrt(2) pi ~ 4.443`` (``k^2 = 2 pi^2``).
    """
    if S is None:
        return math.sqrt(2.0) * math.pi
    S = _check_S(S)
    return math.sqrt(8.0) * (S - 1) * math.sin(math.pi / (2 * (S - 1)))


# ---------------------------------------------------------------------------------------------
# spectrum and condition number
# ---------------------------------------------------------------------------------------------
def helmholtz_spectrum(S: int, k: float) -> torch.Tensor:
    r"""Closed-form eigenvalues ``lambda_ij = mu_i + mu_j + k^2`` of ``Delta_h + k^2 I``, ``(S-2, S-2)``.

    Entry ``[i-1, j-1]`` belongs to the DST mode ``sin(pi i x) sin(pi j y)`` (``i, j = 1 .. S-2``).
    """
    return helmholtz(k).operator_eigenvalues(_check_S(S))


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
            rows.append({"S": _check_S(S), "k": _check_k(k), "sigma_min": float(s[0]),
                         "sigma_max": float(s[-1]),
                         "kappa": float(s[-1] / s[0]) if s[0] > 0 else math.inf})
    return pd.DataFrame(rows)


def dense_operator(pde, S: int) -> np.ndarray:
    r"""Dense matrix of the PDE's linear residual map on the interior nodes, ``(n^2, n^2)``, ``n = S-2``.

    Built from the PDE's own ``residual`` (not from the stencil formula) as the Jacobian
    ``dR(u; 0) / du`` restricted to interior nodes, with ``torch.func.jacrev``; row-major
    (C-order) flattening of the ``(n, n)`` interior. Meant for small ``S`` (the matrix is dense).
    """
    S = _check_S(S)
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


# ---------------------------------------------------------------------------------------------
# the residual / error bound on samples
# ---------------------------------------------------------------------------------------------
def _norm(x: torch.Tensor) -> torch.Tensor:
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
        scale = _norm(u_star).view(B, 1, 1, 1)
        m = self.smooth_modes
        idx = torch.arange(1, m + 1, dtype=torch.float64)
        w = (idx[:, None] ** 2 + idx[None, :] ** 2) ** (-self.smooth_decay / 2)
        coef = torch.zeros(B, 1, n, n, dtype=torch.float64)
        coef[..., :m, :m] = torch.randn(B, 1, m, m, dtype=torch.float64, generator=generator) * w
        smooth = F.pad(dst2(coef), (1, 1, 1, 1))
        noise = F.pad(torch.randn(B, 1, n, n, dtype=torch.float64, generator=generator), (1, 1, 1, 1))
        e = (self.smooth_amplitude * smooth / _norm(smooth).view(B, 1, 1, 1)
             + self.noise_amplitude * noise / _norm(noise).view(B, 1, 1, 1))
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
    ``relative_error = ||e|| / ||u*||``, ``relative_residual = ||r|| / ||b||`` (``b = f`` on the
    interior), ``kappa``, ``bound = kappa * relative_residual`` and ``tightness = relative_error /
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
    err, res = _norm(u - u_star), _norm(r)
    rel_err, rel_res = err / _norm(u_star), res / _norm(f)
    out = pd.DataFrame({
        "sample": np.arange(u.shape[0]),
        "error": err.numpy(), "residual": res.numpy(),
        "error_lower": (res / smax).numpy(), "error_upper": (res / smin).numpy(),
        "relative_error": rel_err.numpy(), "relative_residual": rel_res.numpy(),
        "kappa": kappa, "bound": (kappa * rel_res).numpy(),
    })
    out["tightness"] = out["relative_error"] / out["bound"]
    out["slack_error"] = out["error_upper"] / out["error"]
    out["slack_solution"] = (smax * _norm(u_star) / _norm(f)).numpy()
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
    S = _check_S(S)
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


# ---------------------------------------------------------------------------------------------
# gradient descent mode damping
# ---------------------------------------------------------------------------------------------
def stable_step(S: int, k: float) -> float:
    r"""The step ``eta = 1 / sigma_max^2`` for gradient descent on ``0.5 ||A u - b||^2``.

    Any ``0 < eta < 2 / sigma_max^2`` converges; ``1 / sigma_max^2`` damps the stiffest mode
    completely in one step and every other mode monotonically.
    """
    return 1.0 / float(helmholtz_spectrum(S, k).abs().max()) ** 2


def _check_eta(eta, S, k) -> float:
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
    eta = _check_eta(eta, S, k)
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
    eta = _check_eta(eta, S, k)
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
    eta = _check_eta(eta, S, k)
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


# ---------------------------------------------------------------------------------------------
# the central experiment
# ---------------------------------------------------------------------------------------------
def _gradient_descent(pde: Helmholtz, u: torch.Tensor, f: torch.Tensor, n_iter: int, eta: float,
                      chunk: int | None = None) -> Iterator[torch.Tensor]:
    """The iterates ``u_1 .. u_n_iter`` of :func:`ens.solvers.gradient_descent` with the fixed step
    ``eta`` (its method ``"gd"``: gradient descent on ``0.5 ||R(u; f)||^2``, gradient projected
    onto zero boundary values), without holding them all at once.

    The solver runs ``chunk`` steps at a time (default: about 32 MB of states), each run starting
    from the previous one's last iterate; a fixed-step iteration has no other state, so the
    iterates are exactly those of a single run of ``n_iter`` steps.
    """
    chunk = chunk or max(1, (1 << 22) // u.numel())
    for done in range(0, n_iter, chunk):
        states = gradient_descent(pde, f, u, steps=min(chunk, n_iter - done), step_size=eta,
                                  keep_states=True).states
        yield from states[1:]
        u = states[-1]


def _conjugate_gradient(pde: Helmholtz, u: torch.Tensor, f: torch.Tensor, n_iter: int) -> Iterator[torch.Tensor]:
    """CG on ``(-A) u = -f`` (``-A`` is SPD below the first resonance); its residual ``-f + A u``
    is exactly ``R(u; f)``. Minimises the ``-A``-norm of the error over the Krylov space."""
    A = residual_fn(pde, torch.zeros_like(f))
    r = pde.residual(u, f, check=False)        # b - M u = -f + A u with M = -A, b = -f
    p, rr = r.clone(), dot(r, r)
    for _ in range(n_iter):
        Mp = -A(p)
        alpha = safe_div(rr, dot(p, Mp))
        u = u + alpha * p
        r = r - alpha * Mp
        rr_new = dot(r, r)
        p = r + safe_div(rr_new, rr) * p
        rr = rr_new
        yield u


def _cgnr(pde: Helmholtz, u: torch.Tensor, f: torch.Tensor, n_iter: int) -> Iterator[torch.Tensor]:
    """Gauss--Newton for ``min 0.5 ||R(u)||^2`` with its normal equations ``J^T J d = -J^T R``
    solved by CG (CGNR); for the linear residual ``J = A`` and the iterates are those of CGNR on
    ``A u = f``, minimising ``||R(u)||`` over the Krylov space of ``A^T A``. ``A^T`` is applied
    with autograd (vjp) of the PDE's residual, projected onto zero boundary values."""
    zero = torch.zeros_like(f)
    A = residual_fn(pde, zero)
    _, At = residual_and_pullback(pde, zero, torch.zeros_like(u))
    r = -pde.residual(u, f, check=False)
    z = At(r)
    p, zz = z.clone(), dot(z, z)
    for _ in range(n_iter):
        w = A(p)
        alpha = safe_div(zz, dot(w, w))
        u = u + alpha * p
        r = r - alpha * w
        z = At(r)
        zz_new = dot(z, z)
        p = z + safe_div(zz_new, zz) * p
        zz = zz_new
        yield u


#: solver name -> description, for :func:`residual_vs_error_experiment`
METHODS = {"gd": "gradient descent, eta = 1/sigma_max^2",
           "cg": "conjugate gradients on -A (SPD)",
           "cgnr": "Gauss-Newton = CG on the normal equations"}


class ExperimentResult(NamedTuple):
    """Output of :func:`residual_vs_error_experiment`.

    trajectories
        Long format ``k, S, method, sample, iteration, quantity, value`` with quantity
        ``"relative_residual"`` (``||R(u_t; f)|| / ||f||``) or ``"relative_error"``
        (``||u_t - u*|| / ||u*||``); iteration 0 is the common start.
    bands
        Long format ``k, S, method, sample, iteration, band, value`` with value
        ``||P_band (u_t - u*)|| / ||u*||`` (:func:`mode_band_masks`); the squares of the band values
        add up to the squared relative error.
    """

    trajectories: pd.DataFrame
    bands: pd.DataFrame


def residual_vs_error_experiment(k: float, S: int, n_samples: int = 4, n_iter: int = 100,
                                 methods: Sequence[str] = ("gd", "cg", "cgnr"), seed: int = 0,
                                 error_model: ErrorModel = ErrorModel(),
                                 band_edges: tuple[float, float] = (1 / 8, 1 / 2),
                                 eta: float | None = None) -> ExperimentResult:
    r"""Residual minimisers from a network-like start: the residual falls, the error much less.

    Draw forcings ``f`` from the Helmholtz input law, solve exactly (DST) for ``u*``, start every
    method from the same ``u_0 = u* + e_0`` with ``e_0`` from ``error_model`` (smooth bias plus
    rough noise, the shape of a trained network's error) and run ``n_iter`` iterations of

    * ``"gd"``: gradient descent on ``0.5 ||R(u)||^2`` with the stable step ``eta = 1/sigma_max^2``
      (per-mode damping ``1 - eta sigma_i^2``, see :func:`gd_damping_factors`): the baseline
      :func:`ens.solvers.gradient_descent` with ``step_size=eta``;
    * ``"cg"``: conjugate gradients on ``-A u = -f``. ``-A = -(Delta_h + k^2)`` is symmetric
      positive definite for ``k`` below the first resonance (:func:`first_resonance`), where CG is
      the optimal Krylov method (it minimises the energy norm of the error, and converges like
      ``sqrt(kappa)``); it raises ``ValueError`` above the resonance;
    * ``"cgnr"``: Gauss--Newton on ``0.5 ||R(u)||^2``, whose normal equations ``A^T A d = -A^T R``
      are solved by CG -- what a hybrid residual minimiser does with a general (non-symmetric or
      nonlinear) residual. It minimises ``||R||`` over the Krylov space of ``A^T A`` and converges
      like ``kappa``.

    All residuals are the PDE object's ``residual`` (the real discretisation); errors are split
    into eigenmode bands with the DST. Work is float64 on the CPU.

    Returns
    -------
    ExperimentResult
        Tidy trajectories and band errors (see :class:`ExperimentResult`).
    """
    k, S = _check_k(k), _check_S(S)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"expected n_samples to be a positive int, got {n_samples!r}")
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"expected n_iter to be a positive int, got {n_iter!r}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {sorted(METHODS)}")
    pde = helmholtz(k)
    lam = pde.operator_eigenvalues(S)
    if "cg" in methods and not bool((lam < 0).all()):
        raise ValueError(f"CG needs -A symmetric positive definite, which fails for k = {k} >= the first "
                         f"resonance {first_resonance(S):.4f} at S = {S}; use 'cgnr' there")
    eta = _check_eta(eta, S, k)
    gen = torch.Generator().manual_seed(int(seed))
    f = pde.sample_inputs(n_samples, S, generator=gen)
    u_star = pde.solve(f)
    u0 = u_star + error_model.sample(u_star, generator=gen)
    masks = mode_band_masks(S, k, band_edges)
    fnorm, unorm = _norm(f), _norm(u_star)

    traj, bands = [], []
    chunk = max(1, (1 << 22) // (n_samples * S * S))   # iterates per batched evaluation (~32 MB)

    def flush(method, start, states):
        """Norms and band errors of the iterates ``start, start+1, ...`` in one batched pass."""
        if not states:
            return
        T = len(states)
        u = torch.cat(states)                                   # (T * B, 1, S, S)
        e = u - u_star.repeat(T, 1, 1, 1)
        its = np.repeat(np.arange(start, start + T), n_samples)
        smp = np.tile(np.arange(n_samples), T)
        res = _norm(pde.residual(u, f.repeat(T, 1, 1, 1), check=False)) / fnorm.repeat(T)
        err = _norm(e) / unorm.repeat(T)
        for q, v in (("relative_residual", res), ("relative_error", err)):
            traj.append(pd.DataFrame({"method": method, "sample": smp, "iteration": its,
                                      "quantity": q, "value": v.numpy()}))
        for b, v in band_errors(e, masks).items():
            bands.append(pd.DataFrame({"method": method, "sample": smp, "iteration": its,
                                       "band": b, "value": (v / unorm.repeat(T)).numpy()}))
        states.clear()

    with torch.no_grad():
        for method in methods:
            if method == "gd":
                it = _gradient_descent(pde, u0, f, n_iter, eta, chunk)
            elif method == "cg":
                it = _conjugate_gradient(pde, u0, f, n_iter)
            else:
                it = _cgnr(pde, u0, f, n_iter)
            states, start = [u0], 0
            for t, u in enumerate(it, start=1):
                if len(states) == chunk:
                    flush(method, start, states)
                    start = t
                states.append(u)
            flush(method, start, states)

    def finish(frames):
        df = pd.concat(frames, ignore_index=True)
        df.insert(0, "S", S)
        df.insert(0, "k", k)
        return df

    return ExperimentResult(finish(traj), finish(bands))


def reduction_factors(trajectories: pd.DataFrame, iteration: int | None = None) -> pd.DataFrame:
    """How much each method cut the residual and the error: ``value(0) / value(iteration)``.

    ``iteration=None`` takes the last recorded iteration. Per-sample factors are summarised by
    their geometric mean. Returns one row per ``(k, S, method)`` with ``iteration``,
    ``residual_reduction``, ``error_reduction`` and ``ratio = residual_reduction / error_reduction``
    (how many times faster the residual fell than the error).
    """
    keys = [c for c in ("k", "S", "method") if c in trajectories.columns]
    rows = []
    for key, g in trajectories.groupby(keys, sort=False):
        t = int(g["iteration"].max()) if iteration is None else int(iteration)
        if t not in set(g["iteration"]):
            raise ValueError(f"iteration {t} was not recorded for {dict(zip(keys, key))}")
        row = dict(zip(keys, key), iteration=t)
        for q, name in (("relative_residual", "residual_reduction"), ("relative_error", "error_reduction")):
            v0 = g[(g.quantity == q) & (g.iteration == 0)].set_index("sample")["value"]
            vt = g[(g.quantity == q) & (g.iteration == t)].set_index("sample")["value"]
            row[name] = float(np.exp(np.log(v0 / vt).mean()))
        row["ratio"] = row["residual_reduction"] / row["error_reduction"]
        rows.append(row)
    return pd.DataFrame(rows)


def band_drop(result: ExperimentResult, band: str = "lowest", factor: float = 2.0) -> pd.DataFrame:
    """When does a band's error first fall by ``factor``, and how far has the residual fallen by then?

    Works on the geometric mean over samples. One row per ``(k, S, method)``: ``iteration`` (the
    first iteration at which the band error is ``<= value(0) / factor``; ``NaN`` if never) and
    ``residual_reduction``, ``error_reduction`` and ``band_reduction`` at the iteration before
    (``iterations_recorded`` is the last iteration available). A residual reduction far above
    ``factor`` there means the residual fell a lot while that band of the error had not yet moved.
    """
    if band not in MODE_BANDS:
        raise ValueError(f"unknown band {band!r}; expected one of {MODE_BANDS}")
    if not factor > 1:
        raise ValueError(f"expected factor > 1, got {factor!r}")
    keys = ["k", "S", "method"]

    def gmean(df, col):
        return df.groupby(keys + ["iteration", col], sort=False)["value"].apply(
            lambda v: float(np.exp(np.log(v).mean()))).unstack(col)

    b = gmean(result.bands, "band")[band]
    q = gmean(result.trajectories, "quantity")
    rows = []
    for key, series in b.groupby(level=keys, sort=False):
        series = series.droplevel(keys)
        traj = q.loc[key]
        hit = series.index[series.values <= series.loc[0] / factor]
        t = int(hit[0]) if len(hit) else None
        before = (t - 1) if t is not None else int(series.index.max())
        rows.append({**dict(zip(keys, key)), "iteration": np.nan if t is None else t,
                     "iterations_recorded": int(series.index.max()),
                     "band_reduction": float(series.loc[0] / series.loc[before]),
                     "residual_reduction": float(traj.loc[0, "relative_residual"]
                                                 / traj.loc[before, "relative_residual"]),
                     "error_reduction": float(traj.loc[0, "relative_error"]
                                              / traj.loc[before, "relative_error"])})
    return pd.DataFrame(rows)
