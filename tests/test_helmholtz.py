"""Verification of the Poisson / Helmholtz discretisation, its DST solver and the forcing law."""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from ens.pdes import Helmholtz, Poisson, get_pde
from ens.pdes.random_fields import gaussian_random_field
from ens.pdes.stencil import dirichlet_eigenvalues, dst1_matrix, dst2, laplacian

X, Y = sp.symbols("x y")
U_EXACT = sp.sin(sp.pi * X) * sp.sin(sp.pi * Y) * sp.exp(X * Y)  # smooth, zero on the boundary

CASES = {
    "poisson": Poisson(),
    "helmholtz_k3": Helmholtz(k=3.0),
    "nonlinear_helmholtz": get_pde("nonlinear_helmholtz"),
}


def manufactured(pde, S):
    """Exact ``u`` and the forcing ``f = Delta u + k^2 u + lam u^3`` on the node grid."""
    k2, lam = pde._k2_lam()
    f_expr = sp.diff(U_EXACT, X, 2) + sp.diff(U_EXACT, Y, 2) + k2 * U_EXACT + lam * U_EXACT ** 3
    x, y = pde.grid(S)
    u = sp.lambdify((X, Y), U_EXACT, "numpy")(x.numpy(), y.numpy())
    f = sp.lambdify((X, Y), f_expr, "numpy")(x.numpy(), y.numpy())
    return torch.from_numpy(u)[None, None], torch.from_numpy(f)[None, None]


def observed_orders(errors):
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


@pytest.mark.parametrize("name", CASES)
def test_residual_truncation_error_is_second_order(name):
    pde = CASES[name]
    errors = []
    for S in (17, 33, 65):  # h = 1/16, 1/32, 1/64 halves exactly
        u, f = manufactured(pde, S)
        errors.append(pde.residual(u, f).abs().max().item())
    # 5-point stencil: truncation error (h^2/12)(u_xxxx + u_yyyy) + O(h^4), so the order is 2 up
    # to the O(h^2) relative contamination of the next term (< 0.1 at these h)
    assert observed_orders(errors) == pytest.approx([2.0, 2.0], abs=0.1)


@pytest.mark.parametrize("name", CASES)
def test_solution_error_is_second_order(name):
    pde = CASES[name]
    errors = []
    for S in (17, 33, 65):
        u, f = manufactured(pde, S)
        errors.append((pde.solve(f) - u).abs().max().item())
    # a stable second-order scheme: the global error inherits the truncation order
    assert observed_orders(errors) == pytest.approx([2.0, 2.0], abs=0.1)


@pytest.mark.parametrize("name", CASES)
def test_reference_solution_has_zero_residual(name):
    pde = CASES[name]
    f = pde.sample_inputs(4, 64, torch.Generator().manual_seed(3))
    u = pde.solve(f)
    rel = pde.residual(u, f).norm() / f[..., 1:-1, 1:-1].norm()
    # DST solve / Newton to 1e-10: round-off amplified by ||Delta_h|| ~ 8/h^2 bounds the floor
    assert rel < 1e-10
    assert torch.equal(pde.apply_bc(u), u)  # the Dirichlet condition holds exactly


