"""The residual-based baselines (gradient descent, Gauss--Newton, Newton, test-time optimisation):
convergence against closed forms on the linear problems, behaviour on nonlinear ones, the
divergence policy, the Trajectory contract and argument checks. Small grids, float64."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import norms, problem

import ens
from ens.models import NeuralSolver, Normalization, build_backbone
from ens.pdes import PDE
from ens.pdes.stencil import dirichlet_eigenvalues, dst1_matrix
from ens.solvers import (
    BASELINES,
    DivergenceError,
    Trajectory,
    estimate_jacobian_norm,
    gauss_newton,
    gradient_descent,
    newton,
    test_time_optimisation,
)

B = 3


def perturbed(pde, u, seed, amplitude=0.1):
    """``u`` plus admissible random noise of ``amplitude`` times each sample's max |u|."""
    noise = torch.randn(u.shape, generator=torch.Generator().manual_seed(seed), dtype=u.dtype)
    return u + amplitude * u.flatten(1).abs().max(1).values.view(-1, 1, 1, 1) * pde.apply_bc(noise)


@pytest.fixture(scope="module")
def poisson():
    return problem("poisson", 16)


def finite(tr):
    fields = [tr.u, tr.rel_residual, tr.wall_time] + [x for x in (tr.rel_error, tr.states) if x is not None]
    return all(bool(torch.isfinite(x).all()) for x in fields)


def check_trajectory(tr, method, steps, batch):
    assert isinstance(tr, Trajectory) and tr.method == method
    n = tr.iterations
    assert n <= steps and (n == steps or tr.status != "ok")
    assert tr.rel_residual.shape == (n + 1, batch) and tr.wall_time.shape == (n + 1,)
    assert tr.residual_evals.shape == tr.jacobian_evals.shape == (n + 1,)
    for x in (tr.wall_time, tr.residual_evals, tr.jacobian_evals):
        assert bool((x[1:] >= x[:-1]).all()) and x[0] >= 0
    assert tr.residual_evals[0] == 1
    if tr.rel_error is not None:
        assert tr.rel_error.shape == (n + 1, batch)
    if tr.states is not None:
        assert tr.states.shape[:2] == (n + 1, batch) and torch.equal(tr.u, tr.states[-1])
    assert finite(tr)


# ---- gradient descent ---------------------------------------------------------------------------
def test_gd_on_poisson_never_increases_the_residual(poisson):
    pde, c, u_true = poisson
    u0 = perturbed(pde, u_true, 2)
    tr = gradient_descent(pde, c, u0, steps=30, u_true=u_true, keep_states=True)
    check_trajectory(tr, "gd", 30, B)
    assert tr.status == "ok" and tr.info["power_iterations"] == 20
    # linear residual, eta sigma_i^2 <= 1 (+ the estimate's shortfall) <= 2: |1 - eta sigma_i^2| <= 1
    assert bool((tr.rel_residual[1:] <= tr.rel_residual[:-1] * (1 + 1e-12)).all())
    assert float((tr.rel_residual[-1] / tr.rel_residual[0]).max()) < 0.1
    assert bool((tr.rel_error[-1] < tr.rel_error[0]).all())
    torch.testing.assert_close(tr.info["step_size"], tr.info["sigma_max"] ** -2, rtol=1e-14, atol=0)
    # counts: one residual per iterate; one VJP per step after the 2 x 20 power-iteration products
    assert tr.residual_evals.tolist() == list(range(1, 32))
    assert tr.jacobian_evals.tolist() == [0] + [40 + t for t in range(1, 31)]
    assert torch.equal(pde.apply_bc(tr.states), tr.states)  # Dirichlet values stay zero


@pytest.mark.parametrize("S", [16, 33])
def test_jacobian_norm_estimate_is_close_and_from_below(S):
    pde, c, u_true = problem("poisson", S)
    exact = float(dirichlet_eigenvalues(S).abs().max())  # the 5-point Laplacian is symmetric
    est = estimate_jacobian_norm(pde, c, perturbed(pde, u_true, 4))
    assert est.shape == (B,)
    assert bool((est <= exact * (1 + 1e-12)).all()), (est, exact)
    assert bool((est >= 0.95 * exact).all()), (est, exact)
    # more iterations never lower the Rayleigh-quotient estimate
    assert bool((estimate_jacobian_norm(pde, c, u_true, 40) >= est * (1 - 1e-12)).all())


