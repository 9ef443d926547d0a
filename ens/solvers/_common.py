"""Helpers shared by the residual-based baselines: argument checks, the start, per-sample linear
algebra, projected Jacobian products and the divergence policy (the same as ``ens_solve``'s)."""

from __future__ import annotations

import math

import torch

from ..checks import check_int
from ..pdes import PDE
from .trajectory import DivergenceError

ON_DIVERGENCE = ("raise", "stop")


def check_steps(steps) -> int:
    return check_int(steps, "steps", 0)


def check_policy(on_divergence, max_growth) -> None:
    if on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"expected on_divergence to be 'raise' or 'stop', got {on_divergence!r}")
    if not (isinstance(max_growth, (int, float)) and not isinstance(max_growth, bool)
            and not math.isnan(max_growth) and max_growth > 1):
        raise ValueError(f"expected max_growth to be a number > 1, got {max_growth!r}")


def start(pde: PDE, c: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
    """Validate ``c`` and ``u0`` (shape, batch, finiteness) and return the admissible start
    ``apply_bc(u0)`` in ``c``'s dtype, detached (an identity for a network's prediction)."""
    pde.check_input(c)
    pde.check_state(u0, c)
    return pde.apply_bc(u0.detach().to(c.dtype))


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


def divergence(norm: torch.Tensor, limit: torch.Tensor, max_growth: float) -> str | None:
    """Why the new iterate counts as diverged (``None`` if it does not)."""
    bad = ~torch.isfinite(norm) | (norm > limit)
    if not bool(bad.any()):
        return None
    why = ("a non-finite iterate" if not bool(torch.isfinite(norm[bad]).all())
           else f"the residual grew more than {max_growth:g}x above its start")
    return f"{why} ({int(bad.sum())} of {len(norm)} samples)"


def growth_limit(res0: torch.Tensor, scale: torch.Tensor, max_growth: float) -> torch.Tensor:
    """``max_growth x ||R(u0)||`` per sample; a start with (numerically) zero residual is measured
    against ``eps ||R(0; c)||`` instead, so round-off alone never counts as divergence."""
    eps = torch.finfo(res0.dtype).eps
    return max_growth * torch.maximum(res0, eps * scale.to(res0))


def diverged(name: str, t: int, steps: int, setting: str, why: str, advice: str, on_divergence: str) -> str:
    message = f"{name} diverged at step {t} of {steps} with {setting}: {why}; {advice}"
    if on_divergence == "raise":
        raise DivergenceError(message)
    return message
