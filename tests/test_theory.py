"""Numerical verification of ``ens.theory``: spectra, condition numbers, the residual/error bound,
gradient-descent mode damping and the residual-vs-error experiment (claim 3 of the paper)."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ens import theory
from ens.pdes.stencil import dst2

matplotlib.use("Agg")


# ---- spectrum and condition number -------------------------------------------------------------
@pytest.mark.parametrize("S", [8, 10])
@pytest.mark.parametrize("k", [0.0, 1.0, 2.5, 4.0, 4.5])
def test_closed_form_spectrum_matches_dense_eigensolver(S, k):
    closed = np.sort(theory.helmholtz_spectrum(S, k).flatten().numpy())
    ev, sv = theory.numerical_spectrum(theory.helmholtz(k), S)
    scale = np.abs(closed).max()
    # Both are exact up to round-off: a backward-stable eigensolver perturbs each eigenvalue by
    # O(eps ||A||) (Weyl), i.e. ~1e-15 relative to the spectral radius; 1e-10 leaves a wide margin.
    assert np.abs(ev - closed).max() <= 1e-10 * scale
    assert np.abs(sv - theory.singular_values(S, k)).max() <= 1e-10 * scale


def test_dense_operator_is_the_symmetric_five_point_matrix():
    S, k = 6, 1.5
    A = theory.dense_operator(theory.helmholtz(k), S)
    n, h2 = S - 2, (S - 1) ** 2
    # exact integers times h^-2 plus k^2: the entries are computed without cancellation
    assert np.array_equal(A, A.T)
    assert A[0, 0] == pytest.approx(-4 * h2 + k ** 2, rel=1e-14)
    assert A[0, 1] == pytest.approx(h2, rel=1e-14) and A[0, n] == pytest.approx(h2, rel=1e-14)
    assert A[n - 1, n] == 0.0  # no coupling across the end of a grid row


@pytest.mark.parametrize("S, k, expected", [
    (64, 0.0, 1.6e3), (64, 2.0, 2.0e3), (64, 4.0, 8.5e3),
    (128, 0.0, 6.5e3), (128, 2.0, 8.2e3), (128, 4.0, 3.5e4),
])
def test_condition_numbers_match_paper(S, k, expected):
    # PAPER.md quotes two significant digits; compare exactly at that precision
    assert float(f"{theory.condition_number(S, k):.2g}") == expected


def test_condition_table_is_tidy_and_grows_with_S_and_k():
    t = theory.condition_table([32, 64], [0.0, 2.0, 4.0])
    assert list(t.columns) == ["S", "k", "sigma_min", "sigma_max", "kappa"]
    assert len(t) == 6
    np.testing.assert_allclose(t["kappa"], t["sigma_max"] / t["sigma_min"], rtol=1e-14)
    for _, g in t.groupby("S"):
        assert g["kappa"].is_monotonic_increasing
    # sigma_min -> 0 as k^2 -> the first Dirichlet eigenvalue, sigma_max ~ 8/h^2
    assert theory.condition_number(64, theory.first_resonance(64) - 1e-3) > 1e6
    assert theory.first_resonance() == pytest.approx(math.sqrt(2) * math.pi)


def test_condition_number_is_infinite_at_a_resonance():
    S = 16
    k_res = theory.first_resonance(S)
    assert theory.condition_number(S, k_res) > 1e12 or math.isinf(theory.condition_number(S, k_res))


# ---- the residual / error bound ------------------------------------------------------------------
@pytest.mark.parametrize("k", [0.0, 1.0, 4.0])
def test_error_bound_holds_on_samples(k):
    b = theory.bound_on_samples([k], 32, n_samples=6, seed=3)
    # the bounds are inequalities between norms computed in float64; allow round-off only
    assert (b["rel_l2"] <= b["bound"] * (1 + 1e-12)).all()
    assert (b["error"] <= b["error_upper"] * (1 + 1e-12)).all()
    assert (b["error_lower"] <= b["error"] * (1 + 1e-12)).all()
    assert (b["tightness"] <= 1 + 1e-12).all()
    # 1/tightness factors exactly into the two slacks (an algebraic identity; round-off only)
    np.testing.assert_allclose(1 / b["tightness"], b["slack_error"] * b["slack_solution"], rtol=1e-12)
    # an error in the lowest mode attains ||e|| = ||A^-1|| ||r|| (exact in exact arithmetic)
    lowest = b[b["error_type"] == "lowest mode"]
    np.testing.assert_allclose(lowest["slack_error"], 1.0, rtol=1e-10)


def test_error_bound_on_explicit_perturbation():
    pde = theory.helmholtz(2.0)
    g = torch.Generator().manual_seed(0)
    f = pde.sample_inputs(3, 24, generator=g)
    u_star = pde.solve(f)
    u = u_star + pde.apply_bc(torch.randn(u_star.shape, generator=g, dtype=torch.float64))
    b = theory.error_bound(pde, u, u_star, f)
    assert (b["rel_l2"] <= b["bound"] * (1 + 1e-12)).all()
    assert b["kappa"].iloc[0] == pytest.approx(theory.condition_number(24, 2.0), rel=1e-14)


def test_error_model_has_exact_relative_sizes_and_zero_boundary():
    u_star = torch.randn(3, 1, 20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u_star = F.pad(u_star[..., 1:-1, 1:-1], (1, 1, 1, 1))
    model = theory.ErrorModel(smooth_amplitude=0.1, noise_amplitude=0.0)
    e = model.sample(u_star, generator=torch.Generator().manual_seed(2))
    rel = e.flatten(1).norm(dim=1) / u_star.flatten(1).norm(dim=1)
    torch.testing.assert_close(rel, torch.full((3,), 0.1, dtype=torch.float64), rtol=1e-12, atol=0)
    assert e[..., 0, :].abs().max() == 0 and e[..., :, -1].abs().max() == 0
    # the smooth part lives in the DST modes i, j <= smooth_modes only (round-off elsewhere)
    coef = dst2(e[..., 1:-1, 1:-1])
    assert coef[..., model.smooth_modes:, :].abs().max() < 1e-14 * coef.abs().max()
    with pytest.raises(ValueError, match="amplitude"):
        theory.ErrorModel(smooth_amplitude=0.0, noise_amplitude=0.0)


# ---- gradient descent mode damping ---------------------------------------------------------------
def test_gd_damps_each_mode_by_the_predicted_factor():
    S, k, t = 12, 2.0, 40
    pde = theory.helmholtz(k)
    g = torch.Generator().manual_seed(0)
    f = pde.sample_inputs(2, S, generator=g)
    u_star = pde.solve(f)
    u = torch.zeros_like(u_star)
    eta = 1.5 * theory.stable_step(S, k)  # any stable step, not only 1/sigma_max^2
    for _ in range(t):  # explicit gradient descent on 0.5 ||R(u)||^2, gradient by autograd
        u = u.detach().requires_grad_(True)
        loss = 0.5 * pde.residual(u, f).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, u)
        u = pde.apply_bc(u - eta * grad)
    measured = dst2((u - u_star).detach()[..., 1:-1, 1:-1])
    predicted = theory.gd_mode_error(-u_star, k, t, eta=eta)
    # e_t = (I - eta A^2)^t e_0 exactly; the explicit run adds O(t eps ||A||^2 eta) ~ 1e-14 round-off
    torch.testing.assert_close(measured, predicted, rtol=0, atol=1e-10 * predicted.abs().max().item())
    factors = theory.gd_damping_factors(S, k, eta)
    assert factors.abs().max() < 1  # every mode contracts with a stable step ...
    assert 1 - factors.abs().max() < 1e-3  # ... but the lowest one by only ~ (sigma_min/sigma_max)^2


def test_gd_steps_to_reduce_matches_kappa_squared():
    S, k = 64, 4.0
    kappa = theory.condition_number(S, k)
    # -log(1 - 1/kappa^2) = 1/kappa^2 + O(kappa^-4): agreement to ~1e-7 relative, plus the ceil
    assert theory.gd_steps_to_reduce(S, k, 2.0) == pytest.approx(math.log(2) * kappa ** 2, rel=1e-6)


def test_gd_damping_table_and_step_validation():
    tab = theory.gd_damping_table(16, 1.0, steps=(1, 100))
    assert set(tab["t"]) == {1, 100} and tab["remaining"].between(0, 1).all()
    assert tab.loc[tab["sigma_rel"] == 1.0, "remaining"].max() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="eta"):
        theory.gd_damping_factors(16, 1.0, eta=2.5 * theory.stable_step(16, 1.0))


# ---- bands ---------------------------------------------------------------------------------------
def test_mode_bands_partition_the_modes_and_the_error():
    S, k = 34, 4.0
    masks = theory.mode_band_masks(S, k)
    total = sum(m.int() for m in masks.values())
    assert bool((total == 1).all())  # each DST mode in exactly one band
    assert bool(masks["lowest"][0, 0]) and int(masks["lowest"].sum()) == 1
    e = F.pad(torch.randn(2, 1, S - 2, S - 2, dtype=torch.float64), (1, 1, 1, 1))
    parts = theory.band_errors(e, masks)
    # Parseval for the orthonormal DST: the band norms add up in squares (round-off only)
    torch.testing.assert_close(sum(v ** 2 for v in parts.values()), e.flatten(1).norm(dim=1) ** 2,
                               rtol=1e-12, atol=0)


# ---- the central experiment ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def experiment():
    runs = [theory.residual_vs_error_experiment(k, 32, n_samples=2, n_iter=60, seed=0) for k in (1.0, 4.0)]
    return theory.ExperimentResult(pd.concat([r.trajectories for r in runs], ignore_index=True),
                                   pd.concat([r.bands for r in runs], ignore_index=True))


def test_experiment_tables_are_tidy(experiment):
    traj, bands = experiment
    assert list(traj.columns) == ["k", "S", "method", "sample", "iteration", "quantity", "value"]
    assert list(bands.columns) == ["k", "S", "method", "sample", "iteration", "band", "value"]
    assert set(traj["method"]) == {"gd", "cg", "cgnr"}
    assert traj["iteration"].max() == 60 and len(traj) == 2 * 3 * 61 * 2 * 2
    # the band values square-sum to the relative error (Parseval; round-off only)
    err = traj[traj.quantity == "rel_l2"].set_index(["k", "method", "sample", "iteration"])["value"]
    sq = (bands.assign(v2=bands["value"] ** 2).groupby(["k", "method", "sample", "iteration"])["v2"].sum())
    np.testing.assert_allclose(np.sqrt(sq.loc[err.index]), err, rtol=1e-10)
    # all methods start from the same u0
    start = traj[traj.iteration == 0].groupby(["k", "quantity", "sample"])["value"].nunique()
    assert (start == 1).all()


def test_residual_falls_much_faster_than_error(experiment):
    red = theory.reduction_factors(experiment.trajectories, 20).set_index(["k", "method"])
    # Measured at S=32, 20 iterations, seed 0 (k=1 / k=4): GD cuts the residual 9.1x / 10.4x while
    # the error falls 1.005x: the network-like start's residual is mostly its rough noise, which
    # the stiff modes remove at once, and the smooth error with it barely changes. Gauss-Newton
    # (CGNR): 12.4x / 15.7x vs 1.01x. Thresholds sit well inside the measured values.
    for k in (1.0, 4.0):
        for m in ("gd", "cgnr"):
            assert red.loc[(k, m), "residual_reduction"] > 8
            assert red.loc[(k, m), "error_reduction"] < 1.05
    # CG on -A near resonance: residual 28.8x, error 1.26x after 20 iterations
    assert red.loc[(4.0, "cg"), "ratio"] > 15
    # ... and it does converge eventually: by iteration 60 both fell by > 100x (measured ~1e3)
    final = theory.reduction_factors(experiment.trajectories).set_index(["k", "method"])
    assert final.loc[(4.0, "cg"), "error_reduction"] > 100


def test_lowest_mode_stalls_while_the_residual_falls(experiment):
    drops = theory.band_drop(experiment, "lowest", 2.0).set_index(["k", "method"])
    # gradient descent and Gauss-Newton never halve the lowest mode's error within 60 iterations:
    # GD would need log(2) kappa^2 ~ 1e6 steps at S=32 (measured band reduction 1.000)
    assert math.isnan(drops.loc[(1.0, "gd"), "iteration"]) and math.isnan(drops.loc[(4.0, "gd"), "iteration"])
    assert drops.loc[(4.0, "cgnr"), "band_reduction"] < 1.01
    # CG near resonance halves it only at iteration 28 (measured), by which time the residual has
    # fallen 24.6x; at k=1 already at iteration 13 after 7.9x: the stall grows with kappa
    assert drops.loc[(4.0, "cg"), "iteration"] > drops.loc[(1.0, "cg"), "iteration"]
    assert drops.loc[(4.0, "cg"), "residual_reduction"] > 15


@pytest.mark.parametrize("k", [1.0, 4.0])
def test_experiment_gd_is_the_gd_baseline(experiment, k):
    """The experiment's "gd" is ``ens.solvers.gradient_descent`` with the fixed step ``eta``:
    replay the fixture's draw and compare the baseline's own per-iterate metrics and states."""
    from ens.solvers import gradient_descent
    pde, S, n, eta = theory.helmholtz(k), 32, 60, theory.stable_step(32, k)
    gen = torch.Generator().manual_seed(0)
    f = pde.sample_inputs(2, S, generator=gen)
    u_star = pde.solve(f)
    u0 = u_star + theory.ErrorModel().sample(u_star, generator=gen)
    tr = gradient_descent(pde, f, u0, steps=n, step_size=eta, u_true=u_star, keep_states=True)
    got = experiment.trajectories.query("k == @k and method == 'gd'").set_index(["quantity", "iteration", "sample"])
    for q, want in (("rel_residual", tr.rel_residual), ("rel_l2", tr.rel_error)):
        # the boundary entries are zero, so the baseline's full-grid norms are the interior norms
        np.testing.assert_allclose(got.loc[q]["value"].unstack().to_numpy(), want.numpy(), rtol=1e-12)
    bands = experiment.bands.query("k == @k and method == 'gd'").set_index(["band", "iteration", "sample"])
    unorm = u_star[..., 1:-1, 1:-1].flatten(1).norm(dim=1)
    for b, v in theory.band_errors((tr.states - u_star).flatten(0, 1), theory.mode_band_masks(S, k)).items():
        np.testing.assert_allclose(bands.loc[b]["value"].unstack().to_numpy(),
                                   (v.view(n + 1, 2) / unorm).numpy(), rtol=1e-12, atol=1e-300)
    # the experiment's chunked runs continue the single run exactly (a fixed step has no other state)
    assert torch.equal(torch.stack(list(theory.experiment._gradient_descent(pde, u0, f, n, eta, chunk=7))), tr.states[1:])


def test_cg_refuses_an_indefinite_operator():
    with pytest.raises(ValueError, match="positive definite"):
        theory.residual_vs_error_experiment(5.0, 16, n_samples=1, n_iter=2, methods=("cg",))
    r = theory.residual_vs_error_experiment(5.0, 16, n_samples=1, n_iter=2, methods=("gd", "cgnr"))
    assert set(r.trajectories["method"]) == {"gd", "cgnr"}


# ---- parameters and errors -----------------------------------------------------------------------
def test_profiles():
    assert theory.profile_resolutions("ci") == (32, 64)
    assert theory.profile_resolutions("paper") == (128, 256)
    with pytest.raises(ValueError, match=r"unknown profile 'fast'.*\['ci', 'default', 'paper'\]"):
        theory.profile_resolutions("fast")
    p = theory.resolve_parameters("default", None, [0, 1], 0, 2)
    assert p["resolutions"] == (64, 128) and p["k_values"] == (0.0, 1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"profile": "huge"}, "unknown profile"),
    ({"resolutions": [2]}, "grid size S"),
    ({"resolutions": []}, "resolutions"),
    ({"k_values": [-1.0]}, "k >= 0"),
    ({"k_values": [float("nan")]}, "finite wavenumber"),
    ({"k_values": []}, "k_values"),
    ({"seed": -1}, "seed"),
    ({"n_samples": 0}, "n_samples"),
])
def test_bad_parameters_raise_clear_errors(kwargs, match):
    args = {"profile": "ci", "resolutions": None, "k_values": [0.0, 1.0], "seed": 0, "n_samples": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        theory.resolve_parameters(**args)


def test_bad_k_and_method_raise():
    with pytest.raises(ValueError, match="k >= 0"):
        theory.condition_number(32, -2.0)
    with pytest.raises(TypeError, match="real number"):
        theory.helmholtz_spectrum(32, "4")
    with pytest.raises(ValueError, match="unknown method"):
        theory.residual_vs_error_experiment(1.0, 16, methods=("adam",))
    with pytest.raises(ValueError, match="linear"):
        theory.helmholtz(1.0, lam=1.0)


def test_theory_tables_feed_the_plots(tmp_path, experiment):
    import matplotlib.pyplot as plt

    from ens import plots
    figs = [
        plots.plot_conditioning(theory.condition_table([16, 32], [0.0, 2.0, 4.0]),
                                resonance=theory.first_resonance(), path=tmp_path / "a.png"),
        plots.plot_bound_tightness(theory.bound_on_samples([1.0], 16, n_samples=2)),
        plots.plot_gd_damping(theory.gd_damping_table(16, 1.0, n_grid=20), markers={"x": 0.01}),
        plots.plot_trajectories(experiment.trajectories),
        plots.plot_error_bands(experiment.bands, experiment.trajectories, path=tmp_path / "b.png"),
    ]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
    for f in figs:
        plt.close(f)
