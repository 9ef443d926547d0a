"""Seaborn figures shared by the notebooks and the command line.

Every function takes tidy tables (as produced by :mod:`ens.theory` and friends), returns the
matplotlib ``Figure`` and, given ``path``, also saves it there (parent folders are created; the
format follows the suffix). :func:`set_style` applies the common look once per process.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from .checks import check_choice
from .experiments import setting_label
from .methods import LABELS

__all__ = ["set_style", "save_figure", "plot_conditioning", "plot_bound_tightness", "plot_gd_damping",
           "plot_trajectories", "plot_error_bands", "plot_training_curves", "plot_iterate_losses",
           "plot_iterate_errors", "plot_stability", "plot_error_vs_residual", "plot_error_vs_time", "plot_shift",
           "plot_advantage_vs_condition", "plot_alpha_t_sensitivity", "plot_tto_selection", "plot_budget_study", "plot_ens_plus_selection", "WhatIfFigures",
           "plot_whatif_fields", "plot_whatif_curves", "setting_label"]

_STYLED = False

#: fixed colours per solver so every figure uses the same ones
METHOD_LABELS = {"gd": "gradient descent", "cg": "CG on -A", "cgnr": "Gauss-Newton (CGNR)"}
BAND_ORDER = ["lowest", "low", "mid", "high"]
#: methods whose trajectory is one point (a network's prediction): drawn as a marker
_ONE_SHOT = ("surrogate", "surrogate_matched")


def set_style(force: bool = False) -> None:
    """Apply the project's seaborn theme (white grid, colour-blind palette); idempotent."""
    global _STYLED
    if _STYLED and not force:
        return
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind",
                  rc={"figure.dpi": 100, "savefig.dpi": 130, "savefig.bbox": "tight",
                      "axes.titlesize": "medium", "legend.frameon": False})
    _STYLED = True


