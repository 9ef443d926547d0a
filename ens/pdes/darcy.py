"""Steady Darcy flow ``-div(a grad u) = f`` with zero Dirichlet data on the unit square.

Discretised with conservative 5-point finite volumes on the node grid ``x_i = i / (S - 1)``; the
residual lives on the interior nodes and is returned on the full grid with zeros on the boundary,
where ``u = 0`` holds by construction (see ``PDE.apply_bc``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from ..checks import check_number
from .base import PDE, Linearization, check_forcing_law
from .random_fields import gaussian_random_field
from .stencil import blocked, dirichlet_eigenvalues, dst2, masked, sparse_condition_number, zero_boundary

__all__ = ["Darcy"]

FORCINGS = ("constant", "grf")
#: relative residual ``||f - A u|| / ||f||`` at which :meth:`Darcy.solve`'s conjugate gradients stop;
#: far under the data's verification tolerance (``ens.data.ELLIPTIC_SOLVER_RTOL = 1e-9``), and
#: small enough that the float32 data are the sparse LU solve's (measured: every ``ci`` and
#: ``default`` Darcy file keeps its sha256; in the ``paper`` files one value in a million or fewer
#: moves by one float32 ulp: 21, 13 and 31 in the validation, contrast-8 and super-resolution files)
SOLVE_RTOL = 1e-12
#: iterations after which a sample is solved by sparse LU instead (contrast 4 needs 27, 100 needs 78)
SOLVE_MAXITER = 1000


def _face_fluxes(u: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Face terms ``a_face * (difference of u)`` across x-faces (..., S-1, S) and y-faces (..., S, S-1)."""
    fx = 0.5 * (a[..., 1:, :] + a[..., :-1, :]) * (u[..., 1:, :] - u[..., :-1, :])
    fy = 0.5 * (a[..., :, 1:] + a[..., :, :-1]) * (u[..., :, 1:] - u[..., :, :-1])
    return fx, fy


