"""What every solver returns: a :class:`Trajectory` of per-iterate metrics, with fair timing.

Fields per iterate ``i = 0 .. n`` (``i = 0`` is the start, e.g. ``u0 = G0(c)``):

* ``rel_residual[i, b] = ||R(u_i; c_b)|| / ||R(0; c_b)||`` -- the residual relative to the size of
  the problem (for the elliptic families ``||R(0; c)||`` is the norm of the forcing on the
  interior nodes, so this is ``||R|| / ||f||``);
* ``rel_error[i, b] = ||u_i - u*_b|| / ||u*_b||`` when the reference solution is given;
* ``wall_time[i]``: seconds of the method itself since it started, metrics excluded (the clock
  is paused while they are computed, and CUDA is synchronised before each reading);
* ``residual_evals[i]`` / ``jacobian_evals[i]``: batched residual evaluations and Jacobian
  products (JVP or VJP) used so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..pdes import PDE

__all__ = ["Trajectory", "DivergenceError", "Recorder", "chain"]


class DivergenceError(RuntimeError):
    """An iterative method produced a non-finite iterate or a residual that exploded."""


@dataclass
class Trajectory:
    """Per-iterate metrics of one solver run on a batch (see the module docstring)."""

    method: str
    u: torch.Tensor
    rel_residual: torch.Tensor
    wall_time: torch.Tensor
    residual_evals: torch.Tensor
    jacobian_evals: torch.Tensor
    rel_error: torch.Tensor | None = None
    states: torch.Tensor | None = None
    status: str = "ok"
    message: str = ""
    info: dict = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        return self.rel_residual.shape[0] - 1

    @property
    def batch_size(self) -> int:
        return self.rel_residual.shape[1]

    def frame(self, **labels):
        """Tidy per-iterate table (one row per iteration, means and medians over the batch)."""
        import pandas as pd
        rows = {"method": self.method, **labels,
                "iteration": range(self.iterations + 1),
                "rel_residual": self.rel_residual.mean(1).numpy(),
                "rel_residual_median": self.rel_residual.median(1).values.numpy(),
                "wall_time_s": self.wall_time.numpy(),
                "time_per_sample_s": self.wall_time.numpy() / self.batch_size,
                "residual_evals": self.residual_evals.numpy(),
                "jacobian_evals": self.jacobian_evals.numpy()}
        if self.rel_error is not None:
            rows["rel_l2"] = self.rel_error.mean(1).numpy()
            rows["rel_l2_median"] = self.rel_error.median(1).values.numpy()
        return pd.DataFrame(rows).assign(status=self.status)


class Recorder:
    """Collects a :class:`Trajectory`'s metrics while keeping them out of the method's wall time."""

    def __init__(self, pde: PDE, c: torch.Tensor, u_true: torch.Tensor | None = None, keep_states: bool = False):
        self.pde, self.c, self.keep_states = pde, c, keep_states
        self.cuda = c.device.type == "cuda"
        self.scale = pde.residual_scale(c)
        if u_true is not None:
            pde.check_state(u_true, c)
            self.u_true = u_true.to(c.dtype)
            self.true_norm = u_true.flatten(1).norm(dim=1).double()
        else:
            self.u_true = None
        self.res, self.err, self.times, self.n_res, self.n_jac, self.states = [], [], [], [], [], []
        self._sync()
        self._start, self._paused = time.perf_counter(), 0.0

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def record(self, u: torch.Tensor, r: torch.Tensor, residual_evals: int, jacobian_evals: int = 0) -> float:
        """Record iterate ``u`` with residual ``r``; returns the batch's max relative residual."""
        self._sync()
        now = time.perf_counter()
        self.times.append(now - self._start - self._paused)
        with torch.no_grad():
            rel = (r.flatten(1).norm(dim=1) / self.scale).double().cpu()
            self.res.append(rel)
            if self.u_true is not None:
                self.err.append(((u - self.u_true).flatten(1).norm(dim=1).double() / self.true_norm).cpu())
            if self.keep_states:
                self.states.append(u.detach().cpu())
        self.n_res.append(residual_evals)
        self.n_jac.append(jacobian_evals)
        self._sync()
        self._paused += time.perf_counter() - now
        return float(rel.max())

    def trajectory(self, method: str, u: torch.Tensor, status: str = "ok", message: str = "", **info) -> Trajectory:
        return Trajectory(method, u.detach(), torch.stack(self.res), torch.tensor(self.times, dtype=torch.float64),
                          torch.tensor(self.n_res), torch.tensor(self.n_jac),
                          torch.stack(self.err) if self.err else None,
                          torch.stack(self.states) if self.keep_states else None, status, message, info)


def chain(first: Trajectory, second: Trajectory, method: str) -> Trajectory:
    """``second``, a run started from ``first``'s final estimate, appended to ``first`` as one
    trajectory named ``method``: ``second``'s iterate 0 (that estimate again) is dropped, and its
    wall times and counts, cumulative from its own start, are added to ``first``'s final ones. The
    status is the first one that is not ``"ok"``; ``info`` holds both runs' (``first``, ``second``)
    and ``first_iterations``, the iterate at which ``second`` starts."""
    if first.batch_size != second.batch_size:
        raise ValueError(f"expected trajectories of one batch, got {first.batch_size} and {second.batch_size} samples")
    if (first.rel_error is None) != (second.rel_error is None):
        raise ValueError("expected both trajectories with or both without the reference error")

    def cat(a, b):  # cumulative b, continued from a's last value
        return torch.cat([a, b[1:] + a[-1]])
    error = None if first.rel_error is None else torch.cat([first.rel_error, second.rel_error[1:]])
    states = (torch.cat([first.states, second.states[1:]])
              if first.states is not None and second.states is not None else None)
    status = first.status if first.status != "ok" else second.status
    return Trajectory(method, second.u, torch.cat([first.rel_residual, second.rel_residual[1:]]),
                      cat(first.wall_time, second.wall_time), cat(first.residual_evals, second.residual_evals),
                      cat(first.jacobian_evals, second.jacobian_evals), error, states, status,
                      "; ".join(m for m in (first.message, second.message) if m),
                      {"first": dict(first.info), "second": dict(second.info),
                       "first_iterations": first.iterations})