def save_figure(fig: matplotlib.figure.Figure, path: str | Path | None) -> matplotlib.figure.Figure:
    """Save ``fig`` to ``path`` (creating parent folders) unless ``path`` is None; return ``fig``."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def _require(df: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: expected columns {list(columns)}, missing {missing}")


def _gmean_over_samples(df: pd.DataFrame, keys) -> pd.DataFrame:
    """Geometric mean of ``value`` over samples (the natural average of log-scale quantities)."""
    return (df.groupby(keys, sort=False)["value"].apply(lambda v: float(np.exp(np.log(v).mean())))
            .reset_index())


def plot_conditioning(table: pd.DataFrame, resonance: float | None = None,
                      path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Condition number and smallest singular value of ``Delta_h + k^2`` against ``k``, per ``S``.

    ``table`` has columns ``S, k, sigma_min, kappa`` (:func:`ens.theory.condition_table`, ideally
    on a fine ``k`` grid); ``resonance`` draws a dashed line at the first resonant wavenumber.
    """
    set_style()
    _require(table, ["S", "k", "sigma_min", "kappa"], "plot_conditioning")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    pal = sns.color_palette("flare", n_colors=table["S"].nunique())
    sns.lineplot(data=table, x="k", y="kappa", hue="S", palette=pal, ax=axes[0])
    axes[0].set(yscale="log", ylabel=r"$\kappa(\Delta_h + k^2 I)$", title="condition number")
    sns.lineplot(data=table, x="k", y="sigma_min", hue="S", palette=pal, ax=axes[1], legend=False)
    axes[1].set(ylabel=r"$\sigma_{\min}$", title=r"smallest singular value (mode (1,1))", ylim=(0, None))
    for ax in axes:
        if resonance is not None:
            ax.axvline(resonance, color="0.4", ls="--", lw=1)
        ax.set_xlabel("wavenumber k")
    if resonance is not None:
        axes[1].annotate(r"first resonance $k^2 \approx 2\pi^2$", xy=(resonance, 0.9), xycoords=("data", "axes fraction"),
                         xytext=(-6, 0), textcoords="offset points", ha="right", fontsize="small", color="0.3")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_bound_tightness(bounds: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """How sharp ``||e|| <= ||A^-1|| ||r||`` is per error shape, and where the slack of
    ``||e||/||u*|| <= kappa ||r||/||b||`` comes from.

    ``bounds`` is :func:`ens.theory.bound_on_samples` output (columns ``k, error_type, error,
    error_upper, rel_l2, slack_error, slack_solution``). Left: relative error against the
    error-side bound ``||A^-1|| ||r|| / ||u*||``; points on the diagonal are sharp (the lowest
    mode), every point lies on or below it. Right: ``1 / tightness = slack_error * slack_solution``,
    both factors per sample (all ``k``), log scale; 1 means sharp.
    """
    set_style()
    _require(bounds, ["k", "error_type", "error", "error_upper", "rel_l2", "slack_error",
                      "slack_solution"], "plot_bound_tightness")
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.3), gridspec_kw={"width_ratios": [1, 1.2]})
    ax = axes[0]
    d = bounds.assign(upper_rel=bounds["error_upper"] * bounds["rel_l2"] / bounds["error"],
                      k=bounds["k"].map(lambda k: f"{k:g}"))
    sns.scatterplot(data=d, x="upper_rel", y="rel_l2", hue="error_type", style="k", ax=ax,
                    s=36, alpha=0.85)
    lo = min(d["upper_rel"].min(), d["rel_l2"].min()) / 2
    hi = max(d["upper_rel"].max(), d["rel_l2"].max()) * 2
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--", label="error = bound")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi),
           ylim=(d["rel_l2"].min() / 60, d["rel_l2"].max() * 4),
           xlabel=r"error-side bound $\|A^{-1}\|\,\|r\|\,/\,\|u^*\|$",
           ylabel=r"relative error $\|e\|/\|u^*\|$",
           title=r"$\|e\| \leq \|A^{-1}\|\,\|r\|$: sharp only for the lowest mode")
    ax.legend(fontsize="x-small", ncol=2, loc="lower right")
    long = bounds.melt(id_vars=["k", "error_type"], value_vars=["slack_error", "slack_solution"],
                       var_name="factor", value_name="slack")
    long["factor"] = long["factor"].map({"slack_error": r"error side $\|r\|/(\sigma_{\min}\|e\|)$",
                                         "slack_solution": r"solution side $\sigma_{\max}\|u^*\|/\|b\|$"})
    sns.stripplot(data=long, x="error_type", y="slack", hue="factor", dodge=True, ax=axes[1],
                  log_scale=True, size=4, alpha=0.8, jitter=0.15)
    axes[1].axhline(1, color="0.3", lw=1)
    axes[1].set(xlabel="shape of the error", ylabel="slack factor (1 = sharp)",
                title=r"slack of $\kappa\,\|r\|/\|b\|$ = error side $\times$ solution side")
    axes[1].legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gd_damping(table: pd.DataFrame, markers: dict[str, float] | None = None,
                    path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Fraction of a mode's error left after ``t`` gradient-descent steps, against ``sigma/sigma_max``.

    ``table`` is :func:`ens.theory.gd_damping_table` output. ``markers`` maps labels to
    ``sigma / sigma_max`` values to mark (e.g. the lowest mode at several ``k``).
    """
    set_style()
    _require(table, ["sigma_rel", "t", "remaining"], "plot_gd_damping")
    fig, ax = plt.subplots(figsize=(7.5, 4))
    data = table.assign(t=table["t"].map(lambda t: f"t = {t:,}"))
    sns.lineplot(data=data, x="sigma_rel", y="remaining", hue="t", ax=ax,
                 palette=sns.color_palette("crest", n_colors=data["t"].nunique()))
    for i, (label, x) in enumerate((markers or {}).items()):
        ax.axvline(x, color="0.35", ls=":", lw=1)
        ax.annotate(label, xy=(x, 0.05 + 0.1 * (i % 3)), xytext=(3, 0), textcoords="offset points",
                    fontsize="x-small", color="0.25")
    ax.set(xscale="log", ylim=(-0.02, 1.05), xlabel=r"$\sigma_i / \sigma_{\max}$",
           ylabel=r"error left $|1-\eta\sigma_i^2|^t$",
           title=r"gradient descent, $\eta = 1/\sigma_{\max}^2$: mode-by-mode damping")
    ax.legend(title=None, fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_trajectories(trajectories: pd.DataFrame, normalise: bool = True, ymin: float | None = 1e-6,
                      path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Relative residual and relative error per iteration, side by side, one row per ``k``.

    ``trajectories``: long format with ``k, method, sample, iteration, quantity, value``
    (:class:`ens.theory.ExperimentResult`). With ``normalise`` each curve is divided by its value
    at iteration 0 and the two panels of a row share the y axis, so the speeds compare directly.
    Samples are averaged geometrically; ``ymin`` clips the log axis (a converged solver would
    otherwise squash the early iterations, where the story is).
    """
    set_style()
    _require(trajectories, ["k", "method", "sample", "iteration", "quantity", "value"], "plot_trajectories")
    d = trajectories
    if normalise:
        start = d[d["iteration"] == 0].set_index(["k", "method", "quantity", "sample"])["value"]
        d = d.assign(value=d["value"].to_numpy()
                     / start.reindex(pd.MultiIndex.from_frame(d[["k", "method", "quantity", "sample"]])).to_numpy())
    d = _gmean_over_samples(d, ["k", "method", "quantity", "iteration"])
    d["method"] = d["method"].map(lambda m: METHOD_LABELS.get(m, m))
    d["quantity"] = d["quantity"].map({"rel_residual": r"residual $\|R(u_t)\|/\|f\|$",
                                       "rel_l2": r"error $\|u_t-u^*\|/\|u^*\|$"})
    g = sns.relplot(data=d, x="iteration", y="value", hue="method", col="quantity", row="k", kind="line",
                    height=3.0, aspect=1.45,
                    facet_kws={"sharey": "row" if normalise else False, "margin_titles": True})
    g.set(yscale="log")
    if ymin is not None:
        for ax in g.axes.flat:
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, ymin), hi)
    g.set_titles(col_template="{col_name}", row_template="k = {row_name}")
    g.set_axis_labels("iteration", "fraction of the initial value" if normalise else "")
    g.figure.suptitle("same start, same iterations: the residual falls, the error does not follow", y=1.03)
    return save_figure(g.figure, path)


#: band -> colour (colour-blind palette): the bands that hide the error in warm colours
BAND_COLOURS = dict(zip(BAND_ORDER, [sns.color_palette("colorblind")[i] for i in (3, 4, 2, 0)]))


