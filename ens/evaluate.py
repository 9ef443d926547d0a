"""Evaluation of trained solvers: per-iterate errors on a split, training histories, and the
residual-versus-accuracy comparison of every method on the test settings of a profile.

Tables are tidy (long format): one row per (family, setting, method, iteration) or per
(model, epoch), ready for seaborn. Only validation data are used to *choose* anything (ENS's
alpha and T at training time, the test-time optimisation's learning rate and the residual stop
rule's filter here); test sets are
evaluated with the choices already made.

Fair timing (:func:`run_setting`): every method runs on the same device, batch and dtype
(float32, like the networks), after a warm-up run on one sample; CUDA is synchronised before
every clock reading and the metrics are kept out of the clock (:class:`ens.solvers.Recorder`).
The wall time is the whole method's: ENS includes its predictor, the hybrids include the
network prediction they start from (the surrogate's ``G0``) and every residual and Jacobian
product. The reference numerical solver (DST, sparse LU, pseudo-spectral; float64 on the CPU, as
the data were made) is a row of every table: what a user would run instead.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pandas as pd
import torch

from .data import load_dataset
from .experiments import EVALUATION, ILL_CONDITIONED, check_choice, dataset_spec, in_distribution_setting
from .models import Checkpoint, load_checkpoint
from .solvers import (Trajectory, ens_solve, gauss_newton, gradient_descent, newton, surrogate_solve,
                      test_time_optimisation)
from .train import checkpoint_path, evaluate_split

__all__ = ["load_trained", "history_frame", "iterate_loss_frame", "iterate_errors", "ens_vs_surrogate",
           "METHODS", "methods_for", "select_tto_lr", "run_setting", "summary_table", "equal_time_table",
           "comparison_settings", "evaluate_profile", "shipped_families", "require_shipped", "ENS_RESIDUAL",
           "STOP_LOWPASS", "select_stop_lowpass"]

#: every method of the comparison, in table order
METHODS = ("reference", "surrogate", "ens", "gd", "gauss_newton", "newton", "tto")
#: optional extra row: ENS with the label-free residual stop rule instead of the validation T
#: (alpha from validation, at most the validation grid's ``max_steps``, the monitored residual
#: low-pass filtered with the fraction chosen on validation; see :func:`ens.solvers.ens_solve`)
ENS_RESIDUAL = "ens_residual"
#: candidate low-pass fractions of the residual stop rule (1: the plain residual norm)
STOP_LOWPASS = (1.0, 0.5, 0.25, 0.125)
_ENS_ROWS = ("ens", ENS_RESIDUAL)


def load_trained(profile: str, family: str, kind: str, root=None) -> Checkpoint:
    """The trained checkpoint ``<root>/<profile>/<family>_<kind>.pt`` (see :func:`ens.train.checkpoint_path`)."""
    return load_checkpoint(checkpoint_path(profile, family, kind, root), family=family)


def shipped_families(profile: str, families=None, root=None) -> tuple[list[str], list[str]]:
    """``(available, missing)``: the families (default: all) whose ENS and surrogate checkpoints
    of ``profile`` both exist, and the others (train them with ``ens train``)."""
    from .pdes import FAMILIES
    from .train import KINDS
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
    both methods' final relative residuals."""
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
    return pd.DataFrame(rows)


# ---- the residual-versus-accuracy comparison -----------------------------------------------------
def methods_for(family: str) -> list[str]:
    """The methods that apply to a family (Newton only to the nonlinear Helmholtz problem)."""
    return [m for m in METHODS if m != "newton" or family == "nonlinear_helmholtz"]


def _budget(profile: str, budget: dict | None) -> dict:
    check_choice("profile", profile, EVALUATION)
    out = {**EVALUATION[profile], **(budget or {})}
    unknown = sorted(set(out) - set(EVALUATION[profile]))
    if unknown:
        raise ValueError(f"unknown budget entries {unknown}; expected some of {sorted(EVALUATION[profile])}")
    return out


def select_tto_lr(sur: Checkpoint, profile: str, budget: dict | None = None, data_root=None,
                  device="cpu") -> tuple[float, pd.DataFrame]:
    """The test-time optimisation's learning rate with the lowest final error on ``n_select``
    validation samples, and the table of candidates (never the test split)."""
    b = _budget(profile, budget)
    spec = dataset_spec(profile, sur.family, "val", in_distribution_setting(sur.family))
    c, u = load_dataset(spec, data_root, True).tensors(0, b["n_select"])
    c, u, pde = c.to(device), u.to(device), spec.pde()
    rows = []
    for lr in b["tto_lrs"]:
        tr = test_time_optimisation(sur.model.to(device), pde, c, steps=b["tto_steps"], lr=lr, u_true=u,
                                    on_divergence="stop")
        rows.append({"lr": lr, "val_rel_l2": float(tr.rel_error[-1].mean()), "status": tr.status})
    table = pd.DataFrame(rows)
    finite = table[table.val_rel_l2.apply(math.isfinite)]
    return float(finite.sort_values("val_rel_l2").lr.iloc[0]), table


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


