"""Navier-Stokes and Kolmogorov families: spectral operators, exact solutions, residual, errors."""

import math

import pytest
import torch
from helpers import torch_threads

from ens.pdes import PDE, Kolmogorov, NavierStokes
from ens.pdes.random_fields import gaussian_random_field

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
S = 32


def modes_field(pde, modes, S=S):
    """w = sum b cos(2 pi (p x + q y) + phi): w, its velocity, v . grad w and Lap w, analytically."""
    X, Y = pde.grid(S)
    th = [(b, 2 * math.pi * torch.tensor([p, q], dtype=torch.float64), 2 * math.pi * (p * X + q * Y) + ph)
          for b, p, q, ph in modes]
    w = sum(b * torch.cos(t) for b, _, t in th)
    vel = sum(b / (k @ k) * torch.stack([-k[1] * torch.sin(t), k[0] * torch.sin(t)]) for b, k, t in th)
    # v . grad w = sum_ij a_i b_j sin(t_i) sin(t_j) (k_iy k_jx - k_ix k_jy), a_i = b_i / |k_i|^2
    adv = sum(bi / (ki @ ki) * bj * torch.sin(ti) * torch.sin(tj) * (ki[1] * kj[0] - ki[0] * kj[1])
              for bi, ki, ti in th for bj, kj, tj in th)
    lap = sum(-b * (k @ k) * torch.cos(t) for b, k, t in th)
    return w, vel, adv, lap


def test_spectral_tendency_and_velocity_are_exact_on_band_limited_fields():
    pde = NavierStokes(nu=1e-3, forcing_amplitude=0.0)
    # wave vectors and their sums stay inside the 2/3-rule band |k| <= 10 at S = 32
    w, vel, adv, lap = modes_field(pde, [(1.0, 1, 2, 0.3), (0.7, 3, -1, 1.1), (0.5, -2, 4, -0.4), (0.3, 0, 1, 2.0)])
    rhs = -adv + pde.nu * lap
    assert adv.abs().max() > 0.5 * rhs.abs().max()  # the nonlinear term is a large part of N(w)
    # FFT round-off on O(10) values is ~1e-14; any finite-difference-type error would be >> 1e-12
    assert (pde.tendency(w) - rhs).abs().max() < 1e-12 * rhs.abs().max()
    assert (pde.velocity(w) - vel).abs().max() < 1e-12 * vel.abs().max()