def test_gd_damps_the_lowest_mode_at_the_predicted_rate(poisson):
    pde, c, u_true = poisson
    S = c.shape[-1]
    q = dst1_matrix(S - 2)
    mode = F.pad(torch.outer(q[0], q[0]), (1, 1, 1, 1))  # unit-norm DST mode (1, 1)
    e0 = norms(u_true).view(-1, 1, 1, 1) * mode
    steps = 12
    tr = gradient_descent(pde, c, u_true + e0, steps=steps, u_true=u_true)
    eta = tr.info["step_size"]
    sigma_min = float(dirichlet_eigenvalues(S).abs().min())
    factor = 1 - eta * sigma_min ** 2
    want = tr.rel_error[0] * factor ** torch.arange(steps + 1, dtype=torch.float64)[:, None]
    assert float((1 - factor ** steps).min()) > 1e-4  # the decay is visible at this tolerance
    torch.testing.assert_close(tr.rel_error, want, rtol=1e-10, atol=0)


def test_gd_with_a_step_beyond_two_over_L_diverges(poisson):
    pde, c, u_true = poisson
    L = float(dirichlet_eigenvalues(16).abs().max()) ** 2
    u0 = perturbed(pde, u_true, 5)
    with pytest.raises(DivergenceError, match=r"gradient descent diverged at step \d+ of 40 with step_size=.*"
                                              r"grew more than 1000x.*smaller step_size"):
        gradient_descent(pde, c, u0, steps=40, step_size=3 / L)
    tr = gradient_descent(pde, c, u0, steps=40, step_size=3 / L, u_true=u_true, on_divergence="stop",
                          keep_states=True)
    assert tr.status == "diverged" and "step_size=" in tr.message
    assert 1 <= tr.iterations < 40 and finite(tr)
    check_trajectory(tr, "gd", 40, B)
    assert float(tr.rel_residual.max()) <= 1e3 * float(tr.rel_residual[0].max())
    assert float(tr.rel_residual[-1].max()) > 10 * float(tr.rel_residual[0].max())  # it was growing


# ---- Gauss--Newton ------------------------------------------------------------------------------
@pytest.mark.parametrize("family, params", [("poisson", {}), ("helmholtz", {"k": 3.0})])
def test_gauss_newton_solves_a_linear_problem_in_one_step(family, params):
    pde, c, u_true = problem(family, 9, **params)  # 49 unknowns
    u0 = perturbed(pde, u_true, 6, amplitude=1.0)
    tr = gauss_newton(pde, c, u0, steps=1, cg_iterations=49, damping=0.0, u_true=u_true)
    check_trajectory(tr, "gauss_newton", 1, B)
    assert float(tr.rel_error[0].min()) > 0.1
    assert float(tr.rel_error[1].max()) < 1e-8
    assert tr.info["accepted"].tolist() == [1] * B
    assert tr.residual_evals.tolist() == [1, 2] and tr.jacobian_evals.tolist() == [0, 1 + 2 * 49 + 1]


def test_gauss_newton_on_nonlinear_helmholtz_gains_orders_of_magnitude():
    pde, c, u_true = problem("nonlinear_helmholtz", 12)
    tr = gauss_newton(pde, c, perturbed(pde, u_true, 7, amplitude=0.3), steps=4, cg_iterations=40,
                      u_true=u_true, keep_states=True)
    check_trajectory(tr, "gauss_newton", 4, B)
    assert bool((tr.rel_residual[1:] <= tr.rel_residual[:-1]).all())  # only decreasing steps are taken
    assert bool((tr.rel_residual[-1] < 1e-4 * tr.rel_residual[0]).all())
    assert bool((tr.rel_error[-1] < 1e-3 * tr.rel_error[0]).all())
    assert torch.equal(pde.apply_bc(tr.states), tr.states)


def test_gauss_newton_on_navier_stokes_lowers_the_residual():
    pde, c, u_true = problem("navier_stokes", 16, n=2, n_snapshots=3)
    tr = gauss_newton(pde, c, perturbed(pde, u_true, 8), steps=2, cg_iterations=5, u_true=u_true)
    check_trajectory(tr, "gauss_newton", 2, 2)
    assert bool((tr.rel_residual[1:] <= tr.rel_residual[:-1]).all())
    assert bool((tr.rel_residual[-1] < 0.1 * tr.rel_residual[0]).all())


