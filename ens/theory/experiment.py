"""The central experiment: gradient descent, CG and Gauss--Newton (CGNR) from one start, their
residuals and errors per iterate and per eigenmode band.

See :mod:`ens.theory` for the mathematics."""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from ..pdes.helmholtz import Helmholtz
from ..solvers import gradient_descent
from ..solvers.linalg import cgls, conjugate_gradient, residual_and_pullback, residual_fn
from .bounds import ErrorModel, interior_norm
from .damping import MODE_BANDS, band_errors, check_step, mode_band_masks
from .spectra import check_grid_size, check_wavenumber, first_resonance, helmholtz

__all__ = ["METHODS", "ExperimentResult", "residual_vs_error_experiment", "reduction_factors", "band_drop"]

# ---------------------------------------------------------------------------------------------
# the central experiment
# ---------------------------------------------------------------------------------------------
def _gradient_descent(pde: Helmholtz, u: torch.Tensor, f: torch.Tensor, n_iter: int, eta: float,
                      chunk: int | None = None) -> Iterator[torch.Tensor]:
    """The iterates ``u_1 .. u_n_iter`` of :func:`ens.solvers.gradient_descent` with the fixed step
    ``eta`` (its method ``"gd"``: gradient descent on ``0.5 ||R(u; f)||^2``, gradient projected
    onto zero boundary values), without holding them all at once.

    The solver runs ``chunk`` steps at a time (default: about 32 MB of states), each run starting
    from the previous one's last iterate; a fixed-step iteration has no other state, so the
    iterates are exactly those of a single run of ``n_iter`` steps.
    """
    chunk = chunk or max(1, (1 << 22) // u.numel())
    for done in range(0, n_iter, chunk):
        states = gradient_descent(pde, f, u, steps=min(chunk, n_iter - done), step_size=eta,
                                  keep_states=True).states
        yield from states[1:]
        u = states[-1]


def _conjugate_gradient(pde: Helmholtz, u: torch.Tensor, f: torch.Tensor, n_iter: int) -> Iterator[torch.Tensor]:
    """CG on ``(-A) u = -f`` (``-A`` is SPD below the first resonance); its residual ``-f + A u``
    is exactly ``R(u; f)``. Minimises the ``-A``-norm of the error over the Krylov space."""
    A = residual_fn(pde, torch.zeros_like(f))
    r = pde.residual(u, f, check=False)        # b - M u = -f + A u with M = -A, b = -f
    yield from conjugate_gradient(lambda p: -A(p), u, r, n_iter)


def _cgnr(pde: Helmholtz, u: torch.Tensor, f: torch.Tensor, n_iter: int) -> Iterator[torch.Tensor]:
    """Gauss--Newton for ``min 0.5 ||R(u)||^2`` with its normal equations ``J^T J d = -J^T R``
    solved by CG (CGNR); for the linear residual ``J = A`` and the iterates are those of CGNR on
    ``A u = f``, minimising ``||R(u)||`` over the Krylov space of ``A^T A``. ``A^T`` is applied
    with autograd (vjp) of the PDE's residual, projected onto zero boundary values."""
    zero = torch.zeros_like(f)
    _, At = residual_and_pullback(pde, zero, torch.zeros_like(u))
    yield from cgls(residual_fn(pde, zero), At, u, -pde.residual(u, f, check=False), n_iter)


#: solver name -> description, for :func:`residual_vs_error_experiment`
METHODS = {"gd": "gradient descent, eta = 1/sigma_max^2",
           "cg": "conjugate gradients on -A (SPD)",
           "cgnr": "Gauss-Newton = CG on the normal equations"}


class ExperimentResult(NamedTuple):
    """Output of :func:`residual_vs_error_experiment`.

    trajectories
        Long format ``k, S, method, sample, iteration, quantity, value`` with quantity
        ``"rel_residual"`` (``||R(u_t; f)|| / ||f||``) or ``"rel_l2"``
        (``||u_t - u*|| / ||u*||``); iteration 0 is the common start.
    bands
        Long format ``k, S, method, sample, iteration, band, value`` with value
        ``||P_band (u_t - u*)|| / ||u*||`` (:func:`mode_band_masks`); the squares of the band values
        add up to the squared relative error.
    """

    trajectories: pd.DataFrame
    bands: pd.DataFrame


def residual_vs_error_experiment(k: float, S: int, n_samples: int = 4, n_iter: int = 100,
                                 methods: Sequence[str] = ("gd", "cg", "cgnr"), seed: int = 0,
                                 error_model: ErrorModel = ErrorModel(),
                                 band_edges: tuple[float, float] = (1 / 8, 1 / 2),
                                 eta: float | None = None) -> ExperimentResult:
    r"""Residual minimisers from a network-like start: the residual falls, the error much less.

    Draw forcings ``f`` from the Helmholtz input law, solve exactly (DST) for ``u*``, start every
    method from the same ``u_0 = u* + e_0`` with ``e_0`` from ``error_model`` (smooth bias plus
    rough noise, the shape of a trained network's error) and run ``n_iter`` iterations of

    * ``"gd"``: gradient descent on ``0.5 ||R(u)||^2`` with the stable step ``eta = 1/sigma_max^2``
      (per-mode damping ``1 - eta sigma_i^2``, see :func:`gd_damping_factors`): the baseline
      :func:`ens.solvers.gradient_descent` with ``step_size=eta``;
    * ``"cg"``: conjugate gradients on ``-A u = -f``. ``-A = -(Delta_h + k^2)`` is symmetric
      positive definite for ``k`` below the first resonance (:func:`first_resonance`), where CG is
      the optimal Krylov method (it minimises the energy norm of the error, and converges like
      ``sqrt(kappa)``); it raises ``ValueError`` above the resonance;
    * ``"cgnr"``: Gauss--Newton on ``0.5 ||R(u)||^2``, whose normal equations ``A^T A d = -A^T R``
      are solved by CG -- what a hybrid residual minimiser does with a general (non-symmetric or
      nonlinear) residual. It minimises ``||R||`` over the Krylov space of ``A^T A`` and converges
      like ``kappa``.

    All residuals are the PDE object's ``residual`` (the real discretisation); errors are split
    into eigenmode bands with the DST. Work is float64 on the CPU.

    Returns
    -------
    ExperimentResult
        Tidy trajectories and band errors (see :class:`ExperimentResult`).
    """
    k, S = check_wavenumber(k), check_grid_size(S)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"expected n_samples to be a positive int, got {n_samples!r}")
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"expected n_iter to be a positive int, got {n_iter!r}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {sorted(METHODS)}")
    pde = helmholtz(k)
    lam = pde.operator_eigenvalues(S)
    if "cg" in methods and not bool((lam < 0).all()):
        raise ValueError(f"CG needs -A symmetric positive definite, which fails for k = {k} >= the first "
                         f"resonance {first_resonance(S):.4f} at S = {S}; use 'cgnr' there")
    eta = check_step(eta, S, k)
    gen = torch.Generator().manual_seed(int(seed))
    f = pde.sample_inputs(n_samples, S, generator=gen)
    u_star = pde.solve(f)
    u0 = u_star + error_model.sample(u_star, generator=gen)
    masks = mode_band_masks(S, k, band_edges)
    fnorm, unorm = interior_norm(f), interior_norm(u_star)

    traj, bands = [], []
    chunk = max(1, (1 << 22) // (n_samples * S * S))   # iterates per batched evaluation (~32 MB)

    def flush(method, start, states):
        """Norms and band errors of the iterates ``start, start+1, ...`` in one batched pass."""
        if not states:
            return
        T = len(states)
        u = torch.cat(states)                                   # (T * B, 1, S, S)
        e = u - u_star.repeat(T, 1, 1, 1)
        its = np.repeat(np.arange(start, start + T), n_samples)
        smp = np.tile(np.arange(n_samples), T)
        res = interior_norm(pde.residual(u, f.repeat(T, 1, 1, 1), check=False)) / fnorm.repeat(T)
        err = interior_norm(e) / unorm.repeat(T)
        for q, v in (("rel_residual", res), ("rel_l2", err)):
            traj.append(pd.DataFrame({"method": method, "sample": smp, "iteration": its,
                                      "quantity": q, "value": v.numpy()}))
        for b, v in band_errors(e, masks).items():
            bands.append(pd.DataFrame({"method": method, "sample": smp, "iteration": its,
                                       "band": b, "value": (v / unorm.repeat(T)).numpy()}))
        states.clear()

    with torch.no_grad():
        for method in methods:
            if method == "gd":
                it = _gradient_descent(pde, u0, f, n_iter, eta, chunk)
            elif method == "cg":
                it = _conjugate_gradient(pde, u0, f, n_iter)
            else:
                it = _cgnr(pde, u0, f, n_iter)
            states, start = [u0], 0
            for t, u in enumerate(it, start=1):
                if len(states) == chunk:
                    flush(method, start, states)
                    start = t
                states.append(u)
            flush(method, start, states)

    def finish(frames):
        df = pd.concat(frames, ignore_index=True)
        df.insert(0, "S", S)
        df.insert(0, "k", k)
        return df

    return ExperimentResult(finish(traj), finish(bands))


def reduction_factors(trajectories: pd.DataFrame, iteration: int | None = None) -> pd.DataFrame:
    """How much each method cut the residual and the error: ``value(0) / value(iteration)``.

    ``iteration=None`` takes the last recorded iteration. Per-sample factors are summarised by
    their geometric mean. Returns one row per ``(k, S, method)`` with ``iteration``,
    ``residual_reduction``, ``error_reduction`` and ``ratio = residual_reduction / error_reduction``
    (how many times faster the residual fell than the error).
    """
    keys = [c for c in ("k", "S", "method") if c in trajectories.columns]
    rows = []
    for key, g in trajectories.groupby(keys, sort=False):
        t = int(g["iteration"].max()) if iteration is None else int(iteration)
        if t not in set(g["iteration"]):
            raise ValueError(f"iteration {t} was not recorded for {dict(zip(keys, key))}")
        row = dict(zip(keys, key), iteration=t)
        for q, name in (("rel_residual", "residual_reduction"), ("rel_l2", "error_reduction")):
            v0 = g[(g.quantity == q) & (g.iteration == 0)].set_index("sample")["value"]
            vt = g[(g.quantity == q) & (g.iteration == t)].set_index("sample")["value"]
            row[name] = float(np.exp(np.log(v0 / vt).mean()))
        row["ratio"] = row["residual_reduction"] / row["error_reduction"]
        rows.append(row)
    return pd.DataFrame(rows)


def band_drop(result: ExperimentResult, band: str = "lowest", factor: float = 2.0) -> pd.DataFrame:
    """When does a band's error first fall by ``factor``, and how far has the residual fallen by then?

    Works on the geometric mean over samples. One row per ``(k, S, method)``: ``iteration`` (the
    first iteration at which the band error is ``<= value(0) / factor``; ``NaN`` if never) and
    ``residual_reduction``, ``error_reduction`` and ``band_reduction`` at the iteration before
    (``iterations_recorded`` is the last iteration available). A residual reduction far above
    ``factor`` there means the residual fell a lot while that band of the error had not yet moved.
    """
    if band not in MODE_BANDS:
        raise ValueError(f"unknown band {band!r}; expected one of {MODE_BANDS}")
    if not factor > 1:
        raise ValueError(f"expected factor > 1, got {factor!r}")
    keys = ["k", "S", "method"]

    def gmean(df, col):
        return df.groupby(keys + ["iteration", col], sort=False)["value"].apply(
            lambda v: float(np.exp(np.log(v).mean()))).unstack(col)

    b = gmean(result.bands, "band")[band]
    q = gmean(result.trajectories, "quantity")
    rows = []
    for key, series in b.groupby(level=keys, sort=False):
        series = series.droplevel(keys)
        traj = q.loc[key]
        hit = series.index[series.values <= series.loc[0] / factor]
        t = int(hit[0]) if len(hit) else None
        before = (t - 1) if t is not None else int(series.index.max())
        rows.append({**dict(zip(keys, key)), "iteration": np.nan if t is None else t,
                     "iterations_recorded": int(series.index.max()),
                     "band_reduction": float(series.loc[0] / series.loc[before]),
                     "residual_reduction": float(traj.loc[0, "rel_residual"]
                                                 / traj.loc[before, "rel_residual"]),
                     "error_reduction": float(traj.loc[0, "rel_l2"]
                                              / traj.loc[before, "rel_l2"])})
    return pd.DataFrame(rows)
