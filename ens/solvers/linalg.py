"""Per-sample linear algebra and projected Jacobian products, shared by the residual-based solvers
and :mod:`ens.theory`: every batch holds independent problems, so inner products, norms and step
lengths are per sample (``(B, 1, 1, 1)`` or ``(B,)``), and the Jacobian products are projected with
``P = pde.apply_bc`` (iterates stay admissible)."""

from __future__ import annotations

import torch

from ..pdes import PDE

__all__ = ["dot", "safe_div", "norms", "residual_fn", "linearize", "residual_and_pullback"]


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