@dataclasses.dataclass(frozen=True)
class Atan(PDE):
    """A toy pointwise PDE, ``R(u; c) = atan(u) - c`` on the torus: Newton's method on ``atan``
    overshoots from ``|u - u*| > ~1.4``, so undamped Gauss--Newton steps get rejected there."""

    name = "atan"
    in_channels = 1
    out_channels = 1
    periodic = True

    def _residual(self, u, c):
        return torch.atan(u) - c


def test_gauss_newton_rejects_overshooting_steps_and_damps_per_sample():
    pde = Atan()
    target = torch.full((2, 1, 8, 8), 0.1, dtype=torch.float64)
    c = torch.atan(target)
    u0 = torch.cat([torch.full((1, 1, 8, 8), 2.1), torch.full((1, 1, 8, 8), 0.6)]).double()
    tr = gauss_newton(pde, c, u0, steps=8, damping=0.0, cg_iterations=2, u_true=target, keep_states=True)
    check_trajectory(tr, "gauss_newton", 8, 2)
    assert bool((tr.rel_residual[1:] <= tr.rel_residual[:-1]).all())
    # sample 0: the plain Gauss--Newton step overshoots; it stays put while mu grows 10x per
    # rejection (from 1e-3 mu_ref, damping being 0), then converges; sample 1 converges at once
    assert all(torch.equal(tr.states[t, 0], u0[0]) for t in range(5)) and not torch.equal(tr.states[5, 0], u0[0])
    assert float(tr.rel_residual[1, 1]) < 0.5 * float(tr.rel_residual[0, 1])
    assert float(tr.rel_error[-1].max()) < 1e-2 and float(tr.rel_error[-1, 1]) < 1e-12
    assert tr.info["accepted"][0] == 4
    # a partly accepted step re-linearises at the mixed iterate: one more residual evaluation
    assert tr.residual_evals.diff()[:4].tolist() == [2, 2, 2, 2]
    # gradient descent runs on the toy PDE too; 1 / L at the start guarantees nothing for a
    # nonlinear residual: sample 0's Jacobian grows 5x along the path and its residual oscillates
    gd = gradient_descent(pde, c, u0, steps=5)
    assert gd.status == "ok" and finite(gd)
    assert bool((gd.rel_residual[1:, 1] <= gd.rel_residual[:-1, 1]).all())
    assert bool((gd.rel_residual[1:, 0] > gd.rel_residual[:-1, 0]).any())


# ---- Newton -------------------------------------------------------------------------------------
def test_newton_converges_quadratically_to_the_reference():
    # a stronger forcing than the default 100 makes the nonlinearity visible for three steps
    pde, c, u_true = problem("nonlinear_helmholtz", 16, forcing_scale=300.0)
    linear = ens.get_pde("helmholtz", k=pde.k, forcing_scale=300.0).solve(c)  # the reference solver's start
    tr = newton(pde, c, linear, steps=6, u_true=u_true)
    check_trajectory(tr, "newton", 6, B)
    assert tr.status == "ok" and tr.info["converged"].tolist() == [True] * B
    assert float(tr.rel_error[-1].max()) < 1e-10
    res = tr.rel_residual
    assert float(res[2].min()) > 1e-10  # three iterates above the round-off floor
    # q-order estimate log(r2 / r1) / log(r1 / r0) ~ 2
    order = torch.log(res[2] / res[1]) / torch.log(res[1] / res[0])
    assert bool((order > 1.8).all()), order
    # converged samples stay put: no more factorisations after the last needed one
    assert int(tr.jacobian_evals[-1]) <= 4 and tr.jacobian_evals[-1] == tr.jacobian_evals[-2]
    assert torch.equal(res[-1], res[-2])


def test_newton_solves_poisson_in_one_step_and_leaves_a_solution_alone(poisson):
    pde, c, u_true = poisson
    tr = newton(pde, c, perturbed(pde, u_true, 9), steps=3, u_true=u_true)
    assert float(tr.rel_error[1].max()) < 1e-12 and tr.jacobian_evals.tolist() == [0, 1, 1, 1]
    tr = newton(pde, c, u_true, steps=2)  # already below newton_rtol: nothing to do
    assert torch.equal(tr.u, u_true) and tr.jacobian_evals.tolist() == [0, 0, 0]
    assert tr.info["converged"].tolist() == [True] * B


