"""The residual-versus-accuracy harness (ens.evaluate): every method on a test set, fair starts,
summary and equal-time tables. Uses the shipped ci checkpoints and ci data in a temporary root."""

import math

import pytest
import torch
from helpers import torch_threads

from ens.evaluate import (
    METHODS,
    equal_time_table,
    front_table,
    load_trained,
    methods_for,
    require_shipped,
    run_setting,
    select_ens_plus,
    select_tto,
    shipped_families,
    summary_table,
)
from ens.experiments import EVALUATION, TestSet

BUDGET = {"n_samples": 4, "batch_size": 2, "gd_steps": 5, "gn_steps": 2, "cg_iterations": 4, "tto_steps": 3,
          "newton_steps": 3, "tto_lrs": (1e-4, 1e-3), "n_select": 2}


@pytest.fixture(scope="module")
def trajectories(ci_root):
    return run_setting("ci", TestSet("helmholtz", "k=4"), budget=BUDGET, data_root=ci_root)


def test_methods_per_family():
    assert "newton" in methods_for("nonlinear_helmholtz")
    assert "newton" not in methods_for("helmholtz") and "newton" not in methods_for("navier_stokes")
    assert set(methods_for("nonlinear_helmholtz")) == set(METHODS)


def test_every_method_runs_on_the_same_samples_with_consistent_fields(trajectories):
    assert [t.method for t in trajectories] == methods_for("helmholtz")
    for t in trajectories:
        assert t.rel_error.shape[1] == BUDGET["n_samples"] and t.u.shape[0] == BUDGET["n_samples"]
        assert bool(torch.isfinite(t.rel_error).all()) and bool((t.wall_time[1:] >= t.wall_time[:-1]).all())
        assert t.info["setting"] == "k=4" and t.info["family"] == "helmholtz"
    by = {t.method: t for t in trajectories}
    # the reference solver reproduces the stored data to their float32 storage precision
    assert float(by["reference"].rel_error.max()) < 1e-6
    # the hybrids start from the surrogate's prediction, whose cost is in their wall time
    for m in ("gd", "gauss_newton", "tto"):
        assert torch.allclose(by[m].rel_error[0], by["surrogate"].rel_error[0], rtol=1e-5)
        assert float(by[m].wall_time[0]) > 0
    assert by["gd"].iterations == BUDGET["gd_steps"] and 1 <= by["tto"].iterations <= BUDGET["tto_steps"]


def test_summary_reports_the_ens_advantage_over_the_best_competitor(trajectories):
    df = summary_table(trajectories)
    assert list(df.method) == methods_for("helmholtz")
    ens = df[df.method == "ens"].iloc[0]
    others = df[~df.method.isin(["ens", "reference"])].rel_l2
    assert ens.ens_advantage == pytest.approx(others.min() / ens.rel_l2)
    # ENS's own rows (ENS, ENS+) are each compared with the others; the rest have no advantage entry
    plus = df[df.method == "ens_plus"].iloc[0]
    assert plus.ens_advantage == pytest.approx(others[df.method != "ens_plus"].min() / plus.rel_l2)
    assert df[~df.method.isin(["ens", "ens_plus"])].ens_advantage.isna().all()
    assert (df.ms_per_sample > 0).all()


def test_equal_time_table_takes_the_last_iterate_within_each_budget(trajectories):
    import pandas as pd
    frame = pd.concat([t.frame(family="helmholtz", setting="k=4") for t in trajectories], ignore_index=True)
    ens_ms = 1e3 * frame[frame.method == "ens"].time_per_sample_s.iloc[-1]
    df = equal_time_table(frame, factors=(1, 100))
    assert set(df.budget) == {"1x ENS", "100x ENS"} and len(df) == 2 * len(trajectories)
    for row in df.itertuples():
        d = frame[frame.method == row.method]
        within = d[1e3 * d.time_per_sample_s <= row.budget_ms * (1 + 1e-9)]
        if len(within):
            assert row.iteration == within.iteration.max()
            assert row.rel_l2 == pytest.approx(float(within.rel_l2.iloc[-1]))
        else:
            assert math.isnan(row.rel_l2)
    ens_row = df[(df.method == "ens") & (df.budget == "1x ENS")].iloc[0]
    assert ens_row.budget_ms == pytest.approx(ens_ms) and ens_row.iteration == next(t for t in trajectories if t.method == "ens").iterations
    with pytest.raises(ValueError, match="no ENS rows"):
        equal_time_table(frame[frame.method != "ens"])


