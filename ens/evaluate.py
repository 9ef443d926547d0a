"""Evaluation of trained solvers: per-iterate errors on a split, training histories, and the
residual-versus-accuracy comparison of every method on the test settings of a profile.

Tables are tidy (long format): one row per (family, setting, method, iteration) or per
(model, epoch), ready for seaborn. Only validation data are used to *choose* anything (ENS's
alpha and T at training time, the test-time optimisation's learning rate and steps and the residual stop
rule's filter here); test sets are
evaluated with the choices already made.

Fair timing (:func:`run_setting`): every method runs on the same device, batch and dtype
(float32, like the networks), after a warm-up run on one sample; CUDA is synchronised before
every clock reading and the metrics are kept out of the clock (:class:`ens.solvers.Recorder`).
The wall time is the whole method's: ENS includes its predictor, the hybrids include the
network prediction they start from (the surrogate's ``G0``) and every residual and Jacobian
product. The reference numerical solver (DST, Newton, preconditioned CG, pseudo-spectral; float64
on the CPU, as the data were made) is a row of every table: what a user would run instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path

import pandas as pd
import torch

from .checks import check_choice, check_int
from .data import file_status, generate, load_dataset, read_manifest, sha256sum
from .experiments import (
    BUDGET_STUDY,
    EVALUATION,
    ILL_CONDITIONED,
    TestSet,
    dataset_spec,
    in_distribution_setting,
    test_sets,
)
from .methods import ENS_RESIDUAL, METHOD_SPECS, METHODS, RunContext, method_spec, methods_for
from .models import Checkpoint
from .paths import data_root as _data_root
from .paths import write_csv
from .solvers import (
    Trajectory,
    ens_solve,
    test_time_optimisation,
)
from .train import KINDS, checkpoint_path, evaluate_split, load_trained
from .workers import map_jobs, run_threads

__all__ = ["load_trained", "history_frame", "iterate_loss_frame", "iterate_errors", "ens_vs_surrogate",
           "METHODS", "methods_for", "select_tto", "select_ens_plus", "run_setting", "summary_table", "equal_time_table", "front_table", "budget_study",
           "comparison_settings", "evaluate_profile", "shipped_families", "require_shipped", "ENS_RESIDUAL",
           "STOP_LOWPASS", "select_stop_lowpass", "SELECTIONS", "run_key", "cached_choice", "evaluate_runs",
           "tto_selection", "ens_plus_selection"]

# The methods themselves (names, labels, runners, budgets) are declared in ens.methods. The extra
# row ENS_RESIDUAL is ENS with the label-free residual stop rule instead of the validation T
# (alpha from validation, at most the validation grid's ``max_steps``, the monitored residual
# low-pass filtered with the fraction chosen on validation; see :func:`ens.solvers.ens_solve`).
#: candidate low-pass fractions of the residual stop rule (1: the plain residual norm)
STOP_LOWPASS = (1.0, 0.5, 0.25, 0.125)
#: the rows of ENS's own corrector, each compared with the other learned and hybrid methods
_ENS_ROWS = ("ens", "ens_plus", ENS_RESIDUAL)


def shipped_families(profile: str, families=None, root=None) -> tuple[list[str], list[str]]:
    """``(available, missing)``: the families (default: all) whose checkpoints of every kind
    (:data:`ens.train.KINDS`) exist at ``profile``, and the others (train them with ``ens train``)."""
    from .pdes import FAMILIES
    families = list(FAMILIES) if families is None else list(families)
    for f in families:
        check_choice("family", f, FAMILIES)
    have = [f for f in families if all(checkpoint_path(profile, f, k, root).exists() for k in KINDS)]
    return have, [f for f in families if f not in have]


def require_shipped(profile: str, families=None, root=None, log=print) -> list[str]:
    """The families of :func:`shipped_families`; the missing ones are named through ``log`` with
    the command that trains them, and ``FileNotFoundError`` is raised if none is there."""
    have, missing = shipped_families(profile, families, root)
    if missing:
        log(f"no shipped {profile} checkpoints for {missing} (train them with `ens train --profile {profile} "
            f"--family F`); using {have}")
    if not have:
        raise FileNotFoundError(f"no {profile} checkpoints: run `ens train --profile {profile} --all`")
    return have


def history_frame(ck: Checkpoint) -> pd.DataFrame:
    """Per-epoch training loss, validation rel L2 and wall time of a checkpoint."""
    return pd.DataFrame([{"family": ck.family, "model": ck.kind, "epoch": h["epoch"], "train_loss": h["train_loss"],
                          "val_rel_l2": h["val_rel_l2"], "wall_time_s": h["wall_time_s"]} for h in ck.history])


def iterate_loss_frame(ck: Checkpoint) -> pd.DataFrame:
    """Training MSE of every unrolled iterate per epoch (ENS: iterates 0..T_train)."""
    return pd.DataFrame([{"family": ck.family, "model": ck.kind, "epoch": h["epoch"], "iterate": t, "train_mse": v}
                         for h in ck.history for t, v in enumerate(h["train_mse_per_iterate"])])


def iterate_errors(ck: Checkpoint, split: str = "val", setting: str | None = None, steps: int | None = None,
                   alpha: float | None = None, profile: str | None = None, data_root=None,
                   generate_missing: bool = True, device="cpu") -> pd.DataFrame:
    """Mean relative L2 error and residual of every iterate of ``ck`` on a split, long format.

    ENS runs ``steps`` iterations (default: its chosen ``T_test``) with ``alpha`` (default: its
    chosen ``alpha_test``); a surrogate gives iteration 0 only. ``profile`` defaults to the
    checkpoint's training profile.
    """
    profile = profile or ck.config["profile"]
    spec = dataset_spec(profile, ck.family, split, setting or in_distribution_setting(ck.family))
    c, u = load_dataset(spec, data_root, generate_missing).tensors()
    model = ck.model.to(device)
    is_ens = ck.kind == "ens"
    steps = (steps if steps is not None else ck.inference["steps"]) if is_ens else 0
    alpha = (alpha if alpha is not None else ck.inference["alpha"]) if is_ens else None
    with torch.no_grad():
        ev = evaluate_split(model, spec.pde(), c.to(device), u.to(device), alpha=alpha, steps=steps)
    return pd.DataFrame({"family": ck.family, "method": ck.kind, "split": split, "setting": spec.setting,
                         "iteration": range(ev["rel_error"].shape[0]),
                         "rel_l2": ev["rel_error"].mean(1).numpy(),
                         "rel_residual": ev["rel_residual"].mean(1).numpy(), "n_samples": len(c)})


def ens_vs_surrogate(frames: pd.DataFrame) -> pd.DataFrame:
    """Summary per family from :func:`iterate_errors` frames: the surrogate's rel L2, ENS's at
    iteration 0 and at its last one, the ratio surrogate / ENS (> 1: ENS is more accurate), and
    both methods' final relative residuals; where the frames hold the compute-matched surrogate
    (method ``surrogate_matched``), its rel L2, residual and ratio over ENS too."""
    rows = []
    for family, df in frames.groupby("family", sort=False):
        sur = df[df.method == "surrogate"]
        ens = df[df.method == "ens"].sort_values("iteration")
        if sur.empty or ens.empty:
            raise ValueError(f"{family}: need both a surrogate and an ENS frame")
        rows.append({"family": family, "surrogate_rel_l2": float(sur.rel_l2.iloc[0]),
                     "ens_u0_rel_l2": float(ens.rel_l2.iloc[0]), "ens_rel_l2": float(ens.rel_l2.iloc[-1]),
                     "ens_steps": int(ens.iteration.iloc[-1]),
                     "surrogate_over_ens": float(sur.rel_l2.iloc[0] / ens.rel_l2.iloc[-1]),
                     "surrogate_rel_residual": float(sur.rel_residual.iloc[0]),
                     "ens_rel_residual": float(ens.rel_residual.iloc[-1])})
        matched = df[df.method == "surrogate_matched"]
        if not matched.empty:
            rows[-1].update(matched_rel_l2=float(matched.rel_l2.iloc[0]),
                            matched_over_ens=float(matched.rel_l2.iloc[0] / ens.rel_l2.iloc[-1]),
                            matched_rel_residual=float(matched.rel_residual.iloc[0]))
    return pd.DataFrame(rows)


# ---- the residual-versus-accuracy comparison -----------------------------------------------------
def _budget(profile: str, budget: dict | None) -> dict:
    check_choice("profile", profile, EVALUATION)
    out = {**EVALUATION[profile], **(budget or {})}
    unknown = sorted(set(out) - set(EVALUATION[profile]))
    if unknown:
        raise ValueError(f"unknown budget entries {unknown}; expected some of {sorted(EVALUATION[profile])}")
    return out


#: early stopping of the test-time optimisation's candidates in :func:`select_tto` (steps)
TTO_PATIENCE = 20


def select_tto(sur: Checkpoint, profile: str, budget: dict | None = None, data_root=None,
               device="cpu") -> tuple[dict, pd.DataFrame]:
    """The test-time optimisation's learning rate *and* number of Adam steps, chosen together on
    ``n_select`` validation samples (never the test split), as ENS's ``alpha`` and ``T`` are.

    Every candidate of ``tto_lrs`` runs ``tto_steps`` steps; the choice is the ``(lr, steps)``
    with the lowest mean validation error over steps ``1 .. tto_steps`` (early stopping: on these
    problems the error of the fine-tuned predictor rises after a few steps while its residual keeps
    falling, and a fixed long run would report that rise, not the method at its best). A candidate
    stops early once its error has stayed above its best for :data:`TTO_PATIENCE` steps and is
    more than 1.5x it (a later, lower minimum would have to undo that rise; on the ``default``
    tables of every family this keeps the same choice and skips about three quarters of the
    elliptic candidates' steps, whose error rises from the first steps on). Returns
    ``({"lr": lr, "steps": steps}, table)`` with the tidy per-step table (``lr, iteration,
    val_rel_l2, val_rel_residual, status``)."""
    b = _budget(profile, budget)
    spec = dataset_spec(profile, sur.family, "val", in_distribution_setting(sur.family))
    c, u = load_dataset(spec, data_root, True).tensors(0, b["n_select"])
    c, u, pde = c.to(device), u.to(device), spec.pde()
    frames = []
    for lr in b["tto_lrs"]:
        tr = test_time_optimisation(sur.model.to(device), pde, c, steps=b["tto_steps"], lr=lr, u_true=u,
                                    on_divergence="stop", patience=TTO_PATIENCE)
        frames.append(pd.DataFrame({"lr": lr, "iteration": range(tr.iterations + 1),
                                    "val_rel_l2": tr.rel_error.mean(1).numpy(),
                                    "val_rel_residual": tr.rel_residual.mean(1).numpy(), "status": tr.status}))
    table = pd.concat(frames, ignore_index=True)
    finite = table[(table.iteration > 0) & table.val_rel_l2.apply(math.isfinite)]
    if finite.empty:
        raise ValueError(f"{sur.family}: every test-time optimisation candidate diverged at its first step "
                         f"(lrs {list(b['tto_lrs'])}); add a smaller lr to the budget's tto_lrs")
    best = finite.sort_values(["val_rel_l2", "iteration"]).iloc[0]
    return {"lr": float(best.lr), "steps": int(best.iteration)}, table


def select_stop_lowpass(ens: Checkpoint, profile: str, budget: dict | None = None, data_root=None,
                        device="cpu") -> tuple[float, pd.DataFrame]:
    """The residual stop rule's low-pass fraction (:data:`STOP_LOWPASS`) with the lowest error on
    the first ``n_sensitivity`` in-distribution validation samples, at the validation ``alpha``
    and up to ``max_steps``; and the table of candidates (never the test split)."""
    b = _budget(profile, budget)
    spec = dataset_spec(profile, ens.family, "val", in_distribution_setting(ens.family))
    c, u = load_dataset(spec, data_root, True).tensors(0, b["n_sensitivity"])
    c, u, pde = c.to(device), u.to(device), spec.pde()
    rows = []
    for q in STOP_LOWPASS:
        tr = ens_solve(ens.model.to(device), pde, c, alpha=ens.inference["alpha"], steps=ens.inference["max_steps"],
                       u_true=u, stop="residual", stop_lowpass=q, on_divergence="stop")
        rows.append({"stop_lowpass": q, "val_rel_l2": float(tr.rel_error[-1].mean()), "steps": tr.iterations})
    table = pd.DataFrame(rows)
    return float(table.sort_values("val_rel_l2").stop_lowpass.iloc[0]), table


def select_ens_plus(ens: Checkpoint, profile: str, budget: dict | None = None, data_root=None,
                    device="cpu") -> tuple[dict, pd.DataFrame]:
    """ENS+'s start, refiner and number of refiner steps (:func:`ens.solvers.ens_plus`), chosen on
    the first ``n_sensitivity`` in-distribution validation samples (never the test split).

    Candidates: ENS's part is the ENS row (``start="steps"``, the checkpoint's alpha and T) or the
    residual stop rule (``"residual"``, its filter from :func:`select_stop_lowpass`); the refiner is
    Gauss--Newton with the budget's ``gn_steps`` x ``cg_iterations`` or, on a nonlinear family
    with Newton, Newton with ``newton_steps``. Every prefix of a refiner's run is a candidate
    (0 steps: ENS alone). Each is run once untimed on one sample, then timed on the batch. The
    choice is the candidate with the fewest iterations (ENS's steps taken plus the refiner's; the
    lower validation error breaks a tie) whose mean validation error is within the budget's
    ``ens_plus_tolerance`` (1.1 in every profile) of the lowest: the refiners' later steps buy
    little (on the elliptic families the first Gauss--Newton step removes most of what twenty
    do), and 16 validation samples do not tell candidates that close apart. An iteration count,
    unlike a measured time, is the same on every machine, so the seed fixes the choice (choosing
    by wall time picked a different Kolmogorov ENS+ on a machine of another CPU type). Returns
    ``({"start", "stop_lowpass", "refine", "refine_steps"}, table)`` with one row per candidate
    (``start, refine, refine_steps, iterations, val_rel_l2, ms_per_sample, chosen``)."""
    from .methods import ens_start
    from .solvers import ens_plus
    b = _budget(profile, budget)
    spec = dataset_spec(profile, ens.family, "val", in_distribution_setting(ens.family))
    c, u = load_dataset(spec, data_root, True).tensors(0, b["n_sensitivity"])
    c, u, pde = c.to(device), u.to(device), spec.pde()
    model, inf = ens.model.to(device), ens.inference
    q, _ = select_stop_lowpass(ens, profile, budget, data_root, device)
    refiners = {"gauss_newton": b["gn_steps"]}
    if pde.supports_newton and not pde.linear:
        refiners["newton"] = b["newton_steps"]
    rows = []
    for start in ("steps", "residual"):
        first = ens_start(inf, start, q)
        for refine, n in refiners.items():
            common = {**first, "refine": refine, "on_divergence": "stop"}
            ens_plus(model, pde, c[:1], refine_steps=1, cg_iterations=2, **common)  # warm-up
            tr = ens_plus(model, pde, c, refine_steps=n, cg_iterations=b["cg_iterations"], u_true=u, **common)
            if tr.status == "diverged" and "first_iterations" not in tr.info:
                continue  # ENS's part diverged: no candidate from this start
            k0 = tr.info["first_iterations"]
            for k in range(tr.iterations - k0 + 1):
                rows.append({"start": start, "refine": refine, "refine_steps": k, "iterations": k0 + k,
                             "val_rel_l2": float(tr.rel_error[k0 + k].mean()),
                             "ms_per_sample": float(tr.wall_time[k0 + k]) / tr.batch_size * 1e3})
    table = pd.DataFrame(rows)
    finite = table[table.val_rel_l2.apply(math.isfinite)] if rows else table
    if finite.empty:
        raise ValueError(f"{ens.family}: ENS diverged on the validation samples with alpha={inf['alpha']:g}; "
                         "retrain or choose the checkpoint's alpha and T again")
    near = finite[finite.val_rel_l2 <= b["ens_plus_tolerance"] * finite.val_rel_l2.min()]
    best = near.sort_values(["iterations", "val_rel_l2"]).iloc[0]
    table["chosen"] = table.index == best.name
    return {"start": best.start, "stop_lowpass": q if best.start == "residual" else None, "refine": best.refine,
            "refine_steps": int(best.refine_steps)}, table


def run_setting(profile: str, test: TestSet, methods=None, *, budget: dict | None = None,
                checkpoint_root=None, data_root=None, device="cpu", tto: dict | None = None,
                stop_lowpass: float | None = None, ens_plus: dict | None = None, log=None) -> list[Trajectory]:
    """Run every method on the :class:`~ens.experiments.TestSet` ``test`` of ``profile`` and return
    their trajectories.

    ENS and the surrogate come from the shipped checkpoints of ``test.family`` (the model's
    family; a cross-equation test runs them on ``test.test_family``'s set). The batches are the
    first ``n_samples`` test samples, in ``batch_size`` chunks whose trajectories are concatenated (wall times add up). ``tto`` (the
    test-time optimisation's ``{"lr", "steps"}``), ``stop_lowpass`` (the residual stop rule's
    filter) and ``ens_plus`` (ENS+'s start, refiner and steps) are chosen on validation data when
    not given (:func:`select_tto`, :func:`select_stop_lowpass`, :func:`select_ens_plus`).
    """
    b = _budget(profile, budget)
    (test,) = test_sets([test])
    family, test_family, test_setting = test.family, test.test_family, test.setting
    spec = test.spec(profile)
    methods = list(methods or methods_for(test_family))
    specs = [method_spec(m) for m in methods]
    # the checkpoints the rows read, and the ones their validation choices are made for
    kinds = {k for m in specs for k in m.models}
    kinds |= {k for m in specs if m.choice for k in _run_models(SELECTIONS[m.choice].__name__)}
    models = {k: load_trained(profile, family, k, checkpoint_root) for k in KINDS if k in kinds}
    for ck in models.values():
        ck.model.to(device)
    if any(m.choice == "tto" for m in specs) and tto is None:
        tto, _ = select_tto(models["surrogate"], profile, b, data_root, device)
    if any(m.choice == "stop_lowpass" for m in specs) and stop_lowpass is None:
        stop_lowpass, _ = select_stop_lowpass(models["ens"], profile, b, data_root, device)
    if any(m.choice == "ens_plus" for m in specs) and ens_plus is None:
        ens_plus, _ = select_ens_plus(models["ens"], profile, b, data_root, device)
    c_all, u_all = load_dataset(spec, data_root, True).tensors(0, b["n_samples"])
    pde = spec.pde()
    out = []
    def context(lo, hi, budget):
        return RunContext(pde, c_all[lo:hi].to(device), u_all[lo:hi].to(device), models, budget, tto,
                          stop_lowpass or 1.0, ens_plus)

    for spec_m in specs:
        method = spec_m.name
        spec_m.run(context(0, 1, {**b, **spec_m.warmup}))  # warm-up
        tr = _concat([spec_m.run(context(i, i + b["batch_size"], b)) for i in range(0, len(c_all), b["batch_size"])])
        tr.info.update(family=family, test_family=test_family, setting=test_setting,
                       tto=tto if method == "tto" else None,
                       stop_lowpass=stop_lowpass if method == ENS_RESIDUAL else None,
                       ens_plus=ens_plus if method == "ens_plus" else None)
        if log:
            log(f"{family} -> {test_family}/{test_setting} {method}: rel L2 {float(tr.rel_error[-1].mean()):.3g}, "
                f"{float(tr.wall_time[-1]) / tr.batch_size * 1e3:.2f} ms/sample ({tr.status})")
        out.append(tr)
    return out


def _concat(parts: list[Trajectory]) -> Trajectory:
    """One trajectory from batches run one after another: per-sample metrics side by side (a
    batch that stopped early repeats its last value), wall times and counts added."""
    n = max(p.iterations for p in parts) + 1

    def pad(x):
        return torch.cat([x, x[-1:].expand(n - len(x), *x.shape[1:])]) if len(x) < n else x
    first = parts[0]
    return Trajectory(first.method, torch.cat([p.u for p in parts]),
                      torch.cat([pad(p.rel_residual) for p in parts], 1),
                      sum(pad(p.wall_time) for p in parts), sum(pad(p.residual_evals) for p in parts),
                      sum(pad(p.jacobian_evals) for p in parts),
                      torch.cat([pad(p.rel_error) for p in parts], 1) if first.rel_error is not None else None,
                      None, next((p.status for p in parts if p.status != "ok"), "ok"),
                      "; ".join(p.message for p in parts if p.message), dict(first.info))


def summary_table(trajectories: list[Trajectory]) -> pd.DataFrame:
    """Final relative L2 and residual, time per sample and status of every trajectory, and per
    (family, setting) ENS's advantage: the best other learned-or-hybrid method's error over ENS's
    (> 1: ENS is the more accurate), on the ENS rows (``ens``, ``ens_plus`` and, if run, ``ens_residual``). The
    reference solver is listed but not a competitor."""
    return with_advantage(_summary_rows(trajectories))


def _summary_rows(trajectories: list[Trajectory]) -> pd.DataFrame:
    return pd.DataFrame([{"family": t.info.get("family"), "test_family": t.info.get("test_family"),
                          "setting": t.info.get("setting"), "method": t.method, "rel_l2": float(t.rel_error[-1].mean()),
                          "rel_residual": float(t.rel_residual[-1].mean()), "iterations": t.iterations,
                          "ms_per_sample": float(t.wall_time[-1]) / t.batch_size * 1e3, "status": t.status}
                         for t in trajectories])


def with_advantage(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (summary rows) with the column ``ens_advantage`` (re)computed, see :func:`summary_table`."""
    best_other = {key: g[~g.method.isin(_ENS_ROWS + ("reference",))].rel_l2.min()
                  for key, g in df.groupby(["family", "test_family", "setting"], sort=False)}
    adv = [float(best_other[(r.family, r.test_family, r.setting)] / r.rel_l2)
           if r.method in _ENS_ROWS and pd.notna(best_other[(r.family, r.test_family, r.setting)]) else None
           for r in df.itertuples()]
    return df.assign(ens_advantage=adv)


def budget_study(profile: str, work_dir, family: str | None = None, *, budgets=None, data_root=None,
                 device="cpu", log=None, progress: bool | None = None) -> pd.DataFrame:
    """The training-budget study (:data:`ens.experiments.BUDGET_STUDY` gives the defaults of
    ``family`` and ``budgets`` per profile). For each budget ``B`` (in ENS epochs):
    ENS and the surrogate trained for ``B`` epochs and the compute-matched surrogate for
    ``round(B * ratio)`` (:func:`ens.train.matched_epochs`), all else the profile's training
    configuration; each is evaluated on the whole validation split and on the family's test sets of
    the comparison (:func:`comparison_settings`: in distribution and the ill-conditioned shifts; ENS
    with the alpha and T it chose on validation data).

    Runs are kept under ``work_dir/b<B>/`` (resumed if interrupted, reused once finished, as
    :func:`ens.train.train` does); where a run's configuration is that of the shipped checkpoint of
    its kind, the shipped one is read instead. Returns one row per (budget, model, split,
    setting): ``budget, model, epochs, train_min, split, setting, rel_l2`` (the final estimate's
    mean relative L2) and ``shipped``."""
    from .models import load_checkpoint
    from .train import TrainConfig, train
    check_choice("profile", profile, BUDGET_STUDY)
    spec = BUDGET_STUDY[profile]
    family = family or spec["family"]
    budgets = tuple(spec["budgets"] if budgets is None else budgets)
    if not budgets:
        raise ValueError("expected at least one budget (ENS epochs), got none")
    for b in budgets:
        check_int(b, "budget (ENS epochs)")
    sets = [("val", in_distribution_setting(family))] + [("test", t.setting) for t in comparison_settings([family])]
    rows = []
    for b in budgets:
        for kind in KINDS:
            config = TrainConfig.for_profile(profile, family, kind, epochs=b)
            shipped = checkpoint_path(profile, family, kind)
            ck = load_trained(profile, family, kind) if shipped.exists() else None
            reuse = ck is not None and ck.raw.get("config") == config.to_dict()
            if not reuse:
                path = train(config, out_dir=Path(work_dir) / f"b{b}", data_root=data_root, device=device, log=log,
                             progress=progress)
                ck = load_checkpoint(path, family=family, kind=kind, profile=profile)
            for split, setting in sets:
                err = iterate_errors(ck, split, setting, data_root=data_root, device=device)
                rows.append({"budget": b, "model": kind, "epochs": ck.raw["training"]["epochs"],
                             "train_min": ck.raw["training"]["wall_time_s"] / 60, "split": split, "setting": setting,
                             "rel_l2": float(err.rel_l2.iloc[-1]), "shipped": reuse})
    return pd.DataFrame(rows)


def _check_curves(frame: pd.DataFrame, caller: str) -> None:
    """``ValueError`` unless ``frame`` has the tidy trajectory columns the time tables read."""
    cols = ["family", "setting", "method", "iteration", "time_per_sample_s", "rel_l2"]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{caller}: expected columns {cols}, missing {missing}")


def equal_time_table(frame: pd.DataFrame, factors=(1, 10, 100)) -> pd.DataFrame:
    """Each method's error at equal wall-time budgets per sample, from tidy trajectory rows
    (``Trajectory.frame``): per (family, setting) the budgets are ENS's own time per sample times
    ``factors``; a method's entry is its last iterate within the budget (``NaN`` if not even its
    first one is)."""
    _check_curves(frame, "equal_time_table")
    rows = []
    for (family, setting), df in frame.groupby(["family", "setting"], sort=False):
        ens = df[df.method == "ens"].sort_values("iteration")
        if ens.empty:
            raise ValueError(f"{family} / {setting}: no ENS rows to set the time budgets")
        base = float(ens.time_per_sample_s.iloc[-1])
        for factor in factors:
            for method, d in df.groupby("method", sort=False):
                within = d[d.time_per_sample_s <= factor * base * (1 + 1e-9)].sort_values("iteration")
                rows.append({"family": family, "setting": setting, "budget": f"{factor:g}x ENS",
                             "budget_ms": 1e3 * factor * base, "method": method,
                             "rel_l2": float(within.rel_l2.iloc[-1]) if len(within) else float("nan"),
                             "iteration": int(within.iteration.iloc[-1]) if len(within) else None})
    return pd.DataFrame(rows)


def front_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The error-versus-time front, from tidy trajectory rows (``Trajectory.frame``): per (family,
    setting) and method (the reference solver is not a competitor, as in :func:`summary_table`), its
    final point (``ms`` per sample, ``rel_l2``); ``on_front``: no other method has an iterate with
    at most that time and a lower error; ``dominated_by``: the other method with the lowest error
    within that time, where it is lower; and ``equal_time_ratio``: the lowest error that any method
    outside ENS's own rows reaches within that time, over this method's (``> 1``: more accurate
    than all of them at its own wall time; ``NaN`` where none of them has finished its first
    iterate by then)."""
    _check_curves(frame, "front_table")
    rows = []
    frame = frame[frame.method != "reference"].dropna(subset=["rel_l2", "time_per_sample_s"])
    for (family, setting), df in frame.groupby(["family", "setting"], sort=False):
        for method, d in df.groupby("method", sort=False):
            last = d.sort_values("iteration").iloc[-1]
            t, e = float(last.time_per_sample_s), float(last.rel_l2)
            within = df[(df.method != method) & (df.time_per_sample_s <= t * (1 + 1e-9))]
            best = within.loc[within.rel_l2.idxmin()] if len(within) else None
            outside = within[~within.method.isin(_ENS_ROWS)]
            rows.append({"family": family, "setting": setting, "method": method, "ms": 1e3 * t, "rel_l2": e,
                         "on_front": best is None or not float(best.rel_l2) < e,
                         "dominated_by": best.method if best is not None and float(best.rel_l2) < e else None,
                         "equal_time_ratio": float(outside.rel_l2.min()) / e if len(outside) else float("nan")})
    return pd.DataFrame(rows)


def comparison_settings(families=None) -> list[TestSet]:
    """The test sets of the residual-versus-accuracy experiment: every family's in-distribution
    test set, then the ill-conditioned shifts (``ens.experiments.ILL_CONDITIONED``)."""
    from .pdes import FAMILIES
    families = list(FAMILIES) if families is None else list(families)
    for f in families:
        check_choice("family", f, FAMILIES)
    return [TestSet(f, in_distribution_setting(f)) for f in families] + [t for t in ILL_CONDITIONED
                                                                         if t.family in families]


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """:func:`source_digest` of the installed ``ens`` package (part of every cache key; read once
    per process)."""
    return source_digest(Path(__file__).resolve().parent)


#: the package's modules that present results and never compute a run's numbers: left out of the
#: cache keys, so that a figure or a table layout can change without recomputing every run
PRESENTATION = ("plots.py", "report.py", "notebook.py", "whatif_panel.py", "cli.py", "__main__.py")


def source_digest(pkg: Path) -> str:
    """sha256 of the source files of the package folder ``pkg``, :data:`PRESENTATION` left out."""
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg).as_posix()
        if rel not in PRESENTATION:
            h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def run_key(profile: str, test: TestSet, method: str, *, budget: dict | None = None,
            checkpoint_root=None, data_root=None, device="cpu", threads: int | None = None) -> str:
    """Content key of one method's run on one test setting: a digest of everything its numbers
    depend on -- the package source, torch version and threads, device, profile, budget, the
    checkpoints' and the test file's sha256, the test spec and the method. Two runs with the same
    key compute the same thing, so :func:`evaluate_profile` reuses a cached one; any change to
    code, checkpoints, data or budget gives a new key (a stale result is never reused).
    ``threads`` is the torch thread count of the run (default: this process's). The checkpoints are
    the ones the method reads (:attr:`ens.methods.Method.models`; a validation choice: the model it
    is made for; an unknown run: ENS and the surrogate)."""
    b = _budget(profile, budget)
    b = {k: b[k] for k in (_budget_keys(method) or tuple(b))}  # unknown runs: the whole budget
    spec = test.spec(profile)
    entry = read_manifest(_data_root(data_root) / profile)["files"].get(spec.path, {})
    parts = {"code": _code_digest(), "torch": str(torch.__version__), "threads": threads or torch.get_num_threads(),
             "device": str(torch.device(device)), "profile": profile, "model_family": test.family,
             "test": spec.to_dict(), "data_sha256": entry.get("sha256"), "method": method,
             "budget": {k: list(v) if isinstance(v, tuple) else v for k, v in b.items()},
             "checkpoints": [sha256sum(checkpoint_path(profile, test.family, k, checkpoint_root))
                             for k in _run_models(method)]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _run_models(run: str) -> tuple[str, ...]:
    """The checkpoint kinds a run's result depends on (see :func:`run_key`)."""
    if run in METHOD_SPECS:
        return METHOD_SPECS[run].models
    return {"select_tto": ("surrogate",), "select_stop_lowpass": ("ens",),
            "select_ens_plus": ("ens",)}.get(run, ("ens", "surrogate"))


_SAMPLES = ("n_samples", "batch_size")
#: the budget entries each run depends on (the others stay out of its key): a method on a test set
#: depends on the test samples and batches plus its own iterations (and the validation choice it
#: uses); a validation choice only on its own entries
_BUDGET_KEYS = {"select_tto": ("tto_steps", "tto_lrs", "n_select"), "select_stop_lowpass": ("n_sensitivity",),
                "select_ens_plus": ("n_sensitivity", "gn_steps", "cg_iterations", "newton_steps", "ens_plus_tolerance"),
                "alpha_t_sensitivity": ("n_sensitivity",)}


def _budget_keys(run: str) -> tuple[str, ...] | None:
    """The budget entries a run's result depends on (``None``: unknown, the whole budget)."""
    if run in METHOD_SPECS:
        return _SAMPLES + METHOD_SPECS[run].budget
    return _BUDGET_KEYS.get(run)


def cached_choice(select, profile: str, family: str, cache_dir, *, budget: dict | None = None, checkpoint_root=None,
                  data_root=None, device="cpu", threads: int | None = None) -> tuple[object, pd.DataFrame]:
    """``select(...)`` (a function of :data:`SELECTIONS`, on validation data) for
    the model family: ``(choice, table)``, read from ``cache_dir`` when its :func:`run_key` is
    unchanged, else computed and stored there."""
    if select not in SELECTIONS.values():
        raise ValueError(f"expected one of {[f.__name__ for f in SELECTIONS.values()]}, got {select!r}")
    key = run_key(profile, TestSet(family, in_distribution_setting(family)), select.__name__, budget=budget,
                  checkpoint_root=checkpoint_root, data_root=data_root, device=device, threads=threads)
    path = Path(cache_dir) / f"{family}_{select.__name__}_{key}.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return stored["value"], pd.DataFrame(stored["table"])
    (kind,) = _run_models(select.__name__)
    value, table = select(load_trained(profile, family, kind, checkpoint_root), profile, budget, data_root, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"value": value, "table": table.to_dict("records")}))
    os.replace(tmp, path)
    return value, table


def tto_selection(profile: str, families, cache_dir, *, workers: int = 1, **kwargs) -> pd.DataFrame:
    """The test-time optimisation's validation curves of every family (:func:`select_tto`'s
    tables, through :func:`cached_choice`, as :func:`evaluate_profile` with ``workers`` chose
    them), with the chosen ``lr`` and ``steps`` per family."""
    frames = []
    for family in families:
        choice, table = cached_choice(select_tto, profile, family, cache_dir, threads=run_threads(workers), **kwargs)
        frames.append(table.assign(family=family, chosen_lr=choice["lr"], chosen_steps=choice["steps"]))
    return pd.concat(frames, ignore_index=True)


def ens_plus_selection(profile: str, families, cache_dir, *, workers: int = 1, **kwargs) -> pd.DataFrame:
    """ENS+'s validation candidates of every family (:func:`select_ens_plus`'s tables, through
    :func:`cached_choice`, as :func:`evaluate_profile` with ``workers`` chose them), with a
    ``family`` column; the ``chosen`` row of each family is its choice."""
    return pd.concat([cached_choice(select_ens_plus, profile, family, cache_dir, threads=run_threads(workers),
                                    **kwargs)[1].assign(family=family) for family in families], ignore_index=True)


def _method_job(job: dict) -> None:
    """One method on one setting (a :func:`ens.workers.map_jobs` job): run and write its cache files."""
    test, method, paths = job["test"], job["method"], job["paths"]
    (t,) = run_setting(job["profile"], test, [method], budget=job["budget"],
                       checkpoint_root=job["checkpoint_root"], data_root=job["data_root"], device=job["device"],
                       tto=job["tto"], stop_lowpass=job["stop_lowpass"], ens_plus=job["ens_plus"], log=job["log"])
    write_csv(t.frame(family=test.family, test_family=test.test_family, setting=test.setting), paths[0])
    write_csv(_summary_rows([t]), paths[1])


def _evaluation_job(job: dict):
    """A validation choice (a job with ``select``) or one method on one setting (:func:`_method_job`)."""
    if "select" in job:
        return cached_choice(job["select"], job["profile"], job["family"], job["cache"], **job["key_args"])[0]
    return _method_job(job)


#: validation choice (``Method.choice``) -> the function that makes it
SELECTIONS = {"tto": select_tto, "stop_lowpass": select_stop_lowpass, "ens_plus": select_ens_plus}


def evaluate_profile(profile: str, out_dir, families=None, settings=None, *, extra_methods=(),
                     budget: dict | None = None, checkpoint_root=None, data_root=None, device="cpu",
                     cache_dir=None, workers: int = 1, progress: bool = False,
                     log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every method on every :class:`~ens.experiments.TestSet` of ``settings`` (default
    :func:`comparison_settings`) and write ``<out_dir>/trajectories/<stem>.csv`` (tidy, per iterate,
    named by :attr:`~ens.experiments.TestSet.stem`) and
    ``<out_dir>/summary.csv``.

    Every setting runs :func:`methods_for` its test family plus ``extra_methods`` (e.g.
    ``(ENS_RESIDUAL,)``), each through :func:`run_setting`. Each method's result on each setting
    is cached under ``cache_dir`` (default ``<out_dir>/cache``) by its :func:`run_key`: a result
    whose code, checkpoints, data, budget, device and threads are unchanged is read back instead
    of rerun, so an interrupted evaluation resumes, and notebooks that share settings (03 and 04)
    compute each only once. Files are written to a temporary name and renamed. The test-time
    optimisation's learning rate and steps (and the residual stop rule's filter) are chosen once
    per model family on validation data (:func:`cached_choice`) and reused by its settings.

    ``workers > 1`` runs the (method, setting) jobs in that many processes with one torch thread
    each (:func:`ens.workers.map_jobs`; the longest first); ``workers = 1`` runs them here with
    this process's threads. Either way every method runs alone in its process, timed as in
    :func:`run_setting`. ``progress`` shows a ``tqdm.auto`` bar of finished jobs. ``log`` gets a
    line per run (with ``workers > 1`` it is called in the worker processes: ``print`` works there,
    a collector in this process sees nothing). Returns ``(trajectories, summary)``."""
    (result,) = evaluate_runs(profile, [{"out_dir": out_dir, "settings": settings or comparison_settings(families),
                                         "extra_methods": extra_methods, "budget": budget}],
                              checkpoint_root=checkpoint_root, data_root=data_root, device=device,
                              cache_dir=cache_dir, workers=workers, progress=progress, log=log)
    return result


def evaluate_runs(profile: str, runs, *, checkpoint_root=None, data_root=None, device="cpu", cache_dir=None,
                  workers: int = 1, progress: bool = False, log=None) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """:func:`evaluate_profile` of several evaluations at once, each a dict with ``out_dir``,
    ``settings`` and optionally ``extra_methods`` and ``budget``: the missing data, the validation
    choices and then every (method, setting) job of all of them go through one pool, longest job
    first, so no worker waits for the slowest job of one evaluation before the next starts (a
    job two evaluations share runs once). Returns ``(trajectories, summary)`` per evaluation."""
    threads = run_threads(workers)
    common = {"checkpoint_root": checkpoint_root, "data_root": data_root, "device": device, "threads": threads}
    runs = [{"extra_methods": (), "budget": None, **run} for run in runs]
    for run in runs:
        run["out"] = Path(run["out_dir"])
        run["cache"] = Path(cache_dir) if cache_dir is not None else run["out"] / "cache"
        (run["out"] / "trajectories").mkdir(parents=True, exist_ok=True)
        run["cache"].mkdir(parents=True, exist_ok=True)
        run["settings"] = test_sets(run["settings"])
    # missing data (test sets, validation sets for the choices) are generated first, in parallel,
    # before their checksums enter the keys
    specs = {t.spec(profile) for run in runs for t in run["settings"]}
    specs |= {dataset_spec(profile, t.family, "val", in_distribution_setting(t.family))
              for run in runs for t in run["settings"]}
    missing = [spec for spec in sorted(specs, key=lambda sp: sp.path) if file_status(spec, data_root) == "missing"]
    generate(missing, root=data_root, workers=workers)
    todo, needs = {}, {}  # cache path -> job; choice key -> job
    for run in runs:
        run["plan"] = []  # (stem, {method: cache path})
        for test in run["settings"]:
            family = test.family
            paths = {m: run["cache"] / f"{test.stem}_{m}_{run_key(profile, test, m, budget=run['budget'], **common)}.csv"
                     for m in methods_for(test.test_family) + list(run["extra_methods"])}
            run["plan"].append((test.stem, paths))
            for m, path in paths.items():
                if path in todo or (path.exists() and path.with_suffix(".summary.csv").exists()):
                    continue
                todo[path] = {"profile": profile, "test": test, "method": m,
                              "budget": run["budget"], "log": log, "paths": (path, path.with_suffix(".summary.csv")),
                              **{k: v for k, v in common.items() if k != "threads"}}
                choice = METHOD_SPECS[m].choice
                if choice is not None:
                    select = SELECTIONS[choice]
                    key = (family, select.__name__, str(run["cache"]),
                           run_key(profile, TestSet(family, in_distribution_setting(family)), select.__name__,
                                   budget=run["budget"], **common))
                    needs.setdefault(key, {"select": select, "profile": profile, "family": family,
                                           "cache": run["cache"], "key_args": {**common, "budget": run["budget"]}})
                    todo[path]["choice"] = (choice, key)
    # one pool for the choices and the runs, the longest chain first; a run that needs a choice
    # starts when it is made, the others meanwhile
    def cost(job):  # the state's size times the method's relative cost
        spec = job["test"].spec(profile)
        return METHOD_SPECS[job["method"]].cost * spec.pde().out_channels * spec.resolution ** 2

    runs_todo = list(todo.values())
    chain = {key: 0.0 for key in needs}  # a choice costs about one run of its method, then its runs follow
    for job in runs_todo:
        if "choice" in job:
            chain[job["choice"][1]] = max(chain[job["choice"][1]], 2 * cost(job))
    # (priority, tie-break, job); a choice's priority exceeds its runs', so it comes before them
    order = sorted([(-chain[key], "0" + "/".join(key[:2]), needs[key]) for key in needs]
                   + [(-cost(job), f"1{i:06d}", job) for i, job in enumerate(runs_todo)], key=lambda t: t[:2])
    jobs = [job for *_, job in order]
    position = {id(job): n for n, job in enumerate(jobs)}
    after = {}
    for n, job in enumerate(jobs):
        if "select" in job:
            continue
        choice, key = job.pop("choice", (None, None))
        job["tto"] = job["stop_lowpass"] = job["ens_plus"] = None
        if key is not None:
            after[n] = (position[id(needs[key])], choice)
    map_jobs(_evaluation_job, jobs, workers=workers, threads=threads, progress=progress, after=after,
             desc=f"{', '.join(run['out'].name for run in runs)}: runs")
    if log and not todo:
        log(f"{', '.join(run['out'].name for run in runs)}: every method read from "
            f"{', '.join(sorted({str(run['cache']) for run in runs}))}")
    results = []
    for run in runs:
        frames, summaries = [], []
        for stem, paths in run["plan"]:
            frame = pd.concat([pd.read_csv(p) for p in paths.values()], ignore_index=True)
            summ = with_advantage(pd.concat([pd.read_csv(p.with_suffix(".summary.csv")) for p in paths.values()],
                                            ignore_index=True))
            write_csv(frame, run["out"] / "trajectories" / f"{stem}.csv")
            frames.append(frame)
            summaries.append(summ)
        traj, summ = pd.concat(frames, ignore_index=True), pd.concat(summaries, ignore_index=True)
        write_csv(summ, run["out"] / "summary.csv")
        results.append((traj, summ))
    return results