def test_newton_reports_a_stalled_sample_and_keeps_the_others_going():
    # lam = +1 (the paper's sign): the solution branch folds for this draw (see ens.pdes.FAMILIES)
    pde = ens.get_pde("helmholtz", k=2.0, lam=1.0)
    c = pde.sample_inputs(3, 33, torch.Generator().manual_seed(33))
    with pytest.raises(RuntimeError, match="stalled"):
        pde.solve(c[:1])
    linear = ens.get_pde("helmholtz", k=2.0).solve(c)
    tr = newton(pde, c, linear, steps=6, keep_states=True)
    check_trajectory(tr, "newton", 6, 3)
    assert tr.status == "stalled" and "sample(s) [0]" in tr.message and "stalled" in tr.message
    assert tr.info["converged"].tolist() == [False, True, True]
    assert float(tr.rel_residual[-1, 1:].max()) < 1e-12
    stuck = next(t for t in range(1, 7) if torch.equal(tr.states[t, 0], tr.states[-1, 0]))
    assert all(torch.equal(tr.states[t, 0], tr.states[stuck, 0]) for t in range(stuck, 7))


@pytest.mark.parametrize("family", ["navier_stokes", "darcy"])
def test_newton_refuses_other_families(family):
    pde, c, u_true = problem(family, 16, n=1, **({"n_snapshots": 2} if family == "navier_stokes" else {}))
    with pytest.raises(ValueError, match="Newton is implemented for the .*Helmholtz/Poisson family.*use gauss_newton"):
        newton(pde, c, u_true, steps=1)


def test_newton_iterates_generator():
    pde, c, u_true = problem("nonlinear_helmholtz", 12, n=1)
    linear = ens.get_pde("helmholtz", k=pde.k).solve(c)
    steps = list(pde.newton_iterates(linear[0, 0], c[0, 0]))
    assert 1 <= len(steps) < 10
    rel = [s[1] for s in steps]
    assert rel[-1] <= pde.newton_rtol and all(b < a for a, b in zip(rel, rel[1:]))
    assert torch.equal(steps[-1][0], u_true[0, 0])  # solve() returns the last iterate
    assert list(pde.newton_iterates(u_true[0, 0], c[0, 0])) == []  # converged start: nothing to yield
    assert len(list(pde.newton_iterates(linear[0, 0], c[0, 0], maxiter=1))) == 1
    with pytest.raises(RuntimeError, match=r"did not reach .* in 1 iterations"):
        pde._newton(linear[0, 0], c[0, 0], maxiter=1)


# ---- test-time optimisation ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(poisson):
    pde, c, u_true = poisson
    torch.manual_seed(0)
    net = build_backbone("fno_cnn", in_channels=1, out_channels=1, width=8, modes=4, layers=1)
    return NeuralSolver(net, None, Normalization.fit(c, u_true))