def test_front_table_reads_the_final_points_against_every_other_iterate():
    import pandas as pd

    def curve(method, points):
        return [{"family": "f", "setting": "s", "method": method, "iteration": i, "time_per_sample_s": t,
                 "rel_l2": e} for i, (t, e) in enumerate(points)]
    # ens ends at (1, 0.1); gn passes below it only later; ens_plus continues ens to (3, 0.01);
    # the surrogate ends at (0.1, 0.5); the reference solver is faster and exact but no competitor
    frame = pd.DataFrame(curve("ens", [(0.1, 0.6), (1.0, 0.1)]) + curve("gn", [(0.1, 0.5), (2.0, 0.05), (4.0, 0.001)])
                         + curve("ens_plus", [(0.1, 0.6), (1.0, 0.1), (3.0, 0.01)]) + curve("surrogate", [(0.1, 0.5)])
                         + curve("reference", [(0.01, 0.0)]))
    t = front_table(frame).set_index("method")
    assert set(t.index) == {"ens", "gn", "ens_plus", "surrogate"}
    assert t.on_front.to_dict() == {"ens": True, "gn": True, "ens_plus": True, "surrogate": True}
    assert t.loc["ens", "equal_time_ratio"] == pytest.approx(5.0)       # gn's 0.5 within 1 s, over 0.1
    assert t.loc["ens_plus", "equal_time_ratio"] == pytest.approx(5.0)  # gn's 0.05 within 3 s, over 0.01
    assert t.loc["gn", "equal_time_ratio"] == pytest.approx(0.5 / 0.001)
    # gn ending at (2, 0.05) instead is dominated by nothing; ens_plus at (3, 0.2) is dominated by gn
    worse = frame.copy()
    worse.loc[(worse.method == "ens_plus") & (worse.iteration == 2), "rel_l2"] = 0.2
    t = front_table(worse).set_index("method")
    assert not t.loc["ens_plus", "on_front"] and t.loc["ens_plus", "dominated_by"] == "gn"
    assert t.loc["ens_plus", "equal_time_ratio"] == pytest.approx(0.25)
    alone = front_table(frame[frame.method == "ens"]).iloc[0]
    assert alone.on_front and math.isnan(alone.equal_time_ratio)
    with pytest.raises(ValueError, match="missing \\['rel_l2'\\]"):
        front_table(frame.drop(columns="rel_l2"))


def test_tto_learning_rate_and_steps_are_chosen_on_validation_data(ci_root):
    sur = load_trained("ci", "helmholtz", "surrogate")
    choice, table = select_tto(sur, "ci", BUDGET, ci_root)
    assert choice["lr"] in BUDGET["tto_lrs"] and list(dict.fromkeys(table.lr)) == list(BUDGET["tto_lrs"])
    assert set(table.iteration) == set(range(BUDGET["tto_steps"] + 1))
    # the best (lr, step >= 1) of the validation table, and the test run stops there
    tried = table[table.iteration > 0]
    best = tried.set_index(["lr", "iteration"]).val_rel_l2
    assert best[(choice["lr"], choice["steps"])] == tried.val_rel_l2.min()
    spec_trs = run_setting("ci", TestSet("helmholtz", "k=1"), ["tto"], budget=BUDGET, data_root=ci_root, tto=choice)
    assert spec_trs[0].iterations == choice["steps"]


def test_ens_plus_is_the_shortest_validation_candidate_within_the_tolerance_of_the_best(ci_root):
    ens = load_trained("ci", "nonlinear_helmholtz", "ens")
    choice, table = select_ens_plus(ens, "ci", BUDGET, ci_root)
    # both starts, both refiners (Newton: a nonlinear family), every prefix of each refiner's run
    assert set(table.start) == {"steps", "residual"} and set(table.refine) == {"gauss_newton", "newton"}
    gn = table[(table.start == "steps") & (table.refine == "gauss_newton")]
    assert list(gn.refine_steps) == list(range(BUDGET["gn_steps"] + 1))
    assert table.chosen.sum() == 1
    near = table[table.val_rel_l2 <= EVALUATION["ci"]["ens_plus_tolerance"] * table.val_rel_l2.min()]
    pick = table[table.chosen].iloc[0]
    assert pick.iterations == near.iterations.min()
    assert pick.val_rel_l2 == near[near.iterations == pick.iterations].val_rel_l2.min()
    # ENS's steps come first: the ENS row's start takes T of them before the refiner's
    steps = table[table.start == "steps"]
    assert (steps.iterations == ens.inference["steps"] + steps.refine_steps).all()
    assert choice == {"start": pick.start, "refine": pick.refine, "refine_steps": pick.refine_steps,
                      "stop_lowpass": choice["stop_lowpass"]}
    assert (choice["stop_lowpass"] is None) == (choice["start"] == "steps")
    # the test run follows the choice: ENS's steps, then the chosen refiner's
    (tr,) = run_setting("ci", TestSet("nonlinear_helmholtz", "k=2_lam=-1"), ["ens_plus"], budget=BUDGET,
                        data_root=ci_root, ens_plus=choice)
    assert tr.iterations == tr.info["first_iterations"] + choice["refine_steps"]
    assert ("cg_iterations" in tr.info["second"]) == (choice["refine"] == "gauss_newton")
    assert tr.info["ens_plus"] == choice
    # a linear family has no Newton candidate
    _, linear = select_ens_plus(load_trained("ci", "poisson", "ens"), "ci", BUDGET, ci_root)
    assert set(linear.refine) == {"gauss_newton"}


