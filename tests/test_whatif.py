"""The what-if layer (ens.whatif) on the shipped ci checkpoints: inputs equal to the test files,
the same numbers as ens.evaluate, caching by dependency, every bad input refused, and the panel's
widget wiring (ens.whatif_panel) driven programmatically."""

import math

import numpy as np
import pytest

from ens import theory
from ens.data import load_dataset
from ens.evaluate import run_setting
from ens.experiments import FAMILY_SPECS, TestSet, dataset_spec, in_distribution_setting, sizes
from ens.pdes import FAMILIES, get_pde
from ens.whatif import QUESTIONS, Scenario, ScenarioError, WhatIf, answer, grid_size

#: methods that take no validation choice (the cheap subset most tests run)
PLAIN = ("reference", "surrogate", "ens", "gd", "gauss_newton")


@pytest.fixture(scope="module")
def session(ci_root, tmp_path_factory):
    return WhatIf("ci", data_root=ci_root, cache_dir=tmp_path_factory.mktemp("whatif_cache"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sample_i_is_the_test_files_sample_i_at_the_training_parameters(session, ci_root, family):
    spec = dataset_spec("ci", family, "test", in_distribution_setting(family))
    c, u = load_dataset(spec, ci_root).tensors(0, 3)
    for i in (0, 2):
        r = session.run(Scenario(family, sample=i, methods=("reference",)))
        # the file stores float32 and the session rounds its float64 draw the same way: equal bits
        assert np.array_equal(r.fields["input"], c[i, -1].double().numpy())
        # the file solves the chunk as one batch, the session this sample alone: the float64
        # solutions agree to round-off, so their float32 roundings differ by at most one float32 ulp
        want = u[i, -1].double().numpy()
        assert np.abs(r.fields["solution"] - want).max() <= 2 ** -23 * np.abs(want).max()
        assert r.fields["input"].shape == (spec.resolution, spec.resolution)


def test_a_scenario_and_ens_evaluate_give_the_same_numbers_on_the_same_sample(session, ci_root):
    budget = {"n_samples": 1, "batch_size": 1}
    for family in ("helmholtz", "nonlinear_helmholtz"):
        methods = [m for m in PLAIN + ("newton", "tto") if m != "newton" or family == "nonlinear_helmholtz"]
        want = {t.method: t for t in run_setting("ci", TestSet(family, in_distribution_setting(family)), methods,
                                                 budget=budget, data_root=ci_root)}
        got = session.run(Scenario(family, methods=tuple(methods)))
        for m in methods:
            tr = want[m]
            row = got.summary.set_index("method").loc[m]
            # one code path, the same input bits and threads: the same iterates, so the same residuals
            assert row.iterations == tr.iterations, m
            if m != "reference":  # the reference row re-solves in float64 from float32, as evaluate does
                assert row.rel_residual == float(tr.rel_residual[-1, 0]), m
            # the error is measured against u*, which the session solves alone and the file in a batch
            # (one float32 ulp apart, 6e-8 relative): that moves a rel. error of e by ~6e-8 / e
            assert row.rel_l2 == pytest.approx(float(tr.rel_error[-1, 0]), rel=1e-4, abs=1e-7), m


def test_each_change_recomputes_only_what_depends_on_it(ci_root, tmp_path):
    s = WhatIf("ci", data_root=ci_root, cache_dir=tmp_path)
    base = Scenario("helmholtz", methods=PLAIN)
    first = s.run(base)
    assert {"input", "reference solution", "ENS", "residual GD", "condition number"} <= set(first.computed)
    ens_before = s.checkpoints("helmholtz")["ens"]
    assert s.run(base).computed == ()  # all cached
    inference = ens_before.inference
    assert s.run(base.replace(alpha=inference["alpha"] * 0.6)).computed == ("ENS",)
    assert s.run(base.replace(steps=inference["steps"] + 1)).computed == ("ENS",)
    assert s.run(base.replace(budget={"gd_steps": 7})).computed == ("residual GD",)
    assert s.run(base.replace(budget={"gn_steps": 2})).computed == ("Gauss–Newton (LM)",)
    # another sample of the same chunk: its input was drawn with the chunk, its reference and runs are
    # new; the linear operator's condition number does not depend on the sample
    again = s.run(base.replace(sample=1)).computed
    assert not {"input", "condition number"} & set(again) and {"reference solution", "ENS"} <= set(again)
    changed = s.run(base.replace(params={"k": 2.5})).computed
    assert {"input", "reference solution", "condition number", "surrogate", "ENS"} <= set(changed)
    assert s.checkpoints("helmholtz")["ens"] is ens_before  # checkpoints are loaded once
    # a parameter equal to the training value is the training scenario (same cache entries)
    assert s.run(base.replace(params={"k": 1.0})).computed == ()


def test_the_result_fields_kappa_and_modes_are_consistent(session):
    r = session.run(Scenario("helmholtz", {"k": 3.0}, methods=PLAIN))
    S = sizes("ci", "helmholtz").resolution
    f = r.fields
    for m in PLAIN:
        assert f[m].shape == f[f"{m}:error"].shape == f[f"{m}:residual"].shape == (S, S)
        np.testing.assert_array_equal(f[f"{m}:error"], f[m] - f["solution"])
    # the reference state's residual is float32 storage error (~1e-14 relative, the summary's row)
    assert r.summary.set_index("method").loc["reference", "rel_residual"] < 1e-10
    assert r.kappa == pytest.approx(theory.condition_number(S, 3.0), rel=1e-12)
    # the bands partition the DST modes: their squared shares add up to the whole error
    for m, d in r.modes.groupby("method"):
        assert d.share.sum() == pytest.approx(1.0, rel=1e-9), m
    assert list(r.trajectories.method.unique()) == list(PLAIN)
    assert r.headline().rel_l2.notna().all()
    # where the DST does not diagonalise the operator there is no modal split; the flows have no kappa
    assert session.run(Scenario("darcy", methods=("reference", "ens"))).modes is None
    assert math.isnan(session.run(Scenario("navier_stokes", methods=("reference", "ens"))).kappa)


def test_the_fine_grid_and_the_residual_stop_rule(session):
    fine = session.run(Scenario("poisson", grid="fine", methods=("reference", "ens")))
    assert fine.resolution == grid_size("ci", "poisson", "fine") == 2 * sizes("ci", "poisson").resolution - 1
    assert fine.fields["ens"].shape == (fine.resolution,) * 2
    res = session.run(Scenario("poisson", stop="residual", steps=30, methods=("surrogate", "ens")))
    assert list(res.summary.method) == ["surrogate", "ens_residual"]
    assert res.summary.iterations.iloc[1] <= 30


def test_deferred_methods_come_back_pending_until_computed(ci_root, tmp_path):
    s = WhatIf("ci", data_root=ci_root, cache_dir=tmp_path)
    sc = Scenario("poisson", methods=("surrogate", "ens", "gauss_newton"))
    first = s.run(sc, defer=("gauss_newton",)).summary.set_index("method")
    assert first.loc["gauss_newton", "status"] == "pending" and math.isnan(first.loc["gauss_newton", "rel_l2"])
    assert first.loc["ens", "status"] == "ok"
    full = s.run(sc).summary.set_index("method")
    assert full.loc["gauss_newton", "status"] == "ok"
    assert s.run(sc, defer=("gauss_newton",)).summary.set_index("method").loc["gauss_newton", "status"] == "ok"


def test_every_family_has_knobs_that_reach_every_shift_and_go_beyond():
    for name, spec in FAMILY_SPECS.items():
        knobs = {k.param: k for k in spec.knobs}
        assert knobs, f"{name} has no what-if parameters"
        values = get_pde(name, **spec.params).params
        for knob in knobs.values():
            knob.check(values[knob.param])  # the training value
        for shift in spec.shifts:
            for param, value in shift.params.items():
                if value != values[param]:
                    assert param in knobs, f"{name}: shift {shift.setting} changes {param}, which has no knob"
                    knobs[param].check(value)
        for knob in knobs.values():
            if not knob.choices:  # between and beyond: the range is wider than the studies' values
                used = [values[knob.param]] + [s.params[knob.param] for s in spec.shifts if knob.param in s.params]
                assert knob.lo < min(used) and knob.hi > max(used), (name, knob.param)


@pytest.mark.parametrize("scenario, message", [
    (Scenario("maxwell"), "unknown family 'maxwell'"),
    (Scenario("poisson", {"k": 2.0}), "poisson has no what-if parameter 'k'"),
    (Scenario("helmholtz", {"k": 5.0}), r"expected k \(wavenumber k\) in \[0, 4.3\], got 5.0"),
    (Scenario("helmholtz", {"k": float("nan")}), r"expected k .* got nan"),
    (Scenario("helmholtz", {"k": "abc"}), r"expected k .* got 'abc'"),
    (Scenario("darcy", {"forcing": "sine"}), "unknown value of forcing 'sine'"),
    (Scenario("poisson", sample=16), r"expected sample in \[0, 15\]"),
    (Scenario("poisson", sample=-1), "expected sample to be a non-negative int"),
    (Scenario("poisson", sample=True), "expected sample to be a non-negative int"),
    (Scenario("poisson", grid="coarse"), "unknown grid 'coarse'"),
    (Scenario("kolmogorov", grid="fine"), "kolmogorov has no finer grid"),
    (Scenario("poisson", methods=("adam",)), "unknown method 'adam'"),
    (Scenario("poisson", methods=("newton",)), "Newton does not apply to poisson"),
    (Scenario("poisson", methods=()), "expected at least one method"),
    (Scenario("poisson", methods=("ens", "ens")), "expected distinct methods"),
    (Scenario("poisson", alpha=0.0), "expected alpha to be a positive finite number"),
    (Scenario("poisson", alpha=float("nan")), "expected alpha to be a positive finite number"),
    (Scenario("poisson", alpha=10.0), r"expected alpha in \(0, 4\]"),
    (Scenario("poisson", steps=-1), "expected T .* to be a non-negative int"),
    (Scenario("poisson", steps=5000), r"expected T \(ENS steps\) in \[0, 1000\]"),
    (Scenario("poisson", stop="never"), "unknown stop rule 'never'"),
    (Scenario("poisson", budget={"gd_iters": 3}), "unknown budget entry 'gd_iters'"),
    (Scenario("poisson", budget={"gd_steps": 0}), "expected gd_steps to be a positive int"),
])
def test_bad_scenarios_are_refused_with_one_clear_line(session, scenario, message):
    with pytest.raises(ScenarioError, match=message):
        session.run(scenario)


def test_methods_given_as_a_string_and_missing_checkpoints_are_refused(tmp_path):
    with pytest.raises(ScenarioError, match="expected methods to be a list"):
        Scenario("poisson", methods="ens")
    with pytest.raises(ScenarioError, match="no ci checkpoints of poisson: train them with `ens train"):
        WhatIf("ci", checkpoint_root=tmp_path).run(Scenario("poisson"))
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        WhatIf("huge")


def test_a_diverging_alpha_is_reported_in_the_result_not_raised(session):
    r = session.run(Scenario("poisson", alpha=4.0, steps=300, methods=("ens",)))
    row = r.summary.iloc[0]
    assert row.status == "diverged" and "alpha" in row.message


def test_the_canned_questions_are_answered_for_the_families_asked(session):
    table = answer(session, QUESTIONS[-2:], families=["helmholtz"])
    assert set(table.question) == {QUESTIONS[-2][0]}  # the last question is Poisson's
    assert table.rel_l2.notna().all() and (table.status == "ok").all()


# ---- the widget panel -------------------------------------------------------------------------
def test_the_panel_redraws_on_every_change_and_shows_the_right_numbers(session):
    pytest.importorskip("ipywidgets")
    from ens.whatif_panel import WhatIfPanel
    panel = WhatIfPanel(session, family="helmholtz", families=["helmholtz", "darcy", "nonlinear_helmholtz"])
    for box in ("tto", "gd"):
        panel.methods[box].value = False  # keep the test short
    assert "up to date" in panel.status.value and panel.fields_image.value[:4] == b"\x89PNG"
    before = (panel.fields_image.value, panel.table.value)
    panel.alpha.value = 0.35  # not on the validation grid (0.25, 0.5, 1), so a new ENS run
    assert panel.result.scenario.alpha == 0.35 and "up to date" in panel.status.value
    assert panel.result.scenario.params == ()  # the knobs at their training values (k, forcing_scale)
    assert (panel.fields_image.value, panel.table.value) != before
    ens = panel.result.summary.set_index("method").loc["ens"]
    assert f"{ens.rel_l2:.3g}" in panel.table.value  # the displayed number is the result's
    assert ens.rel_l2 == session.run(panel.scenario()).summary.set_index("method").loc["ens", "rel_l2"]
    # a family change shows that family's parameters and its validation alpha and T
    panel.family.value = "darcy"
    assert set(panel.knobs) == {"a_high", "forcing"}
    ck = session.checkpoints("darcy")["ens"]
    assert panel.alpha.value == ck.inference["alpha"] and panel.steps.value == ck.inference["steps"]
    assert panel.result.scenario.family == "darcy"
    panel.knobs["a_high"].value = 18.0
    assert dict(panel.result.scenario.params) == {"a_high": 18.0}
    # Newton applies to the nonlinear family, not once lam = 0 makes it linear
    panel.family.value = "nonlinear_helmholtz"
    assert not panel.methods["newton"].disabled
    panel.knobs["lam"].value = 0.0
    assert panel.methods["newton"].disabled and "newton" not in panel.result.methods
    # without auto-update a change marks the figures stale until Run
    panel.auto.value = False
    shown = panel.result
    panel.steps.value = 3
    assert panel.result is shown and "press <b>Run</b>" in panel.status.value
    panel.run_button.click()
    assert panel.result.scenario.steps == 3 and "up to date" in panel.status.value


def test_the_panel_says_why_a_scenario_cannot_run_and_shows_no_stale_figure(session):
    pytest.importorskip("ipywidgets")
    from ens.whatif_panel import WhatIfPanel
    panel = WhatIfPanel(session, family="poisson", families=["poisson"])
    assert panel.result is not None
    for box in panel.methods.values():
        box.value = False
    assert panel.result is None and panel.fields_image.value == b""
    assert "cannot run this scenario: expected at least one method" in panel.status.value
    assert "Traceback" not in panel.status.value
