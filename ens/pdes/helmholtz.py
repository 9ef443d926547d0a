"""Poisson and (nonlinear) Helmholtz problems with zero Dirichlet data on the unit square.

Both are discretised with the 5-point stencil on the node grid ``x_i = i / (S - 1)``; the residual
lives on the interior nodes and is returned on the full grid with zeros on the boundary, where
the Dirichlet condition ``u = 0`` holds by construction (see ``PDE.apply_bc``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from ..checks import check_number, check_real
from .base import PDE, Linearization, check_forcing_law
from .random_fields import gaussian_random_field
from .stencil import (
    blocked,
    dirichlet_eigenvalues,
    dst2,
    laplacian,
    laplacian_matrix,
    masked,
    sparse_condition_number,
    zero_boundary,
)

__all__ = ["Poisson", "Helmholtz"]


class _ForcedDirichlet(PDE):
    """``Delta u + k^2 u + lam u^3 = f`` with ``u = 0`` on the boundary; input ``c = f``."""

    in_channels = 1
    out_channels = 1
    supports_newton = True
    has_eager_residual = True
    #: relative residual ``||R(u)|| / ||f||`` at which Newton stops
    newton_rtol = 1e-10

    def _k2_lam(self) -> tuple[float, float]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __post_init__(self):
        check_forcing_law(self.forcing_scale, self.grf_alpha, self.grf_tau)
        if hasattr(self, "k"):
            check_number(self.k, "k (the wavenumber)", positive=False)
            check_real(self.lam, "lam (the cubic coefficient)")

    def operator_norm_bound(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``8 / h^2 + 3 |lam| max u^2`` (the 5-point Laplacian's norm bound plus the cubic term's
        Jacobian; ``k^2 <= 16`` is below the bound's own rounding and left out)."""
        return 8 * (u.shape[-1] - 1) ** 2 + 3 * abs(self._k2_lam()[1]) * u.flatten(1).square().amax(1)

    def _residual(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        k2, lam = self._k2_lam()
        ui = u[..., 1:-1, 1:-1]
        r = laplacian(u) + k2 * ui - c[..., 1:-1, 1:-1]
        if lam:
            r = r + lam * ui ** 3
        return F.pad(r, (1, 1, 1, 1))

    @staticmethod
    def _stencil(x: torch.Tensor, centre, interior: bool = False) -> torch.Tensor:
        """``centre * x + h^-2 (sum of the four neighbours of x)`` at every node, with the neighbours
        outside the grid taken as zero (``centre``: a number or a field like ``x``). On the interior
        it is the linear part of the residual (``centre = k^2 - 4 / h^2``) or of its Jacobian; on a
        boundary node it is the Jacobian's transpose for an ``x`` with zero boundary values
        (``interior``: zero them first, a block at a time)."""
        h2 = float((x.shape[-1] - 1) ** 2)

        def block(o, xb, *cb):
            if interior:
                xb = masked(xb)
            torch.mul(xb, cb[0] if cb else centre, out=o)
            o[..., 1:, :].add_(xb[..., :-1, :], alpha=h2)
            o[..., :-1, :].add_(xb[..., 1:, :], alpha=h2)
            o[..., :, 1:].add_(xb[..., :, :-1], alpha=h2)
            o[..., :, :-1].add_(xb[..., :, 1:], alpha=h2)
        return blocked(block, torch.empty_like(x), x, *([centre] if torch.is_tensor(centre) else []))

    def _eager_residual(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """:meth:`_residual` with the in-place kernels (not differentiable)."""
        k2, lam = self._k2_lam()
        r = self._stencil(u, k2 - 4.0 * (u.shape[-1] - 1) ** 2)
        if lam:
            blocked(lambda o, ub: o.addcmul_(ub * ub, ub, value=lam), r, u)
        return zero_boundary(r.sub_(c))

    def linearize(self, u: torch.Tensor, c: torch.Tensor) -> Linearization:
        """``R(u; c)`` and the Jacobian ``J = Delta_h + k^2 + 3 lam diag(u^2)`` (interior rows; the
        columns of the boundary nodes hold their neighbours' stencil weights) in closed form: ``J v``
        is the stencil of ``v`` on the interior, ``J^T w`` the same symmetric stencil of ``w`` with
        its boundary values zeroed, evaluated at every node. ``tests/test_pdes.py`` holds both
        against ``torch.func`` and checks ``<J v, w> = <v, J^T w>``."""
        k2, lam = self._k2_lam()
        centre = k2 - 4.0 * (u.shape[-1] - 1) ** 2
        if lam:
            centre = torch.addcmul(torch.full_like(u, centre), u, u, value=3 * lam)
        return Linearization(self._eager_residual(u, c), lambda v: zero_boundary(self._stencil(v, centre)),
                             lambda w: self._stencil(w, centre, interior=True))

    @property
    def linear(self) -> bool:
        return not self._k2_lam()[1]

    @property
    def modal_wavenumber(self) -> float | None:
        k2, lam = self._k2_lam()
        return None if lam else float(np.sqrt(k2))

    @property
    def condition_number_needs_samples(self) -> bool:
        return not self.linear

    def condition_number(self, S: int, c: torch.Tensor | None = None, u: torch.Tensor | None = None) -> float:
        """Linear problem: ``max |eig| / min |eig|`` of ``Delta_h + k^2 I`` (closed form, the DST
        eigenvalues, as :func:`ens.theory.condition_number`). Nonlinear: the Jacobian
        ``Delta_h + k^2 + 3 lam diag(u^2)`` at each reference solution ``u``, averaged."""
        k2, lam = self._k2_lam()
        if not lam:
            sigma = self.operator_eigenvalues(S).abs()
            return float(sigma.max() / sigma.min())
        L = laplacian_matrix(S, k2)  # the linear part, assembled once for every sample
        jac = [L + sp.diags(3 * lam * ui[0, 1:-1, 1:-1].double().numpy().ravel() ** 2) for ui in u]
        return float(np.mean([sparse_condition_number(a) for a in jac]))

    def operator_eigenvalues(self, S: int) -> torch.Tensor:
        """Eigenvalues of the linear part ``Delta_h + k^2 I`` on the interior nodes, (S-2, S-2)."""
        return dirichlet_eigenvalues(S, shift=self._k2_lam()[0])

    def solve(self, c: torch.Tensor) -> torch.Tensor:
        """Reference solution: exact DST-I solve for the linear problem, Newton otherwise.

        The linear solve diagonalises ``Delta_h + k^2 I`` with the orthonormal DST-I and divides
        by its eigenvalues (exact to round-off). With ``lam != 0``, Newton's method starts from
        the linear solution, solves each Jacobian system ``(Delta_h + k^2 + 3 lam diag(u^2))``
        with a sparse LU factorisation and backtracks until ``||R||`` decreases; it stops at
        ``||R|| <= newton_rtol ||f||`` and raises ``RuntimeError`` if that is not reached. The
        iteration itself is :meth:`newton_iterates` (shared with ``ens.solvers.newton``).
        """
        self.check_input(c)
        S = c.shape[-1]
        k2, lam = self._k2_lam()
        eig = self.operator_eigenvalues(S).to(dtype=c.dtype, device=c.device)
        if eig.abs().min() <= 1e-10 * eig.abs().max():
            raise ValueError(f"k^2 = {k2} is an eigenvalue of -Delta_h at S={S}: the discrete problem "
                             f"is singular; choose k away from the resonances pi*sqrt(m^2 + n^2)")
        u = F.pad(dst2(dst2(c[..., 1:-1, 1:-1]) / eig), (1, 1, 1, 1))
        if lam:
            u = torch.stack([self._newton(ub[0], cb[0]) for ub, cb in zip(u, c)])[:, None]
        return u

    def _newton(self, u0: torch.Tensor, f: torch.Tensor, maxiter: int = 50) -> torch.Tensor:
        """One sample's Newton solve for :meth:`solve`: the last of :meth:`newton_iterates`."""
        u, rel = None, None
        for u, rel, _, _ in self.newton_iterates(u0, f, maxiter):
            pass
        if u is None:  # the start already satisfies the tolerance
            u = torch.zeros_like(f)
            u[1:-1, 1:-1] = u0[1:-1, 1:-1].detach().cpu().double().to(f)
        elif rel > self.newton_rtol:
            raise RuntimeError(f"Newton's method did not reach ||R|| <= {self.newton_rtol:g} ||f|| "
                               f"in {maxiter} iterations (||R||/||f|| = {rel:.2e})")
        return u

    def newton_iterates(self, u0: torch.Tensor, f: torch.Tensor, maxiter: int = 50):
        """Newton's method for one sample, one iterate at a time.

        ``u0`` and ``f`` are ``(S, S)`` fields (only the interior of ``u0`` is read: the
        iterates have zero boundary values). Each step solves the Jacobian system
        ``(Delta_h + k^2 + 3 lam diag(u^2)) dx = -R`` with a sparse LU factorisation (in float64
        on the CPU) and backtracks ``step = 1, 1/2, ...`` until ``||R||`` decreases.

        Yields ``(u, rel_residual, step, residual_evals)`` after each step: the iterate as an
        ``(S, S)`` tensor in ``f``'s dtype and device, ``||R(u)|| / ||f||`` (float64), the accepted
        step length and the number of residual evaluations the backtracking used. The generator
        ends once ``||R|| <= newton_rtol ||f||`` -- checked before each step, so it yields nothing
        from a start that already satisfies it -- or after ``maxiter`` steps (check the last
        ``rel_residual``). ``RuntimeError`` if no step length down to ``1e-4`` reduces ``||R||``.
        """
        k2, lam = self._k2_lam()
        S = f.shape[-1]
        n = S - 2
        L = laplacian_matrix(S, k2)
        fi = f[1:-1, 1:-1].detach().cpu().double().numpy().ravel()
        x = u0[1:-1, 1:-1].detach().cpu().double().numpy().ravel()

        def res(x):
            return L @ x + lam * x ** 3 - fi

        r = res(x)
        fnorm = max(np.linalg.norm(fi), np.finfo(float).tiny)
        for _ in range(maxiter):
            if np.linalg.norm(r) <= self.newton_rtol * fnorm:
                return
            dx = spla.spsolve((L + sp.diags(3 * lam * x ** 2)).tocsc(), -r)
            step, rnorm, evals = 1.0, np.linalg.norm(r), 0
            while step > 1e-4:
                r_new = res(x + step * dx)
                evals += 1
                if np.linalg.norm(r_new) < rnorm:
                    break
                step /= 2
            else:
                raise RuntimeError("Newton's method stalled: no step along the Newton direction "
                                   "reduces the residual (is lam too large for this forcing?)")
            x, r = x + step * dx, r_new
            out = torch.zeros_like(f)
            out[1:-1, 1:-1] = torch.from_numpy(x.reshape(n, n)).to(f)
            yield out, float(np.linalg.norm(r) / fnorm), step, evals

    def sample_inputs(self, n: int, S: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """Forcing ``f = forcing_scale * GRF(grf_alpha, grf_tau)`` (Dirichlet), shape (n, 1, S, S)."""
        self._check_sample_args(n, S, generator)
        g = gaussian_random_field(n, S, self.grf_alpha, self.grf_tau, "dirichlet", generator)
        return (self.forcing_scale * g)[:, None].to(dtype=dtype, device=device)


@dataclass(frozen=True)
class Poisson(_ForcedDirichlet):
    r"""Poisson problem ``Delta u = f`` on ``[0, 1]^2`` with ``u = 0`` on the boundary.

    Grid: node grid ``x_i = i / (S-1)``, 5-point Laplacian (second order). Input ``c = f`` with
    one channel, output ``u`` with one channel, both ``(B, 1, S, S)``. Nondimensional.

    Parameters
    ----------
    forcing_scale, grf_alpha, grf_tau
        Forcing law ``f = forcing_scale * GRF(alpha, tau)`` (paper: 100, 2, 3). The forcing-scale
        shift changes ``forcing_scale`` only; since the problem is linear, ``u`` scales with it.

    Residual ``R(u; f) = Delta_h u - f`` on interior nodes. The operator's condition number grows
    like ``S^2`` (1.6e3 at S=64); any S >= 4 is valid, 32 -- 256 are the useful range.
    """

    forcing_scale: float = 100.0
    grf_alpha: float = 2.0
    grf_tau: float = 3.0

    name = "poisson"

    def _k2_lam(self):
        return 0.0, 0.0


@dataclass(frozen=True)
class Helmholtz(_ForcedDirichlet):
    r"""Helmholtz problem ``Delta u + k^2 u + lam u^3 = f`` on ``[0, 1]^2``, ``u = 0`` on the boundary.

    Linear for ``lam = 0`` (the paper's Helmholtz, trained at ``k = 1``, tested at k = 1 .. 4);
    the paper's nonlinear Helmholtz is ``k = 2, lam = 1``, this package's ``nonlinear_helmholtz``
    family ``k = 2, lam = -1`` (see ``ens.pdes.FAMILIES``). Grid, channels and forcing law as for
    :class:`Poisson`.

    Parameters
    ----------
    k
        Wavenumber. The discrete operator ``Delta_h + k^2`` is singular when ``k^2`` equals an
        eigenvalue of ``-Delta_h`` (about ``2 pi^2 = 19.74`` for the lowest one, ``k ~ 4.44``):
        its condition number grows without bound as ``k`` approaches it (``k <= 4`` is the
        paper's range). ``solve`` refuses an exactly singular operator.
    lam
        Cubic coefficient. With ``lam < 0`` (and ``k^2 < 2 pi^2``) the Jacobian
        ``Delta_h + k^2 + 3 lam diag(u^2)`` is negative definite, the solution is unique and Newton
        from the linear solution converges: ``lam = -1`` is the good value. With
        ``lam > 0`` the term ``3 lam u^2`` can make the Jacobian singular: for the paper's
        ``lam = 1`` and the default forcing the solution branch continued from the linear problem
        folds for about one draw in five or six at ``S = 64``, Newton from the linear solution does
        not converge for those draws and ``solve`` raises ``RuntimeError``.
    forcing_scale, grf_alpha, grf_tau
        Forcing law ``f = forcing_scale * GRF(alpha, tau)`` (paper: 100, 2, 3).

    Residual ``R(u; f) = Delta_h u + k^2 u + lam u^3 - f`` on interior nodes.
    """

    k: float = 1.0
    lam: float = 0.0
    forcing_scale: float = 100.0
    grf_alpha: float = 2.0
    grf_tau: float = 3.0

    name = "helmholtz"

    @property
    def generation_cost(self) -> float:
        return 0.05 if self.lam else 2e-3  # the nonlinear problem: Newton, a sparse LU per step

    def _k2_lam(self):
        return float(self.k) ** 2, float(self.lam)
