"""Generalisation studies (the paper's claim 6): zero-shot parameter shift, cross-equation
transfer and super-resolution, with every method of the residual-versus-accuracy comparison.

Studies (:func:`study_settings`), each a list of :class:`ens.experiments.TestSet`:

* ``zero_shot``: every family's shifted test sets (Helmholtz k = 2, 3, 4; Poisson forcing scale
  200; Darcy contrast 8 and GRF forcing; Navier--Stokes nu = 1e-4 and forcing 4 pi), next to the
  in-distribution test set they are shifted from (the reference point of each shift axis);
* ``cross_equation``: a model trained on one family run on another family's test set, fed that
  family's residual (``TestSet.test_family``, see :data:`ens.experiments.CROSS_EQUATION`);
  the hybrids start from the transferred surrogate's prediction;
* ``superres``: models trained at ``S`` run on the ``superres`` test sets (``2S - 1`` nodes for
  the elliptic families, ``2S`` for Navier--Stokes).

Choosing alpha and T without the test labels. The reference code hand-tunes ``alpha_test`` and
``T_test`` per shifted test set. Here two label-free rules are run on every set:

* ``ens`` (the *validation rule*): ``alpha`` and ``T`` chosen on the in-distribution validation
  split at training time (stored in the checkpoint), used unchanged on every shifted set;
* ``ens_residual`` (the *residual rule*): the validation ``alpha``, iterating up to the
  validation grid's ``max_steps`` and keeping, per sample, the iterate with the smallest
  low-pass filtered residual (:func:`ens.solvers.ens_solve` with ``stop="residual"``; the
  filter's fraction is chosen on validation data, :func:`ens.evaluate.select_stop_lowpass`).
  The plain residual norm is a poor signal: the grid-scale noise of a network's iterate
  dominates it and grows while ENS lowers the error.

:func:`alpha_t_sensitivity` shows how much either choice matters: the test error along the whole
``alpha x T`` grid, and the best point of that grid -- an *oracle* that looks at the test labels,
reported only as the ceiling that per-set hand tuning could reach, never as a result.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .checks import check_choice
from .data import file_status, generate, load_dataset
from .evaluate import (
    ENS_RESIDUAL,
    cached_choice,
    evaluate_runs,
    load_trained,
    run_key,
    select_stop_lowpass,
)
from .experiments import (
    CROSS_EQUATION,
    EVALUATION,
    FAMILY_SPECS,
    STUDIES,
    TestSet,
    dataset_spec,
    datasets,
    in_distribution_setting,
    setting_label,
    test_sets,
)
from .methods import METHOD_SPECS
from .paths import write_csv
from .pdes import FAMILIES
from .solvers import ens_solve
from .workers import map_jobs, run_threads

__all__ = ["STUDIES", "shift_axes", "study_settings", "run_study", "run_studies", "shift_frame", "condition_numbers",
           "alpha_t_sensitivity", "sensitivity_settings", "sensitivity_study", "advantage_vs_condition",
           "method_table", "cross_equation_table", "advantage_table", "advantage_rank_correlation", "study_findings"]

def shift_axes() -> list[tuple[str, str, str, str]]:
    """The zero-shot shift axes, ``(axis, family, setting, value)`` rows in family and axis order
    (:meth:`ens.experiments.FamilySpec.shift_axes`); the first row of each axis is the
    in-distribution setting."""
    return [row for spec in FAMILY_SPECS.values() for row in spec.shift_axes()]


def _test_sets(profile: str, family: str) -> list[str]:
    return [s.setting for s in datasets(profile, family, "test")]


def study_settings(study: str, families=None, profile: str = "ci") -> list[TestSet]:
    """The test sets of a study, restricted to ``families`` (default: all; a
    cross-equation pair needs both of its families). ``profile`` only decides which test sets
    exist (the same in every profile)."""
    check_choice("study", study, STUDIES)
    families = list(FAMILIES) if families is None else list(families)
    for f in families:
        check_choice("family", f, FAMILIES)
    if study == "zero_shot":
        out = []
        for f in families:
            shifted = [s for s in _test_sets(profile, f) if s not in (in_distribution_setting(f), "superres")]
            if shifted:
                out += [TestSet(f, in_distribution_setting(f))] + [TestSet(f, s) for s in shifted]
        return out
    if study == "cross_equation":
        return [t for t in CROSS_EQUATION if t.family in families and t.test_family in families]
    return [TestSet(f, "superres") for f in families if "superres" in _test_sets(profile, f)]


def run_study(study: str, profile: str, out_dir, families=None, *, budget: dict | None = None,
              checkpoint_root=None, data_root=None, device="cpu", cache_dir=None, workers: int = 1,
              progress: bool = False, log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every method of :mod:`ens.evaluate` plus the residual-rule ENS on every setting of
    ``study``; tables under ``<out_dir>/<study>/``, each method's run cached (and reused, also
    by notebook 03) under ``cache_dir`` (:func:`ens.evaluate.evaluate_profile`). The
    super-resolution sets use the first ``n_superres`` test samples (4x the cost per sample).
    Returns ``(trajectories, summary)`` with a ``study`` column."""
    return run_studies([study], profile, out_dir, families, budget=budget, checkpoint_root=checkpoint_root,
                       data_root=data_root, device=device, cache_dir=cache_dir, workers=workers,
                       progress=progress, log=log)[study]


