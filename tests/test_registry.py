"""A seventh family and a new method are each one declaration: registered at test time, they flow
through data generation and verification, training, the condition numbers, the evaluation tables,
the shift axes and the figures with no other edit."""

from dataclasses import dataclass

import matplotlib.pyplot as plt
import pytest
import torch

from ens import plots, report
from ens.data import generate, verify
from ens.evaluate import evaluate_profile
from ens.experiments import COMPUTE_RATIO, FamilySpec, Shift, TestSet, datasets, register_family, unregister_family
from ens.generalization import condition_numbers, shift_axes, shift_frame
from ens.methods import LABELS, METHODS, Method, methods_for, register_method, unregister_method
from ens.pdes import Poisson, get_pde
from ens.solvers import Recorder
from ens.train import KINDS, TrainConfig, train

TOY = "smooth_poisson"
BUDGET = {"n_samples": 4, "batch_size": 4, "gd_steps": 2, "gn_steps": 1, "cg_iterations": 2, "tto_steps": 1,
          "newton_steps": 1, "tto_lrs": (1e-4,), "n_select": 2}


@dataclass(frozen=True)
class SmoothPoisson(Poisson):
    """Poisson with a smoother forcing law: the GRF's decay exponent 4 instead of 2."""

    grf_alpha: float = 4.0
    name = "smooth_poisson"


def _zeros(ctx):
    """A toy baseline: the zero field, one recorded iterate."""
    rec = Recorder(ctx.pde, ctx.c, ctx.u)
    u = torch.zeros_like(ctx.u)
    rec.record(u, ctx.pde.residual(u, ctx.c, check=False), residual_evals=1)
    return rec.trajectory("zeros", u)


@pytest.fixture
def registered():
    register_family(FamilySpec(TOY, "elliptic", "scale=100", {"forcing_scale": 100.0},
                               (Shift("scale=300", {"forcing_scale": 300.0}, "smooth Poisson: scale", "300"),),
                               {"smooth Poisson: scale": "100"}), SmoothPoisson,
                    compute_ratio={"ci": COMPUTE_RATIO["ci"]["poisson"]})  # Poisson's models and sizes
    register_method(Method("zeros", "zero field", _zeros))
    yield
    unregister_method("zeros")
    unregister_family(TOY)


def test_a_registered_family_and_method_flow_through_everything(registered, tmp_path):
    specs = datasets("ci", TOY)
    assert [(s.split, s.setting) for s in specs] == [("train", "scale=100"), ("val", "scale=100"),
                                                     ("test", "scale=100"), ("test", "scale=300"),
                                                     ("test", "superres")]
    data, cks = tmp_path / "data", tmp_path / "ck"
    generate([s for s in specs if s.setting != "superres"], root=data, workers=1)
    assert all(r.ok for r in verify([s for s in specs if s.setting != "superres"], root=data))
    for kind in KINDS:
        train(TrainConfig.for_profile("ci", TOY, kind, epochs=1, n_select=4, max_steps=3), out_dir=cks,
              data_root=data, progress=False)
    assert "zeros" in METHODS and "zeros" in methods_for(TOY) and "newton" not in methods_for(TOY)
    settings = [TestSet(TOY, "scale=100"), TestSet(TOY, "scale=300")]
    traj, summary = evaluate_profile("ci", tmp_path / "eval", settings=settings, budget=BUDGET,
                                     checkpoint_root=cks, data_root=data)
    assert set(summary.method) == set(methods_for(TOY)) and set(summary.family) == {TOY}
    zero = summary[(summary.method == "zeros") & (summary.setting == "scale=100")].rel_l2.iloc[0]
    assert zero == pytest.approx(1.0)  # ||0 - u*|| / ||u*||
    kappa = condition_numbers("ci", settings, data_root=data).kappa
    assert kappa.iloc[0] == pytest.approx(condition_numbers("ci", [TestSet("poisson", "scale=100")]).kappa.iloc[0])
    assert [row[1:] for row in shift_axes() if row[1] == TOY] == [(TOY, "scale=100", "100"),
                                                                  (TOY, "scale=300", "300")]
    fig = plots.plot_error_vs_time(traj)
    labels = {t.get_text() for ax in fig.axes for t in (ax.get_legend().get_texts() if ax.get_legend() else [])}
    labels |= {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    assert "zero field" in labels
    plt.close(fig)
    frame = shift_frame(summary.assign(test_family=summary.family))
    assert set(frame.axis) == {"smooth Poisson: scale"} and set(frame.value) == {"100", "300"}
    plt.close(plots.plot_shift(frame))
    # the README's comparison table has a column for it
    table = report._comparison(summary.assign(ms_per_sample=1.0))
    header, _, *rows = table.splitlines()
    column = header.split(" | ").index("zero field")
    assert all(row.split(" | ")[column].startswith(report.sig2(1.0)) for row in rows)  # its error, 1


def test_the_method_views_follow_the_registry():
    assert "zeros" not in METHODS and "zeros" not in LABELS
    register_method(Method("zeros", "zero field", _zeros))
    try:
        assert METHODS[-1] == "zeros" and LABELS["zeros"] == "zero field" and "ens_residual" not in METHODS
    finally:
        unregister_method("zeros")
    assert "zeros" not in METHODS and "zeros" not in LABELS


def test_every_built_in_pde_family_has_one_experiment_spec_in_the_same_order():
    # the PDE layer (ens.pdes.FAMILIES: class and defaults) and the experiments layer
    # (FAMILY_SPECS: settings, shifts, sizes) each declare a family once; register_family adds both
    from ens.experiments import FAMILY_SPECS
    from ens.pdes import FAMILIES
    assert list(FAMILY_SPECS) == list(FAMILIES)
    for name, spec in FAMILY_SPECS.items():
        assert spec.name == name
        pde = get_pde(name, **spec.params)  # its training parameters are the class's fields
        assert all(getattr(pde, k) == v for k, v in spec.params.items())
