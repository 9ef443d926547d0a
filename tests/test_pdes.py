"""Contract every PDE family honours: shapes, determinism, differentiability, clear errors."""

import math

import pytest
import torch

from ens.pdes import FAMILIES, PDE, get_pde, stencil

# Small but valid configurations so that the whole contract runs in seconds for every family.
SMALL = {
    "poisson": ({}, 17),
    "helmholtz": ({"k": 3.0}, 17),
    "nonlinear_helmholtz": ({}, 17),
    "darcy": ({}, 17),
    "navier_stokes": ({"n_snapshots": 3, "dt_snapshot": 0.05, "warmup": 0.1}, 16),
    "kolmogorov": ({"n_snapshots": 3, "dt_snapshot": 0.05, "warmup": 0.1}, 16),
}


def small(family):
    params, S = SMALL[family]
    return get_pde(family, **params), S


def sample_and_solve(pde, S, n=2, seed=0, device="cpu", dtype=torch.float64):
    c = pde.sample_inputs(n, S, torch.Generator().manual_seed(seed), dtype=dtype, device=device)
    return c, pde.solve(c)


def test_small_configurations_cover_every_family():
    assert set(SMALL) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_dtype_and_device(family, device):
    pde, S = small(family)
    c, u = sample_and_solve(pde, S, device=device, dtype=torch.float32)
    assert c.shape == (2, pde.in_channels, S, S) and u.shape == (2, pde.out_channels, S, S)
    r = pde.residual(u, c)
    for t in (c, u, r):
        assert t.dtype == torch.float32 and t.device.type == device.type
    assert r.shape == u.shape
    assert torch.equal(pde.apply_bc(u), u)  # the reference solution satisfies the boundary condition


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_gives_bit_identical_samples_and_solutions(family):
    pde, S = small(family)
    c1, u1 = sample_and_solve(pde, S, seed=5)
    c2, u2 = sample_and_solve(pde, S, seed=5)
    c3, _ = sample_and_solve(pde, S, seed=6)
    assert torch.equal(c1, c2) and torch.equal(u1, u2)
    assert not torch.equal(c1, c3)


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_is_differentiable_and_jvp_vjp_are_adjoint(family):
    pde, S = small(family)
    c, u = sample_and_solve(pde, S, n=1)
    g = torch.Generator().manual_seed(1)
    du = pde.apply_bc(torch.randn(u.shape, dtype=u.dtype, generator=g))
    v = torch.randn(u.shape, dtype=u.dtype, generator=g)

    def res(x):
        return pde.residual(x, c, check=False)

    _, jvp = torch.func.jvp(res, (u,), (du,))
    _, vjp_fn = torch.func.vjp(res, u)
    (vjp,) = vjp_fn(v)
    lhs, rhs = (v * jvp).sum().item(), (vjp * du).sum().item()
    # <v, J du> = <J^T v, du>: both are exact float64 contractions of the same sums (~1e-13 relative)
    assert lhs == pytest.approx(rhs, rel=1e-10)
    # the JVP matches a central finite difference of the residual: O(eps^2) for the smooth residuals
    eps = 1e-4 * u.abs().max().item() / du.abs().max().item()
    fd = (res(u + eps * du) - res(u - eps * du)) / (2 * eps)
    assert torch.allclose(fd, jvp, rtol=0, atol=1e-6 * jvp.abs().max().item())
    # autograd of 0.5 ||R||^2 is J^T R, away from the solution (where R is round-off). The eager
    # residual (no grad) and the differentiable one round differently: measured 1e-15..2e-15 of
    # the largest entry in float64, held at 1e-13
    x0 = u + 0.1 * du
    x = x0.clone().requires_grad_(True)
    (0.5 * res(x).pow(2).sum()).backward()
    ref = torch.func.vjp(res, x0)[1](res(x0))[0]
    assert torch.allclose(x.grad, ref, rtol=0, atol=1e-13 * ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("family", [f for f in FAMILIES if get_pde(f).has_eager_residual])
def test_eager_kernels_match_the_differentiable_residual_and_torch_func(family, dtype, monkeypatch):
    """The in-place residual and the closed-form ``J v``, ``J^T w`` agree with ``_residual`` and
    with ``torch.func``'s products (``PDE.linearize``), over several batch blocks, and are each
    other's transposes; ``residual`` takes the eager kernel only where nothing is differentiated."""
    pde, S = small(family)
    monkeypatch.setattr(stencil, "BLOCK_ELEMENTS", 2 * S * S)  # blocks of two samples, the last one short
    c, u = sample_and_solve(pde, S, n=5, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    u = u + 0.1 * pde.apply_bc(torch.randn(u.shape, generator=g, dtype=dtype))  # off the solution
    # directions with nonzero boundary values: J's boundary columns and J^T's boundary rows are exercised
    d, y = (torch.randn(u.shape, generator=g, dtype=dtype) for _ in range(2))
    # measured: ~1e-16 (float64) and ~6e-8 (float32) of the norm; the tolerances leave 100x
    tol = 1e-14 if dtype == torch.float64 else 1e-5
    eager = pde.residual(u, c)
    assert torch.equal(eager, pde._eager_residual(u, c))
    assert (eager - pde._residual(u, c)).norm() < tol * pde._residual(u, c).norm()
    ours, auto = pde.linearize(u, c), PDE.linearize(pde, u, c)
    assert torch.equal(ours.residual, eager)
    for a, b in ((ours.jvp(d), auto.jvp(d)), (ours.vjp(y), auto.vjp(y))):
        assert (a - b).norm() < tol * b.norm()
    jd, jty = ours.jvp(d), ours.vjp(y)
    assert abs((jd * y).sum() - (d * jty).sum()) < tol * jd.norm() * y.norm()
    # a state that autograd tracks takes the differentiable form, and gets a graph
    assert pde.residual(u.clone().requires_grad_(True), c).grad_fn is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_inputs_get_clear_errors(family):
    pde, S = small(family)
    c, u = sample_and_solve(pde, S, n=1)
    with pytest.raises(ValueError, match=r"expected u \(the state\) of shape"):
        pde.residual(u[0], c)  # rank 3
    with pytest.raises(ValueError, match=rf"\({pde.out_channels} channel"):
        pde.residual(torch.cat([u, u], dim=1), c)  # channel count
    with pytest.raises(ValueError, match=rf"expected c \(the conditioning input\) of shape .*{pde.in_channels} channel"):
        pde.solve(torch.cat([c, c], dim=1))
    with pytest.raises(ValueError, match="resolution mismatch"):
        pde.residual(u[..., :-2, :-2], c)
    with pytest.raises(ValueError, match="batch mismatch"):
        pde.residual(torch.cat([u, u]), c)
    for bad in (math.nan, math.inf):
        c_bad = c.clone()
        c_bad[..., 2, 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            pde.solve(c_bad)
        with pytest.raises(ValueError, match="NaN or Inf"):
            pde.residual(u, c_bad)
    with pytest.raises(TypeError, match="floating dtype"):
        pde.residual(u.long(), c)
    with pytest.raises(TypeError, match="torch.Tensor"):
        pde.residual(u.numpy(), c)
    with pytest.raises(ValueError, match="positive int"):
        pde.sample_inputs(0, S)
    with pytest.raises(TypeError, match="torch.Generator"):
        pde.sample_inputs(1, S, generator=0)


def test_unknown_family_or_parameter_lists_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown PDE family 'heat'.*'poisson'"):
        get_pde("heat")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['kappa'\].*'k'"):
        get_pde("helmholtz", kappa=2.0)


def test_each_family_declares_its_hooks_on_its_pde_class():
    pdes = {f: get_pde(f) for f in FAMILIES}
    assert [f for f, p in pdes.items() if p.supports_newton] == ["poisson", "helmholtz", "nonlinear_helmholtz"]
    assert [f for f, p in pdes.items() if p.condition_number_needs_samples] == ["nonlinear_helmholtz", "darcy"]
    assert pdes["helmholtz"].condition_number(32) == pytest.approx(float(
        pdes["helmholtz"].operator_eigenvalues(32).abs().max() / pdes["helmholtz"].operator_eigenvalues(32).abs().min()))
    assert math.isnan(pdes["navier_stokes"].condition_number(32)) and math.isnan(pdes["kolmogorov"].condition_number(32))
    with pytest.raises(NotImplementedError, match="operator_norm_bound"):  # a flow is verified another way
        pdes["navier_stokes"].operator_norm_bound(torch.zeros(1, 1, 8, 8), torch.zeros(1, 10, 8, 8))
    # the measured generation costs order the jobs: the time-stepped flows, Newton, Darcy's CG, the DST solves
    cost = {f: p.generation_cost for f, p in pdes.items()}
    assert cost["kolmogorov"] > cost["navier_stokes"] > cost["nonlinear_helmholtz"] > cost["darcy"] > cost["poisson"]


@pytest.mark.parametrize("family, params, message", [
    ("poisson", {"forcing_scale": float("nan")}, r"expected forcing_scale to be a positive finite number, got nan"),
    ("poisson", {"forcing_scale": 0.0}, r"expected forcing_scale to be a positive finite number"),
    ("poisson", {"grf_alpha": 1.0}, r"expected grf_alpha > 1"),
    ("poisson", {"grf_tau": "3"}, r"expected grf_tau to be a positive finite number, got '3'"),
    ("helmholtz", {"k": float("nan")}, r"expected k \(the wavenumber\) to be a non-negative finite number, got nan"),
    ("helmholtz", {"k": "abc"}, r"expected k \(the wavenumber\) .* got 'abc'"),
    ("helmholtz", {"k": True}, r"expected k \(the wavenumber\) .* got True"),
    ("helmholtz", {"k": -1.0}, r"expected k \(the wavenumber\) to be a non-negative"),
    ("nonlinear_helmholtz", {"lam": float("inf")}, r"expected lam \(the cubic coefficient\) to be a finite number"),
    ("darcy", {"a_high": "x"}, r"expected a_high \(a permeability\) to be a positive finite number, got 'x'"),
    ("darcy", {"forcing_scale": float("nan")}, r"expected forcing_scale to be a positive finite number"),
])
def test_pde_parameters_are_validated_at_construction(family, params, message):
    # a NaN wavenumber used to solve to NaN everywhere and a NaN forcing scale to sample NaN forcings
    with pytest.raises(ValueError, match=message):
        get_pde(family, **params)