def run_studies(studies, profile: str, out_dir, families=None, *, budget: dict | None = None,
                checkpoint_root=None, data_root=None, device="cpu", cache_dir=None, workers: int = 1,
                progress: bool = False, log=None) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """:func:`run_study` of several studies, their jobs in one pool (:func:`ens.evaluate.evaluate_runs`):
    ``{study: (trajectories, summary)}``."""
    runs = []
    for study in studies:
        check_choice("study", study, STUDIES)
        settings = study_settings(study, families, profile)
        if not settings:
            raise ValueError(f"study {study!r} has no setting for families {families}")
        b = dict(budget or {})
        if study == "superres":
            b.setdefault("n_samples", (budget or {}).get("n_superres", EVALUATION[profile]["n_superres"]))
        runs.append({"out_dir": Path(out_dir) / study, "settings": settings, "extra_methods": (ENS_RESIDUAL,),
                     "budget": b})
    results = evaluate_runs(profile, runs, checkpoint_root=checkpoint_root, data_root=data_root, device=device,
                            cache_dir=cache_dir, workers=workers, progress=progress, log=log)
    return {study: (traj.assign(study=study), summ.assign(study=study))
            for study, (traj, summ) in zip(studies, results)}


def shift_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The zero-shot summary rows on their shift axes (:func:`shift_axes`): one row per (axis,
    value, method) with ``rel_l2``; an in-distribution setting appears on every axis it starts."""
    axes = pd.DataFrame(shift_axes(), columns=["axis", "family", "setting", "value"])
    axes["order"] = range(len(axes))
    rows = summary[summary.family == summary.test_family].astype({"setting": str})
    return axes.merge(rows, on=["family", "setting"]).sort_values(["order", "method"]).drop(columns="order")


# ---- condition numbers of the test operators -----------------------------------------------------
def condition_numbers(profile: str, settings, n_samples: int = 4, data_root=None) -> pd.DataFrame:
    """Condition number of each :class:`~ens.experiments.TestSet`'s (linearised) operator at its
    resolution: the PDE's
    :meth:`~ens.pdes.PDE.condition_number` on the first ``n_samples`` test samples (closed form
    for Poisson and Helmholtz, sparse eigenvalue solves for Darcy and nonlinear Helmholtz, ``NaN``
    for the flows)."""
    rows = []
    for test in test_sets(settings):
        spec = test.spec(profile)
        pde, S = spec.pde(), spec.resolution
        samples = load_dataset(spec, data_root, True).tensors(0, n_samples) if pde.condition_number_needs_samples else ()
        kappa = pde.condition_number(S, *samples)
        rows.append({"family": test.family, "test_family": test.test_family, "setting": test.setting,
                     "resolution": S,
                     "kappa": kappa})
    return pd.DataFrame(rows)


def advantage_vs_condition(summary: pd.DataFrame, kappas: pd.DataFrame) -> pd.DataFrame:
    """ENS's advantage (best other learned-or-hybrid method's error / ENS's) next to the
    condition number of each setting's operator, one row per ENS rule (``method``: ``ens``,
    the validation rule; ``ens_residual``, the residual rule) and setting."""
    ens = summary[summary.method.isin(["ens", ENS_RESIDUAL])].astype({"setting": str})
    cols = ["study", "family", "test_family", "setting", "method", "rel_l2", "ens_advantage"]
    return ens[[c for c in cols if c in ens.columns]].merge(
        kappas.astype({"setting": str}).drop_duplicates(["family", "test_family", "setting"]),
        on=["family", "test_family", "setting"])


# ---- sensitivity to alpha and T ------------------------------------------------------------------
def alpha_t_sensitivity(profile: str, test: TestSet, *, n_samples: int | None = None,
                        stop_lowpass: float | None = None, checkpoint_root=None, data_root=None,
                        device="cpu") -> tuple[pd.DataFrame, dict]:
    """ENS's test error along its whole validation grid (every ``alpha`` of the stored selection
    table, ``T = 0 .. max_steps``) on the first ``n_samples`` test samples of a setting.

    Returns the tidy curves (``alpha, iteration, rel_l2, rel_residual, status``) and one row of
    the three choices on these samples: the validation rule, the residual rule (its filter
    ``stop_lowpass`` chosen on validation data when not given) and the oracle (the grid's best
    point, which reads the test labels)."""
    ens = load_trained(profile, test.family, "ens", checkpoint_root)
    spec = test.spec(profile)
    n = n_samples or EVALUATION[profile]["n_sensitivity"]
    c, u = load_dataset(spec, data_root, True).tensors(0, n)
    c, u, pde, model = c.to(device), u.to(device), spec.pde(), ens.model.to(device)
    info = ens.inference
    alphas = sorted({row["alpha"] for row in info["table"]} | {info["alpha"]})
    labels = {"family": test.family, "test_family": test.test_family, "setting": test.setting}
    curves = []
    for a in alphas:
        tr = ens_solve(model, pde, c, alpha=a, steps=info["max_steps"], u_true=u, on_divergence="stop")
        curves.append(pd.DataFrame({**labels, "alpha": a, "iteration": range(tr.iterations + 1),
                                    "rel_l2": tr.rel_error.mean(1).numpy(),
                                    "rel_residual": tr.rel_residual.mean(1).numpy(), "status": tr.status}))
    curves = pd.concat(curves, ignore_index=True)
    if stop_lowpass is None:
        stop_lowpass, _ = select_stop_lowpass(ens, profile, data_root=data_root, device=device)
    stop = ens_solve(model, pde, c, alpha=info["alpha"], steps=info["max_steps"], u_true=u, stop="residual",
                     stop_lowpass=stop_lowpass, on_divergence="stop")
    at_val = curves[(curves.alpha == info["alpha"]) & (curves.iteration <= info["steps"])].iloc[-1]
    best = curves[curves.iteration > 0].sort_values("rel_l2").iloc[0]
    row = {**labels, "n_samples": len(c), "start_rel_l2": float(curves.rel_l2.iloc[0]),
           "validation_alpha": info["alpha"], "validation_T": int(at_val.iteration),
           "validation_rel_l2": float(at_val.rel_l2), "residual_rule_lowpass": stop_lowpass,
           "residual_rule_steps": stop.iterations,
           "residual_rule_rel_l2": float(stop.rel_error[-1].mean()), "oracle_alpha": float(best.alpha),
           "oracle_T": int(best.iteration), "oracle_rel_l2": float(best.rel_l2)}
    return curves, row


def _sensitivity_job(job: dict) -> None:
    cv, row = alpha_t_sensitivity(job["profile"], job["test"], n_samples=job["n_samples"],
                                  stop_lowpass=job["stop_lowpass"], checkpoint_root=job["checkpoint_root"],
                                  data_root=job["data_root"], device=job["device"])
    write_csv(cv, job["paths"][0])
    write_csv(pd.DataFrame([row]), job["paths"][1])


def sensitivity_settings(settings) -> list[TestSet]:
    """The test sets of ``settings`` that the alpha/T sensitivity study runs on: every
    shifted and cross-equation set, not the in-distribution sets (where alpha and T were chosen)."""
    return [t for t in test_sets(settings) if t.cross_equation or t.setting != in_distribution_setting(t.family)]


def sensitivity_study(profile: str, settings, out_dir, *, n_samples: int | None = None, checkpoint_root=None,
                      data_root=None, device="cpu", cache_dir=None, workers: int = 1,
                      progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`alpha_t_sensitivity` on every test set of ``settings``; per-setting tables under
    ``<out_dir>/sensitivity/``, named by their :func:`ens.evaluate.run_key` (a table is reused
    only while code, checkpoints, data and budget are unchanged), and the choices of every
    setting in ``<out_dir>/sensitivity/choices.csv``. The residual rule's filter comes from
    :func:`ens.evaluate.cached_choice` (shared with :func:`run_study` through ``cache_dir``,
    default ``<out_dir>/cache``); ``workers`` and ``progress`` as for
    :func:`ens.evaluate.evaluate_profile`. Returns ``(curves, choices)``."""
    out = Path(out_dir) / "sensitivity"
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else Path(out_dir) / "cache"
    threads = run_threads(workers)
    kw = {"checkpoint_root": checkpoint_root, "data_root": data_root, "device": device}
    settings = test_sets(settings)
    # missing test and validation sets are generated first (in parallel), before their checksums enter the keys
    specs = {t.spec(profile) for t in settings}
    specs |= {dataset_spec(profile, t.family, "val", in_distribution_setting(t.family)) for t in settings}
    generate([sp for sp in sorted(specs, key=lambda sp: sp.path) if file_status(sp, data_root) == "missing"],
             root=data_root, workers=workers)
    paths, jobs = [], []
    for test in settings:
        key = run_key(profile, test, "alpha_t_sensitivity",
                      budget={"n_sensitivity": n_samples} if n_samples else None, threads=threads, **kw)
        path = out / f"{test.stem}_{key}.csv"
        paths.append((path, path.with_suffix(".choice.csv")))
        if not (path.exists() and paths[-1][1].exists()):
            jobs.append({"profile": profile, "test": test, "n_samples": n_samples,
                         "paths": paths[-1], **kw})
    lowpass = {family: cached_choice(select_stop_lowpass, profile, family, cache, threads=threads, **kw)[0]
               for family in sorted({job["test"].family for job in jobs})}
    for job in jobs:
        job["stop_lowpass"] = lowpass[job["test"].family]
    map_jobs(_sensitivity_job, jobs, workers=workers, threads=threads, progress=progress, desc="alpha/T sensitivity")
    curves = pd.concat([pd.read_csv(p) for p, _ in paths], ignore_index=True)
    choices = pd.concat([pd.read_csv(r) for _, r in paths], ignore_index=True)
    write_csv(choices, out / "choices.csv")
    return curves, choices