def test_bad_arguments_are_refused(ci_root):
    with pytest.raises(ValueError, match="unknown method 'adam'"):
        run_setting("ci", TestSet("helmholtz", "k=1"), ["adam"], budget=BUDGET, data_root=ci_root)
    with pytest.raises(ValueError, match="unknown budget entries"):
        run_setting("ci", TestSet("helmholtz", "k=1"), budget={"gd_iters": 3}, data_root=ci_root)
    with pytest.raises(ValueError, match="unknown setting"):
        run_setting("ci", TestSet("helmholtz", "k=9"), budget=BUDGET, data_root=ci_root)
    with pytest.raises(TypeError, match="expected ens.experiments.TestSet entries"):
        run_setting("ci", "helmholtz", budget=BUDGET, data_root=ci_root)
    with pytest.raises(ValueError, match="unknown test family 'heat'"):
        TestSet("helmholtz", "k=1", test_family="heat")


def test_shipped_families_lists_what_is_trained(tmp_path):
    assert shipped_families("ci") == (["poisson", "helmholtz", "nonlinear_helmholtz", "darcy", "navier_stokes",
                                       "kolmogorov"], [])  # the committed ci checkpoints
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "darcy_ens.pt").write_bytes(b"")  # the surrogate is missing: not usable
    assert shipped_families("ci", ["darcy", "poisson"], root=tmp_path) == ([], ["darcy", "poisson"])
    with pytest.raises(ValueError, match="unknown family"):
        shipped_families("ci", ["stokes"])
    said = []
    assert require_shipped("ci", ["darcy", "poisson"], log=said.append) == ["darcy", "poisson"]
    assert not said
    with pytest.raises(FileNotFoundError, match="ens train --profile ci --all"):
        require_shipped("ci", ["darcy"], root=tmp_path, log=said.append)
    assert "no shipped ci checkpoints for ['darcy']" in said[0] and "ens train --profile ci --family F" in said[0]


def test_evaluate_profile_in_worker_processes_matches_a_serial_run_and_caches_by_content(ci_root, tmp_path):
    from ens.evaluate import evaluate_profile
    settings = [TestSet("helmholtz", "k=4")]
    with torch_threads(1):  # the workers' thread count, so that the two runs compute the same thing
        _, serial = evaluate_profile("ci", tmp_path / "serial", settings=settings, budget=BUDGET, data_root=ci_root)
    _, parallel = evaluate_profile("ci", tmp_path / "parallel", settings=settings, budget=BUDGET, data_root=ci_root,
                                   workers=2)
    cols = ["method", "rel_l2", "rel_residual", "iterations", "status"]
    assert serial[cols].equals(parallel[cols]), "a worker process computed other numbers than a serial run"
    # the cache is keyed by content: the same budget is read back, another one is rerun
    said = []
    evaluate_profile("ci", tmp_path / "parallel", settings=settings, budget=BUDGET, data_root=ci_root, workers=2,
                     log=said.append)
    assert said == ["parallel: every method read from " + str(tmp_path / "parallel" / "cache")]
    said.clear()
    _, more = evaluate_profile("ci", tmp_path / "parallel", settings=settings, budget={**BUDGET, "gd_steps": 7},
                               data_root=ci_root, workers=2, log=said.append)
    # only the method whose budget changed is rerun
    assert len(said) == 1 and said[0].startswith("helmholtz -> helmholtz/k=4 gd:")
    assert int(more.set_index("method").iterations["gd"]) == 7


def test_the_cache_key_digest_follows_the_computing_code_not_the_presentation(tmp_path):
    import shutil
    from pathlib import Path

    import ens
    from ens.evaluate import PRESENTATION, source_digest
    pkg = tmp_path / "ens"
    shutil.copytree(Path(ens.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = source_digest(pkg)
    assert all((pkg / name).exists() for name in PRESENTATION)  # no stale name in the list
    (pkg / "plots.py").write_text((pkg / "plots.py").read_text() + "\n# a figure changed\n")
    assert source_digest(pkg) == before
    (pkg / "solvers" / "ens.py").write_text((pkg / "solvers" / "ens.py").read_text() + "\n# a solver changed\n")
    assert source_digest(pkg) != before
