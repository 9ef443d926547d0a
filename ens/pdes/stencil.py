"""Second-order finite differences on the Dirichlet node grid and their exact diagonalisation.

The node grid of the unit square is ``x_i = i h``, ``i = 0 .. S-1``, ``h = 1 / (S - 1)``; the
``n = S - 2`` interior nodes per direction carry the unknowns. The 5-point Laplacian with zero
Dirichlet values is diagonalised by the orthonormal type-I discrete sine transform (DST-I)

    Q[k, i] = sqrt(2 / (n + 1)) sin(pi (k + 1) (i + 1) / (n + 1)),   k, i = 0 .. n-1,

a symmetric orthogonal matrix (``Q @ Q = I``) with eigenvalues of the 1-D second difference

    mu_k = -(4 / h^2) sin^2(pi k / (2 (n + 1))),   k = 1 .. n,

so ``Delta_h = (Q x Q) diag(mu_k + mu_l) (Q x Q)``. Applying ``Q`` as a dense matrix costs
``O(n^3)`` per sample, which for the grids used here (S <= 256) is as fast as an FFT-based DST
and exact to round-off on any device.

The eager kernels (:func:`blocked`, :func:`zero_boundary`, :func:`masked`) serve the closed-form
residuals and Jacobian products of the elliptic families, where nothing is differentiated: each
writes its result in place, a batch block at a time, so that the stencil's several reads of a
block are served from the cache (``ens bench``, 64 x 256^2 float32 batches on the 2-core CPU, two
runs on 2026-12-04, in multiples of an add over the same bytes: the residual went from 10-16x to 3.3-6.8x, its JVP from
25-45x to 2.0-4.4x and its VJP from 21-37x to 2.1-4.7x across Poisson, Helmholtz and Darcy).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

__all__ = ["laplacian", "dst1_matrix", "dst2", "laplacian_eigenvalues_1d", "dirichlet_eigenvalues",
           "laplacian_matrix", "sparse_condition_number", "blocked", "zero_boundary", "masked",
           "differentiated"]

#: elements of one batch block of the eager kernels (4 MiB of float32: a block and its result stay
#: in a 2-core CPU's cache through the stencil's passes; blocks of 16 samples of 256^2 measured best)
BLOCK_ELEMENTS = 1 << 20


def differentiated(*tensors: torch.Tensor) -> bool:
    """Whether autograd, ``torch.func`` or forward-mode AD would differentiate through ``tensors``:
    the in-place kernels (``out=``) are then not allowed and the differentiable form is used."""
    for t in tensors:
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return True
        if torch.is_grad_enabled() and t.requires_grad:
            return True
        if torch.autograd.forward_ad.unpack_dual(t).tangent is not None:
            return True
    return False


def blocked(fn, out: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(out[i:j], *(t[i:j] for t in tensors))`` over batch blocks of about
    :data:`BLOCK_ELEMENTS` elements; returns ``out``."""
    step = max(1, BLOCK_ELEMENTS // max(1, out[:1].numel()))
    for i in range(0, out.shape[0], step):
        fn(out[i:i + step], *(t[i:i + step] for t in tensors))
    return out


def zero_boundary(x: torch.Tensor) -> torch.Tensor:
    """Set the boundary nodes of ``x`` (..., S, S) to zero in place; returns ``x``."""
    x[..., 0, :] = 0
    x[..., -1, :] = 0
    x[..., 1:-1, 0] = 0
    x[..., 1:-1, -1] = 0
    return x


def masked(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` with its boundary nodes zero (the projection onto the interior)."""
    return zero_boundary(x.clone())


def laplacian(u: torch.Tensor) -> torch.Tensor:
    """5-point Laplacian of ``u`` (..., S, S) at the interior nodes, shape (..., S-2, S-2)."""
    h2 = (u.shape[-1] - 1) ** -2
    return (u[..., 2:, 1:-1] + u[..., :-2, 1:-1] + u[..., 1:-1, 2:] + u[..., 1:-1, :-2]
            - 4.0 * u[..., 1:-1, 1:-1]) / h2


@functools.lru_cache(maxsize=32)
def _dst1_matrix_cpu(n: int) -> torch.Tensor:
    idx = torch.arange(1, n + 1, dtype=torch.float64)
    return math.sqrt(2.0 / (n + 1)) * torch.sin(math.pi * torch.outer(idx, idx) / (n + 1))


def dst1_matrix(n: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
    """Orthonormal, symmetric DST-I matrix of size ``n`` (its own inverse)."""
    return _dst1_matrix_cpu(n).to(dtype=dtype, device=device)


def dst2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DST-I over the last two axes (an involution: ``dst2(dst2(x)) == x``)."""
    q = dst1_matrix(x.shape[-1], x.dtype, x.device)
    return q @ x @ q


def laplacian_eigenvalues_1d(S: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
    """Eigenvalues ``mu_k`` (k = 1 .. S-2) of the 1-D Dirichlet second difference, all negative."""
    n = S - 2
    k = torch.arange(1, n + 1, dtype=torch.float64)
    mu = -4.0 * (S - 1) ** 2 * torch.sin(math.pi * k / (2 * (n + 1))) ** 2
    return mu.to(dtype=dtype, device=device)


def dirichlet_eigenvalues(S: int, shift: float = 0.0, dtype: torch.dtype = torch.float64,
                          device="cpu") -> torch.Tensor:
    """Eigenvalues ``mu_k + mu_l + shift`` of ``Delta_h + shift I`` as an ``(S-2, S-2)`` table."""
    mu = laplacian_eigenvalues_1d(S, dtype, device)
    return mu[:, None] + mu[None, :] + shift


def laplacian_matrix(S: int, shift: float = 0.0) -> sp.csc_matrix:
    """``Delta_h + shift I`` as a sparse float64 matrix on the ``(S-2)^2`` interior nodes, row-major
    (the unknowns ``u[1:-1, 1:-1].ravel()``)."""
    n, h2 = S - 2, (S - 1) ** -2
    one = np.ones(n)
    d1 = sp.diags([one[:-1], -2 * one, one[:-1]], [-1, 0, 1]) / h2
    return (sp.kron(d1, sp.eye(n)) + sp.kron(sp.eye(n), d1) + shift * sp.eye(n * n)).tocsc()


def sparse_condition_number(a: sp.spmatrix) -> float:
    """2-norm condition number of a symmetric sparse matrix: its largest ``|eigenvalue|`` over the
    one closest to zero (ARPACK, shift-invert at 0 for the latter); ``inf`` if that one is 0."""
    big = abs(spla.eigsh(a, k=1, which="LM", return_eigenvectors=False)[0])
    small = abs(spla.eigsh(a.tocsc(), k=1, sigma=0.0, which="LM", return_eigenvectors=False)[0])
    return float(big / small) if small > 0 else math.inf
