"""The ENS corrector loop (and the plain surrogate through the same interface).

``u_0 = G0(c)``, ``u_{t+1} = u_t + alpha G1([c, u_t, s R(u_t; c)])`` for ``t < steps``.

Stop rule (``stop="residual"``), which never looks at the reference solution: each sample keeps
the iterate with the smallest monitored residual seen so far as its estimate, and the loop ends
early once no sample has lowered it by more than ``rtol`` (relative) for ``patience``
consecutive steps. The monitored residual is ``||R||``, or with ``stop_lowpass = q < 1`` the norm
of its lowest ``q`` fraction of modes (:func:`ens.models.lowpass`): the residual of a network's
iterate is dominated by grid-scale noise, which ENS's corrections raise while they lower the
error, so the full norm stops decreasing long before the error does (notebook 04). The recorded
trajectory reports the kept estimates (with ``stop_lowpass = 1`` its residual never increases).
With ``stop=None`` every iterate is reported and the loop runs ``steps`` steps.

Divergence: an iterate with NaN/Inf entries, or a residual ``max_growth`` times the starting one
for some sample, ends the loop. With ``on_divergence="raise"`` (the default) a
:class:`DivergenceError` names the step and suggests a smaller ``alpha``; with ``"stop"`` the
trajectory up to the last finite iterate is returned with ``status="diverged"`` and the
message (evaluation tables record it instead of losing the whole run).
"""

from __future__ import annotations

import torch

from ..checks import check_int, check_number
from ..models import NeuralSolver, lowpass
from ..pdes import PDE
from . import _common as cm
from .gauss_newton import gauss_newton
from .newton import newton
from .trajectory import Recorder, Trajectory, chain

__all__ = ["ens_solve", "surrogate_solve", "ens_plus", "STOP_RULES", "REFINERS"]

STOP_RULES = (None, "residual")


def surrogate_solve(model: NeuralSolver, pde: PDE, c: torch.Tensor, u_true: torch.Tensor | None = None,
                    keep_states: bool = False) -> Trajectory:
    """The one-shot prediction ``u_0 = G0(c)`` as a one-point trajectory (method ``"surrogate"``)."""
    pde.check_input(c)
    rec = Recorder(pde, c, u_true, keep_states)
    with torch.no_grad():
        u = model.predict(pde, c)
        rec.record(u, pde.residual(u, c, check=False), residual_evals=1)
    return rec.trajectory("surrogate", u)


def ens_solve(model: NeuralSolver, pde: PDE, c: torch.Tensor, *, alpha: float, steps: int,
              u_true: torch.Tensor | None = None, stop: str | None = None, stop_lowpass: float = 1.0,
              patience: int = 3, rtol: float = 1e-3, max_growth: float = 1e3, on_divergence: str = "raise",
              keep_states: bool = False) -> Trajectory:
    """Run the ENS loop on a batch ``c`` and return its :class:`Trajectory` (method ``"ens"``)."""
    if not model.is_ens:
        raise ValueError("ens_solve needs a model with a corrector; use surrogate_solve for a plain surrogate")
    check_number(alpha, "alpha")
    check_int(steps, "steps", 0)
    if stop not in STOP_RULES:
        raise ValueError(f"unknown stop rule {stop!r}; expected one of {list(STOP_RULES)}")
    if isinstance(stop_lowpass, bool) or not (isinstance(stop_lowpass, (int, float)) and 0 < stop_lowpass <= 1):
        raise ValueError(f"expected stop_lowpass in (0, 1], got {stop_lowpass!r}")
    cm.check_policy(on_divergence, max_growth)

    def monitored(r):
        return (r if stop_lowpass == 1 else lowpass(r, stop_lowpass, pde.periodic)).flatten(1).norm(dim=1)

    pde.check_input(c)
    rec = Recorder(pde, c, u_true, keep_states)
    status, message = "ok", ""
    with torch.no_grad():
        u = model.predict(pde, c)
        r = pde.residual(u, c, check=False)
        n_res = 1
        res0 = r.flatten(1).norm(dim=1)
        limit = cm.growth_limit(res0, rec.scale, max_growth)
        best_u, best_r, best_norm = u, r, (monitored(r) if stop == "residual" else res0)
        stale = torch.zeros_like(res0, dtype=torch.long)
        rec.record(u, r, n_res)
        for t in range(1, steps + 1):
            u_new = u + alpha * model.correction(pde, c, u, r)
            r_new = pde.residual(u_new, c, check=False)
            n_res += 1
            norm = r_new.flatten(1).norm(dim=1)
            why = cm.divergence(norm, limit, max_growth)
            if why is not None:
                message = cm.diverged("ENS", t, steps, f"alpha={alpha:g}", why,
                                      "use a smaller alpha or fewer steps", on_divergence)
                status = "diverged"
                break
            u, r = u_new, r_new
            if stop == "residual":
                norm = monitored(r) if stop_lowpass != 1 else norm
                better = norm < best_norm * (1 - rtol)
                stale = torch.where(better, torch.zeros_like(stale), stale + 1)
                keep = (norm < best_norm)[:, None, None, None]
                best_u, best_r = torch.where(keep, u, best_u), torch.where(keep, r, best_r)
                best_norm = torch.minimum(norm, best_norm)
                rec.record(best_u, best_r, n_res)
                if bool((stale >= patience).all()):
                    status, message = "stopped", f"residual stopped decreasing; stopped after step {t}"
                    break
            else:
                rec.record(u, r, n_res)
    final = best_u if stop == "residual" else u
    return rec.trajectory("ens", final, status, message, alpha=alpha, steps=steps, stop=stop,
                          stop_lowpass=stop_lowpass if stop else None)


