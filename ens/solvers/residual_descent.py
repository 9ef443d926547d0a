"""Test-time gradient descent on the PDE residual, for any PDE (method ``"gd"``).

``u_{t+1} = u_t - eta P J(u_t)^T R(u_t; c)``: gradient descent on ``0.5 ||R(u; c)||^2``. The
gradient is the VJP of the PDE's :meth:`~ens.pdes.PDE.linearize` (reverse-mode autodiff with
``torch.func``, or a family's closed form), projected with ``P = pde.apply_bc``: the stencil at interior nodes next to a Dirichlet boundary
reads the boundary nodes, so the raw gradient has boundary entries the boundary condition
forbids; projecting keeps the boundary values of the start (zero for an admissible start).

Step size. By default every sample ``b`` gets its own ``eta_b = 1 / L_b``, where ``L_b`` estimates
``sigma_max(P J_b P)^2`` at the start by power iteration on ``P J^T J P`` (``J v`` and
``J^T w`` from the same linearisation; :func:`estimate_jacobian_norm`). Why this
is stable: for a linear residual the error obeys ``e_{t+1} = (I - eta P J^T J P) e_t``, which
multiplies the component along the ``i``-th right singular vector by ``1 - eta sigma_i^2``; the
iteration is stable and ``||R||`` never increases exactly when ``eta sigma_max^2 <= 2``. The
estimate is a Rayleigh quotient, so ``L_b <= sigma_max^2`` (it converges from below, up to
round-off) and ``eta_b sigma_max^2 = sigma_max^2 / L_b >= 1``: the step is stable as long as
the estimate reaches half of the true value, which a random start does within a few iterations
(the estimate is non-decreasing in the iteration count; the tests check it is within 5% after
the default 20 on the 5-point Laplacian). For a nonlinear residual the Jacobian changes along
the path and ``1 / L`` at the start guarantees nothing; divergence is then caught by the policy
below (pass a smaller ``step_size``).

Counts: ``residual_evals`` -- one residual evaluation per iterate (the start included);
``jacobian_evals`` -- one VJP per step plus two products (a JVP and a VJP) per power iteration,
charged to the first step, as is their time.

Divergence (as in :func:`ens.solvers.ens_solve`): an iterate with a non-finite residual, or one
``max_growth`` times the start's for some sample, ends the run -- a :class:`DivergenceError`
with ``on_divergence="raise"``, else ``status="diverged"`` and the trajectory up to the last
finite iterate.
"""

from __future__ import annotations

import torch

from ..checks import check_int, check_number
from ..pdes import PDE
from . import _common as cm
from .trajectory import Recorder, Trajectory

__all__ = ["gradient_descent", "estimate_jacobian_norm"]

#: seed of the power iteration's random start (a fixed seed makes every run reproducible)
POWER_SEED = 0


def _power_iteration(pde: PDE, u: torch.Tensor, jvp, pullback, iterations: int) -> torch.Tensor:
    """Rayleigh-quotient estimates of ``sigma_max(P J P)^2`` per sample, ``(B,)``, after
    ``iterations`` steps of power iteration on ``P J^T J P`` (2 Jacobian products each)."""
    g = torch.Generator().manual_seed(POWER_SEED)
    v = pde.apply_bc(torch.randn(u.shape, generator=g, dtype=torch.float64).to(u))
    v = cm.safe_div(v, cm.dot(v, v).sqrt())
    lam = torch.zeros(u.shape[0], 1, 1, 1, dtype=u.dtype, device=u.device)
    for _ in range(iterations):
        w = pullback(jvp(v))
        lam = cm.dot(v, w)                       # v is a unit vector: the Rayleigh quotient
        v = cm.safe_div(w, cm.dot(w, w).sqrt())
    return lam.flatten().clamp_min(0)


