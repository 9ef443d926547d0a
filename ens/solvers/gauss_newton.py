"""Matrix-free Gauss--Newton / Levenberg--Marquardt on the PDE residual, for any PDE
(method ``"gauss_newton"``).

Each outer step linearises the residual at the current iterate, ``R(u + d) ~ r + J d``, and
solves the damped least-squares problem

    min_d ||J d + r||^2 + mu ||d||^2,   i.e.   (J^T J + mu I) d = -J^T r,

over the admissible directions (``d = P d``, ``P = pde.apply_bc``: Dirichlet boundary values stay
put), by ``cg_iterations`` iterations of batched conjugate gradients on these normal equations
(:func:`ens.solvers.linalg.cgls`, which carries the residual ``-r - J d`` instead of forming
``J^T J``; mathematically the same CG iterates, with better round-off). ``J p`` comes from
the PDE's :meth:`~ens.pdes.PDE.linearize` at the current iterate (``torch.func``, or a family's
closed form), every dot
product is per sample, and a sample whose Krylov process has finished stays put.

Damping (per sample). ``u + d`` is accepted where it lowers ``||R||`` and then ``mu /= 3``;
elsewhere the sample stays put and ``mu *= 10`` (at least ``1e-3 mu_ref``, so that a start with
``damping = 0`` can still damp after a rejection). The start is scale-invariant:

    mu_0 = damping * mu_ref,   mu_ref = ||J^T r_0||^2 / ||r_0||^2,

a Rayleigh quotient of ``J J^T`` at the starting residual -- a value between ``sigma_min^2`` and
``sigma_max^2`` that costs nothing (``J^T r_0`` is the first CG vector) and scales like ``J^T J``
under any rescaling of the residual or of the state, as the damping must. ``damping = 0`` is
plain Gauss--Newton; for a linear residual, ``damping = 0`` and enough inner iterations (at most
the number of unknowns, in exact arithmetic) one outer step solves the problem.

Counts: ``2 * cg_iterations`` Jacobian products per outer step (a JVP and a VJP each), one
residual evaluation of the trial point, and, where some sample accepted its step, one VJP for the
next ``J^T r`` (plus one residual evaluation to re-linearise when only some samples accepted:
the batched VJP cannot mix old and new iterates); one VJP for the first ``J^T r_0``. Every
outer step is recorded (rejected samples repeat their iterate). The divergence policy is that of
:func:`ens.solvers.ens_solve`, for uniformity: only steps that lower the residual are accepted
(a non-finite trial is rejected), so it cannot fire.
"""

from __future__ import annotations

import torch

from ..checks import check_int, check_number
from ..pdes import PDE
from . import _common as cm
from .trajectory import Recorder, Trajectory

__all__ = ["gauss_newton"]

#: factor by which a rejected step raises mu and an accepted one lowers it
MU_UP, MU_DOWN = 10.0, 3.0


def gauss_newton(pde: PDE, c: torch.Tensor, u0: torch.Tensor, *, steps: int, cg_iterations: int = 20,
                 damping: float = 1e-3, u_true: torch.Tensor | None = None, max_growth: float = 1e3,
                 on_divergence: str = "raise", keep_states: bool = False) -> Trajectory:
    """Levenberg--Marquardt from ``u0`` with matrix-free CG inner solves (module docstring).

    Parameters
    ----------
    pde, c, u0
        Any PDE object, its batched input ``(B, C_in, S, S)`` and the start ``(B, C_out, S, S)``
        (e.g. a network's prediction); the iterates are ``apply_bc``-projected and in ``c``'s dtype.
    steps
        Number of outer (linearisation) steps, ``>= 0``; each is recorded.
    cg_iterations
        Inner CG iterations per outer step (``>= 1``).
    damping
        ``mu_0 / mu_ref`` (``>= 0``; module docstring).
    u_true, max_growth, on_divergence, keep_states
        As for :func:`ens.solvers.gradient_descent`.

    ``Trajectory.info`` holds ``steps``, ``cg_iterations``, ``damping``, the final per-sample
    ``mu`` and ``accepted`` (the number of accepted steps per sample).
    """
    cm.check_steps(steps)
    check_int(cg_iterations, "cg_iterations")
    check_number(damping, "damping", positive=False)
    cm.check_policy(on_divergence, max_growth)
    u = cm.start(pde, c, u0)
    rec = Recorder(pde, c, u_true, keep_states)
    status, message = "ok", ""
    n_res, n_jac = 1, 0
    r, jvp, pullback = cm.linearize(pde, c, u)
    rnorm = cm.norms(r)
    limit = cm.growth_limit(rnorm, rec.scale, max_growth)
    rec.record(u, r, n_res, n_jac)
    mu = mu_ref = torch.zeros_like(rnorm).view(-1, 1, 1, 1)
    accepted = torch.zeros(len(rnorm), dtype=torch.long)
    if steps:
        g = pullback(r)
        n_jac += 1
        mu_ref = cm.safe_div(cm.dot(g, g), cm.dot(r, r))
        mu = damping * mu_ref
    setting = f"damping={damping:g}, cg_iterations={cg_iterations}"
    for t in range(1, steps + 1):
        # CGLS on (P J^T J P + mu I) d = -g from d = 0: least-squares residual -r - J d = -r,
        # normal residual P J^T (-r) - mu d = -g (already at hand)
        for d in cm.cgls(jvp, pullback, torch.zeros_like(u), -r, cg_iterations, mu=mu, z=-g):
            pass
        n_jac += 2 * cg_iterations
        r_try, jvp_try, pullback_try = cm.linearize(pde, c, u + d)
        n_res += 1
        norm_try = cm.norms(r_try)
        acc = norm_try < rnorm                  # False for a non-finite trial
        acc4 = acc.view(-1, 1, 1, 1)
        if bool(acc.any()):
            u_new = torch.where(acc4, u + d, u)
            r_new = torch.where(acc4, r_try, r)
            why = cm.divergence(cm.norms(r_new), limit, max_growth)
            if why is not None:  # pragma: no cover - accepted steps lower the residual
                message = cm.diverged("Gauss-Newton", t, steps, setting, why,
                                      "increase damping", on_divergence)
                status = "diverged"
                break
            # J^T is batched: at a mix of old and new iterates it is no single VJP, so a partly
            # accepted step re-linearises at the mixed iterate (one more residual evaluation)
            if bool(acc.all()):
                jvp, pullback = jvp_try, pullback_try
            else:
                _, jvp, pullback = cm.linearize(pde, c, u_new)
                n_res += 1
            g = pullback(r_new)
            n_jac += 1
            u, r = u_new, r_new
            rnorm = torch.where(acc, norm_try, rnorm)
            accepted += acc.cpu().long()
        mu = torch.where(acc4, mu / MU_DOWN, torch.maximum(mu * MU_UP, 1e-3 * mu_ref))
        rec.record(u, r, n_res, n_jac)
    return rec.trajectory("gauss_newton", u, status, message, steps=steps, cg_iterations=cg_iterations,
                          damping=damping, mu=mu.flatten().detach().cpu(), accepted=accepted)
