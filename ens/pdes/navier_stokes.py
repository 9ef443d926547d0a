"""Incompressible Navier--Stokes in vorticity form on the periodic unit torus.

    dw/dt + v . grad w = nu Lap w + F,      v = (d psi/dy, -d psi/dx),      -Lap psi = w,

so that ``curl v = dv_y/dx - dv_x/dy = -Lap psi = w`` (the paper's ``v = grad-perp psi``, with the
sign fixed by ``curl v = w``). Fields live on the cell grid ``x_i = i / S`` of ``[0, 1)^2``;
array axis -2 is ``x``, axis -1 is ``y``. Everything is nondimensional (unit box, unit time).

This module holds the equations (residual, its closed-form Jacobian products, the input laws);
the pseudo-spectral operators are in :mod:`ens.pdes.spectral` (2/3-rule dealiased, ``rfft2``
layout, even ``S``) and the IMEX Crank--Nicolson / Heun integrator of the reference solver in
:mod:`ens.pdes.time_stepping`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checks import check_int, check_number
from .base import PDE, Linearization
from .random_fields import gaussian_random_field
from .spectral import Spectral, gradients, grid_dot, spectral
from .time_stepping import advance_hat, stepping

__all__ = ["NavierStokes", "Kolmogorov"]

@dataclass(frozen=True)
class NavierStokes(PDE):
    r"""2-D Navier--Stokes, vorticity form, on the unit torus (the FNO / paper NS benchmark).

    Equation ``dw/dt + v . grad w = nu Lap w + F`` with ``v = (d psi/dy, -d psi/dx)``,
    ``-Lap psi = w`` (so ``curl v = w``) and the steady forcing

        F = A (sin(2 pi m (x + y)) + cos(2 pi m (x + y))),   A = forcing_amplitude, m = forcing_wavenumber.

    Grid: cell grid ``x_i = i / S`` (axis -2 is ``x``, axis -1 is ``y``), even ``S >= 8``.
    Channels: input ``c = w(t0)``, ``(B, 1, S, S)``; output ``u`` = the trajectory
    ``w(t0 + j dt_snapshot)``, ``j = 1 .. n_snapshots``, as channels ``(B, n_snapshots, S, S)``.
    Nondimensional: unit box, unit time.

    Parameters
    ----------
    nu
        Viscosity, > 0 (paper: 1e-3). At ``nu = 1e-3`` warmed-up states are far inside the
        resolution at S = 64 (shell-summed enstrophy spectrum at the 2/3 cut-off ~1e-23 of its
        peak); ``1e-4 <= nu <= 1e-2`` is the useful range, smaller ``nu`` needs larger S.
    forcing_amplitude, forcing_wavenumber
        ``A`` and ``m`` (paper: 0.1 and 1; the "2 pi -> 4 pi" forcing shift is ``m = 2``).
        ``A = 0`` gives decaying turbulence. ``S > 2 m`` is required.
    dt_snapshot, n_snapshots
        Snapshot spacing and number of snapshots in the output window (paper: 0.2 and 10).
    warmup
        Time by which ``sample_inputs`` advances its GRF draws (paper: to ``t = 2``).
    grf_alpha, grf_tau
        Law of the initial vorticity, a periodic ``GRF(alpha, tau)`` with covariance
        ``tau^(2 alpha - 2) (-Lap + tau^2)^(-alpha)`` (paper: 2.5 and 7). This is the law of the
        current ``neuraloperator`` ``GaussianRF(2, S, 2.5, 7)``; the original 2020 FNO script
        drew real and imaginary parts with unit variance each under the old ``torch.ifft`` API,
        which makes its fields ``sqrt 2`` times larger.
    max_dt, cfl
        Internal time step limits ``dt <= max_dt`` and ``dt <= cfl / (S max|v|)``; the step
        used divides the snapshot spacing exactly. ``max_dt = 4e-3``: the scheme is second
        order and its trajectory error over the default window at S = 64 is 6.5e-8 relative
        (float32 round-off; 4e-9 at 1e-3), far below the residual's floor. At the defaults
        ``max_dt`` sets the step (``max|v| ~ 0.1``). Heun has no stable interval on the
        imaginary axis, so the advective limit rests on the viscous damping of the top modes:
        a rough, under-resolved state (100 x GRF at S = 32) blew up at ``cfl = 0.5`` and 1 and
        survived 0.35 and 0.25, hence ``cfl = 0.3`` (``<= 1`` enforced). Where the CFL limit
        sets the step the trajectory error is ~1e-4 (Kolmogorov, S = 64); lower ``max_dt``
        rather than rely on it. ``RuntimeError`` on blow-up.

    Solver (``solve``, ``advance``): pseudo-spectral in space; in time, IMEX Crank--Nicolson
    (diffusion, implicit and diagonal in Fourier space) with Heun's predictor--corrector for
    advection and forcing:

        w* = [(1 - a) w^n + dt E(w^n)] / (1 + a),
        w^{n+1} = [(1 - a) w^n + dt (E(w^n) + E(w*)) / 2] / (1 + a),   a = dt nu |k|^2 / 2,

    ``E(w) = -v . grad w + F``: second order, no diffusive step limit. The step is chosen per
    interval of at most ``dt_snapshot`` from the largest velocity in the whole batch, so when
    the CFL limit is active (not at the default parameters) a trajectory depends, at the level
    of the time-discretisation error, on the other samples of its batch.

    Residual ``R(u; c)``: with ``w_0 = c`` and ``w_j = u[:, j-1]``,

        R_j = (w_j - w_{j-1}) / dt_snapshot - (N(w_j) + N(w_{j-1})) / 2,   j = 1 .. n_snapshots,

    ``N(w) = -v . grad w + nu Lap w + F`` (``tendency``, exact in space for band-limited
    fields). This trapezoidal rule in time is second order in the snapshot spacing, so it does
    NOT vanish on the reference trajectory: its floor there is the truncation error
    ``~ dt_snapshot^2 / 12 * d^3 w / dt^3``, measured ``||R|| / ||N(w)|| = 2.4e-4`` on
    16 default trajectories at S = 64 (halving ``dt_snapshot`` divides it by 4).
    """

    nu: float = 1e-3
    forcing_amplitude: float = 0.1
    forcing_wavenumber: int = 1
    dt_snapshot: float = 0.2
    n_snapshots: int = 10
    warmup: float = 2.0
    grf_alpha: float = 2.5
    grf_tau: float = 7.0
    max_dt: float = 4e-3
    cfl: float = 0.3

    name = "navier_stokes"
    generation_cost = 0.27
    in_channels = 1
    periodic = True
    min_size = 8

    def __post_init__(self):
        positive = dict(nu=self.nu, dt_snapshot=self.dt_snapshot, grf_tau=self.grf_tau,
                        max_dt=self.max_dt, cfl=self.cfl)
        for key, val in positive.items():
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
                raise ValueError(f"expected {key} to be a finite number > 0, got {val!r}")
        if self.cfl > 1:
            raise ValueError(f"expected cfl <= 1 (the scheme is observed to blow up from cfl ~ 1), got {self.cfl!r}")
        if not (isinstance(self.warmup, (int, float)) and math.isfinite(self.warmup) and self.warmup >= 0):
            raise ValueError(f"expected warmup to be a finite number >= 0, got {self.warmup!r}")
        if not (isinstance(self.forcing_amplitude, (int, float)) and math.isfinite(self.forcing_amplitude)):
            raise ValueError(f"expected forcing_amplitude to be a finite number, got {self.forcing_amplitude!r}")
        for key in ("forcing_wavenumber", "n_snapshots"):
            check_int(getattr(self, key), key)
        if not self.grf_alpha > 1:
            raise ValueError(f"expected grf_alpha > 1 (finite variance in 2-D), got {self.grf_alpha!r}")

    @property
    def out_channels(self) -> int:
        return self.n_snapshots

    # ---- validation -------------------------------------------------------------------------
    def _check_resolution(self, S: int) -> None:
        if S % 2:
            raise ValueError(f"the pseudo-spectral solver needs an even resolution S, got S={S}")
        if 2 * self.forcing_wavenumber >= S:
            raise ValueError(f"resolution S={S} does not resolve the forcing wavenumber "
                             f"{self.forcing_wavenumber} (needs S > {2 * self.forcing_wavenumber})")

    def check_input(self, c: torch.Tensor, finite: bool = True) -> torch.Tensor:
        super().check_input(c, finite=finite)
        self._check_resolution(c.shape[-1])
        return c

    def _check_sample_args(self, n: int, S: int, generator) -> None:
        super()._check_sample_args(n, S, generator)
        self._check_resolution(S)

    def _check_grid(self, w: torch.Tensor) -> int:
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.dim() < 2 \
                or w.shape[-1] != w.shape[-2] or w.shape[-1] < self.min_size:
            raise ValueError(f"expected a floating tensor (..., S, S) with S >= {self.min_size}, got "
                             f"{type(w).__name__} {tuple(getattr(w, 'shape', ()))}")
        self._check_resolution(w.shape[-1])
        return w.shape[-1]

    # ---- physics ----------------------------------------------------------------------------
    def forcing(self, S: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """Vorticity forcing ``F`` on the grid, ``(S, S)``."""
        X, Y = self.grid(S, dtype, device)
        phase = 2 * math.pi * self.forcing_wavenumber * (X + Y)
        return self.forcing_amplitude * (torch.sin(phase) + torch.cos(phase))

    @property
    def _stepping_params(self) -> dict:
        return {"interval": self.dt_snapshot, "nu": self.nu, "max_dt": self.max_dt, "cfl": self.cfl}

    def _tendency(self, w: torch.Tensor, sp: Spectral, S: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``N(w)`` and the :func:`~ens.pdes.spectral.gradients` of ``w`` it was formed from."""
        w_hat = torch.fft.rfft2(w)
        g = gradients(w_hat, sp, S)
        n_hat = -torch.fft.rfft2(grid_dot(g, g)) * sp.mask - self.nu * sp.k2 * w_hat
        return torch.fft.irfft2(n_hat, s=(S, S)) + self.forcing(S, w.dtype, w.device), g

    def tendency(self, w: torch.Tensor) -> torch.Tensor:
        """Right-hand side ``N(w) = -v . grad w + nu Lap w + F`` of ``w`` (..., S, S), same shape."""
        S = self._check_grid(w)
        return self._tendency(w, spectral(S, w.dtype, w.device), S)[0]

    def velocity(self, w: torch.Tensor) -> torch.Tensor:
        """Velocity ``(v_x, v_y) = (d psi/dy, -d psi/dx)`` of ``w`` (..., S, S), shape (..., 2, S, S)."""
        S = self._check_grid(w)
        sp = spectral(S, w.dtype, w.device)
        psi = torch.fft.rfft2(w) * sp.inv_k2
        return torch.fft.irfft2(torch.stack([sp.iky * psi, -sp.ikx * psi], dim=-3), s=(S, S))

    def advance(self, w: torch.Tensor, duration: float) -> torch.Tensor:
        """Advance vorticity ``w`` of shape (B, S, S) or (B, 1, S, S) by time ``duration`` (same shape)."""
        S = self._check_grid(w)
        if w.dim() not in (3, 4) or (w.dim() == 4 and w.shape[1] != 1):
            raise ValueError(f"expected w of shape (B, S, S) or (B, 1, S, S), got {tuple(w.shape)}")
        if not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f"expected a finite duration >= 0, got {duration!r}")
        if duration == 0:
            return w
        sp = spectral(S, w.dtype, w.device)
        with stepping(w.device) as run:
            f_hat = torch.fft.rfft2(self.forcing(S, w.dtype, w.device))
            w_hat = advance_hat(torch.fft.rfft2(w), duration, f_hat, sp, S, run, **self._stepping_params)
            return torch.fft.irfft2(w_hat, s=(S, S))

    def solve(self, c: torch.Tensor) -> torch.Tensor:
        """Reference trajectory ``(B, n_snapshots, S, S)`` from ``c = w(t0)``, in c's dtype and device."""
        self.check_input(c)
        S = c.shape[-1]
        sp = spectral(S, c.dtype, c.device)
        with stepping(c.device) as run:
            f_hat = torch.fft.rfft2(self.forcing(S, c.dtype, c.device))
            w_hat, out = torch.fft.rfft2(c[:, 0]), []
            for _ in range(self.n_snapshots):
                w_hat = advance_hat(w_hat, self.dt_snapshot, f_hat, sp, S, run, **self._stepping_params)
                out.append(torch.fft.irfft2(w_hat, s=(S, S)))
        return torch.stack(out, dim=1)

    def _residual(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self._residual_and_gradients(u, c)[0]

    def _residual_and_gradients(self, u: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.cat([c, u], dim=1)
        S = w.shape[-1]
        n, g = self._tendency(w, spectral(S, w.dtype, w.device), S)
        return (w[:, 1:] - w[:, :-1]) / self.dt_snapshot - 0.5 * (n[:, 1:] + n[:, :-1]), g

    def linearize(self, u: torch.Tensor, c: torch.Tensor) -> Linearization:
        r"""``R(u; c)`` with the Jacobian's products in closed form (the residual is quadratic in ``u``).

        With ``w_0 = c`` fixed and ``d_0 = 0``, ``(J d)_j = (d_j - d_{j-1}) / dt_snapshot -
        (N'(w_j) d_j + N'(w_{j-1}) d_{j-1}) / 2``, where, in grid-space operators,

            N'(w) d = -P (g_0 G_2 d + g_2 G_0 d + g_1 G_3 d + g_3 G_1 d) + nu Lap d,

        ``g = (v_x, v_y, dw/dx, dw/dy)`` of ``w`` (kept from the residual evaluation), ``G_i`` the
        Fourier multipliers ``grad_i`` that make them and ``P`` the 2/3-rule projection. Every
        multiplier is band-limited inside the 2/3 band and Hermitian, so ``G_i^T`` is the multiplier
        ``conj(grad_i)`` and ``P^T = P``; the transpose, per snapshot with ``s_k = y_k + y_{k+1}``
        (``y_{T+1} = 0``), is ``(J^T y)_k = (y_k - y_{k+1}) / dt_snapshot - N'(w_k)^T s_k / 2`` with

            N'(w)^T s = -(G_0^T (g_2 P s) + G_1^T (g_3 P s) + G_2^T (g_0 P s) + G_3^T (g_1 P s)) + nu Lap s.

        A JVP costs 7 FFT passes (4 of them the four gradient fields of ``d``) and a VJP 7 (the four
        forward transforms of ``g P s``), against a residual evaluation and its tangent (JVP) or
        backward graph (VJP) with ``torch.func``; ``tests/test_navier_stokes.py`` holds both against
        ``torch.func`` and checks ``<J d, y> = <d, J^T y>``.
        """
        r, g = self._residual_and_gradients(u, c)
        S, dt = u.shape[-1], self.dt_snapshot
        sp = spectral(S, u.dtype, u.device)
        g = g[:, 1:]  # the snapshots that depend on u: w_1 .. w_T
        g_swapped = g[..., (2, 3, 0, 1), :, :]  # g_i paired with G_i^T in the transpose, once per state
        grad_t = sp.grad.conj()
        nu_k2 = self.nu * sp.k2

        def previous(x):  # x_{j-1}, with x_0 = 0
            return torch.nn.functional.pad(x[:, :-1], (0, 0, 0, 0, 1, 0))

        def jvp(d: torch.Tensor) -> torch.Tensor:
            d_hat = torch.fft.rfft2(d)
            h = gradients(d_hat, sp, S)
            prod = grid_dot(g, h) + grid_dot(h, g)
            dn = torch.fft.irfft2(-torch.fft.rfft2(prod) * sp.mask - nu_k2 * d_hat, s=(S, S))
            return (d - previous(d)) / dt - 0.5 * (dn + previous(dn))

        def vjp(y: torch.Tensor) -> torch.Tensor:
            y_next = torch.nn.functional.pad(y[:, 1:], (0, 0, 0, 0, 0, 1))
            s_hat = torch.fft.rfft2(y + y_next)
            q = torch.fft.irfft2(s_hat * sp.mask, s=(S, S)).unsqueeze(-3)
            a = torch.fft.rfft2(g_swapped * q)
            dn_t = torch.fft.irfft2(-(a * grad_t).sum(-3) - nu_k2 * s_hat, s=(S, S))
            return (y - y_next) / dt - 0.5 * dn_t

        return Linearization(r, jvp, vjp)

    def sample_inputs(self, n: int, S: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """GRF(grf_alpha, grf_tau) vorticity advanced by ``warmup``, shape (n, 1, S, S).

        The draw is made on the CPU from ``generator`` and the warm-up runs in float64 on
        ``device`` before the cast to ``dtype``, so a seed fixes the inputs on a given device.
        """
        self._check_sample_args(n, S, generator)
        w0 = gaussian_random_field(n, S, self.grf_alpha, self.grf_tau, "periodic", generator, device=device)
        return self.advance(w0, self.warmup)[:, None].to(dtype)


#: chain precisions accepted by ``Kolmogorov.sample_precision``
SAMPLE_PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Kolmogorov(NavierStokes):
    r"""Kolmogorov flow: :class:`NavierStokes` with the shear forcing ``F = -A cos(2 pi n y)``.

    ``A = forcing_amplitude``, ``n = forcing_wavenumber``, ``y`` = the last array axis. This is
    the curl of the body force ``(chi sin(2 pi n y), 0)`` with ``chi = A / (2 pi n)``. Grid,
    channels, solver and residual as for :class:`NavierStokes`; ``S > 2 n`` is required.

    Convention (pinned): with length scale ``L = 1 / (2 pi)`` the Reynolds number is
    ``Re = sqrt(chi L^3) / nu`` (``reynolds_number``); for ``A = 4, n = 4``, ``Re = 25.3`` at
    ``nu = 1e-3``, 50.7 at 5e-4, 127 at 2e-4. Defaults, from runs at S = 64 (and 128):

    * ``nu = 5e-4`` (Re = 51), of the three values tried (1e-3, 5e-4, 2e-4) the one that is
      both chaotic and well resolved at S = 64: a 1e-8 perturbation grows like ``exp(0.2 t)`` (Lyapunov time ~5; the same at
      S = 128) and the enstrophy spectrum at the 2/3 cut-off is 1e-5 -- 2e-4 of its peak. At
      ``nu = 1e-3`` the flow settles on a regular state (perturbations do not grow over 40
      time units); at 2e-4 it is chaotic but only 3 decades are resolved at S = 64.
    * ``dt_snapshot = 0.05`` (10 snapshots span 0.5, a tenth of a Lyapunov time): the flow is
      much faster than the NS benchmark, and the residual floor ``||R|| / ||N(w)||`` on the
      reference trajectory is 3.8e-2 at 0.2, 1.1e-2 at 0.1, 2.9e-3 at 0.05 (4 states at
      t = 40; 5.7e-3 on 16 states at t = 100, the enstrophy is bursty).
    * ``max_dt = 2.5e-3``: trajectory error over the window 2.6e-6 relative (3.9e-7 at 1e-3),
      which moves the residual floor by 0.5%; ``max|v| ~ 0.5``, so CFL sets the step only
      from S ~ 256.

    The laminar flow ``w_L = -A cos(2 pi n y) / (nu (2 pi n)^2)`` (``laminar_state``) is an exact
    steady solution (its advection vanishes) but unstable: at the default ``nu`` a 1e-6
    perturbation reaches O(1) by t = 8.

    Input law (``sample_inputs``): states of the statistically stationary flow, taken from
    independent chains. For ``n`` inputs, ``C = ceil(n / draws_per_chain)`` chains start from

        w_i(0) = P (w_L + g_i),    g_i ~ GRF(grf_alpha, grf_tau) independent, i = 0 .. C-1,

    (the ``g_i`` drawn in one ``gaussian_random_field(C, S, ...)`` call from ``generator``;
    ``P`` zeroes the Fourier modes outside the 2/3-rule band, which never act on the others
    and would only decay, by e^-478 at S = 64 (e^-119 at S = 32) before the first draw; in
    float32 they would sink into the slow subnormal range) and input ``m = j C + i``
    (``0 <= m < n``) is ``w_i(warmup + j sample_spacing)``: round ``j = 0, 1, ..`` takes one
    state of every chain, in chain order, and the last round may be partial. The chains run
    with the solver of ``advance`` (step ``max_dt``, CFL limit ``cfl``, all ``C`` chains in
    one batch) in ``sample_precision``, and the states are cast to the requested ``dtype`` at
    the end; so the inputs depend on ``n``, ``S``, the generator state and the parameters only
    (bit for bit on a given device type, whatever the CPU thread count). The reference
    trajectory (``solve``) always runs in the input's own dtype. The defaults, from the
    measurements below:

    * ``warmup = 50``: from the laminar start the box-scale modes ``|k| = 1`` (77% of the
      energy on the attractor) reach their stationary energy by t ~ 10 and the enstrophy by
      t ~ 30, while from a GRF alone (the former law, which needed ``warmup = 100``) the
      ``|k| = 1`` energy is still 12% low at t = 30 -- 40 and converges by t ~ 75 (its viscous
      time is ``1 / (nu (2 pi)^2) = 51``).
    * ``sample_spacing = 5`` (one Lyapunov time) and ``draws_per_chain = 8``. The vorticity
      fluctuation ``w - <w>(y)`` on the attractor has the autocorrelation 0.74, 0.44, 0.31,
      0.21, 0.08 at lags 1, 5, 10, 20, 50, in two parts. About 55% of its variance decorrelates
      fast (0.16 at lag 5, 0.05 at lag 10); the rest, the box-scale modes (1, 0), (0, 1) and
      the modulations (+-1 .. 3, 4) of the forced jets, keeps 0.78 at lag 5 and 0.62 at lag 10
      (the ``|k| = 1`` band: 0.42 at lag 20, 0.18 at lag 50). The energy's autocorrelation is
      0.50, 0.25, 0.09 at lags 5, 10, 20; that of the ``|k| = 1`` energy 0.74, 0.47, 0.24.
      Successive draws of a chain are thus new small-scale states on a slowly changing
      large-scale flow: the inputs of one call are NOT independent, only its chains are. The
      cost per input is ``(warmup + (draws_per_chain - 1) sample_spacing) / draws_per_chain``
      = 10.6 time units of one flow, against 50 -- 100 for independent warm-ups.
    * ``sample_precision = "float32"``: the chains run in float32, 1.6 -- 1.9x faster than in
      float64 on a CPU. The flow is chaotic, so round-off changes which state is drawn, not its
      law (float64 chains agree, below).

    The statistics behind these defaults (energy, enstrophy and box-scale energy of chains from
    each start, in float32 and float64, over time windows) and the cost per input and step are
    in ``docs/kolmogorov_input_law.md``: from t ~ 30 on the chains' statistics agree with a long
    reference run within 1.6 standard errors; one input costs 10.6 time units of one flow.
    """

    nu: float = 5e-4
    forcing_amplitude: float = 4.0
    forcing_wavenumber: int = 4
    dt_snapshot: float = 0.05
    warmup: float = 50.0
    max_dt: float = 2.5e-3
    sample_spacing: float = 5.0
    draws_per_chain: int = 8
    sample_precision: str = "float32"

    name = "kolmogorov"
    generation_cost = 0.69  # the chains' warm-up on the attractor
    # measured 2026-12-04: the ci test set generated on an Intel Xeon and on an AMD EPYC (torch
    # 2.13.0+cpu, same seeds) gives the reference's relative residual 3.7e-4 against 4.1e-4
    chaotic = True

    def __post_init__(self):
        super().__post_init__()
        check_number(self.sample_spacing, "sample_spacing (time between the draws of a chain)")
        check_int(self.draws_per_chain, "draws_per_chain")
        if not isinstance(self.sample_precision, str) or self.sample_precision not in SAMPLE_PRECISIONS:
            raise ValueError(f"expected sample_precision to be one of {sorted(SAMPLE_PRECISIONS)}, "
                             f"got {self.sample_precision!r}")

    @property
    def reynolds_number(self) -> float:
        """``Re = sqrt(chi L^3) / nu`` with ``chi = A / (2 pi n)``, ``L = 1 / (2 pi)``."""
        chi = abs(self.forcing_amplitude) / (2 * math.pi * self.forcing_wavenumber)
        return math.sqrt(chi / (2 * math.pi) ** 3) / self.nu

    def forcing(self, S: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """Vorticity forcing ``-A cos(2 pi n y)`` on the grid, ``(S, S)``."""
        _, Y = self.grid(S, dtype, device)
        return -self.forcing_amplitude * torch.cos(2 * math.pi * self.forcing_wavenumber * Y)

    def laminar_state(self, S: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """Laminar steady vorticity ``-A cos(2 pi n y) / (nu (2 pi n)^2)``, ``(S, S)``."""
        self._check_resolution(S)
        return self.forcing(S, dtype, device) / (self.nu * (2 * math.pi * self.forcing_wavenumber) ** 2)

    def n_chains(self, n: int) -> int:
        """Number of chains ``ceil(n / draws_per_chain)`` behind ``n`` inputs."""
        return -(-n // self.draws_per_chain)

    def chain_starts(self, n: int, S: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Initial states ``P(w_L + g_i)`` (float64, CPU, ``(C, S, S)``) of the chains behind ``n`` inputs."""
        self._check_sample_args(n, S, generator)
        g = gaussian_random_field(self.n_chains(n), S, self.grf_alpha, self.grf_tau, "periodic", generator)
        mask = spectral(S, torch.float64, torch.device("cpu")).mask
        with stepping("cpu"):  # single-threaded FFTs: no rounding that depends on the thread count
            return torch.fft.irfft2(torch.fft.rfft2(self.laminar_state(S) + g) * mask, s=(S, S))

    def sample_inputs(self, n: int, S: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """``n`` states of the stationary flow from ``ceil(n / draws_per_chain)`` chains, ``(n, 1, S, S)``.

        See the class docstring for the law: input ``j C + i`` is chain ``i`` at time
        ``warmup + j sample_spacing``.
        """
        w = self.chain_starts(n, S, generator).to(dtype=SAMPLE_PRECISIONS[self.sample_precision], device=device)
        C = w.shape[0]
        w = self.advance(w, self.warmup)
        rounds = [w]
        while len(rounds) * C < n:
            w = self.advance(w, self.sample_spacing)
            rounds.append(w)
        return torch.cat(rounds)[:n, None].to(dtype)