def _reference(pde, c: torch.Tensor, u: torch.Tensor) -> Trajectory:
    """The numerical solver as a one-point trajectory: float64 solve on the CPU, timed whole."""
    from .solvers import Recorder
    c64 = c.detach().cpu().double()
    t0 = time.perf_counter()
    sol = pde.solve(c64)
    elapsed = time.perf_counter() - t0
    rec = Recorder(pde, c64, u.detach().cpu().double())
    rec.record(sol, pde.residual(sol, c64, check=False), residual_evals=0)
    tr = rec.trajectory("reference", sol)
    tr.wall_time[:] = elapsed
    return tr


def _run(method: str, *, pde, c, u, ens: Checkpoint, sur: Checkpoint, b: dict, tto_lr: float,
         stop_lowpass: float = 1.0) -> Trajectory:
    common = {"u_true": u, "on_divergence": "stop"}
    if method == "reference":
        return _reference(pde, c, u)
    if method == "surrogate":
        return surrogate_solve(sur.model, pde, c, u_true=u)
    if method == "ens":
        return ens_solve(ens.model, pde, c, alpha=ens.inference["alpha"], steps=ens.inference["steps"], **common)
    if method == ENS_RESIDUAL:
        tr = ens_solve(ens.model, pde, c, alpha=ens.inference["alpha"], steps=ens.inference["max_steps"],
                       stop="residual", stop_lowpass=stop_lowpass, **common)
        tr.method = ENS_RESIDUAL
        return tr
    if method == "tto":
        return test_time_optimisation(sur.model, pde, c, steps=b["tto_steps"], lr=tto_lr, **common)
    # the hybrids start from the surrogate's prediction; its cost is part of their wall time
    t0 = time.perf_counter()
    with torch.no_grad():
        u0 = sur.model.predict(pde, c)
    if c.device.type == "cuda":
        torch.cuda.synchronize()
    t_pred = time.perf_counter() - t0
    if method == "gd":
        tr = gradient_descent(pde, c, u0, steps=b["gd_steps"], **common)
    elif method == "gauss_newton":
        tr = gauss_newton(pde, c, u0, steps=b["gn_steps"], cg_iterations=b["cg_iterations"], **common)
    elif method == "newton":
        tr = newton(pde, c, u0, steps=b["newton_steps"], **common)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    tr.wall_time += t_pred
    return tr


def run_setting(profile: str, family: str, setting: str, methods=None, *, budget: dict | None = None,
                checkpoint_root=None, data_root=None, device="cpu", tto_lr: float | None = None,
                stop_lowpass: float | None = None, log=None) -> list[Trajectory]:
    """Run every method on the test set ``(profile, family, setting)`` and return their trajectories.

    ENS and the surrogate come from the shipped checkpoints of ``family`` (for a cross-equation
    test pass the *model's* family as ``family`` and the test set's family in ``setting`` as
    ``"<family>:<setting>"``). The batches are the first ``n_samples`` test samples, in
    ``batch_size`` chunks whose trajectories are concatenated (wall times add up). ``tto_lr``
    and ``stop_lowpass`` (the residual stop rule's filter) are chosen on validation data when
    not given (:func:`select_tto_lr`, :func:`select_stop_lowpass`).
    """
    b = _budget(profile, budget)
    test_family, test_setting = setting.split(":", 1) if ":" in setting else (family, setting)
    spec = dataset_spec(profile, test_family, "test", test_setting)
    methods = list(methods or methods_for(test_family))
    for m in methods:
        check_choice("method", m, METHODS + (ENS_RESIDUAL,))
    ens, sur = (load_trained(profile, family, k, checkpoint_root) for k in ("ens", "surrogate"))
    ens.model.to(device), sur.model.to(device)
    if "tto" in methods and tto_lr is None:
        tto_lr, _ = select_tto_lr(sur, profile, b, data_root, device)
    if ENS_RESIDUAL in methods and stop_lowpass is None:
        stop_lowpass, _ = select_stop_lowpass(ens, profile, b, data_root, device)
    c_all, u_all = load_dataset(spec, data_root, True).tensors(0, b["n_samples"])
    pde = spec.pde()
    out = []
    for method in methods:
        kw = {"pde": pde, "ens": ens, "sur": sur, "b": {**b, "gd_steps": 1, "gn_steps": 1, "tto_steps": 1,
                                                         "newton_steps": 1, "cg_iterations": 2},
              "tto_lr": tto_lr, "stop_lowpass": stop_lowpass or 1.0}
        _run(method, c=c_all[:1].to(device), u=u_all[:1].to(device), **kw)  # warm-up
        parts = [_run(method, c=c_all[i:i + b["batch_size"]].to(device), u=u_all[i:i + b["batch_size"]].to(device),
                      **{**kw, "b": b}) for i in range(0, len(c_all), b["batch_size"])]
        tr = _concat(parts)
        tr.info.update(family=family, test_family=test_family, setting=test_setting,
                       tto_lr=tto_lr if method == "tto" else None,
                       stop_lowpass=stop_lowpass if method == ENS_RESIDUAL else None)
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
    (> 1: ENS is the more accurate), on the ENS rows (``ens`` and, if run, ``ens_residual``). The
    reference solver is listed but not a competitor."""
    rows = [{"family": t.info.get("family"), "test_family": t.info.get("test_family"), "setting": t.info.get("setting"),
             "method": t.method, "rel_l2": float(t.rel_error[-1].mean()), "rel_residual": float(t.rel_residual[-1].mean()),
             "iterations": t.iterations, "ms_per_sample": float(t.wall_time[-1]) / t.batch_size * 1e3,
             "status": t.status} for t in trajectories]
    return with_advantage(pd.DataFrame(rows))


def with_advantage(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (summary rows) with the column ``ens_advantage`` (re)computed, see :func:`summary_table`."""
    best_other = {key: g[~g.method.isin(_ENS_ROWS + ("reference",))].rel_l2.min()
                  for key, g in df.groupby(["family", "test_family", "setting"], sort=False)}
    adv = [float(best_other[(r.family, r.test_family, r.setting)] / r.rel_l2)
           if r.method in _ENS_ROWS and pd.notna(best_other[(r.family, r.test_family, r.setting)]) else None
           for r in df.itertuples()]
    return df.assign(ens_advantage=adv)


