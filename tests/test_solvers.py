"""The ENS loop and the surrogate through the Trajectory interface: update rule, metrics, stop
rule, divergence handling and argument checks.

The update rule is verified with hand-made correctors whose output is known exactly (e.g. the
true error direction), on a linear PDE in float64, so the expected iterates are closed-form.
"""

import math

import helpers
import pytest
import torch
from helpers import norms
from torch import nn

from ens.models import NeuralSolver, Normalization, ResidualScaling, build_backbone, lowpass
from ens.solvers import STOP_RULES, DivergenceError, Trajectory, ens_solve, surrogate_solve

S, B = 32, 3


@pytest.fixture(scope="module")
def problem():
    """Helmholtz (linear, Dirichlet) inputs and exact float64 reference solutions."""
    return helpers.problem("helmholtz", S, B, seed=11)


def unet(cin, cout, seed):
    torch.manual_seed(seed)
    # U-Net (not FNO-CNN) so that the whole network can run in float64
    return build_backbone("unet", in_channels=cin, out_channels=cout, width=4, depth=2).double()


def solver(pde, c, u, corrector=None, seed=0):
    """Random float64 predictor; ``corrector`` defaults to a random U-Net."""
    if corrector is None:
        corrector = unet(pde.in_channels + 2 * pde.out_channels, pde.out_channels, seed + 1)
    return NeuralSolver(unet(pde.in_channels, pde.out_channels, seed), corrector, Normalization.fit(c, u),
                        ResidualScaling.fit("constant", pde, c)).eval()


class Toward(nn.Module):
    """Returns ``factor_t * (u* - u) / state_scale`` from the corrector input ``[c, u / s, sR]``:
    the correction is then ``factor_t (u* - u)``, so ``e_{t+1} = (1 - alpha factor_t) e_t``.
    ``factors`` is ``(n_calls, B)`` (one row per call) or a scalar applied on every call."""

    def __init__(self, u_true, state_scale, cin, cout, factors=1.0):
        super().__init__()
        self.register_buffer("target", u_true / state_scale)
        self.cin, self.cout, self.factors, self.calls = cin, cout, factors, 0

    def forward(self, x):
        f = self.factors
        if isinstance(f, torch.Tensor):
            f = f[self.calls].to(x)[:, None, None, None]
        self.calls += 1
        return f * (self.target - x[:, self.cin:self.cin + self.cout])