#: the classical refiners ENS+ can end with (``refine``)
REFINERS = ("gauss_newton", "newton")


def ens_plus(model: NeuralSolver, pde: PDE, c: torch.Tensor, *, alpha: float, steps: int, refine_steps: int,
             refine: str = "gauss_newton", cg_iterations: int = 20, damping: float = 1e-3, stop: str | None = None,
             stop_lowpass: float = 1.0, u_true: torch.Tensor | None = None, on_divergence: str = "raise",
             keep_states: bool = False) -> Trajectory:
    """ENS+ (method ``"ens_plus"``): ENS with step size ``alpha`` (``steps`` steps, or at most that
    many under the residual stop rule ``stop``/``stop_lowpass`` of :func:`ens_solve`), then
    ``refine_steps`` steps of a classical solver from ENS's estimate, as one trajectory
    (:func:`ens.solvers.trajectory.chain`; ENS's cost is part of its wall time). ``refine`` is
    ``"gauss_newton"`` (Levenberg--Marquardt with ``cg_iterations`` CG iterations per step and
    ``damping``, :func:`ens.solvers.gauss_newton`) or ``"newton"`` (:func:`ens.solvers.newton`, for
    PDEs that support it).

    The two parts fix complementary errors. The learned corrections remove the low-mode error
    that a few residual-based steps cannot see (their steps shrink with the small singular values
    of the Jacobian, notebook 01), and they leave a grid-scale error, amplified ``~1/h^2`` in the
    residual, which is exactly what the first Gauss--Newton steps remove. Which start, refiner and
    number of steps a family uses is chosen on validation data (:func:`ens.evaluate.select_ens_plus`).
    A run whose ENS part diverges (``on_divergence="stop"``) is returned as it is, under this
    method's name."""
    if refine not in REFINERS:
        raise ValueError(f"unknown refiner {refine!r}; expected one of {list(REFINERS)}")
    check_int(refine_steps, "refine_steps", 0)
    first = ens_solve(model, pde, c, alpha=alpha, steps=steps, u_true=u_true, stop=stop, stop_lowpass=stop_lowpass,
                      on_divergence=on_divergence, keep_states=keep_states)
    if first.status == "diverged":
        first.method = "ens_plus"
        return first
    common = {"steps": refine_steps, "u_true": u_true, "on_divergence": on_divergence, "keep_states": keep_states}
    if refine == "newton":
        second = newton(pde, c, first.u, **common)
    else:
        second = gauss_newton(pde, c, first.u, cg_iterations=cg_iterations, damping=damping, **common)
    return chain(first, second, "ens_plus")