def test_dst_is_an_orthonormal_involution_that_diagonalises_the_laplacian():
    S = 12
    q = dst1_matrix(S - 2)
    assert torch.allclose(q @ q, torch.eye(S - 2, dtype=torch.float64), atol=1e-14)
    x = torch.randn(3, S - 2, S - 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(dst2(dst2(x)), x, atol=1e-13)
    # mode (k, l) of the DST is an eigenvector of the 5-point Laplacian with eigenvalue mu_k + mu_l
    eig = dirichlet_eigenvalues(S)
    modes = torch.zeros(S, S, S - 2, S - 2, dtype=torch.float64)
    modes[1:-1, 1:-1] = torch.einsum("ik,jl->ijkl", q, q)
    lap = laplacian(modes.permute(2, 3, 0, 1))  # (k, l, S-2, S-2)
    expect = eig[:, :, None, None] * modes[1:-1, 1:-1].permute(2, 3, 0, 1)
    assert torch.allclose(lap, expect, atol=1e-9 * eig.abs().max())


def test_dirichlet_grf_has_the_stated_covariance():
    S, n = 16, 4000
    g = gaussian_random_field(n, S, 2.0, 3.0, "dirichlet", torch.Generator().manual_seed(0))
    assert torch.equal(g[:, 0], torch.zeros_like(g[:, 0])) and torch.equal(g[:, :, -1], torch.zeros_like(g[:, :, -1]))
    k = torch.arange(1, S - 1, dtype=torch.float64) * math.pi
    amp = 3.0 * (k[:, None] ** 2 + k[None, :] ** 2 + 9.0) ** -1.0
    coef = dst2(g[:, 1:-1, 1:-1]) / (S - 1)  # the DST of a sum of 2 sin sin modes
    z2 = ((coef / amp) ** 2).mean().item()
    # the mean of n (S-2)^2 squared N(0, 1) variables: standard deviation sqrt(2 / 784000) ~ 1.6e-3
    assert z2 == pytest.approx(1.0, abs=5 * math.sqrt(2 / (n * (S - 2) ** 2)))


def test_periodic_grf_has_the_stated_pointwise_variance():
    S, n, alpha, tau = 16, 4000, 2.5, 7.0
    g = gaussian_random_field(n, S, alpha, tau, "periodic", torch.Generator().manual_seed(1))
    k = torch.fft.fftfreq(S, d=1.0 / S, dtype=torch.float64)
    lam = 4 * math.pi ** 2 * (k[:, None] ** 2 + k[None, :] ** 2)
    amp2 = tau ** (2 * alpha - 2) * (lam + tau ** 2) ** (-alpha)
    amp2[0, 0] = 0
    var = g.var(dim=0).mean().item()
    assert g.mean().abs().item() < 1e-12 * g.abs().max().item() * S  # zero-mean modes only
    # pointwise variance over n samples: relative standard error sqrt(2/n) ~ 2.2 %, averaged over points
    assert var == pytest.approx(amp2.sum().item(), rel=0.05)


def test_forcing_scales_linearly_and_is_deterministic():
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    f1 = Poisson().sample_inputs(2, 33, gen())
    f2 = Poisson(forcing_scale=50.0).sample_inputs(2, 33, gen())
    assert torch.equal(f1, Poisson().sample_inputs(2, 33, gen()))
    assert torch.allclose(f2, f1 / 2, rtol=1e-15, atol=0)


def test_newton_failure_and_singular_operator_are_reported():
    f = Poisson(forcing_scale=1000.0).sample_inputs(1, 33, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="Newton"):
        Helmholtz(k=2.0, lam=1.0).solve(f)  # the focusing branch folds for a forcing this large
    S = 33
    k_res = math.sqrt(-dirichlet_eigenvalues(S)[0, 0].item())  # lowest discrete resonance
    with pytest.raises(ValueError, match="singular"):
        Helmholtz(k=k_res).solve(f)


def test_linear_solve_is_exact_against_a_dense_solver():
    pde = Helmholtz(k=4.0)
    S = 10
    f = pde.sample_inputs(1, S, torch.Generator().manual_seed(2))
    n = S - 2
    d1 = (np.diag(-2 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)) * (S - 1) ** 2
    A = np.kron(d1, np.eye(n)) + np.kron(np.eye(n), d1) + 16.0 * np.eye(n * n)
    u_dense = np.linalg.solve(A, f[0, 0, 1:-1, 1:-1].numpy().ravel()).reshape(n, n)
    # both are direct solves of a matrix with condition number ~ 1e2: agreement to ~1e-13 relative
    np.testing.assert_allclose(pde.solve(f)[0, 0, 1:-1, 1:-1].numpy(), u_dense, rtol=0, atol=1e-12 * np.abs(u_dense).max())
