"""Generalisation studies (ens.generalization): which sets each study runs, cross-equation and
super-resolution runs with the shipped ci checkpoints, the condition numbers of the test
operators against dense linear algebra, and the label-free alpha/T rules."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ens import theory
from ens.data import load_dataset
from ens.evaluate import STOP_LOWPASS, load_trained, select_stop_lowpass
from ens.experiments import TestSet, dataset_spec
from ens.generalization import (
    STUDIES,
    alpha_t_sensitivity,
    condition_numbers,
    run_study,
    sensitivity_study,
    shift_axes,
    shift_frame,
    study_settings,
)
from ens.pdes.darcy import fv_matrix
from ens.pdes.stencil import laplacian_matrix
from ens.solvers import ens_solve

BUDGET = {"n_samples": 4, "batch_size": 4, "gd_steps": 3, "gn_steps": 2, "cg_iterations": 3, "tto_steps": 2,
          "newton_steps": 2, "tto_lrs": (1e-4,), "n_select": 2, "n_superres": 2}


def test_study_settings():
    zs = study_settings("zero_shot")
    assert zs[:2] == [TestSet("poisson", "scale=100"), TestSet("poisson", "scale=200")]
    assert [t.setting for t in zs if t.family == "helmholtz"] == ["k=1", "k=2", "k=3", "k=4"]
    assert not any(t.family in ("kolmogorov", "nonlinear_helmholtz") for t in zs)  # no shifted sets
    assert not any(t.cross_equation for t in zs)
    cross = study_settings("cross_equation")
    assert cross == [TestSet("poisson", "k=1", "helmholtz"), TestSet("helmholtz", "scale=100", "poisson")]
    assert [t.stem for t in cross] == ["poisson_helmholtz--k=1", "helmholtz_poisson--scale=100"]  # file names
    assert str(cross[0]) == "poisson -> helmholtz / k=1" and str(zs[0]) == "poisson / scale=100"
    assert study_settings("cross_equation", ["poisson"]) == []  # a pair needs both families
    assert [t.family for t in study_settings("superres")] == ["poisson", "helmholtz", "nonlinear_helmholtz", "darcy",
                                                             "navier_stokes"]
    assert {TestSet(f, s) for _, f, s, _ in shift_axes()} == set(zs)  # every zero-shot set sits on a shift axis
    with pytest.raises(ValueError, match="unknown study"):
        study_settings("few_shot")
    with pytest.raises(ValueError, match="unknown family"):
        study_settings("superres", ["heat"])
    assert STUDIES == ("zero_shot", "cross_equation", "superres")


def test_cross_equation_runs_the_other_familys_model_on_the_test_equation(ci_root, tmp_path):
    traj, summ = run_study("cross_equation", "ci", tmp_path, ["poisson", "helmholtz"], budget=BUDGET,
                           data_root=ci_root)
    row = summ[(summ.family == "poisson") & (summ.method == "surrogate")].iloc[0]
    assert row.test_family == "helmholtz" and row.setting == "k=1" and row.study == "cross_equation"
    # the transferred surrogate's error is measured against the Helmholtz solutions
    spec = dataset_spec("ci", "helmholtz", "test", "k=1")
    c, u = load_dataset(spec, ci_root).tensors(0, BUDGET["n_samples"])
    sur = load_trained("ci", "poisson", "surrogate")
    with torch.no_grad():
        u0 = sur.model.predict(spec.pde(), c)
    want = float(((u0 - u).flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)).mean())
    assert row.rel_l2 == pytest.approx(want, rel=1e-5)
    # ENS is fed the Helmholtz residual: the same run by hand gives the same error
    ens = load_trained("ci", "poisson", "ens")
    tr = ens_solve(ens.model, spec.pde(), c, alpha=ens.inference["alpha"], steps=ens.inference["steps"], u_true=u)
    got = summ[(summ.family == "poisson") & (summ.method == "ens")].rel_l2.iloc[0]
    assert got == pytest.approx(float(tr.rel_error[-1].mean()), rel=1e-5)
    # the residual rule: its low-pass filter is chosen on the Poisson validation split, then it is
    # ens_solve's stop rule on the Helmholtz samples
    q, table = select_stop_lowpass(ens, "ci", BUDGET, data_root=ci_root)
    assert list(table.stop_lowpass) == list(STOP_LOWPASS) and q == table.sort_values("val_rel_l2").stop_lowpass.iloc[0]
    stop = ens_solve(ens.model, spec.pde(), c, alpha=ens.inference["alpha"], steps=ens.inference["max_steps"],
                     u_true=u, stop="residual", stop_lowpass=q)
    got = summ[(summ.family == "poisson") & (summ.method == "ens_residual")].rel_l2.iloc[0]
    assert got == pytest.approx(float(stop.rel_error[-1].mean()), rel=1e-5)
    assert traj[(traj.family == "poisson") & (traj.method == "ens_residual")].iteration.max() <= ens.inference["max_steps"]
    # resumable: the second call reads every method's cached run instead of running anything
    said = []
    again = run_study("cross_equation", "ci", tmp_path, ["poisson", "helmholtz"], budget=BUDGET,
                      data_root=ci_root, log=said.append)[1]
    pd.testing.assert_frame_equal(again.reset_index(drop=True), summ.reset_index(drop=True), check_dtype=False)
    assert said == [f"cross_equation: every method read from {tmp_path / 'cross_equation' / 'cache'}"]


def test_superres_runs_the_models_on_the_finer_grid(ci_root, tmp_path):
    traj, summ = run_study("superres", "ci", tmp_path, ["helmholtz"], budget=BUDGET, data_root=ci_root)
    assert set(summ.method) >= {"surrogate", "ens", "ens_residual", "gd", "gauss_newton", "tto", "reference"}
    assert (summ[summ.method == "reference"].rel_l2 < 1e-6).all()
    ens = summ[summ.method == "ens"].iloc[0]
    assert ens.rel_l2 < summ[summ.method == "surrogate"].rel_l2.iloc[0]  # the corrector still helps at 2S-1
    assert dataset_spec("ci", "helmholtz", "test", "superres").resolution == 63


def test_condition_numbers_match_dense_linear_algebra(ci_root):
    k = condition_numbers("ci", [TestSet("poisson", "scale=100"), TestSet("helmholtz", "k=4"),
                                 TestSet("navier_stokes", "nu=1e-3"), TestSet("poisson", "k=1", "helmholtz")])
    assert k.kappa.iloc[0] == pytest.approx(theory.condition_number(32, 0.0), rel=1e-12)
    assert k.kappa.iloc[1] == pytest.approx(theory.condition_number(32, 4.0), rel=1e-12)
    assert math.isnan(k.kappa.iloc[2])
    assert k.test_family.iloc[3] == "helmholtz" and k.kappa.iloc[3] == pytest.approx(theory.condition_number(32, 1.0))
    # Darcy and the nonlinear Jacobian come from sparse eigensolves: compare with dense cond()
    n = 2
    d = condition_numbers("ci", [TestSet("darcy", "contrast=8"), TestSet("nonlinear_helmholtz", "k=2_lam=-1")],
                          n_samples=n,
                          data_root=ci_root)
    c, _ = load_dataset(dataset_spec("ci", "darcy", "test", "contrast=8"), ci_root).tensors(0, n)
    dense = np.mean([np.linalg.cond(fv_matrix(c[i, 0].double().numpy()).toarray()) for i in range(n)])
    assert d.kappa.iloc[0] == pytest.approx(dense, rel=1e-6)
    spec = dataset_spec("ci", "nonlinear_helmholtz", "test", "k=2_lam=-1")
    _, u = load_dataset(spec, ci_root).tensors(0, n)
    pde = spec.pde()
    jac = [laplacian_matrix(32).toarray() + np.diag(pde.k ** 2 + 3 * pde.lam * u[i, 0, 1:-1, 1:-1].double().numpy().ravel() ** 2)
           for i in range(n)]
    assert d.kappa.iloc[1] == pytest.approx(np.mean([np.linalg.cond(j) for j in jac]), rel=1e-6)
    # the sparse Laplacian is the PDE's own operator: its eigenvalues are the closed-form ones
    ev = np.sort(np.linalg.eigvalsh(laplacian_matrix(12).toarray()))
    np.testing.assert_allclose(ev, np.sort(theory.helmholtz_spectrum(12, 0.0).flatten().numpy()), rtol=1e-10)


def test_alpha_t_rules(ci_root, tmp_path, monkeypatch):
    curves, row = alpha_t_sensitivity("ci", TestSet("helmholtz", "k=1"), n_samples=3, data_root=ci_root)
    ens = load_trained("ci", "helmholtz", "ens")
    assert set(curves.alpha) == {r["alpha"] for r in ens.inference["table"]}
    assert curves.iteration.max() == ens.inference["max_steps"]
    at = curves[(curves.alpha == row["validation_alpha"]) & (curves.iteration == row["validation_T"])].rel_l2
    assert row["validation_T"] == ens.inference["steps"] and float(at.iloc[0]) == row["validation_rel_l2"]
    # the oracle is the grid's minimum, so no rule beats it on its own grid
    assert row["oracle_rel_l2"] == pytest.approx(curves[curves.iteration > 0].rel_l2.min())
    assert row["oracle_rel_l2"] <= row["validation_rel_l2"]
    # the residual rule is ens_solve's stop rule on the same samples
    spec = dataset_spec("ci", "helmholtz", "test", "k=1")
    c, u = load_dataset(spec, ci_root).tensors(0, 3)
    stop = ens_solve(ens.model, spec.pde(), c, alpha=ens.inference["alpha"], steps=ens.inference["max_steps"],
                     u_true=u, stop="residual", stop_lowpass=row["residual_rule_lowpass"])
    assert row["residual_rule_lowpass"] == select_stop_lowpass(ens, "ci", data_root=ci_root)[0]
    assert row["residual_rule_rel_l2"] == pytest.approx(float(stop.rel_error[-1].mean()), rel=1e-6)
    # resumable per setting
    cv, ch = sensitivity_study("ci", [TestSet("helmholtz", "k=1")], tmp_path, n_samples=3, data_root=ci_root)
    import ens.generalization as gen

    def must_not_run(*args, **kwargs):
        raise AssertionError("the second call should read the tables back")
    monkeypatch.setattr(gen, "alpha_t_sensitivity", must_not_run)
    cv2, ch2 = sensitivity_study("ci", [TestSet("helmholtz", "k=1")], tmp_path, n_samples=3, data_root=ci_root)
    pd.testing.assert_frame_equal(ch, ch2)
    assert ch.validation_rel_l2.iloc[0] == pytest.approx(row["validation_rel_l2"])


def test_shift_frame_puts_each_set_on_its_axes():
    rows = [{"family": f, "test_family": f, "setting": s, "method": m, "rel_l2": 0.1}
            for _, f, s, _ in shift_axes() for m in ("ens", "surrogate")]
    frame = shift_frame(pd.DataFrame(rows).drop_duplicates())
    assert list(dict.fromkeys(frame.axis)) == list(dict.fromkeys(a for a, *_ in shift_axes()))
    darcy = frame[(frame.axis == "Darcy: forcing") & (frame.method == "ens")]
    assert list(darcy.value) == ["constant", "GRF"] and list(darcy.setting) == ["contrast=4", "forcing=grf"]


def test_the_notebook_tables_and_findings_come_from_the_summary():
    from ens.generalization import (
        advantage_rank_correlation,
        advantage_table,
        cross_equation_table,
        method_table,
        study_findings,
    )

    def rows(study, family, test_family, setting, errors, advantage=None):
        return [{"study": study, "family": family, "test_family": test_family, "setting": setting, "method": m,
                 "rel_l2": e, "ens_advantage": (advantage if m in ("ens", "ens_residual") else None)}
                for m, e in errors.items()]
    zs = pd.DataFrame(rows("zero_shot", "helmholtz", "helmholtz", "k=1", {"tto": 0.3, "ens": 0.1, "surrogate": 0.2,
                                                                          "surrogate_matched": 0.05}, 2.0)
                      + rows("zero_shot", "helmholtz", "helmholtz", "k=3", {"ens": 0.5, "surrogate": 0.4,
                                                                            "surrogate_matched": 0.6}, 0.8))
    table = method_table(zs)
    assert list(table.columns) == ["surrogate", "surrogate_matched", "ens", "tto"]  # the comparison's order, not the frame's
    assert table.loc["helmholtz / k=3", "ens"] == 0.5 and math.isnan(table.loc["helmholtz / k=3", "tto"])
    ce = pd.DataFrame(rows("cross_equation", "poisson", "helmholtz", "k=1", {"ens": 0.25, "surrogate": 0.3}, 1.2))
    cross = cross_equation_table(ce, zs)
    assert cross.loc["poisson -> helmholtz / k=1", "native ENS"] == 0.1  # the Helmholtz model on its own set
    lines = study_findings(pd.concat([zs, ce]))
    assert lines[0] == "zero_shot, ens: the most accurate learned/hybrid method in 1 of 2 sets; not in ['helmholtz / k=3']"
    assert lines[1] == ("zero_shot, ens: more accurate than the surrogate trained for ENS's training time in 1 of 2 "
                        "sets; not in ['helmholtz / k=1']")
    assert len(lines) == 3  # no matched rows in the cross-equation study: no such line for it
    adv = pd.DataFrame({"study": "zero_shot", "family": "helmholtz", "test_family": "helmholtz",
                        "setting": ["k=1", "k=2", "k=3", "k=4"], "resolution": 32, "method": "ens",
                        "kappa": [10.0, 20.0, 40.0, math.nan], "ens_advantage": [1.0, 2.0, 3.0, 4.0]})
    corr = advantage_rank_correlation(adv)
    assert corr.n_sets.tolist() == [3] and corr.spearman.iloc[0] == pytest.approx(1.0)
    assert advantage_table(adv).index.get_level_values("condition").tolist() == ["10", "20", "40", "—"]