# ---- the notebook's tables and findings ----------------------------------------------------------
def method_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Final rel L2 per test set (rows, :func:`ens.experiments.setting_label`) and method
    (columns, in the comparison's order of :data:`ens.methods.METHOD_SPECS`)."""
    t = summary.assign(setting=setting_label(summary))
    cols = [m for m in METHOD_SPECS if m in set(t.method)]
    return t.pivot_table(index="setting", columns="method", values="rel_l2", sort=False)[cols]


def cross_equation_table(cross: pd.DataFrame, zero_shot: pd.DataFrame) -> pd.DataFrame:
    """:func:`method_table` of the cross-equation study with a ``native ENS`` column: the error of
    the ENS trained on the test equation itself, on the same test set (from the zero-shot study;
    NaN where that set is not in it)."""
    table = method_table(cross)
    own = zero_shot[(zero_shot.method == "ens") & (zero_shot.family == zero_shot.test_family)]
    own = own.astype({"setting": str}).set_index(["test_family", "setting"]).rel_l2
    pairs = cross.drop_duplicates(["family", "test_family", "setting"])
    table["native ENS"] = pd.Series([own.get((r.test_family, str(r.setting))) for r in pairs.itertuples()],
                                    index=setting_label(pairs).values)
    return table


def advantage_table(adv: pd.DataFrame) -> pd.DataFrame:
    """ENS's advantage (:func:`advantage_vs_condition`) per (study, test set, resolution, condition
    number) and ENS rule; the condition number as text, ``—`` where it is not defined."""
    adv = adv.assign(label=setting_label(adv), condition=adv.kappa.map(lambda k: f"{k:.3g}" if k == k else "—"))
    return adv.pivot_table(index=["study", "label", "resolution", "condition"], columns="method",
                           values="ens_advantage", sort=False)


def advantage_rank_correlation(adv: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation of ENS's advantage with the condition number, per ENS rule, over
    the test sets where the condition number is defined (NaN with fewer than three)."""
    rows = []
    for rule, g in adv.dropna(subset=["kappa"]).groupby("method", sort=False):
        rho = g[["kappa", "ens_advantage"]].corr(method="spearman").iloc[0, 1] if len(g) > 2 else math.nan
        rows.append({"method": rule, "n_sets": len(g), "spearman": float(rho)})
    return pd.DataFrame(rows, columns=["method", "n_sets", "spearman"])


def study_findings(summary: pd.DataFrame, choices: pd.DataFrame | None = None) -> list[str]:
    """The statements notebook 04 closes with, computed from its tables: per study and ENS rule, in
    how many test sets ENS is the most accurate learned or hybrid method (and where not), and more
    accurate than the surrogate trained for its training time (where that row ran); with the
    sensitivity ``choices``, how the residual and validation rules compare with the oracle."""
    lines = []
    summary = summary.assign(setting=lambda d: setting_label(d))
    matched = summary[summary.method == "surrogate_matched"].set_index(["study", "family", "test_family", "setting"])
    for (study, rule), g in summary[summary.method.isin(["ens", ENS_RESIDUAL, "ens_plus"])].groupby(["study", "method"],
                                                                                        sort=False):
        wins, losses = g[g.ens_advantage > 1].setting.tolist(), g[g.ens_advantage <= 1].setting.tolist()
        lines.append(f"{study}, {rule}: the most accurate learned/hybrid method in {len(wins)} of {len(g)} sets"
                     + (f"; not in {losses}" if losses else ""))
        keys = list(zip(g.study, g.family, g.test_family, g.setting))
        if keys and all(k in matched.index for k in keys):
            behind = [k[3] for k, e in zip(keys, g.rel_l2) if not e < matched.rel_l2.loc[k]]
            lines.append(f"{study}, {rule}: more accurate than the surrogate trained for ENS's training time in "
                         f"{len(keys) - len(behind)} of {len(keys)} sets" + (f"; not in {behind}" if behind else ""))
    if choices is not None and len(choices):
        better = int((choices.residual_rule_rel_l2 < choices.validation_rel_l2).sum())
        gap = float((choices.validation_rel_l2 / choices.oracle_rel_l2).max())
        lines.append(f"residual rule better than the validation rule on {better} of {len(choices)} sets; the "
                     f"validation rule is at most {gap:.2f}x the oracle's error")
    return lines
