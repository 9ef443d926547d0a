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

The package: :mod:`~ens.theory.spectra` (parameters, spectra, condition numbers),
:mod:`~ens.theory.bounds` (the residual/error bound), :mod:`~ens.theory.damping` (gradient
descent's mode damping, eigenmode bands) and :mod:`~ens.theory.experiment` (the GD/CG/CGNR
experiment); every public name is importable from ``ens.theory``.
"""

from .bounds import BOUND_ERROR_MODELS, ErrorModel, bound_on_samples, error_bound
from .damping import (
    MODE_BANDS,
    band_errors,
    gd_damping_factors,
    gd_damping_table,
    gd_mode_error,
    gd_steps_to_reduce,
    mode_band_masks,
    stable_step,
)
from .experiment import METHODS, ExperimentResult, band_drop, reduction_factors, residual_vs_error_experiment
from .spectra import (
    PROFILE_RESOLUTIONS,
    condition_number,
    condition_table,
    dense_operator,
    first_resonance,
    helmholtz,
    helmholtz_spectrum,
    numerical_spectrum,
    profile_resolutions,
    resolve_parameters,
    singular_values,
)

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