def equal_time_table(frame: pd.DataFrame, factors=(1, 10, 100)) -> pd.DataFrame:
    """Each method's error at equal wall-time budgets per sample, from tidy trajectory rows
    (``Trajectory.frame``): per (family, setting) the budgets are ENS's own time per sample times
    ``factors``; a method's entry is its last iterate within the budget (``NaN`` if not even its
    first one is)."""
    _cols = ["family", "setting", "method", "iteration", "time_per_sample_s", "rel_error"]
    missing = [c for c in _cols if c not in frame.columns]
    if missing:
        raise ValueError(f"equal_time_table: expected columns {_cols}, missing {missing}")
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
                             "rel_l2": float(within.rel_error.iloc[-1]) if len(within) else float("nan"),
                             "iteration": int(within.iteration.iloc[-1]) if len(within) else None})
    return pd.DataFrame(rows)


def comparison_settings(families=None) -> list[tuple[str, str]]:
    """``(family, setting)`` of the residual-versus-accuracy experiment: every family's
    in-distribution test set, then the ill-conditioned shifts (``ens.experiments.ILL_CONDITIONED``)."""
    from .pdes import FAMILIES
    families = list(FAMILIES) if families is None else list(families)
    for f in families:
        check_choice("family", f, FAMILIES)
    return ([(f, in_distribution_setting(f)) for f in families] +
            [(f, s) for f, s in ILL_CONDITIONED if f in families])


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` through a temporary file, so a killed job never leaves half a table."""
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def evaluate_profile(profile: str, out_dir, families=None, settings=None, *, extra_methods=(),
                     budget: dict | None = None, checkpoint_root=None, data_root=None, device="cpu",
                     log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run :func:`run_setting` on every ``(family, setting)`` (default :func:`comparison_settings`)
    and write ``<out_dir>/trajectories/<family>_<setting>.csv`` (tidy, per iterate) and
    ``<out_dir>/summary.csv``. A setting whose file exists is read back, not rerun, so an
    interrupted evaluation resumes; files are written to a temporary name and renamed.
    Every setting runs :func:`methods_for` its test family plus ``extra_methods`` (e.g.
    ``(ENS_RESIDUAL,)``). The test-time
    optimisation's learning rate (and the residual stop rule's filter) is chosen once per model
    family and reused by its settings.
    Returns ``(trajectories, summary)``."""
    out = Path(out_dir)
    (out / "trajectories").mkdir(parents=True, exist_ok=True)
    frames, summaries, tto_lrs, lowpasses = [], [], {}, {}
    for family, setting in (settings or comparison_settings(families)):
        path = out / "trajectories" / f"{family}_{setting.replace(':', '--')}.csv"
        spath = path.with_suffix(".summary.csv")
        if path.exists() and spath.exists():
            frames.append(pd.read_csv(path))
            summaries.append(pd.read_csv(spath))
            continue
        test_family = setting.split(":", 1)[0] if ":" in setting else family
        trs = run_setting(profile, family, setting, methods_for(test_family) + list(extra_methods), budget=budget, checkpoint_root=checkpoint_root,
                          data_root=data_root, device=device, tto_lr=tto_lrs.get(family),
                          stop_lowpass=lowpasses.get(family), log=log)
        tto_lrs.update({family: t.info["tto_lr"] for t in trs if t.method == "tto"})
        lowpasses.update({family: t.info["stop_lowpass"] for t in trs if t.method == ENS_RESIDUAL})
        frame = pd.concat([t.frame(family=family, test_family=t.info["test_family"], setting=t.info["setting"])
                           for t in trs], ignore_index=True)
        summ = summary_table(trs)
        _write_csv(frame, path)
        _write_csv(summ, spath)
        frames.append(frame)
        summaries.append(summ)
    traj, summ = pd.concat(frames, ignore_index=True), pd.concat(summaries, ignore_index=True)
    _write_csv(summ, out / "summary.csv")
    return traj, summ