def _fv_coefficients(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The finite-volume operator's weights for a permeability ``a`` (..., S, S), scaled by
    ``1 / h^2``: the x-face and y-face values (..., S-1, S) and (..., S, S-1), and the diagonal
    (..., S, S), the sum of a node's four face values (zero on the boundary nodes)."""
    h2 = float((a.shape[-1] - 1) ** 2)
    ax = (a[..., 1:, :] + a[..., :-1, :]).mul_(0.5 * h2)
    ay = (a[..., :, 1:] + a[..., :, :-1]).mul_(0.5 * h2)
    diag = torch.zeros_like(a)
    d = diag[..., 1:-1, 1:-1]
    torch.add(ax[..., 1:, 1:-1], ax[..., :-1, 1:-1], out=d)
    d.add_(ay[..., 1:-1, 1:]).add_(ay[..., 1:-1, :-1])
    return ax, ay, diag


def _fv_apply(o: torch.Tensor, x: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, diag: torch.Tensor) -> None:
    """``o = diag * x - (face value * neighbour)`` over the four faces of every node, in place: the
    finite-volume operator on the interior, its transpose's boundary columns on the boundary."""
    torch.mul(diag, x, out=o)
    o[..., :-1, :].addcmul_(ax, x[..., 1:, :], value=-1)
    o[..., 1:, :].addcmul_(ax, x[..., :-1, :], value=-1)
    o[..., :, :-1].addcmul_(ay, x[..., :, 1:], value=-1)
    o[..., :, 1:].addcmul_(ay, x[..., :, :-1], value=-1)


def fv_matrix(a: np.ndarray) -> sp.csc_matrix:
    """Sparse SPD matrix of ``-div_h(a grad_h .)`` on the ``(S-2)^2`` interior nodes, row-major.

    ``a`` is the ``(S, S)`` permeability on the node grid; the unknowns are ordered ``i * n + j``
    (``n = S - 2``), matching ``u[1:-1, 1:-1].ravel()``. Assembled by diagonals, float64.
    """
    S = a.shape[-1]
    n, h2 = S - 2, (S - 1) ** -2
    ax, ay = 0.5 * (a[1:, :] + a[:-1, :]), 0.5 * (a[:, 1:] + a[:, :-1])  # x- and y-face values
    diag = ax[1:, 1:-1] + ax[:-1, 1:-1] + ay[1:-1, 1:] + ay[1:-1, :-1]
    off_x = ax[1:-1, 1:-1].ravel()                         # couples (i, j) and (i+1, j): offset n
    off_y = np.pad(ay[1:-1, 1:-1], ((0, 0), (0, 1))).ravel()[:-1]  # (i, j)-(i, j+1): offset 1
    return (sp.diags([diag.ravel(), -off_y, -off_y, -off_x, -off_x], [0, 1, -1, n, -n]) / h2).tocsc()


def _laplace_pcg(a: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``A u = f`` (the finite-volume operator of the permeabilities ``a``, (B, 1, S, S), on
    the interior nodes; ``f`` is read there) by conjugate gradients preconditioned with the 5-point
    Laplacian. Every sample stops when its residual falls to :data:`SOLVE_RTOL` of ``||f||`` (its
    iterates are then frozen; a zero ``f`` gives zero). Returns ``u`` (B, 1, S, S) with a zero
    boundary and whether each sample's true residual ``||f - A u||`` is within ``100 SOLVE_RTOL ||f||``.

    The iterates live on the interior only: :func:`_fv_apply` on the ``(S-2)^2`` grid with the
    weights of the interior faces is the operator with the zero boundary values left out. The
    preconditioner (two orthonormal DST-I) runs in float32: 1.7x faster than in float64 at S = 64
    and the same iterations at the paper's contrast (27; 28 for 27 at S = 128; 78 for 62 at
    contrast 100), while the iterates, the residual and its recurrence stay float64, so the
    attainable accuracy is float64's."""
    ax, ay, diag = _fv_coefficients(a)
    weights = (ax[..., 1:-1, 1:-1].contiguous(), ay[..., 1:-1, 1:-1].contiguous(), diag[..., 1:-1, 1:-1].contiguous())
    inv_eig = (-1.0 / dirichlet_eigenvalues(a.shape[-1], device=a.device)).float()

    def apply(x):
        o = torch.empty_like(x)
        _fv_apply(o, x, *weights)
        return o

    def precondition(r):
        return dst2(dst2(r.float()).mul_(inv_eig)).to(r.dtype)

    def dot(x, y):
        return torch.linalg.vecdot(x.flatten(1), y.flatten(1))[:, None, None, None]

    f = f[..., 1:-1, 1:-1].contiguous()
    u, r = torch.zeros_like(f), f.clone()
    f_norm = dot(f, f).sqrt()
    z = precondition(r)
    p, rz, active = z, dot(r, z), f_norm > 0
    for _ in range(SOLVE_MAXITER):
        if not bool(active.any()):
            break
        q = apply(p)
        alpha = torch.where(active, rz / dot(p, q), 0.0)
        u.addcmul_(alpha, p)
        r.addcmul_(alpha, q, value=-1)
        active &= dot(r, r).sqrt() > SOLVE_RTOL * f_norm
        z = precondition(r)
        rz, rz_old = dot(r, z), rz
        p = z.addcmul_(torch.where(active, rz / rz_old, 0.0), p)
    ok = ~active.flatten() & ((f - apply(u)).flatten(1).norm(dim=1) <= 100 * SOLVE_RTOL * f_norm.flatten())
    return F.pad(u, (1, 1, 1, 1)), ok


@dataclass(frozen=True)
class Darcy(PDE):
    r"""Darcy flow ``-div(a grad u) = f`` on ``[0, 1]^2`` with ``u = 0`` on the boundary.

    Grid: node grid ``x_i = i / (S-1)`` (boundary nodes included, ``h = 1 / (S-1)``), array axis
    -2 is ``x``, -1 is ``y``. Input ``c`` has two channels, the permeability ``a`` (channel 0)
    and the forcing ``f`` (channel 1), ``(B, 2, S, S)``; output ``u`` is ``(B, 1, S, S)``.
    Nondimensional.

    Parameters
    ----------
    a_low, a_high
        The two permeability values, ``a = a_high`` where a Neumann ``GRF(grf_alpha, grf_tau)``
        is ``>= 0`` and ``a_low`` elsewhere (paper: 3 and 12; the contrast shift uses 3 and 24).
        Both must be positive; the operator's condition number grows like
        ``max(a) / min(a) * S^2``, so contrasts up to ~100 and S = 32 -- 256 are the useful range.
    forcing
        ``"constant"`` (``f = forcing_scale`` everywhere, the paper's default) or ``"grf"``
        (``f = forcing_scale * GRF(2, 3)`` with Dirichlet modes, the forcing-field shift).
    forcing_scale
        Value or amplitude of ``f`` (paper: 100). The problem is linear: ``u`` scales with it.
    grf_alpha, grf_tau
        Law of the Gaussian field thresholded into ``a`` (paper: 2, 3).

    Scheme: with face values ``a_{i+1/2,j} = (a_{i,j} + a_{i+1,j}) / 2`` the residual at an
    interior node is

        R = -[a_{i+1/2,j}(u_{i+1,j} - u_{i,j}) - a_{i-1/2,j}(u_{i,j} - u_{i-1,j})
              + a_{i,j+1/2}(u_{i,j+1} - u_{i,j}) - a_{i,j-1/2}(u_{i,j} - u_{i,j-1})] / h^2 - f_{i,j},

    second order for smooth ``a``. It is conservative: each face flux enters the two cells that
    share the face with opposite signs, so summing ``h^2 R`` (with ``f = 0``) over the interior
    telescopes to the net flux through the boundary faces, a discrete divergence theorem. The
    matrix is symmetric positive definite for ``a > 0``. The generated ``a`` is piecewise
    constant, so the solution has kinks on the interfaces; a non-conservative form
    ``a Delta_h u + grad_h a . grad_h u`` (the reference code's residual, paired with data from
    a face-averaged scheme) does not vanish on such data: it is O(1/h) at the jumps of ``a``.
    """

    a_low: float = 3.0
    a_high: float = 12.0
    forcing: str = "constant"
    forcing_scale: float = 100.0
    grf_alpha: float = 2.0
    grf_tau: float = 3.0

    name = "darcy"
    in_channels = 2
    out_channels = 1
    has_eager_residual = True
    generation_cost = 0.003  # preconditioned CG by chunks: 2.9 ms per sample at S = 64, one thread

    def __post_init__(self):
        check_number(self.a_low, "a_low (a permeability)")
        check_number(self.a_high, "a_high (a permeability)")
        if self.forcing not in FORCINGS:
            raise ValueError(f"unknown forcing {self.forcing!r}; expected one of {FORCINGS}")
        check_forcing_law(self.forcing_scale, self.grf_alpha, self.grf_tau)

    condition_number_needs_samples = True
    linear = True

    def condition_number(self, S: int, c: torch.Tensor | None = None, u: torch.Tensor | None = None) -> float:
        """The finite-volume matrix (:func:`fv_matrix`) of each permeability of ``c``, averaged."""
        return float(np.mean([sparse_condition_number(fv_matrix(ci[0].double().numpy())) for ci in c]))

    def operator_norm_bound(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``8 a_max / h^2``: the 5-point flux operator's norm bound with the largest permeability."""
        return 8 * c[:, 0].flatten(1).amax(1) * (u.shape[-1] - 1) ** 2

    def _residual(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        a, f = c[:, :1], c[:, 1:2]
        fx, fy = _face_fluxes(u, a)
        div = fx[..., 1:, 1:-1] - fx[..., :-1, 1:-1] + fy[..., 1:-1, 1:] - fy[..., 1:-1, :-1]
        return F.pad(-div * (u.shape[-1] - 1) ** 2 - f[..., 1:-1, 1:-1], (1, 1, 1, 1))

    def _eager_residual(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """:meth:`_residual` with the in-place kernels (not differentiable), a batch block at a time."""
        def block(o, ub, cb):
            _fv_apply(o, ub, *_fv_coefficients(cb[:, :1]))
            o.sub_(cb[:, 1:2])
        return zero_boundary(blocked(block, torch.empty_like(u), u, c))

    def linearize(self, u: torch.Tensor, c: torch.Tensor) -> Linearization:
        """``R(u; c)`` and the Jacobian (the finite-volume operator: the residual is affine in ``u``)
        in closed form, with its weights computed once: ``J v`` is the operator applied to ``v`` on
        the interior, ``J^T w`` the same symmetric operator applied to ``w`` with its boundary values
        zeroed, at every node. ``tests/test_pdes.py`` holds both against ``torch.func`` and checks
        ``<J v, w> = <v, J^T w>``."""
        weights = _fv_coefficients(c[:, :1])

        def apply(x, interior=False):
            def block(o, xb, *wb):
                _fv_apply(o, masked(xb) if interior else xb, *wb)
            return blocked(block, torch.empty_like(x), x, *weights)
        return Linearization(self._eager_residual(u, c), lambda v: zero_boundary(apply(v)),
                             lambda w: apply(w, interior=True))

    def solve(self, c: torch.Tensor) -> torch.Tensor:
        r"""Reference solution of the finite-volume system ``A u = f``, in float64 on the CPU.

        Conjugate gradients on the whole batch, preconditioned by the constant-coefficient
        Laplacian ``L = -Delta_h`` (:func:`_laplace_pcg`): for face values between ``min a`` and
        ``max a`` the quadratic forms satisfy ``min a <= (v^T A v) / (v^T L v) <= max a``, so
        ``cond(L^{-1} A) <= max a / min a`` at every resolution. Measured (S = 64 / 128): 27 / 28
        iterations to :data:`SOLVE_RTOL` for the paper's contrast 4, 38 / 39 for 8, 51 / 53 for 20,
        78 / 77 for 100, growing like the square root of the contrast. Each sample stops on its
        own residual; its true residual is then checked, and a sample above ``100 SOLVE_RTOL`` or
        not converged in :data:`SOLVE_MAXITER` iterations is solved by sparse LU (SuperLU,
        :func:`fv_matrix`) instead. The solution differs from the LU solve's by ~1e-14 of its
        largest value, far under float32's resolution: the stored data are the same bytes.

        Raises ``ValueError`` if the permeability channel has a non-positive entry (the operator
        is then not positive definite and may be singular).
        """
        self.check_input(c)
        if not bool((c[:, 0] > 0).all()):
            raise ValueError(f"the permeability c[:, 0] must be positive everywhere, "
                             f"got min {float(c[:, 0].min()):g}")
        cd = c.detach().cpu().double()
        u, ok = _laplace_pcg(cd[:, :1], cd[:, 1:2])
        for b in (~ok).nonzero().flatten().tolist():
            a, f = cd[b].numpy()
            # SPD: diagonal pivots are stable, so a symmetric ordering without pivoting suffices
            lu = spla.splu(fv_matrix(a), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
            u[b, 0, 1:-1, 1:-1] = torch.from_numpy(lu.solve(f[1:-1, 1:-1].ravel()).reshape(a.shape[0] - 2, -1))
        return u.to(dtype=c.dtype, device=c.device)

    def sample_inputs(self, n: int, S: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """Thresholded Neumann GRF permeability and the forcing, shape (n, 2, S, S).

        Drawn on the CPU in float64 (permeability first, then a GRF forcing) and then cast.
        """
        self._check_sample_args(n, S, generator)
        g = gaussian_random_field(n, S, self.grf_alpha, self.grf_tau, "neumann", generator)
        a = torch.where(g >= 0, g.new_tensor(float(self.a_high)), g.new_tensor(float(self.a_low)))
        if self.forcing == "grf":
            f = self.forcing_scale * gaussian_random_field(n, S, 2.0, 3.0, "dirichlet", generator)
        else:
            f = torch.full_like(a, float(self.forcing_scale))
        return torch.stack([a, f], dim=1).to(dtype=dtype, device=device)
