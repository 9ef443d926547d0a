"""The comparison figures of notebooks 03 and 04 on small synthetic tables: what they show (panels,
legend entries, clipped points), not how they look."""

import matplotlib

matplotlib.use("agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ens import plots  # noqa: E402


def _trajectories():
    rows = []
    for family, methods in (("poisson", ["surrogate", "ens", "gd"]), ("nonlinear_helmholtz", ["ens", "newton"])):
        for m in methods:
            for i in range(1 if m == "surrogate" else 3):
                rows.append({"family": family, "test_family": family, "setting": "s", "method": m, "iteration": i,
                             "rel_residual": 1 / (i + 1), "rel_l2": 0.1 / (i + 1),
                             "time_per_sample_s": 0.01 * (i + 1)})
    return pd.DataFrame(rows)


def test_comparison_panels_and_one_legend_of_every_method(tmp_path):
    fig = plots.plot_error_vs_time(_trajectories(), path=tmp_path / "f.png")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["poisson / s", "nonlinear_helmholtz / s"]
    # Newton only appears in the second panel and is still in the legend
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["surrogate", "ENS", "residual GD", "Newton"]
    assert (tmp_path / "f.png").stat().st_size > 0


def test_cross_equation_panels_name_both_families():
    df = _trajectories().assign(test_family=lambda d: d.family.where(d.family == "poisson", "helmholtz"))
    fig = plots.plot_error_vs_residual(df)
    assert "nonlinear_helmholtz -> helmholtz / s" in [ax.get_title() for ax in fig.axes]


def test_shift_figure_has_one_panel_per_axis_with_the_values_in_order():
    rows = [{"axis": a, "value": v, "method": m, "rel_l2": 0.1}
            for a, vals in (("k", ["1", "2", "3"]), ("forcing", ["constant", "GRF"])) for v in vals
            for m in ("ens", "reference")]
    fig = plots.plot_shift(pd.DataFrame(rows))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["k", "forcing"]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["1", "2", "3"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ENS"]  # the reference solver is left out


def test_advantage_figure_names_the_points_below_its_floor():
    df = pd.DataFrame({"family": ["helmholtz", "nonlinear_helmholtz", "navier_stokes"],
                       "test_family": ["helmholtz", "nonlinear_helmholtz", "navier_stokes"],
                       "setting": ["k=3", "superres", "nu=1e-4"], "method": "ens",
                       "kappa": [3e3, 7e3, float("nan")], "ens_advantage": [1.3, 1e-8, 0.01]})
    fig = plots.plot_advantage_vs_condition(df, floor=0.05)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == pytest.approx(0.05)
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["below the axis: nonlinear_helmholtz / superres"]  # NS has no kappa: not drawn, not named