def plot_error_bands(bands: pd.DataFrame, trajectories: pd.DataFrame | None = None,
                     ymin: float | None = 1e-8, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Error per eigenmode band over iterations; rows ``k``, columns solver.

    ``bands``: long format with ``k, method, sample, iteration, band, value``; ``trajectories``
    (optional) adds the total relative error (black) and the relative residual scaled to start at
    the total error (grey, dashed) so the reader can compare their speeds. Geometric means over
    samples; ``ymin`` clips the log axis.
    """
    set_style()
    _require(bands, ["k", "method", "sample", "iteration", "band", "value"], "plot_error_bands")
    d = _gmean_over_samples(bands, ["k", "method", "band", "iteration"])
    order = [b for b in BAND_ORDER if b in set(d["band"])]
    methods = list(dict.fromkeys(d["method"]))
    g = sns.relplot(data=d, x="iteration", y="value", hue="band", hue_order=order, col="method",
                    col_order=methods, row="k", kind="line", height=3.0, aspect=1.2, legend=False,
                    palette=[BAND_COLOURS[b] for b in order], facet_kws={"sharey": True, "margin_titles": True})
    handles = [plt.Line2D([], [], color=BAND_COLOURS[b], lw=2) for b in order]
    labels = list(order)
    if trajectories is not None:
        t = _gmean_over_samples(trajectories, ["k", "method", "quantity", "iteration"])
        for (k, method), ax in g.axes_dict.items():
            err = t[(t.k == k) & (t.method == method) & (t.quantity == "rel_l2")]
            res = t[(t.k == k) & (t.method == method) & (t.quantity == "rel_residual")]
            ax.plot(err["iteration"], err["value"], color="k", lw=1.2, label="total error")
            scale = err["value"].iloc[0] / res["value"].iloc[0]
            ax.plot(res["iteration"], res["value"] * scale, color="0.45", lw=1.2, ls="--",
                    label="residual (scaled)")
        handles += [plt.Line2D([], [], color="k", lw=1.2), plt.Line2D([], [], color="0.45", lw=1.2, ls="--")]
        labels += ["total error", "residual (scaled to\nstart at the error)"]
    g.set(yscale="log")
    if ymin is not None:
        lo, hi = g.axes.flat[0].get_ylim()
        g.set(ylim=(max(lo, ymin), hi))
    g.set_titles(col_template="{col_name}", row_template="k = {row_name}")
    for ax in g.axes[0]:
        ax.set_title(METHOD_LABELS.get(ax.get_title(), ax.get_title()))
    g.set_axis_labels("iteration", r"$\|P_{band}(u_t-u^*)\|/\|u^*\|$")
    g.figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                    title="error in band", fontsize="small")
    g.figure.suptitle("where the error hides: eigenmode bands of the error", y=1.03)
    return save_figure(g.figure, path)


def plot_training_curves(history: pd.DataFrame, path: str | Path | None = None, x: str = "epoch"
                         ) -> matplotlib.figure.Figure:
    """Validation rel L2 per epoch (``ens.evaluate.history_frame`` rows), one panel per family;
    ``x="minutes"`` draws it against the training wall time instead (the axis on which models
    trained for different numbers of epochs compare at equal compute)."""
    set_style()
    _require(history, ["family", "model", "epoch", "val_rel_l2", "wall_time_s"], "plot_training_curves")
    check_choice("x", x, ("epoch", "minutes"))
    data = history.assign(minutes=history.wall_time_s / 60)
    data["model"] = data.model.map(_kind_label)
    g = sns.relplot(data=data, x=x, y="val_rel_l2", hue="model", col="family", kind="line",
                    marker="o" if x == "epoch" else ".", col_wrap=min(3, history.family.nunique()), height=2.6,
                    aspect=1.2, facet_kws={"sharey": False, "sharex": x == "epoch", "legend_out": False})
    g.set(yscale="log")
    for ax in g.axes.flat:
        _declutter_log_axes(ax)
    g.set_axis_labels("epoch" if x == "epoch" else "training wall time [min]", "validation rel. L2")
    g.set_titles("{col_name}")
    _legend_above(g, data.model.nunique(), min(3, history.family.nunique()))
    return save_figure(g.figure, path)


def _legend_above(g, n_entries: int, n_columns: int) -> None:
    """Move a FacetGrid's legend above its panels, centred on them: one row when the grid has a
    column per entry, else one entry a row (a narrow grid would crop a long row)."""
    ncol = n_entries if n_columns >= n_entries else 1
    g.tight_layout()
    sns.move_legend(g, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, title=None, frameon=False,
                    bbox_transform=g.figure.transFigure)


def plot_budget_study(study: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """The training-budget study (:func:`ens.evaluate.budget_study`): the final estimate's rel L2
    against the training budget in ENS epochs, one line per model, one panel per data set
    (the validation split, then each test set)."""
    set_style()
    _require(study, ["budget", "model", "split", "setting", "rel_l2"], "plot_budget_study")
    data = study.assign(model=study.model.map(_kind_label),
                        set=np.where(study.split == "val", "validation " + study.setting.astype(str),
                                     "test " + study.setting.astype(str)))
    g = sns.relplot(data=data, x="budget", y="rel_l2", hue="model", col="set", kind="line", marker="o",
                    col_wrap=min(2, data.set.nunique()), height=2.6, aspect=1.4,
                    facet_kws={"sharey": False, "legend_out": False})
    g.set(xscale="log", yscale="log")
    budgets = sorted(study.budget.unique())
    for ax in g.axes.flat:
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        _declutter_log_axes(ax)
    g.set_axis_labels("training budget [ENS epochs]", "rel. L2 error")
    g.set_titles("{col_name}")
    _legend_above(g, data.model.nunique(), 3)  # two panels a row hold the three entries side by side
    return save_figure(g.figure, path)


def _kind_label(kind: str) -> str:
    """A checkpoint kind (:data:`ens.train.KINDS`) as the figures name it: its method's label, the
    plain surrogate's with the budget that sets it apart from the compute-matched one."""
    return "surrogate, ENS's epochs" if kind == "surrogate" else LABELS.get(kind, kind)


def plot_iterate_losses(frame: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Training MSE of each unrolled iterate, one line per epoch (``ens.evaluate.iterate_loss_frame``)."""
    _require(frame, ["iterate", "train_mse", "epoch"], "plot_iterate_losses")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    sns.lineplot(data=frame, x="iterate", y="train_mse", hue="epoch", palette="viridis", marker="o", ax=ax)
    ax.set(yscale="log", xlabel="iterate t (0: predictor G0)", ylabel="training MSE / state scale$^2$")
    ax.legend(title="epoch", ncol=2, fontsize="small")
    return save_figure(fig, path)


def plot_iterate_errors(frame: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Validation rel L2 of each ENS iterate against the surrogate's (dashed) and, where the frame
    has it, the compute-matched surrogate's (dotted), one panel per family."""
    _require(frame, ["family", "method", "iteration", "rel_l2"], "plot_iterate_errors")
    families = list(dict.fromkeys(frame.family))
    fig, axes = _grid(len(families), 3, 3.6, 2.8)
    for ax, fam in zip(axes.flat, families):
        df = frame[frame.family == fam]
        ens = df[df.method == "ens"]
        ax.plot(ens.iteration, ens.rel_l2, marker=".", label="ENS iterates")
        styles = {"surrogate": {"ls": "--", "color": "C1"}, "surrogate_matched": {"ls": ":", "color": "C2", "lw": 2}}
        for kind, style in styles.items():
            for _, row in df[df.method == kind].iterrows():
                ax.axhline(row.rel_l2, label=_kind_label(kind), **style)
        ax.set(yscale="log", title=fam, xlabel="ENS iteration", ylabel="validation rel. L2")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return _finish_panels(fig, axes, len(families), path)


def plot_stability(table: pd.DataFrame, by: str | None = None, chosen: dict | None = None,
                   path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Validation rel L2 against the number of ENS steps, one line per alpha (the selection table
    stored in a checkpoint), one panel per value of column ``by`` (e.g. the recipe variant);
    ``chosen`` = ``{"alpha": a, "steps": T}`` is marked. Diverged rollouts (inf) are left out."""
    _require(table, ["alpha", "step", "val_rel_l2"] + ([by] if by else []), "plot_stability")
    data = table[np.isfinite(table.val_rel_l2)]
    g = sns.relplot(data=data, x="step", y="val_rel_l2", hue="alpha", col=by, col_wrap=2 if by else None,
                    kind="line", marker="o", palette="flare", height=2.6, aspect=1.3)
    for ax in g.axes.flat:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        if chosen is not None:
            ax.axvline(chosen["steps"], color="0.5", ls=":", lw=1)
    g.set(yscale="log")
    g.set_axis_labels("ENS steps T", "validation rel. L2")
    if by:
        g.set_titles("{col_name}")
    return save_figure(g.figure, path)


def plot_tto_selection(table: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """The test-time optimisation's validation curves (:func:`ens.evaluate.tto_selection`):
    relative L2 error (solid) and relative residual (dashed, right axis) against the Adam step, one
    colour per learning rate, one panel per family; the chosen ``(lr, steps)`` is circled."""
    set_style()
    _require(table, ["family", "lr", "iteration", "val_rel_l2", "val_rel_residual", "chosen_lr", "chosen_steps"],
             "plot_tto_selection")
    families = list(dict.fromkeys(table.family))
    fig, axes = _grid(len(families), 3, 4.2, 3.2)
    lrs = sorted(table.lr.unique())
    colours = dict(zip(lrs, sns.color_palette("flare", len(lrs))))
    for ax, family in zip(axes.flat, families):
        d = table[table.family == family]
        twin = ax.twinx()
        for lr, g in d.groupby("lr"):
            g = g[np.isfinite(g.val_rel_l2)]
            ax.plot(g.iteration, g.val_rel_l2, color=colours[lr], label=f"lr {lr:g}: error")
            twin.plot(g.iteration, g.val_rel_residual, color=colours[lr], ls="--", lw=1, label=f"lr {lr:g}: residual")
        pick = d[(d.lr == d.chosen_lr) & (d.iteration == d.chosen_steps)]
        ax.plot(pick.iteration, pick.val_rel_l2, "o", mfc="none", mec="k", ms=9, label="chosen (lr, steps)")
        ax.set(xscale="symlog", xlim=(0, None), yscale="log", title=family, xlabel="Adam steps",
               ylabel="validation rel. L2")
        twin.set(yscale="log", ylabel="rel. residual (dashed)")
        twin.grid(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[len(families):]:
        ax.set_visible(False)
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.03), fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path)


def plot_ens_plus_selection(table: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """ENS+'s validation candidates (:func:`ens.evaluate.ens_plus_selection`): validation rel L2
    against the iterations (ENS's steps plus the refiner's, the choice's cost measure) along each
    (ENS start, refiner) run, one panel per family; the first point of each line is ENS alone,
    the chosen candidate is circled."""
    set_style()
    _require(table, ["family", "start", "refine", "refine_steps", "iterations", "val_rel_l2", "chosen"],
             "plot_ens_plus_selection")
    families = list(dict.fromkeys(table.family))
    fig, axes = _grid(len(families), 3, 3.8, 3.0)
    names = {("steps", "gauss_newton"): "ENS, then Gauss–Newton", ("steps", "newton"): "ENS, then Newton",
             ("residual", "gauss_newton"): "ENS (residual stop), then Gauss–Newton",
             ("residual", "newton"): "ENS (residual stop), then Newton"}
    styles = {"steps": {"ls": "-"}, "residual": {"ls": "--"}}
    colours = {"gauss_newton": "C3", "newton": "C4"}
    for ax, family in zip(axes.flat, families):
        d = table[table.family == family]
        for (start, refine), g in d.groupby(["start", "refine"], sort=False):
            g = g.sort_values("refine_steps")
            ax.plot(g.iterations, g.val_rel_l2, marker=".", ms=4, color=colours.get(refine, "C5"),
                    label=names.get((start, refine), f"{start}, {refine}"), **styles.get(start, {}))
        pick = d[d.chosen]
        ax.plot(pick.iterations, pick.val_rel_l2, "o", mfc="none", mec="k", ms=10, label="chosen")
        ax.set(xscale="log", yscale="log", title=family, xlabel="iterations (ENS + refiner)",
               ylabel="validation rel. L2")
    return _finish_panels(fig, axes, len(families), path, max_columns=2)


def _palette() -> dict:
    """label -> colour, one per method in registration order (stable for the built-in methods)."""
    labels = list(LABELS.values())
    return dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 10))))


def _grid(n_panels: int, max_columns: int, width: float, height: float):
    """``(fig, axes)``: ``n_panels`` panels of ``width x height`` inches, at most ``max_columns`` a row."""
    ncol = min(max_columns, n_panels)
    nrow = -(-n_panels // ncol)
    return plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)


def _minor_labels(mantissas=(2, 5)):
    """A formatter labelling a minor log tick only at the given mantissas (``2×10⁻¹``, ...)."""
    def label(x, _pos) -> str:
        if x <= 0:
            return ""
        e = int(np.floor(np.log10(x) + 1e-9))
        m = round(x / 10.0 ** e)
        return f"${m}\\times10^{{{e}}}$" if m in mantissas else ""
    return matplotlib.ticker.FuncFormatter(label)


_minor_2_5 = _minor_labels((2, 5))
_minor_2_3_5_7 = _minor_labels((2, 3, 5, 7))


def _declutter_log_axes(ax) -> None:
    """Fewer labels on the minor ticks of a log axis that spans a decade or more: matplotlib labels
    every one of them on an axis of up to about two decades, and in a narrow panel they overlap.
    On the (vertical) y axis the mantissas 2 and 5 keep a label up to 2.5 decades, beyond only the
    powers of ten; on the x axis, where the labels run into each other sideways, only the powers
    of ten. On an x axis of under a decade, whose labels are all minor ones, the mantissas 2 and 5."""
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis is ax.xaxis and axis.get_scale() == "log" and 0 < lo and hi < 10 * lo:
            axis.set_minor_formatter(_minor_2_5)
        elif axis.get_scale() == "log" and lo > 0 and hi >= 10 * lo:
            few = axis is ax.yaxis and hi < 10 ** 2.5 * lo
            axis.set_minor_formatter(_minor_2_5 if few
                                     else matplotlib.ticker.NullFormatter())


def _finish_panels(fig, axes, n_used: int, path, max_columns: int | None = None) -> matplotlib.figure.Figure:
    """Hide the unused panels, put one legend of every panel's entries above the figure, save."""
    for ax in axes.flat[n_used:]:
        ax.set_visible(False)
    for ax in axes.flat[:n_used]:
        _declutter_log_axes(ax)
    entries = {}
    for ax in axes.flat[:n_used]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    handles, labels = list(entries.values()), list(entries)
    ncol = min(len(labels), max_columns or len(labels))
    rows = -(-len(labels) // max(ncol, 1))
    fig.legend(handles, labels, loc="upper center", ncol=ncol, bbox_to_anchor=(0.5, 1.02), fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.05 * rows))
    return save_figure(fig, path)


def _panels(frame: pd.DataFrame, x: str, xlabel: str, path, xscale="log") -> matplotlib.figure.Figure:
    # the reference solver sits at round-off (error ~1e-8, residual ~1e-13) and would squash the
    # axes; the tables report it
    frame = frame[frame.method != "reference"]
    frame = frame.assign(panel=setting_label(frame), label=frame.method.map(dict(LABELS)).fillna(frame.method))
    panels = list(dict.fromkeys(frame.panel))
    fig, axes = _grid(len(panels), 3, 3.8, 3.0)
    shown = set(frame.label)
    order = [lab for lab in LABELS.values() if lab in shown]
    palette = _palette()
    for ax, panel in zip(axes.flat, panels):
        df = frame[frame.panel == panel]
        for label in order:
            d = df[df.label == label].sort_values("iteration")
            if d.empty:
                continue
            style = {"marker": "*", "ms": 10, "ls": "none"} if len(d) == 1 else {"marker": ".", "ms": 3}
            ax.plot(d[x], d.rel_l2, color=palette[label], label=label, **style)
        ax.set(xscale=xscale, yscale="log", title=panel, xlabel=xlabel, ylabel="rel. L2 error")
    return _finish_panels(fig, axes, len(panels), path)


def plot_error_vs_residual(frame: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Error against residual along every method's iterates (``Trajectory.frame`` rows), one panel
    per (family, setting); single-shot methods are stars. Read right to left: a residual
    minimiser moves left (lower residual) without moving down (lower error)."""
    _require(frame, ["family", "setting", "method", "iteration", "rel_residual", "rel_l2"], "plot_error_vs_residual")
    return _panels(frame, "rel_residual", "rel. residual ||R(u)|| / ||R(0)||", path)


def plot_error_vs_time(frame: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Error against wall time per sample: the methods compared at equal compute budgets."""
    _require(frame, ["family", "setting", "method", "iteration", "time_per_sample_s", "rel_l2"], "plot_error_vs_time")
    frame = frame.assign(time_ms=1e3 * frame.time_per_sample_s)
    return _panels(frame, "time_ms", "wall time per sample [ms]", path)


def plot_shift(frame: pd.DataFrame, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Final rel L2 of every method along each zero-shot shift axis (rows of
    :func:`ens.generalization.shift_frame`): one panel per axis, the in-distribution value first."""
    _require(frame, ["axis", "value", "method", "rel_l2"], "plot_shift")
    frame = frame[frame.method != "reference"].assign(label=lambda d: d.method.map(dict(LABELS)).fillna(d.method))
    axes_names = list(dict.fromkeys(frame.axis))
    shown = set(frame.label)
    order = [lab for lab in LABELS.values() if lab in shown]
    palette = _palette()
    fig, axes = _grid(len(axes_names), 3, 3.6, 3.0)
    for ax, name in zip(axes.flat, axes_names):
        df = frame[frame.axis == name]
        values = list(dict.fromkeys(df.value))
        for lab in order:
            d = df[df.label == lab].set_index("value").reindex(values)
            ax.plot(range(len(values)), d.rel_l2, marker="o", ms=4, color=palette[lab], label=lab,
                    ls="--" if lab == LABELS["ens_residual"] else "-")
        ax.set_xticks(range(len(values)), values)
        ax.set(yscale="log", title=name, xlabel="(first: training distribution)", ylabel="rel. L2 error")
    return _finish_panels(fig, axes, len(axes_names), path, max_columns=4)


def plot_advantage_vs_condition(frame: pd.DataFrame, floor: float = 0.05,
                                path: str | Path | None = None) -> matplotlib.figure.Figure:
    """ENS's advantage (best other method's error / ENS's; > 1: ENS wins) against the condition
    number of the setting's operator (:func:`ens.generalization.advantage_vs_condition`), coloured
    by ENS rule; points below ``floor`` are named in the corner instead of stretching the axis."""
    _require(frame, ["kappa", "ens_advantage", "family", "test_family", "setting"], "plot_advantage_vs_condition")
    data = frame[np.isfinite(frame.kappa)]
    if "method" in data:
        data = data.assign(method=data.method.map(dict(LABELS)).fillna(data.method))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    sns.scatterplot(data=data, x="kappa", y="ens_advantage", hue="method" if "method" in data else None,
                    style="test_family", s=70, ax=ax, palette=_palette() if "method" in data else None)
    ax.axhline(1.0, color="0.4", ls=":", lw=1)
    low = data[data.ens_advantage < floor]
    if len(low):  # e.g. Newton solving the nonlinear problem to 1e-8: off the scale, named instead
        ax.set_ylim(bottom=floor)
        names = sorted(set(setting_label(low)))
        ax.text(0.02, 0.02, "below the axis: " + ", ".join(names), transform=ax.transAxes, fontsize="x-small",
                color="0.3")
    ax.set(xscale="log", yscale="log", xlabel=r"condition number $\kappa$ of the test operator",
           ylabel="ENS advantage (best other / ENS)")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:.0e}".replace("e+0", "e")))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    top = float(data.ens_advantage.max()) if len(data) else 1.0
    ax.set_ylim(top=max(2.0, 2.0 * top))
    ax.legend(fontsize="x-small", ncol=2, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_alpha_t_sensitivity(curves: pd.DataFrame, choices: pd.DataFrame,
                             path: str | Path | None = None) -> matplotlib.figure.Figure:
    """Test rel L2 against ENS steps for every alpha of the validation grid, one panel per
    setting, with the validation rule's point (circle), the residual rule's error (dashed line)
    and the label-reading oracle's point (star)."""
    _require(curves, ["family", "setting", "alpha", "iteration", "rel_l2"], "plot_alpha_t_sensitivity")
    _require(choices, ["validation_alpha", "validation_T", "validation_rel_l2", "residual_rule_rel_l2",
                       "oracle_T", "oracle_rel_l2"], "plot_alpha_t_sensitivity")
    curves, choices = curves.assign(panel=setting_label(curves)), choices.assign(panel=setting_label(choices))
    panels = list(dict.fromkeys(curves.panel))
    fig, axes = _grid(len(panels), 4, 3.3, 2.7)
    alphas = sorted(curves.alpha.unique())
    colours = dict(zip(alphas, sns.color_palette("flare", len(alphas))))
    for ax, panel in zip(axes.flat, panels):
        df = curves[curves.panel == panel]
        for a in alphas:
            d = df[df.alpha == a].sort_values("iteration")
            ax.plot(d.iteration, d.rel_l2, color=colours[a], lw=1.2, label=f"alpha={a:g}")
        ch = choices[choices.panel == panel].iloc[0]
        ax.plot(ch.validation_T, ch.validation_rel_l2, "o", mfc="none", mec="k", ms=8, label="validation rule")
        ax.axhline(ch.residual_rule_rel_l2, color="0.3", ls="--", lw=1, label="residual rule")
        ax.plot(ch.oracle_T, ch.oracle_rel_l2, "*", color="k", ms=9, label="oracle (test labels)")
        ax.set(xscale="symlog", yscale="log", title=panel, xlabel="ENS steps T", ylabel="test rel. L2")
        ax.set_xlim(left=0)
    return _finish_panels(fig, axes, len(panels), path)


# ---- the what-if explorer (ens.whatif results) ----------------------------------------------------
def _finite_max(arrays) -> float:
    vals = [float(np.nanmax(np.abs(a))) for a in arrays if np.isfinite(a).any()]
    return max(vals) if vals and max(vals) > 0 else 1.0


class WhatIfFigures:
    """The two figures of an :class:`ens.whatif.Result`, built once per layout and updated in place.

    ``fields``: the input and the reference solution, then per method (columns) its final state, its
    error ``u - u*`` and its residual ``R(u; c)`` (rows; the last channel, i.e. the last snapshot of a
    flow). States share the reference's colour scale, errors and residuals one symmetric scale per row
    across the methods (one colour bar per row), so the columns compare directly; each title gives the
    method's relative error or residual.

    ``curves``: error and residual against the iteration, error against wall time (ms, on this
    sample), and, where the DST diagonalises the operator, each method's final error per eigenmode
    band (smooth to rough). The reference solver's round-off stays out of the curves (the summary has
    it); single-shot methods are stars.

    :meth:`draw` redraws a new result into the same figures when the layout (the methods, the modal
    split) is unchanged -- new image data, colour limits, titles and curves, no new axes -- which is
    what keeps the what-if panel's redraw fast; otherwise it builds new figures.
    """

    def __init__(self):
        self.fields = self.curves = None
        self._layout = None

    def draw(self, result) -> tuple[matplotlib.figure.Figure, matplotlib.figure.Figure]:
        layout = (tuple(result.methods), result.modes is not None)
        if layout != self._layout:
            self.close()
            self._build(result)
            self._layout = layout
        self._update(result)
        return self.fields, self.curves

    def close(self) -> None:
        """Forget the figures (the next :meth:`draw` builds new ones)."""
        self.fields = self.curves = None
        self._layout = None

    # -- building ----------------------------------------------------------------------------------
    def _build(self, result) -> None:
        set_style()
        self.methods = [m for m in result.methods if m != "reference"]
        ncol = 2 + len(self.methods)
        # figures outside pyplot: a notebook's inline backend does not show them by itself at the end
        # of a cell (the panel shows them as images), and nothing needs closing
        fig = matplotlib.figure.Figure(figsize=(1.9 * ncol + 0.4, 5.6))
        axes = fig.subplots(3, ncol + 1, squeeze=False, gridspec_kw={"width_ratios": [1] * ncol + [0.07]})
        blank = np.zeros((2, 2))
        self.images = {}
        for (i, j), ax in np.ndenumerate(axes[:, :ncol]):
            if i > 0 and j < 2:
                ax.set_visible(False)
                continue
            cmap = "viridis" if (i, j) == (0, 0) else ("PuOr_r" if i == 2 else "RdBu_r")
            self.images[i, j] = ax.imshow(blank, origin="lower", cmap=cmap, interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            ax.grid(False)
        axes[0, 0].set_title("input c", fontsize="small")
        axes[0, 1].set_title("reference u*", fontsize="small")
        for i, name in enumerate(("state u", "error u - u*", "residual R(u)")):
            key = (i, 2) if ncol > 2 else (0, 1)
            fig.colorbar(self.images[key], cax=axes[i, ncol]).ax.tick_params(labelsize="x-small")
            axes[i, ncol].set_ylabel(name, fontsize="small")
        fig.tight_layout(w_pad=0.3, h_pad=0.8)
        self.fields, self.field_axes = fig, axes

        has_modes = result.modes is not None
        n = 4 if has_modes else 3
        fig = matplotlib.figure.Figure(figsize=(3.9 * n, 3.4))
        axes = fig.subplots(1, n, squeeze=False)[0]
        palette = _palette()
        self.lines = {}
        for m in self.methods:
            label = LABELS[m]
            style = {"marker": "*", "ms": 10, "ls": "none"} if m in _ONE_SHOT else {"marker": ".", "ms": 3}
            self.lines[m] = [ax.plot([], [], color=palette[label], label=label, **style)[0] for ax in axes[:3]]
        axes[0].set(xscale="symlog", yscale="log", xlabel="iteration", ylabel="rel. L2 error", title="error")
        axes[1].set(xscale="symlog", yscale="log", xlabel="iteration", ylabel="||R(u)|| / ||R(0)||",
                    title="residual")
        axes[2].set(xscale="log", yscale="log", xlabel="wall time on this sample [ms]", ylabel="rel. L2 error",
                    title="error against time")
        for ax, xlim in zip(axes[:3], ((0, 100), (0, 100), (1, 1e3))):
            ax.set(xlim=xlim, ylim=(1e-3, 1))  # placeholders until the first update
            # minor labels at 2 and 5 only: the default minor labels were most of a redraw's time
            ax.yaxis.set_minor_formatter(_minor_2_5)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # x spans decades
        self.title = fig.suptitle("", fontsize="medium")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 0.93),
                   fontsize="small")
        fig.tight_layout(rect=(0, 0, 1, 0.84))
        self.curves, self.curve_axes = fig, axes

    # -- updating ----------------------------------------------------------------------------------
    def _update(self, result) -> None:
        f, S = result.fields, result.resolution
        summary = result.summary.set_index("method")
        scale = {0: _finite_max([f["solution"]]), 1: _finite_max([f[f"{m}:error"] for m in self.methods]),
                 2: _finite_max([f[f"{m}:residual"] for m in self.methods])}
        columns = {0: "input", 1: "solution"} | {j: m for j, m in enumerate(self.methods, start=2)}
        for (i, j), im in self.images.items():
            m = columns[j]
            x = f[m] if i == 0 else f[f"{m}:{('', 'error', 'residual')[i]}"]
            im.set_data(x.T)
            im.set_extent((-0.5, S - 0.5, -0.5, S - 0.5))
            if (i, j) == (0, 0):
                im.set_clim(float(np.nanmin(x)), float(np.nanmax(x)))
            else:
                im.set_clim(-scale[i], scale[i])
            if j < 2:
                continue
            row = summary.loc[m]
            title = (f"{row.label}" + ("" if row.status == "ok" else f" ({row.status})"),
                     f"error, rel L2 {row.rel_l2:.3g}", f"residual, rel {row.rel_residual:.3g}")[i]
            im.axes.set_title(title, fontsize="small", color="C3" if row.status != "ok" else "0.15")

        frame = result.trajectories
        for m, (err, res, err_t) in self.lines.items():
            d = frame[frame.method == m].sort_values("iteration")
            err.set_data(d.iteration, d.rel_l2)
            res.set_data(d.iteration, d.rel_residual)
            err_t.set_data(1e3 * d.wall_time_s, d.rel_l2)
            if m not in _ONE_SHOT:  # a marker per iterate only where they can be told apart (it also
                for line in (err, res, err_t):  # halves the time to render 500-step curves)
                    line.set_marker("." if len(d) <= 60 else "")
        for ax in self.curve_axes[:3]:
            _autoscale_log(ax)
        if result.modes is not None:
            ax = self.curve_axes[3]
            ax.clear()
            modes = result.modes[result.modes.method != "reference"]
            palette, width = _palette(), 0.8 / max(len(self.methods), 1)
            for k, m in enumerate(self.methods):
                d = modes[modes.method == m].set_index("band").reindex(BAND_ORDER)
                ax.bar(np.arange(len(BAND_ORDER)) + (k - (len(self.methods) - 1) / 2) * width, d.rel_l2, width,
                       color=palette[LABELS[m]])
            ax.set_xticks(range(len(BAND_ORDER)), BAND_ORDER)
            ax.set(yscale="log", xlabel="DST eigenmode band (smooth to rough)", ylabel="||P_band e|| / ||u*||",
                   title="final error per eigenmode band")
        kappa = f", cond = {result.kappa:.3g}" if np.isfinite(result.kappa) else ""
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in result.scenario.params) or "training parameters"
        self.title.set_text(f"{result.scenario.family} ({params}), sample {result.scenario.sample}, "
                            f"S = {S}{kappa}")


def _autoscale_log(ax) -> None:
    """Fit a log-scaled axis to its lines' finite, positive data."""
    xs, ys = [], []
    for line in ax.get_lines():
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
        xs.append(x[ok])
        ys.append(y[ok])
    x, y = np.concatenate(xs) if xs else np.array([]), np.concatenate(ys) if ys else np.array([])
    if len(y):
        lo, hi = y.min() / 1.5, y.max() * 1.5
        ax.set_ylim(lo, hi)
        # under a decade the mantissas 2 and 5 can leave a single label: add 3 and 7 there
        ax.yaxis.set_minor_formatter(_minor_2_5 if hi >= 10 * lo else _minor_2_3_5_7)
    if ax.get_xscale() == "log":
        x = x[x > 0]
        if len(x):
            ax.set_xlim(x.min() / 1.5, x.max() * 1.5)
    elif len(x):
        ax.set_xlim(-0.3, max(x.max(), 1) * 1.3)


def plot_whatif_fields(result, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """The fields figure of :class:`WhatIfFigures` for one result (saved to ``path`` if given)."""
    return save_figure(WhatIfFigures().draw(result)[0], path)


def plot_whatif_curves(result, path: str | Path | None = None) -> matplotlib.figure.Figure:
    """The curves figure of :class:`WhatIfFigures` for one result (saved to ``path`` if given)."""
    return save_figure(WhatIfFigures().draw(result)[1], path)
