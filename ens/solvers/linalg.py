"""Per-sample linear algebra and projected Jacobian products, shared by the residual-based solvers
and :mod:`ens.theory`: every batch holds independent problems, so inner products, norms and step
lengths are per sample (``(B, 1, 1, 1)`` or ``(B,)``), and the Jacobian products are projected with
``P = pde.apply_bc`` (iterates stay admissible)."""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..pdes import PDE

__all__ = ["dot", "safe_div", "norms", "residual_fn", "linearize", "residual_and_pullback", "conjugate_gradient",
           "cgls"]


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product, shape ``(B, 1, 1, 1)``."""
    return (a * b).flatten(1).sum(1).view(-1, 1, 1, 1)


def safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b`` where ``b > 0``, else 0 (a sample whose Krylov process has finished stays put)."""
    pos = b > 0
    return torch.where(pos, a / torch.where(pos, b, torch.ones_like(b)), torch.zeros_like(a))


def norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def residual_fn(pde: PDE, c: torch.Tensor):
    return lambda v: pde.residual(v, c, check=False)


def linearize(pde: PDE, c: torch.Tensor, u: torch.Tensor):
    """``R(u)``, ``v -> J(u) P v`` and ``w -> P J(u)^T w`` (``P = apply_bc``) from one
    :meth:`ens.pdes.PDE.linearize`: one residual evaluation, a JVP or VJP per call."""
    lin = pde.linearize(u, c)
    return lin.residual, (lambda v: lin.jvp(pde.apply_bc(v))), (lambda w: pde.apply_bc(lin.vjp(w)))


def residual_and_pullback(pde: PDE, c: torch.Tensor, u: torch.Tensor):
    """``R(u)`` and ``w -> P J(u)^T w`` (:func:`linearize` without the JVP)."""
    r, _, pullback = linearize(pde, c, u)
    return r, pullback


# ---- the two Krylov kernels (batched: every sample is its own problem) ---------------------------
def conjugate_gradient(matvec: Callable, x: torch.Tensor, r: torch.Tensor,
                       iterations: int) -> Iterator[torch.Tensor]:
    """Conjugate gradients on ``M x = b`` for a symmetric positive definite ``matvec = M``, from
    ``x`` with its residual ``r = b - M x`` (passed in, so that a caller who has it pays no
    product): yields the iterates ``x_1 .. x_iterations``. The ``M``-norm of the error is minimal
    over the Krylov space; a sample whose residual vanished stays put (:func:`safe_div`)."""
    p, rr = r.clone(), dot(r, r)
    for _ in range(iterations):
        Mp = matvec(p)
        alpha = safe_div(rr, dot(p, Mp))
        x = x + alpha * p
        r = r - alpha * Mp
        rr_new = dot(r, r)
        p = r + safe_div(rr_new, rr) * p
        rr = rr_new
        yield x


def cgls(jvp: Callable, pullback: Callable, x: torch.Tensor, s: torch.Tensor, iterations: int,
         mu: torch.Tensor | None = None, z: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """CGLS: conjugate gradients on the (damped) normal equations ``(J^T J + mu I) x = J^T b`` of
    ``min ||J x - b||^2 + mu ||x||^2``, with ``jvp = J`` and ``pullback = J^T`` (projected, see
    :func:`linearize`), from ``x`` with its least-squares residual ``s = b - J x``; yields the
    iterates ``x_1 .. x_iterations``. It carries ``s`` and recomputes the normal residual
    ``J^T s - mu x`` each step instead of forming ``J^T J``: the same iterates as CG on the normal
    equations in exact arithmetic, with better round-off. ``mu = None`` is the undamped problem
    (CGNR). ``z``: the starting normal residual ``J^T s - mu x``, when the caller has it."""
    if z is None:
        z = pullback(s) if mu is None else pullback(s) - mu * x
    p, zz = z, dot(z, z)
    for _ in range(iterations):
        q = jvp(p)
        alpha = safe_div(zz, dot(q, q) if mu is None else dot(q, q) + mu * dot(p, p))
        x = x + alpha * p
        s = s - alpha * q
        z = pullback(s) if mu is None else pullback(s) - mu * x
        zz_new = dot(z, z)
        p = z + safe_div(zz_new, zz) * p
        zz = zz_new
        yield x