class Fn(nn.Module):
    """Corrector given by a function of its input and of the call count."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.calls = fn, 0

    def forward(self, x):
        self.calls += 1
        return self.fn(x, self.calls)


def toward_solver(pde, c, u, factors=1.0):
    model = solver(pde, c, u, corrector=nn.Identity())
    model.corrector = Toward(u, model.normalization.state_scale, pde.in_channels, pde.out_channels, factors)
    return model


# ---- trajectory contents ------------------------------------------------------------------------
def test_trajectory_of_a_random_solver_matches_hand_computed_metrics(problem):
    pde, c, u_true = problem
    model = solver(pde, c, u_true)
    steps = 4
    tr = ens_solve(model, pde, c, alpha=0.01, steps=steps, u_true=u_true, keep_states=True)
    assert isinstance(tr, Trajectory) and tr.method == "ens" and tr.status == "ok"
    assert tr.iterations == steps and tr.batch_size == B
    assert tr.rel_residual.shape == tr.rel_error.shape == (steps + 1, B)
    assert tr.wall_time.shape == (steps + 1,) and tr.states.shape == (steps + 1, B, 1, S, S)
    assert bool((tr.wall_time[1:] >= tr.wall_time[:-1]).all()) and tr.wall_time[0] >= 0
    assert tr.residual_evals.tolist() == list(range(1, steps + 2))
    assert tr.jacobian_evals.tolist() == [0] * (steps + 1)
    assert tr.info == {"alpha": 0.01, "steps": steps, "stop": None, "stop_lowpass": None}
    assert torch.equal(tr.u, tr.states[-1])

    # iteration 0 is the surrogate's prediction
    sur = surrogate_solve(model, pde, c, u_true=u_true, keep_states=True)
    assert sur.method == "surrogate" and sur.iterations == 0
    assert torch.equal(sur.u, tr.states[0]) and torch.equal(sur.rel_residual[0], tr.rel_residual[0])
    assert torch.equal(sur.rel_error[0], tr.rel_error[0])
    with torch.no_grad():
        assert torch.equal(tr.states[0], model.predict(pde, c))

    # the metrics, by hand from the kept states (the same float64 operations up to summation order)
    f_norm = norms(pde.residual(torch.zeros_like(u_true), c))
    torch.testing.assert_close(f_norm, norms(c[..., 1:-1, 1:-1]), rtol=1e-14, atol=0)  # ||R(0; c)|| = ||f||
    for t in range(steps + 1):
        res = norms(pde.residual(tr.states[t], c)) / f_norm
        err = norms(tr.states[t] - u_true) / norms(u_true)
        torch.testing.assert_close(tr.rel_residual[t], res, rtol=1e-12, atol=0)
        torch.testing.assert_close(tr.rel_error[t], err, rtol=1e-12, atol=0)
    # and the update rule with the random corrector itself
    with torch.no_grad():
        u0 = tr.states[0]
        u1 = u0 + 0.01 * model.correction(pde, c, u0, pde.residual(u0, c))
    assert torch.equal(u1, tr.states[1])


def test_trajectory_frame_is_tidy(problem):
    pde, c, u_true = problem
    model = solver(pde, c, u_true)
    tr = ens_solve(model, pde, c, alpha=0.01, steps=3, u_true=u_true)
    df = tr.frame(family="helmholtz", setting="k=1")
    assert list(df.columns) == ["method", "family", "setting", "iteration", "rel_residual", "rel_residual_median",
                                "wall_time_s", "time_per_sample_s", "residual_evals", "jacobian_evals",
                                "rel_l2", "rel_l2_median", "status"]
    assert len(df) == 4 and df["iteration"].tolist() == [0, 1, 2, 3]
    assert (df["method"] == "ens").all() and (df["family"] == "helmholtz").all() and (df["status"] == "ok").all()
    assert df["rel_residual"].tolist() == tr.rel_residual.mean(1).tolist()
    assert df["rel_l2_median"].tolist() == tr.rel_error.median(1).values.tolist()
    assert df["time_per_sample_s"].tolist() == (tr.wall_time / B).tolist()
    # without a reference solution there are no error columns
    df = ens_solve(model, pde, c, alpha=0.01, steps=1).frame()
    assert "rel_l2" not in df.columns and len(df) == 2


def test_zero_steps_gives_the_prediction_only(problem):
    pde, c, u_true = problem
    model = solver(pde, c, u_true)
    tr = ens_solve(model, pde, c, alpha=1.0, steps=0)
    assert tr.iterations == 0 and tr.rel_error is None
    assert torch.equal(tr.u, surrogate_solve(model, pde, c).u)


# ---- the update rule ----------------------------------------------------------------------------
def test_exact_error_direction_with_alpha_one_solves_in_one_step(problem):
    pde, c, u_true = problem
    tr = ens_solve(toward_solver(pde, c, u_true), pde, c, alpha=1.0, steps=1, u_true=u_true)
    assert bool((tr.rel_error[0] > 0.5).all())  # the random prediction is far off
    # u + (u* - u) in float64, via u / s and back: a few ulps of ||u||
    assert float(tr.rel_error[1].max()) < 1e-13
    # the residual drops to the reference solution's own (DST round-off) level
    assert float(tr.rel_residual[1].max()) < 1e-9 * float(tr.rel_residual[0].min())


def test_alpha_half_halves_the_error_every_step(problem):
    pde, c, u_true = problem
    steps = 8
    tr = ens_solve(toward_solver(pde, c, u_true), pde, c, alpha=0.5, steps=steps, u_true=u_true)
    ratio = tr.rel_error[1:] / tr.rel_error[:-1]
    # e_{t+1} = e_t + 0.5 (u* - u_t) - ... = 0.5 e_t exactly up to float64 round-off
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.5), rtol=1e-6, atol=0)
    # linear problem: the residual A e_t + R(u*) halves too while A e_t dominates R(u*) ~ 1e-13 ||f||
    ratio = tr.rel_residual[1:] / tr.rel_residual[:-1]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.5), rtol=1e-6, atol=0)


@pytest.mark.parametrize("alpha", [0.25, 1.5])
def test_update_is_u_plus_alpha_times_the_correction(problem, alpha):
    pde, c, u_true = problem
    tr = ens_solve(toward_solver(pde, c, u_true), pde, c, alpha=alpha, steps=3, u_true=u_true)
    want = tr.rel_error[0] * abs(1 - alpha) ** torch.arange(4, dtype=torch.float64)[:, None]
    torch.testing.assert_close(tr.rel_error, want, rtol=1e-9, atol=0)  # float64 round-off


# ---- divergence ---------------------------------------------------------------------------------
def _finite(tr):
    fields = [tr.u, tr.rel_residual] + ([tr.rel_error] if tr.rel_error is not None else [])
    return all(bool(torch.isfinite(x).all()) for x in fields)


def test_huge_correction_raises_or_stops(problem):
    pde, c, u_true = problem
    model = solver(pde, c, u_true, corrector=Fn(lambda x, n: torch.full_like(x[:, :1], 1e8)))
    with pytest.raises(DivergenceError, match=r"step 1 of 5 with alpha=0\.5.*grew more than 1000x.*smaller alpha"):
        ens_solve(model, pde, c, alpha=0.5, steps=5)
    tr = ens_solve(model, pde, c, alpha=0.5, steps=5, u_true=u_true, on_divergence="stop")
    assert tr.status == "diverged" and "alpha=0.5" in tr.message and tr.iterations == 0
    assert _finite(tr)
    with torch.no_grad():
        assert torch.equal(tr.u, model.predict(pde, c))  # the last finite iterate


def test_gradual_blow_up_stops_at_the_first_step_beyond_max_growth(problem):
    pde, c, u_true = problem
    cin, cout = pde.in_channels, pde.out_channels
    # correction = 10 u  ->  u_t = 11^t u_0 with alpha = 1
    model = solver(pde, c, u_true, corrector=Fn(lambda x, n: 10 * x[:, cin:cin + cout]))
    with torch.no_grad():
        u0 = model.predict(pde, c)
    r0 = norms(pde.residual(u0, c))
    growth = [float((norms(pde.residual(11.0 ** t * u0, c)) / r0).max()) for t in range(6)]
    first_bad = next(t for t, g in enumerate(growth) if g > 1e3)
    assert 2 <= first_bad <= 5  # the test needs a few good steps before the blow-up
    tr = ens_solve(model, pde, c, alpha=1.0, steps=8, u_true=u_true, on_divergence="stop", keep_states=True)
    assert tr.status == "diverged" and f"step {first_bad} of 8" in tr.message
    assert tr.iterations == first_bad - 1 and _finite(tr)
    assert float(tr.rel_residual.max()) <= 1e3 * float(tr.rel_residual[0].max())
    torch.testing.assert_close(tr.u, 11.0 ** (first_bad - 1) * u0, rtol=1e-12, atol=0)
    with pytest.raises(DivergenceError, match=f"step {first_bad} of 8 with alpha=1"):
        ens_solve(model, pde, c, alpha=1.0, steps=8)
    # with a looser growth limit the same run goes on
    assert ens_solve(model, pde, c, alpha=1.0, steps=first_bad, max_growth=1e30).status == "ok"


@pytest.mark.parametrize("stop", STOP_RULES)
def test_nan_corrector_never_leaks_into_the_trajectory(problem, stop):
    pde, c, u_true = problem
    cin, cout = pde.in_channels, pde.out_channels

    def fn(x, n):  # a harmless small step twice, then NaN in one entry of one sample
        out = 1e-3 * x[:, cin:cin + cout]
        if n >= 3:
            out = out.clone()
            out[1, 0, 5, 5] = math.nan
        return out

    model = solver(pde, c, u_true, corrector=Fn(fn))
    with pytest.raises(DivergenceError, match=r"step 3 of 6 with alpha=1.*non-finite.*1 of 3 samples"):
        ens_solve(model, pde, c, alpha=1.0, steps=6, stop=stop)
    model.corrector.calls = 0
    tr = ens_solve(model, pde, c, alpha=1.0, steps=6, u_true=u_true, stop=stop, on_divergence="stop",
                   keep_states=True)
    assert tr.status == "diverged" and "non-finite" in tr.message and "alpha=1" in tr.message
    assert tr.iterations == 2 and _finite(tr) and bool(torch.isfinite(tr.states).all())


def test_inf_corrector_is_caught(problem):
    pde, c, u_true = problem
    model = solver(pde, c, u_true, corrector=Fn(lambda x, n: torch.full_like(x[:, :1], math.inf)))
    tr = ens_solve(model, pde, c, alpha=0.1, steps=3, on_divergence="stop")
    assert tr.status == "diverged" and tr.iterations == 0 and _finite(tr)


# ---- the residual stop rule ---------------------------------------------------------------------
@pytest.mark.parametrize("patience", [1, 2, 4])
def test_zero_correction_stops_after_patience_steps(problem, patience):
    pde, c, u_true = problem
    model = solver(pde, c, u_true, corrector=Fn(lambda x, n: torch.zeros_like(x[:, :1])))
    tr = ens_solve(model, pde, c, alpha=1.0, steps=20, stop="residual", patience=patience, u_true=u_true)
    assert tr.status == "stopped" and tr.iterations == patience
    assert f"after step {patience}" in tr.message
    assert bool((tr.rel_residual == tr.rel_residual[0]).all())
    assert model.corrector.calls == patience
    # without the stop rule the loop runs every step
    assert ens_solve(model, pde, c, alpha=1.0, steps=6).iterations == 6


def test_stop_rule_reports_the_best_iterate_per_sample(problem):
    pde, c, u_true = problem
    # e_{t+1} = (1 - f_t) e_t per sample (alpha = 1): sample 0 improves, worsens, improves, then stalls;
    # sample 1 improves steadily for three steps, then stalls; sample 2 only gets worse
    f = torch.tensor([[0.5, 0.5, -1.0],
                      [-1.0, 0.5, -1.0],
                      [0.9, 0.5, -1.0],
                      [0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0]], dtype=torch.float64)
    free = ens_solve(toward_solver(pde, c, u_true, f), pde, c, alpha=1.0, steps=6, u_true=u_true,
                     max_growth=1e9)
    tr = ens_solve(toward_solver(pde, c, u_true, f), pde, c, alpha=1.0, steps=20, u_true=u_true, stop="residual",
                   patience=3, max_growth=1e9)
    # the raw residual of sample 0 increases at step 2; the reported one never does
    assert free.rel_residual[2, 0] > free.rel_residual[1, 0]
    assert bool((tr.rel_residual[1:] <= tr.rel_residual[:-1]).all())
    # last improvement: step 3 (samples 0 and 1); the three stalled steps after it end the loop
    assert tr.status == "stopped" and tr.iterations == 6
    best = torch.cummin(free.rel_residual, dim=0).values
    assert torch.equal(tr.rel_residual, best)
    # the reported error is that of the kept iterate, not of the latest one
    idx = torch.cummin(free.rel_residual, dim=0).indices
    assert torch.equal(tr.rel_error, free.rel_error.gather(0, idx))
    torch.testing.assert_close(tr.rel_error[-1], free.rel_error[[3, 3, 0], [0, 1, 2]], rtol=0, atol=0)


def test_stop_rule_with_a_random_corrector_is_monotone(problem):
    pde, c, u_true = problem
    model = solver(pde, c, u_true, seed=5)
    free = ens_solve(model, pde, c, alpha=0.05, steps=6, on_divergence="stop")
    tr = ens_solve(model, pde, c, alpha=0.05, steps=6, stop="residual", on_divergence="stop")
    n = tr.iterations + 1
    assert bool((tr.rel_residual[1:] <= tr.rel_residual[:-1]).all())
    assert torch.equal(tr.rel_residual, torch.cummin(free.rel_residual[:n], dim=0).values)


@pytest.mark.parametrize("q", [0.5, 0.25])
def test_lowpass_stop_rule_keeps_the_iterate_with_the_smallest_smooth_residual(problem, q):
    pde, c, u_true = problem
    model = solver(pde, c, u_true, seed=5)
    tr = ens_solve(model, pde, c, alpha=0.05, steps=6, stop="residual", stop_lowpass=q, on_divergence="stop",
                   u_true=u_true)
    free = ens_solve(model, pde, c, alpha=0.05, steps=6, on_divergence="stop", keep_states=True, u_true=u_true)
    smooth = torch.stack([lowpass(pde.residual(s, c), q, pde.periodic).flatten(1).norm(dim=1) for s in free.states])
    n = tr.iterations + 1
    idx = torch.cummin(smooth, dim=0).indices[:n]
    assert torch.equal(tr.rel_error, free.rel_error.gather(0, idx))
    assert tr.info["stop_lowpass"] == q
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="stop_lowpass"):
            ens_solve(model, pde, c, alpha=0.05, steps=2, stop="residual", stop_lowpass=bad)


# ---- argument checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 0.0}, "alpha to be a positive finite"),
    ({"alpha": -1.0}, "alpha to be a positive finite"),
    ({"alpha": math.nan}, "alpha to be a positive finite"),
    ({"alpha": math.inf}, "alpha to be a positive finite"),
    ({"alpha": "1"}, "alpha to be a positive finite"),
    ({"steps": -1}, "steps to be a non-negative int"),
    ({"steps": 2.0}, "steps to be a non-negative int"),
    ({"steps": True}, "steps to be a non-negative int"),
    ({"stop": "error"}, r"unknown stop rule 'error'; expected one of \[None, 'residual'\]"),
    ({"on_divergence": "ignore"}, "on_divergence"),
])
def test_bad_arguments(problem, kwargs, match):
    pde, c, u_true = problem
    model = solver(pde, c, u_true)
    with pytest.raises(ValueError, match=match):
        ens_solve(model, pde, c, **{"alpha": 0.5, "steps": 2, **kwargs})


def test_surrogate_model_and_bad_inputs_are_refused(problem):
    pde, c, u_true = problem
    model = solver(pde, c, u_true)
    surrogate = NeuralSolver(model.predictor, None, model.normalization)
    with pytest.raises(ValueError, match="needs a model with a corrector.*surrogate_solve"):
        ens_solve(surrogate, pde, c, alpha=0.5, steps=2)
    bad = c.clone()
    bad[0, 0, 3, 3] = math.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        ens_solve(model, pde, bad, alpha=0.5, steps=2)
    with pytest.raises(ValueError, match="NaN or Inf"):
        surrogate_solve(surrogate, pde, bad)
    with pytest.raises(ValueError, match=r"\(B, 1, S, S\)"):
        ens_solve(model, pde, c[:, 0], alpha=0.5, steps=2)
    with pytest.raises(ValueError, match="batch mismatch"):
        ens_solve(model, pde, c, alpha=0.5, steps=2, u_true=u_true[:2])


# ---- ENS+ and chained trajectories ------------------------------------------------------------------
def test_ens_plus_is_ens_then_gauss_newton_from_its_estimate(problem):
    from ens.solvers import ens_plus, gauss_newton
    pde, c, u_true = problem
    model = solver(pde, c, u_true)
    ens = ens_solve(model, pde, c, alpha=0.5, steps=3, u_true=u_true)
    gn = gauss_newton(pde, c, ens.u, steps=2, cg_iterations=30, u_true=u_true)
    plus = ens_plus(model, pde, c, alpha=0.5, steps=3, refine_steps=2, cg_iterations=30, u_true=u_true)
    assert plus.method == "ens_plus" and plus.iterations == 3 + 2 and plus.status == "ok"
    # the same iterates as the two runs one after the other (the networks and CG are deterministic)
    torch.testing.assert_close(plus.rel_error, torch.cat([ens.rel_error, gn.rel_error[1:]]), rtol=1e-12, atol=0)
    torch.testing.assert_close(plus.u, gn.u, rtol=1e-12, atol=0)
    # counts continue from ENS's: its T + 1 residuals, then Gauss-Newton's own
    assert plus.residual_evals.tolist() == ens.residual_evals.tolist() + (gn.residual_evals[1:] + 4).tolist()
    assert plus.jacobian_evals[:4].eq(0).all() and plus.jacobian_evals[-1] == gn.jacobian_evals[-1]
    assert bool((plus.wall_time[1:] >= plus.wall_time[:-1]).all())  # ENS's time is part of it
    assert plus.info["first"]["alpha"] == 0.5 and plus.info["second"]["cg_iterations"] == 30
    # Levenberg-Marquardt accepts only steps that lower the residual: a random network's estimate is
    # all grid-scale residual, which its first steps remove (by orders of magnitude)
    assert bool((plus.rel_residual[-1] < 0.1 * ens.rel_residual[-1]).all())


def test_ens_plus_returns_a_diverged_ens_part_as_it_is(problem):
    from ens.solvers import ens_plus
    pde, c, u_true = problem
    model = solver(pde, c, u_true, corrector=Fn(lambda x, n: torch.full_like(x[:, :1], 1e8)))
    tr = ens_plus(model, pde, c, alpha=0.5, steps=5, refine_steps=3, u_true=u_true, on_divergence="stop")
    assert tr.method == "ens_plus" and tr.status == "diverged" and tr.iterations == 0
    with pytest.raises(DivergenceError):
        ens_plus(model, pde, c, alpha=0.5, steps=5, refine_steps=3)


def test_ens_plus_with_newton_or_the_residual_stop_is_the_two_runs_one_after_the_other():
    from ens.solvers import ens_plus, newton
    pde, c, u_true = helpers.problem("nonlinear_helmholtz", S, B, seed=5)
    model = solver(pde, c, u_true)
    ens = ens_solve(model, pde, c, alpha=0.5, steps=6, stop="residual", u_true=u_true)
    nt = newton(pde, c, ens.u, steps=4, u_true=u_true)
    plus = ens_plus(model, pde, c, alpha=0.5, steps=6, stop="residual", stop_lowpass=1.0, refine="newton",
                    refine_steps=4, u_true=u_true)
    assert plus.info["first_iterations"] == ens.iterations and plus.iterations == ens.iterations + nt.iterations
    torch.testing.assert_close(plus.rel_error, torch.cat([ens.rel_error, nt.rel_error[1:]]), rtol=1e-12, atol=0)
    # Newton from any start converges on this mildly nonlinear problem: to round-off in 4 steps
    assert float(plus.rel_error[-1].max()) < 1e-8 < float(ens.rel_error[-1].min())
    with pytest.raises(ValueError, match="unknown refiner 'cg'"):
        ens_plus(model, pde, c, alpha=0.5, steps=2, refine="cg", refine_steps=1)


def test_chain_refuses_mismatched_trajectories(problem):
    from ens.solvers import chain
    pde, c, u_true = problem
    model = solver(pde, c, u_true)
    with_error = surrogate_solve(model, pde, c, u_true=u_true)
    with pytest.raises(ValueError, match="one batch, got 3 and 2 samples"):
        chain(with_error, surrogate_solve(model, pde, c[:2], u_true=u_true[:2]), "x")
    with pytest.raises(ValueError, match="both trajectories with or both without"):
        chain(with_error, surrogate_solve(model, pde, c), "x")