def test_velocity_is_reflection_equivariant():
    # on a white-noise field (Nyquist content included): v(w(-x, y)) = (v_x, -v_y)(-x, y), and
    # the same in y; this holds only if the Nyquist modes' derivatives are taken as zero
    pde = NavierStokes()
    w = torch.randn(S, S, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = pde.velocity(w)
    for axis, sign in ((-2, torch.tensor([1.0, -1.0])), (-1, torch.tensor([-1.0, 1.0]))):
        flip = lambda f: torch.roll(torch.flip(f, [axis]), 1, axis)  # noqa: E731  f(-x) on the grid
        vf = pde.velocity(flip(w))
        assert (vf - sign[:, None, None] * flip(v)).abs().max() < 1e-13 * v.abs().max()  # round-off


@pytest.mark.parametrize("size, modes", [(32, [(1.0, 10, 1, 0.0), (1.0, 9, -2, 0.5)]),
                                         (48, [(1.0, 8, 1, 0.0), (1.0, 8, -2, 0.5)])], ids=["alias", "edge"])
def test_dealiasing_two_thirds_rule(size, modes):
    pde = NavierStokes(nu=1e-3, forcing_amplitude=0.0)
    # S = 32: in-band k = (10, 1), (9, -2) make (1, 3) (kept) and (19, -1), which the grid
    # aliases to (-13, -1); S = 48: (8, 1), (8, -2) make (16, -1) with 3 * 16 = S, on the edge.
    # The 2/3 rule keeps 3|k| < S only, so both must be removed
    w, _, adv, lap = modes_field(pde, modes, size)
    rhs_hat = torch.fft.rfft2(-adv + pde.nu * lap)
    kx = torch.fft.fftfreq(size, 1 / size, dtype=torch.float64).abs()[:, None]
    ky = torch.fft.rfftfreq(size, 1 / size, dtype=torch.float64)[None, :]
    band = (3 * kx < size) & (3 * ky < size)
    assert rhs_hat[~band].abs().max() > 1.0  # the grid product does carry the mode to be removed
    expected = torch.fft.irfft2(rhs_hat * band, s=(size, size))
    assert (pde.tendency(w) - expected).abs().max() < 1e-12 * expected.abs().max()  # round-off, as above


def test_advection_is_alias_free_on_rough_fields():
    # reference: the 2/3-truncated field's product formed exactly on a grid of twice the size
    # (zero padding), then truncated; white noise fills every mode, Nyquist included
    pde = NavierStokes(nu=1e-3, forcing_amplitude=0.0)
    w = torch.randn(S, S, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    k = torch.fft.fftfreq(S, 1 / S, dtype=torch.float64)
    KX, KY = torch.meshgrid(2 * math.pi * k, 2 * math.pi * k, indexing="ij")
    k2 = KX ** 2 + KY ** 2
    band = (3 * k.abs()[:, None] < S) & (3 * k.abs()[None, :] < S)
    c = torch.fft.fft2(w, norm="forward") * band
    psi = c / torch.where(k2 > 0, k2, 1.0)
    idx = (k.long() % (2 * S))[:, None], (k.long() % (2 * S))[None, :]

    def fine(coef):  # the trigonometric polynomial with coefficients coef on the 2S grid
        big = torch.zeros(2 * S, 2 * S, dtype=coef.dtype)
        big[idx] = coef
        return torch.fft.ifft2(big, norm="forward").real

    prod = fine(1j * KY * psi) * fine(1j * KX * c) + fine(-1j * KX * psi) * fine(1j * KY * c)
    adv = torch.fft.fft2(prod, norm="forward")[idx] * band
    rhs = torch.fft.ifft2(-adv - pde.nu * k2 * torch.fft.fft2(w, norm="forward"), norm="forward").real
    assert (pde.tendency(w) - rhs).abs().max() < 1e-12 * rhs.abs().max()  # round-off


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [1, 2])
def test_taylor_green_decay(device, m):
    nu, U, dt = 0.01, 0.5, 0.01
    pde = NavierStokes(nu=nu, forcing_amplitude=0.0, dt_snapshot=0.2, n_snapshots=5, max_dt=dt)
    k = 2 * math.pi * m
    X, Y = pde.grid(S, device=device)
    w0 = 2 * k * U * torch.cos(k * X) * torch.cos(k * Y)
    u = pde.solve(w0[None, None])
    assert u.shape == (1, 5, S, S) and u.device.type == device
    t = 0.2 * torch.arange(1, 6, dtype=torch.float64, device=device)
    lam = 2 * nu * k ** 2
    exact = torch.exp(-lam * t)[:, None, None] * w0
    a = 0.5 * dt * lam
    cn = ((1 - a) / (1 + a)) ** torch.round(t / dt)
    # advection vanishes exactly: the CN amplification factor is reproduced to round-off
    assert (u[0] - cn[:, None, None] * w0).abs().max() < 1e-12 * w0.abs().max()
    # CN's error vs exp(-lam t) is t exp(-lam t) lam^3 dt^2 / 12 to leading order; measured
    # max 1.9e-6 (m = 1) and 3.0e-5 (m = 2) relative, the estimate to 1e-4: 1% allows O(dt^4)
    err = (u[0] - exact).abs().amax((-1, -2)) / w0.abs().max()
    estimate = t * torch.exp(-lam * t) * lam ** 3 * dt ** 2 / 12
    assert ((err / estimate - 1).abs() < 0.01).all(), err / estimate


def test_advance_steps_divide_the_duration():
    # (3 * 0.1) / 0.1 = 3.0000000000000004 in floating point: 3 steps of 0.1 are expected, not 4
    pde = NavierStokes(nu=0.01, forcing_amplitude=0.0, dt_snapshot=0.1, max_dt=0.1)
    k = 2 * math.pi
    X, Y = pde.grid(S)
    w0 = 0.1 * torch.cos(k * X) * torch.cos(k * Y)
    a = 0.5 * 0.1 * 2 * pde.nu * k ** 2
    for w in (w0[None], w0[None, None]):
        out = pde.advance(w, 3 * 0.1)
        assert out.shape == w.shape
        # the CN amplification of this advection-free mode, to round-off
        assert (out - ((1 - a) / (1 + a)) ** 3 * w).abs().max() < 1e-14


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pde", [NavierStokes(n_snapshots=3), NavierStokes(forcing_wavenumber=2, n_snapshots=3),
                                 Kolmogorov(n_snapshots=3)], ids=["ns", "ns_m2", "kolmogorov"])
