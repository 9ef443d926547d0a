"""PINO-style test-time optimisation of the predictor on the PDE residual (method ``"tto"``).

A copy of the trained predictor ``G0`` is fine-tuned on the test inputs themselves, with Adam on
the physics loss

    loss(theta) = mean_b ||R(u_b(theta); c_b)||^2 / ||R(0; c_b)||^2,   u(theta) = G0_theta(c),

relative per sample so that it is O(1) for any family and forcing scale. The trajectory records
the prediction after every Adam step (iterate 0 is the trained model's own prediction). The
model passed in is never modified: its predictor is deep-copied (in eval mode, every parameter
trainable) and only the copy is optimised.

The loss is a mean over the batch and Adam's moments mix the gradients of all samples, so the
iterates of a sample depend on the other samples of its batch (and on the batch size): compare
TTO runs only on identical batches. ``lr`` is the reference setting of the paper's baseline
(1e-4); it is a property of the network's parametrisation, not of the PDE.

Counts per step: one residual evaluation (the forward pass that is both the recorded iterate
and the next loss) and one VJP (the backward pass through residual and network). The divergence
policy is that of :func:`ens.solvers.ens_solve`.
"""

from __future__ import annotations

import copy
import math

import torch

from ..checks import check_int, check_number
from ..models import NeuralSolver
from ..pdes import PDE
from . import _common as cm
from .trajectory import Recorder, Trajectory

__all__ = ["test_time_optimisation"]

#: early stopping (``patience``): how far above its best the error must be to stop the run
RISE = 1.5


def test_time_optimisation(model: NeuralSolver, pde: PDE, c: torch.Tensor, *, steps: int, lr: float = 1e-4,
                           u_true: torch.Tensor | None = None, max_growth: float = 1e3,
                           on_divergence: str = "raise", keep_states: bool = False,
                           patience: int | None = None) -> Trajectory:
    """Fine-tune a copy of ``model.predictor`` on the residual of ``c`` (module docstring).

    Parameters
    ----------
    model
        A :class:`ens.models.NeuralSolver` (its corrector, if any, is not used); ``c`` must be in
        the dtype and on the device of its parameters.
    pde, c
        Any PDE object and its batched input ``(B, C_in, S, S)``.
    steps
        Number of Adam steps (``>= 0``); the prediction after each is recorded.
    lr
        Adam's learning rate (> 0).
    u_true, max_growth, on_divergence, keep_states
        As for :func:`ens.solvers.gradient_descent`.
    patience
        Early stopping for a hyper-parameter search on validation data (needs ``u_true``): stop
        once the mean error has been above its best so far for ``patience`` steps and is now
        more than :data:`RISE` times it. ``None`` (default) runs every step.

    ``Trajectory.info`` holds ``steps``, ``lr``, ``loss`` (the loss before each step, a list) and
    ``stopped_at`` (the step early stopping ended the run at, or ``None``).
    """
    if not isinstance(model, NeuralSolver):
        raise ValueError(f"expected model to be an ens.models.NeuralSolver, got {type(model).__name__}")
    cm.check_steps(steps)
    check_number(lr, "lr")
    cm.check_policy(on_divergence, max_growth)
    if patience is not None:
        check_int(patience, "patience")
        if u_true is None:
            raise ValueError("early stopping (patience) needs u_true: it watches the error")
    pde.check_input(c)
    c = c.detach()
    predictor = copy.deepcopy(model.predictor).eval()
    for p in predictor.parameters():
        p.requires_grad_(True)
    tuned = NeuralSolver(predictor, None, model.normalization)
    rec = Recorder(pde, c, u_true, keep_states)
    status, message, losses = "ok", "", []
    scale2 = rec.scale.detach().square().clamp_min(torch.finfo(c.dtype).tiny)
    opt = torch.optim.Adam(predictor.parameters(), lr=lr)
    n_res, n_jac = 1, 0
    best, best_step, stopped_at = math.inf, 0, None
    with torch.enable_grad():
        u = tuned.predict(pde, c)
        r = pde.residual(u, c, check=False)
        limit = cm.growth_limit(cm.norms(r.detach()), rec.scale, max_growth)
        rec.record(u.detach(), r.detach(), n_res, n_jac)
        for t in range(1, steps + 1):
            loss = (r.flatten(1).square().sum(1) / scale2).mean()
            losses.append(float(loss.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n_jac += 1
            u_new = tuned.predict(pde, c)
            r_new = pde.residual(u_new, c, check=False)
            n_res += 1
            why = cm.divergence(cm.norms(r_new.detach()), limit, max_growth)
            if why is not None:
                message = cm.diverged("test-time optimisation", t, steps, f"lr={lr:g}", why,
                                      "use a smaller lr or fewer steps", on_divergence)
                status = "diverged"
                break
            u, r = u_new, r_new
            rec.record(u.detach(), r.detach(), n_res, n_jac)
            if patience is not None:
                err = float(rec.err[-1].mean())
                if err < best:
                    best, best_step = err, t
                elif t - best_step >= patience and err > RISE * best:
                    stopped_at = t
                    break
    return rec.trajectory("tto", u.detach(), status, message, steps=steps, lr=lr, loss=losses,
                          stopped_at=stopped_at)


# not a test, despite its name: keep pytest from collecting it where it is imported into a test module
test_time_optimisation.__test__ = False
