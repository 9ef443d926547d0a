"""Time stepping of the periodic flows: IMEX Crank--Nicolson (diffusion, implicit and diagonal in
Fourier space) with Heun's predictor--corrector for advection and forcing,

    w* = [(1 - a) w^n + dt E(w^n)] / (1 + a),
    w^{n+1} = [(1 - a) w^n + dt (E(w^n) + E(w*)) / 2] / (1 + a),   a = dt nu |k|^2 / 2,

``E(w) = -v . grad w + F`` (:func:`ens.pdes.spectral.advection_hat`), with the step re-chosen in
every snapshot interval from the batch's largest velocity (:func:`advance_hat`), and the CPU
policy every stepping FFT runs under (:func:`stepping`). The equations are in
:mod:`ens.pdes.navier_stokes`.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor

import torch

from .spectral import Spectral, advection_hat

__all__ = ["MAX_SUBSTEPS", "block_size", "stepping", "ceil_div", "imex_heun_steps", "advance_hat"]

#: largest number of internal steps per snapshot interval; more means the state has blown up
MAX_SUBSTEPS = 100_000


def block_size(S: int, device) -> int:
    """Samples per block of internal steps: on a CPU, small blocks keep the working set in cache.

    Measured at S = 64 on one core: ~100 us (float32) and ~180 us (float64) per sample and step
    in blocks of 8, against 220 -- 320 and 420 -- 730 us for a batch of 32 in one block (a
    float64 batch of that size no longer fits the 1 MB L2 cache; its FFTs slow down 5x).
    """
    if torch.device(device).type != "cpu":
        return 1 << 30
    return max(1, 2 ** 15 // S ** 2)


@contextlib.contextmanager
def stepping(device):
    """Context of the time stepping; yields ``run(fn, blocks) -> [fn(b) for b in blocks]``.

    On a CPU, torch's intra-op parallelism is set to 1 inside (restored on exit) and ``run``
    spreads the blocks over a pool of the former thread count: the ops on a block are too small
    to gain from intra-op threads, those threads stall on every op when another process holds
    a core (measured: a 30x slowdown with 2 threads on 2 shared cores), and multi-threaded
    FFTs round differently with the thread count. Every FFT of the stepping runs in here, so
    its results do not depend on the thread count.
    """
    def serial(fn, blocks):
        return [fn(b) for b in blocks]

    if torch.device(device).type != "cpu":
        yield serial
        return
    workers = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers == 1:
            yield serial
        else:
            with ThreadPoolExecutor(workers) as pool:
                yield lambda fn, blocks: list(pool.map(fn, blocks)) if len(blocks) > 1 else serial(fn, blocks)
    finally:
        torch.set_num_threads(workers)


def ceil_div(a: float, b: float) -> int:
    """``ceil(a / b)`` that ignores round-off (0.2 / 1e-3 -> 200, not 201)."""
    return max(1, math.ceil(a / b * (1 - 1e-12)))


def imex_heun_steps(w_hat: torch.Tensor, n: int, dt: float, a: torch.Tensor, f_hat: torch.Tensor,
                    sp: Spectral, S: int) -> torch.Tensor:
    """``n`` IMEX CN / Heun steps of size ``dt`` (``a = dt nu k2 / 2``), in the form

    ``P = A w + B F``, ``w* = P - B adv(w)``, ``w' = P - B (adv(w) + adv(w*)) / 2`` with
    ``A = (1 - a) / (1 + a)``, ``B = dt / (1 + a)``: the scheme of the module docstring.
    """
    A, B = (1 - a) / (1 + a), dt / (1 + a)
    BF, B2 = B * f_hat, 0.5 * B
    for _ in range(n):
        n0 = advection_hat(w_hat, sp, S)
        P = A * w_hat + BF
        n1 = advection_hat(P - B * n0, sp, S)
        w_hat = P - B2 * (n0 + n1)
    return w_hat


def advance_hat(w_hat: torch.Tensor, duration: float, f_hat: torch.Tensor, sp: Spectral, S: int, run, *,
                interval: float, nu: float, max_dt: float, cfl: float) -> torch.Tensor:
    """Advance a spectrum by ``duration`` in intervals <= ``interval``, re-choosing the step in each
    (``dt <= max_dt`` and ``dt <= cfl / (S max|v|)``, dividing the interval exactly).

    Inside :func:`stepping` (``run`` is what it yields): on a CPU the batch is stepped in
    independent blocks of :func:`block_size` samples, which keep a block's working set in cache.
    ``RuntimeError`` on blow-up.
    """
    n_int = ceil_div(duration, interval)
    h = duration / n_int
    for _ in range(n_int):
        psi = w_hat * sp.inv_k2
        vel = torch.fft.irfft2(torch.stack([sp.iky * psi, sp.ikx * psi], dim=-3), s=(S, S))
        umax = float(vel.square().sum(-3).sqrt().max())
        n_sub = ceil_div(h, min(max_dt, cfl / (S * umax)) if umax > 0 else max_dt)
        if n_sub > MAX_SUBSTEPS:
            raise RuntimeError(f"the solution blew up: max|v| = {umax:.3g} would need more than "
                               f"{MAX_SUBSTEPS} steps per interval; lower cfl or max_dt")
        dt = h / n_sub
        a = 0.5 * dt * nu * sp.k2

        def steps(block, n_sub=n_sub, dt=dt, a=a):
            return imex_heun_steps(block, n_sub, dt, a, f_hat, sp, S)

        w_hat = torch.cat(run(steps, w_hat.split(block_size(S, w_hat.device))))
    if not bool(torch.isfinite(w_hat).all()):
        raise RuntimeError("the solution blew up (non-finite values); lower cfl or max_dt")
    return w_hat