def estimate_jacobian_norm(pde: PDE, c: torch.Tensor, u: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Power-iteration estimate of the largest singular value of the projected Jacobian
    ``P dR/du P`` at ``u`` (``P = pde.apply_bc``), one per sample, shape ``(B,)``.

    The estimate is the square root of a Rayleigh quotient of ``P J^T J P``: it never exceeds the
    true ``sigma_max`` (up to round-off) and does not decrease with ``iterations``. The random
    start has a fixed seed, so the result is deterministic. Costs one residual evaluation and
    ``2 * iterations`` Jacobian products.
    """
    check_int(iterations, "iterations")
    u = cm.start(pde, c, u)
    _, jvp, pullback = cm.linearize(pde, c, u)
    return _power_iteration(pde, u, jvp, pullback, iterations).sqrt()


def gradient_descent(pde: PDE, c: torch.Tensor, u0: torch.Tensor, *, steps: int, step_size: float | None = None,
                     power_iterations: int = 20, u_true: torch.Tensor | None = None, max_growth: float = 1e3,
                     on_divergence: str = "raise", keep_states: bool = False) -> Trajectory:
    """Gradient descent on ``0.5 ||R(u; c)||^2`` from ``u0`` (method ``"gd"``; module docstring).

    Parameters
    ----------
    pde, c, u0
        Any PDE object, its batched input ``(B, C_in, S, S)`` and the start ``(B, C_out, S, S)``
        (e.g. a network's prediction); the iterates are ``apply_bc``-projected and in ``c``'s dtype.
    steps
        Number of gradient steps (``>= 0``); every iterate is recorded.
    step_size
        A fixed step for every sample, or ``None`` for ``1 / L_b`` per sample from
        ``power_iterations`` power iterations at ``u0``.
    u_true, keep_states
        Reference solution for the error metric; keep every iterate in ``Trajectory.states``.
    max_growth, on_divergence
        The divergence policy (module docstring).

    ``Trajectory.info`` holds ``step_size`` (the per-sample steps used, ``(B,)``), ``steps``,
    ``power_iterations`` (0 with a fixed step) and ``sigma_max`` (the estimate, or ``None``).
    """
    cm.check_steps(steps)
    if step_size is not None:
        check_number(step_size, "step_size")
    check_int(power_iterations, "power_iterations")
    cm.check_policy(on_divergence, max_growth)
    u = cm.start(pde, c, u0)
    rec = Recorder(pde, c, u_true, keep_states)
    status, message = "ok", ""
    n_res, n_jac = 1, 0
    r, jvp, pullback = cm.linearize(pde, c, u)
    res0 = cm.norms(r.detach())
    limit = cm.growth_limit(res0, rec.scale, max_growth)
    rec.record(u, r.detach(), n_res, n_jac)
    sigma_max = None
    if step_size is None:
        L = _power_iteration(pde, u, jvp, pullback, power_iterations) if steps else torch.ones_like(res0)
        n_jac += 2 * power_iterations if steps else 0
        eta = cm.safe_div(torch.ones_like(L), L)
        sigma_max, setting = L.sqrt(), "step_size=1/L (estimated at the start, per sample)"
        advice = "the Jacobian grew along the path: pass a smaller step_size or use fewer steps"
    else:
        eta = torch.full_like(res0, float(step_size))
        setting, advice = f"step_size={step_size:g}", "use a smaller step_size or fewer steps"
    eta4 = eta.view(-1, 1, 1, 1)
    for t in range(1, steps + 1):
        u_new = u - eta4 * pullback(r)
        n_jac += 1
        r_new, pullback_new = cm.residual_and_pullback(pde, c, u_new)
        n_res += 1
        why = cm.divergence(cm.norms(r_new), limit, max_growth)
        if why is not None:
            message = cm.diverged("gradient descent", t, steps, setting, why, advice, on_divergence)
            status = "diverged"
            break
        u, r, pullback = u_new, r_new, pullback_new
        rec.record(u, r, n_res, n_jac)
    return rec.trajectory("gd", u, status, message, step_size=eta.detach().cpu(), steps=steps,
                          power_iterations=power_iterations if step_size is None else 0,
                          sigma_max=None if sigma_max is None else sigma_max.detach().cpu())
