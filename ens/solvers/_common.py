"""Helpers shared by the solvers: argument checks, the start and the divergence policy (the same as
``ens_solve``'s). The per-sample linear algebra and the projected Jacobian products are public, in
:mod:`ens.solvers.linalg` (re-exported here for the solvers' ``cm.`` calls)."""

from __future__ import annotations

import math

import torch

from ..checks import check_int
from ..pdes import PDE
from .linalg import cgls, dot, linearize, norms, residual_and_pullback, residual_fn, safe_div  # noqa: F401
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