def test_steady_states_are_exact(device, pde):
    if isinstance(pde, Kolmogorov):
        w = pde.laminar_state(S, device=device)
        assert torch.equal(w[0], w[5])  # a shear flow: varies along y (the last axis) only
    else:
        km = 2 * math.pi * pde.forcing_wavenumber
        w = pde.forcing(S, device=device) / (2 * pde.nu * km ** 2)
    F = pde.forcing(S, device=device)
    # N(w) = 0 up to round-off, which is set by the two cancelling O(10 |F|) advection products
    # (measured <= 1.2e-13 |F|); a wrong sign or scale anywhere gives O(|F|)
    assert pde.tendency(w).abs().max() < 1e-11 * F.abs().max()
    u = pde.solve(w[None, None])
    # CN keeps the steady state to round-off (measured 2.7e-14); the Kolmogorov laminar flow is
    # unstable, but round-off seeds grow by far less than 10 over 0.15 time units
    assert (u - w).abs().max() < 1e-12 * w.abs().max()
    assert pde.residual(u, w[None, None]).abs().max() < 1e-11 * F.abs().max()  # measured 6e-13


@pytest.fixture(scope="module")
def grf_input():
    return NavierStokes(warmup=0.5).sample_inputs(2, S, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("device", DEVICES)
def test_residual_of_reference_trajectory_is_second_order(device, grf_input):
    c = grf_input.to(device)
    rms, rel = [], []
    for dts in (0.2, 0.1, 0.05):
        # same window [0, 0.4] and the same internal step 5e-3, hence the same trajectory
        pde = NavierStokes(dt_snapshot=dts, n_snapshots=round(0.4 / dts), max_dt=5e-3)
        u = pde.solve(c)
        R = pde.residual(u, c)
        assert R.shape == u.shape == (2, round(0.4 / dts), S, S)
        rms.append(R.square().mean().sqrt().item())
        rel.append((R.norm() / pde.tendency(torch.cat([c, u], 1)).norm()).item())
    orders = [math.log2(rms[i] / rms[i + 1]) for i in range(2)]
    # measured 1.97 and 1.99 (trapezoidal rule, O(dt_snapshot^2)); 0.1 leaves room for O(dt^4)
    assert all(abs(p - 2) < 0.1 for p in orders), orders
    # ||R|| / ||N(w)||: measured 1.9e-3 at dt_snapshot = 0.2 on these young (t = 0.5) states
    # (2.4e-4 at the defaults, S = 64, t = 2); a factor 2 margin
    assert rel[0] < 4e-3, rel


def test_time_stepping_is_second_order(grf_input):
    # self-convergence in the internal step h = 0.02, 0.01, 0.005 over a window of 0.4
    u = [NavierStokes(n_snapshots=2, max_dt=h).solve(grf_input) for h in (0.02, 0.01, 0.005)]
    e1, e2 = (u[0] - u[1]).norm(), (u[1] - u[2]).norm()
    assert abs(math.log2(e1 / e2) - 2) < 0.1  # Heun + CN; an Euler predictor alone would give 1
    assert e2 < 2e-6 * u[2].norm()  # measured 6.0e-7 on these young (t = 0.5) states


def test_residual_is_differentiable(grf_input):
    pde = NavierStokes(n_snapshots=2)
    c = grf_input[:1, :, ::4, ::4].clone()  # S = 8 keeps gradcheck's finite differences cheap
    u = pde.solve(c)
    assert torch.autograd.gradcheck(lambda u, c: pde.residual(u, c), (u.requires_grad_(), c.requires_grad_()),
                                    fast_mode=True)
    du, dc, g = torch.randn_like(u), torch.randn_like(c), torch.randn_like(u)
    f = lambda u, c: pde.residual(u, c, check=False)  # noqa: E731
    _, jv = torch.func.jvp(f, (u.detach(), c.detach()), (du, dc))
    _, vjp = torch.func.vjp(f, u.detach(), c.detach())
    gu, gc = vjp(g)
    # <g, J v> = <J^T g, v> up to round-off
    assert abs((g * jv).sum() - (gu * du).sum() - (gc * dc).sum()) < 1e-10 * (g * jv).abs().sum()


@pytest.mark.parametrize("pde", [NavierStokes(n_snapshots=3), Kolmogorov(n_snapshots=3)], ids=["ns", "kolmogorov"])
def test_closed_form_linearization_matches_autodiff(pde, grf_input):
    """The hand-written J and J^T agree with torch.func's and are each other's transposes."""
    g = torch.Generator().manual_seed(1)
    c = grf_input.clone()
    u = pde.solve(c) + 0.1 * torch.randn(2, 3, S, S, generator=g, dtype=torch.float64)
    d, y = (torch.randn(2, 3, S, S, generator=g, dtype=torch.float64) for _ in range(2))
    ours, auto = pde.linearize(u, c), PDE.linearize(pde, u, c)
    assert torch.equal(ours.residual, pde.residual(u, c))
    # float64: both are exact up to round-off (measured ~1e-16 relative)
    for a, b in ((ours.jvp(d), auto.jvp(d)), (ours.vjp(y), auto.vjp(y))):
        assert (a - b).norm() < 1e-12 * b.norm()
    assert abs((ours.jvp(d) * y).sum() - (d * ours.vjp(y)).sum()) < 1e-12 * ours.jvp(d).norm() * y.norm()
    # the residual is quadratic in u, so R(u + d) = R(u) + J d + (R(u + d) - 2 R(u) + R(u - d)) / 2 exactly
    r = lambda v: pde.residual(v, c)  # noqa: E731
    exact = r(u + d) - r(u) - 0.5 * (r(u + d) - 2 * r(u) + r(u - d))
    assert (ours.jvp(d) - exact).norm() < 1e-10 * exact.norm()


def test_same_seed_is_bit_identical():
    pde = NavierStokes(warmup=0.1, n_snapshots=2)
    a, b, d = (pde.sample_inputs(2, S, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert a.shape == (2, 1, S, S) and torch.equal(a, b) and not torch.equal(a, d)
    assert torch.equal(pde.solve(a), pde.solve(b))
    assert pde.sample_inputs(1, S, torch.Generator().manual_seed(3), dtype=torch.float32).dtype == torch.float32


def test_kolmogorov_reynolds_number_convention():
    # Re = sqrt(chi L^3) / nu, chi = A / (2 pi n), L = 1 / (2 pi): 25.3, 50.7, 126.7 for A = n = 4
    for nu, re in [(1e-3, 25.33), (5e-4, 50.66), (2e-4, 126.65)]:
        assert Kolmogorov(nu=nu).reynolds_number == pytest.approx(re, rel=1e-3)
    assert Kolmogorov().forcing(S)[:, 0].sub(-4.0).abs().max() < 1e-14  # -A cos(0) = -A at y = 0


def test_bad_input():
    pde = NavierStokes(n_snapshots=3)
    c = torch.zeros(2, 1, S, S, dtype=torch.float64)
    u = torch.zeros(2, 3, S, S, dtype=torch.float64)
    with pytest.raises(ValueError, match="even resolution"):
        pde.sample_inputs(1, 33)
    with pytest.raises(ValueError, match="even resolution"):
        pde.solve(torch.zeros(1, 1, 33, 33, dtype=torch.float64))
    with pytest.raises(ValueError, match=">= 8"):
        pde.sample_inputs(1, 6)
    with pytest.raises(ValueError, match="does not resolve the forcing"):
        Kolmogorov().solve(torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"3 channel"):
        pde.residual(torch.zeros(2, 4, S, S, dtype=torch.float64), c)
    with pytest.raises(ValueError, match=r"1 channel"):
        pde.residual(u, torch.zeros(2, 2, S, S, dtype=torch.float64))
    with pytest.raises(ValueError, match="resolution mismatch"):
        pde.residual(u[..., :16, :16], c)
    with pytest.raises(ValueError, match="NaN"):
        pde.solve(torch.full_like(c, math.nan))
    with pytest.raises(ValueError, match="nu"):
        NavierStokes(nu=-1e-3)
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match="dt_snapshot"):
            NavierStokes(dt_snapshot=bad)
    with pytest.raises(ValueError, match="n_snapshots"):
        NavierStokes(n_snapshots=0)
    with pytest.raises(ValueError, match="cfl <= 1"):
        NavierStokes(cfl=2.0)
    with pytest.raises(ValueError, match=r"\(B, S, S\) or \(B, 1, S, S\)"):
        pde.advance(u, 0.1)


def test_blow_up_is_reported():
    # a rough 100 x GRF state at the CFL limit 1 blows up within a snapshot interval
    pde = NavierStokes(max_dt=0.2, cfl=1.0, n_snapshots=3)
    c = 100 * NavierStokes(warmup=0.0).sample_inputs(1, S, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="blew up"):
        pde.solve(c)


# ---- Kolmogorov input law: chains from the laminar state plus a GRF ------------------------------
def short_kolmogorov(**kw):
    """The default law with times short enough for a test (S = 16, ~100 steps per chain)."""
    return Kolmogorov(**{"n_snapshots": 2, "warmup": 0.15, "sample_spacing": 0.05, "draws_per_chain": 3, **kw})


def test_kolmogorov_same_seed_is_bit_identical():
    pde = short_kolmogorov()
    a, b, d = (pde.sample_inputs(7, 16, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert a.shape == (7, 1, 16, 16) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, d)
    assert torch.equal(pde.solve(a), pde.solve(b))
    c = pde.sample_inputs(7, 16, torch.Generator().manual_seed(3), dtype=torch.float32)
    assert c.dtype == torch.float32 and torch.equal(c, a.float())  # chains in float32, cast at the end
    e, f = (short_kolmogorov(sample_precision="float64").sample_inputs(7, 16, torch.Generator().manual_seed(3))
            for _ in range(2))
    assert torch.equal(e, f) and not torch.equal(e, a)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_kolmogorov_sampling_law(precision):
    # n = 7 inputs, 3 draws per chain: C = ceil(7 / 3) = 3 chains, rounds of 3, 3 and 1 inputs
    pde = short_kolmogorov(sample_precision=precision)
    dtype = getattr(torch, precision)
    n, S, C = 7, 16, 3
    c = pde.sample_inputs(n, S, torch.Generator().manual_seed(5))
    assert c.shape == (n, 1, S, S) and pde.n_chains(n) == C
    # the chain starts: the laminar state plus GRF draws, all C drawn at once from the generator,
    # truncated to the 2/3-rule band (3 |k_x|, 3 |k_y| < S)
    w0 = pde.chain_starts(n, S, torch.Generator().manual_seed(5))
    grf = gaussian_random_field(C, S, pde.grf_alpha, pde.grf_tau, "periodic", torch.Generator().manual_seed(5))
    k = torch.fft.fftfreq(S, 1 / S, dtype=torch.float64).abs()
    band = (3 * k[:, None] < S) & (3 * k[None, : S // 2 + 1] < S)
    start_hat, full_hat = torch.fft.rfft2(w0), torch.fft.rfft2(pde.laminar_state(S) + grf)
    assert (start_hat - full_hat)[..., band].abs().max() < 1e-12 * full_hat.abs().max()  # round-off
    assert start_hat[..., ~band].abs().max() < 1e-12 * full_hat.abs().max()
    assert full_hat[..., ~band].abs().max() > 1e-4 * full_hat.abs().max()  # the GRF does fill them
    # input j C + i is chain i at warmup + j sample_spacing: reproduce by advancing the batch by hand
    w = pde.advance(w0.to(dtype), pde.warmup)
    assert torch.equal(c[:C, 0], w.double())
    w = pde.advance(w, pde.sample_spacing)
    assert torch.equal(c[C:2 * C, 0], w.double())
    w = pde.advance(w, pde.sample_spacing)
    assert torch.equal(c[2 * C:, 0], w[:1].double())  # the last round is partial
    # each chain evolves on its own: chain 1 advanced alone to its second draw agrees up to the
    # round-off of a different FFT batch (grown by at most ~e over 0.2 time units)
    alone = pde.advance(pde.advance(w0[1:2].to(dtype), pde.warmup), pde.sample_spacing)
    tol = 1e-4 if precision == "float32" else 1e-12
    assert (alone[0].double() - c[C + 1, 0]).abs().max() < tol * c[C + 1].abs().max()
    # the chains are distinct: their departures from the laminar flow differ by O(1) of their size
    dev = c[:C, 0] - pde.laminar_state(S)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert (dev[i] - dev[j]).norm() > 0.5 * dev[i].norm()
    assert not torch.equal(c[0], c[C]) and not torch.equal(c[C], c[2 * C])  # a chain moves between draws


def test_kolmogorov_number_of_chains():
    pde = Kolmogorov()
    assert [pde.n_chains(n) for n in (1, 7, 8, 9, 16, 1000)] == [1, 1, 1, 2, 2, 125]
    assert Kolmogorov(draws_per_chain=1).n_chains(5) == 5  # one draw per chain: independent inputs


def test_kolmogorov_bad_sampling_parameters():
    for bad in (0.0, -5.0, math.nan, math.inf, "5"):
        with pytest.raises(ValueError, match="sample_spacing"):
            Kolmogorov(sample_spacing=bad)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="draws_per_chain"):
            Kolmogorov(draws_per_chain=bad)
    for bad in ("float16", "double", torch.float32):
        with pytest.raises(ValueError, match="sample_precision"):
            Kolmogorov(sample_precision=bad)
    with pytest.raises(ValueError, match="warmup"):
        Kolmogorov(warmup=-1.0)


def test_cpu_stepping_is_independent_of_the_thread_count():
    # 20 states at S = 64 make 3 blocks of <= 8 (see _block_size), stepped on a pool of threads
    pde = Kolmogorov(dt_snapshot=0.025)
    w = pde.laminar_state(64) + gaussian_random_field(20, 64, 2.5, 7.0, "periodic", torch.Generator().manual_seed(0))
    out = []
    for threads in (1, 2):
        with torch_threads(threads):
            out.append(pde.advance(w, 0.025))
            assert torch.get_num_threads() == threads  # restored after stepping
    assert torch.equal(out[0], out[1])
