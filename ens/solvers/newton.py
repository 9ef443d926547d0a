"""Newton's method with an exact (sparse LU) Jacobian solve, for the Dirichlet Helmholtz family
(method ``"newton"``): Poisson, Helmholtz and nonlinear Helmholtz.

It runs, per sample and in lockstep over the batch, the very iteration the reference solver
uses (``pde.newton_iterates`` of Poisson and Helmholtz: the Jacobian
``Delta_h + k^2 + 3 lam diag(u^2)`` assembled as a sparse matrix, factorised and solved in
float64 on the CPU, with backtracking until ``||R||`` decreases), started from ``u0`` instead of
the linear solution. A sample that has converged (``||R|| <= pde.newton_rtol ||f||``) stays put;
one whose backtracking stalls stays put too, and the trajectory ends with ``status="stalled"``
and a message naming it. For a linear problem one step solves it to round-off.

Newton needs the assembled Jacobian, so it is implemented for this family only; the
matrix-free :func:`ens.solvers.gauss_newton` covers every PDE.

Counts per step: ``jacobian_evals`` counts Jacobian assemblies and LU factorisations (one per
step, batched), not Jacobian-vector products; ``residual_evals`` counts the backtracking's
residual evaluations (the most any sample of the batch needed in that step; the accepted trial's
residual is the new iterate's; the failed trials of a stalling sample are not counted). The
residual recorded for the trajectory is recomputed with ``pde.residual`` in ``c``'s dtype, like
every other solver's. The divergence policy is that of :func:`ens.solvers.ens_solve`, for
uniformity (backtracking only accepts decreasing residuals, so it cannot fire).
"""

from __future__ import annotations

import torch

from ..pdes import PDE
from . import _common as cm
from .trajectory import Recorder, Trajectory

__all__ = ["newton"]


def newton(pde: PDE, c: torch.Tensor, u0: torch.Tensor, *, steps: int, u_true: torch.Tensor | None = None,
           max_growth: float = 1e3, on_divergence: str = "raise", keep_states: bool = False) -> Trajectory:
    """Newton's method from ``u0`` for the (nonlinear) Helmholtz/Poisson family (module docstring).

    Arguments as for :func:`ens.solvers.gradient_descent`; ``steps >= 0`` Newton steps, each
    recorded. ``ValueError`` for a PDE outside the family. ``Trajectory.info`` holds ``steps``,
    ``converged`` (per sample, ``||R|| <= pde.newton_rtol ||f||`` at the end, by the Newton
    iteration's own float64 test) and ``step_length`` (the last accepted backtracking step per
    sample, ``(B,)``; 0 where no step was taken).
    """
    if not pde.supports_newton:
        raise ValueError(f"Newton is implemented for the (nonlinear) Helmholtz/Poisson family (Dirichlet, "
                         f"assembled sparse Jacobian); use gauss_newton for {type(pde).__name__} "
                         f"({getattr(pde, 'name', '?')!r})")
    cm.check_steps(steps)
    cm.check_policy(on_divergence, max_growth)
    u = cm.start(pde, c, u0)
    rec = Recorder(pde, c, u_true, keep_states)
    status, message = "ok", ""
    n_res, n_jac = 1, 0
    r = pde.residual(u, c, check=False)
    limit = cm.growth_limit(cm.norms(r), rec.scale, max_growth)
    rec.record(u, r, n_res, n_jac)
    B = u.shape[0]
    iterates = [pde.newton_iterates(u[b, 0], c[b, 0], maxiter=steps) for b in range(B)]
    active = [True] * B
    converged = [False] * B
    with torch.no_grad():  # ||R(u0)|| / ||f|| per sample, in float64 like the Newton iteration's own test
        f_norm = cm.norms(c[:, :, 1:-1, 1:-1].double()).clamp_min(torch.finfo(torch.float64).tiny)
        rel = (cm.norms(pde.residual(u.double(), c.double(), check=False)) / f_norm).tolist()
    step_length = torch.zeros(B, dtype=torch.float64)
    stalled = []
    for t in range(1, steps + 1):
        if not any(active):
            # every sample has converged (or stalled): the remaining steps repeat the iterate
            rec.record(u, r, n_res, n_jac)
            continue
        rows, evals, factorised = {}, 0, False
        for b in range(B):
            if not active[b]:
                continue
            try:
                u_b, rel[b], step, n = next(iterates[b])
            except StopIteration:  # converged before this step
                active[b], converged[b] = False, True
                continue
            except RuntimeError as err:
                active[b], factorised = False, True
                stalled.append(b)
                message = f"Newton stalled at step {t} of {steps} for sample(s) {stalled}: {err}"
                continue
            rows[b], evals = u_b, max(evals, n)
            step_length[b] = step
        if rows or factorised:
            n_jac += 1
            n_res += evals
        if rows:
            u_new = u.clone()
            for b, u_b in rows.items():
                u_new[b, 0] = u_b
            r_new = pde.residual(u_new, c, check=False)
            why = cm.divergence(cm.norms(r_new), limit, max_growth)
            if why is not None:  # pragma: no cover - backtracking only accepts decreasing residuals
                message = cm.diverged("Newton", t, steps, f"steps={steps}", why,
                                      "start closer to the solution", on_divergence)
                status = "diverged"
                break
            u, r = u_new, r_new
        rec.record(u, r, n_res, n_jac)
    for b in range(B):  # samples still iterating: the test their next step would make
        if active[b]:
            converged[b] = rel[b] <= pde.newton_rtol
    if stalled and status == "ok":
        status = "stalled"
    return rec.trajectory("newton", u, status, message, steps=steps, converged=torch.tensor(converged),
                          step_length=step_length)