def test_tto_lowers_the_residual_and_leaves_the_model_alone(poisson, tiny_model):
    pde, c, u_true = poisson
    c, u_true = c.float(), u_true.float()  # the FNO runs in float32
    before = copy.deepcopy(tiny_model.state_dict())
    grads = [p.requires_grad for p in tiny_model.parameters()]
    training = tiny_model.training
    tr = test_time_optimisation(tiny_model, pde, c, steps=20, u_true=u_true, keep_states=True)
    check_trajectory(tr, "tto", 20, B)
    assert tr.status == "ok" and len(tr.info["loss"]) == 20 and tr.info["lr"] == 1e-4
    assert float(tr.rel_residual[-1].mean()) < float(tr.rel_residual[0].mean())
    # the loss is the mean squared relative residual of the iterate before each step
    torch.testing.assert_close(torch.tensor(tr.info["loss"], dtype=torch.float64),
                               tr.rel_residual[:-1].square().mean(1), rtol=1e-4, atol=0)
    after = tiny_model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in tiny_model.parameters()] == grads and tiny_model.training == training
    assert all(p.grad is None for p in tiny_model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(tr.states[0], tiny_model.predict(pde, c), rtol=0, atol=0)
    counts = torch.arange(21)
    assert torch.equal(tr.residual_evals, counts + 1) and torch.equal(tr.jacobian_evals, counts)


def test_tto_with_a_huge_lr_is_caught(poisson, tiny_model):
    pde, c, _ = poisson
    tr = test_time_optimisation(tiny_model, pde, c.float(), steps=10, lr=1e3, max_growth=2.0,
                                on_divergence="stop")
    assert tr.status == "diverged" and "lr=1000" in tr.message and finite(tr)
    assert tr.iterations < 10
    with pytest.raises(DivergenceError, match="test-time optimisation diverged.*smaller lr"):
        test_time_optimisation(tiny_model, pde, c.float(), steps=10, lr=1e3, max_growth=2.0)


def test_tto_early_stopping_cuts_the_same_run_where_the_error_has_risen(poisson, tiny_model):
    pde, c, u_true = poisson
    c, u_true = c.float(), u_true.float()
    full = test_time_optimisation(tiny_model, pde, c, steps=40, lr=0.1, u_true=u_true)
    err = full.rel_error.mean(1)
    cut = test_time_optimisation(tiny_model, pde, c, steps=40, lr=0.1, u_true=u_true, patience=3)
    n = cut.iterations
    # the same iterates up to the stop, and the stop is the first step the rule allows
    assert torch.equal(cut.rel_error, full.rel_error[:n + 1]) and cut.info["stopped_at"] == (n if n < 40 else None)
    best = [err[1:t + 1].min() for t in range(1, 41)]
    since = [t - int(err[1:t + 1].argmin()) - 1 for t in range(1, 41)]
    allowed = [t for t in range(1, 41) if since[t - 1] >= 3 and err[t] > 1.5 * best[t - 1]]
    assert n == (allowed[0] if allowed else 40), (n, allowed)
    assert allowed, "this lr should overshoot on the tiny model; pick a larger one"
    with pytest.raises(ValueError, match="patience\\) needs u_true"):
        test_time_optimisation(tiny_model, pde, c, steps=2, patience=3)


# ---- every baseline -----------------------------------------------------------------------------
def test_registry():
    assert BASELINES == {"gd": gradient_descent, "gauss_newton": gauss_newton, "newton": newton}


CASES = [("gd", "darcy", {}), ("gd", "navier_stokes", {"n_snapshots": 2}), ("gauss_newton", "darcy", {}),
         ("gd", "nonlinear_helmholtz", {}), ("gauss_newton", "poisson", {}), ("newton", "helmholtz", {"k": 2.0})]


@pytest.mark.parametrize("method, family, params", CASES)
def test_trajectory_contract(method, family, params):
    pde, c, u_true = problem(family, 16, n=2, **params)
    u0 = perturbed(pde, u_true, 10)
    kwargs = {"cg_iterations": 4} if method == "gauss_newton" else {}
    tr = BASELINES[method](pde, c, u0, steps=3, u_true=u_true, keep_states=True, **kwargs)
    check_trajectory(tr, method, 3, 2)
    assert tr.status == "ok" and tr.iterations == 3
    assert torch.equal(tr.states[0], pde.apply_bc(u0))
    assert float(tr.rel_residual[-1].max()) < float(tr.rel_residual[0].min())
    # iterate 0 is the start, measured like everywhere else
    torch.testing.assert_close(tr.rel_residual[0], norms(pde.residual(u0, c)) / pde.residual_scale(c),
                               rtol=1e-12, atol=0)
    zero = BASELINES[method](pde, c, u0, steps=0, **kwargs)
    assert zero.iterations == 0 and torch.equal(zero.u, pde.apply_bc(u0)) and zero.rel_error is None
    assert zero.jacobian_evals.tolist() == [0]


BAD = [({"steps": -1}, "steps to be a non-negative int"),
       ({"steps": 2.0}, "steps to be a non-negative int"),
       ({"steps": True}, "steps to be a non-negative int"),
       ({"on_divergence": "ignore"}, "on_divergence"),
       ({"max_growth": 0.5}, "max_growth to be a number > 1")]
METHOD_BAD = {"gd": [({"step_size": 0.0}, "step_size to be a positive finite"),
                     ({"step_size": -1.0}, "step_size to be a positive finite"),
                     ({"step_size": math.nan}, "step_size to be a positive finite"),
                     ({"step_size": math.inf}, "step_size to be a positive finite"),
                     ({"power_iterations": 0}, "power_iterations to be a positive int")],
              "gauss_newton": [({"cg_iterations": 0}, "cg_iterations to be a positive int"),
                               ({"damping": -1.0}, "damping to be a non-negative finite"),
                               ({"damping": math.nan}, "damping to be a non-negative finite")],
              "newton": []}


@pytest.mark.parametrize("method, kwargs, match", [(m, k, r) for m in BASELINES for k, r in BAD + METHOD_BAD[m]])
def test_bad_arguments(poisson, method, kwargs, match):
    pde, c, u_true = poisson
    with pytest.raises(ValueError, match=match):
        BASELINES[method](pde, c, u_true, **{"steps": 2, **kwargs})


@pytest.mark.parametrize("method", BASELINES)
def test_bad_inputs(poisson, method):
    pde, c, u_true = poisson
    bad = c.clone()
    bad[0, 0, 3, 3] = math.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        BASELINES[method](pde, bad, u_true, steps=1)
    bad_u = u_true.clone()
    bad_u[1, 0, 4, 4] = math.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        BASELINES[method](pde, c, bad_u, steps=1)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        BASELINES[method](pde, c, u_true[..., :-1, :-1], steps=1)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        BASELINES[method](pde, c, u_true[:, 0], steps=1)
    with pytest.raises(ValueError, match="batch mismatch"):
        BASELINES[method](pde, c, u_true[:2], steps=1)


def test_tto_bad_arguments(poisson, tiny_model):
    pde, c, _ = poisson
    c = c.float()
    for kwargs, match in BAD + [({"lr": 0.0}, "lr to be a positive finite"), ({"lr": -1e-3}, "lr to be a positive"),
                                ({"lr": math.nan}, "lr to be a positive")]:
        with pytest.raises(ValueError, match=match):
            test_time_optimisation(tiny_model, pde, c, **{"steps": 2, **kwargs})
    bad = c.clone()
    bad[0, 0, 3, 3] = math.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        test_time_optimisation(tiny_model, pde, bad, steps=1)
    with pytest.raises(ValueError, match="NeuralSolver"):
        test_time_optimisation(tiny_model.predictor, pde, c, steps=1)


@pytest.mark.parametrize("method", BASELINES)
def test_runs_on_every_device(poisson, method, device):
    pde, c, u_true = poisson
    u0 = perturbed(pde, u_true, 11)
    kwargs = {"cg_iterations": 5} if method == "gauss_newton" else {}
    ref = BASELINES[method](pde, c, u0, steps=2, u_true=u_true, **kwargs)
    tr = BASELINES[method](pde, c.to(device), u0.to(device), steps=2, u_true=u_true.to(device), **kwargs)
    assert tr.u.device == c.to(device).device and tr.rel_residual.device.type == "cpu"
    torch.testing.assert_close(tr.u.cpu(), ref.u, rtol=1e-9, atol=1e-9 * float(u_true.abs().max()))
    torch.testing.assert_close(tr.rel_error, ref.rel_error, rtol=1e-7, atol=0)


def test_krylov_kernels_solve_small_dense_problems_in_n_steps():
    # batched 6x6 problems (as (B, 1, 6, 1) "fields"): CG and CGLS are exact after n steps in exact
    # arithmetic; in float64 they reach the dense solution to 1e-10 (cond(J) <= 11, cond(M) <= 34 here)
    from ens.solvers.linalg import cgls, conjugate_gradient
    g = torch.Generator().manual_seed(0)
    n, batch = 6, 2
    J = torch.randn(batch, n, n, generator=g, dtype=torch.float64) + 3 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(batch, n, generator=g, dtype=torch.float64)
    M = J.transpose(1, 2) @ J + torch.eye(n, dtype=torch.float64)  # SPD
    field = lambda v: v.view(batch, 1, n, 1)
    apply = lambda A: (lambda v: field(A @ v.view(batch, n, 1)))
    x0 = torch.zeros(batch, 1, n, 1, dtype=torch.float64)
    *_, x = conjugate_gradient(apply(M), x0, field(b), n)
    assert torch.allclose(x.view(batch, n), torch.linalg.solve(M, b), atol=1e-10)
    mu = torch.full((batch, 1, 1, 1), 0.5, dtype=torch.float64)
    *_, x = cgls(apply(J), apply(J.transpose(1, 2)), x0, field(b), n, mu=mu)
    normal = J.transpose(1, 2) @ J + 0.5 * torch.eye(n, dtype=torch.float64)
    expected = torch.linalg.solve(normal, (J.transpose(1, 2) @ b.unsqueeze(-1)).squeeze(-1))
    assert torch.allclose(x.view(batch, n), expected, atol=1e-10)
    *_, x = cgls(apply(J), apply(J.transpose(1, 2)), x0, field(b), n)  # undamped: J x = b
    assert torch.allclose(x.view(batch, n), torch.linalg.solve(J, b), atol=1e-8)
