# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -papermill,-execution,-ExecuteTime
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -papermill
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Training ENS: the unrolled corrector against the same-budget surrogate
#
# ENS (claim 4 of the paper) feeds the residual *field* of its current estimate back to a network
# and lets it learn the correction:
#
# $$u_0 = G_0(c), \qquad u_{t+1} = u_t + \alpha\, G_1\big([\,c,\ u_t,\ s\,R(u_t; c)\,]\big), \quad t = 0, \dots, T-1 .$$
#
# Both networks are CNN–FNO–CNN backbones (`ens.models.FNOCNN`: neuraloperator's FNO blocks
# between convolutional lifting and projection stacks). Training unrolls $T_\text{train} = 5$
# steps and supervises every iterate, $\mathcal{L} = \tfrac1T \sum_{t=1}^{T} \mathrm{MSE}(u_t, u^*)$;
# the corrector's input is built without gradient. The **surrogate** baseline is the same
# backbone trained alone on $\mathrm{MSE}(u_0, u^*)$ with the same epochs, batches and optimiser.
# Same epochs are not same compute: one ENS training batch runs the predictor, five corrector
# passes and five residuals forward and backward, and costs 5.6–6.6× a surrogate batch (measured
# per family by `ens.train.measure_cost_ratio`). So every comparison also shows the
# **compute-matched surrogate**: the surrogate trained for ENS's training wall time, i.e.
# $\mathrm{round}(8 \times \text{ratio}) = 45$–$53$ epochs at the `default` profile.
#
# This notebook (1) trains a small ENS live, (2) records the recipe choices the paper leaves open —
# residual scaling $s$, unroll variant, step size $\alpha$ and number of steps $T$ — with the
# validation evidence behind them, and (3) loads the shipped checkpoints of every family and
# compares ENS's iterates with the surrogate on the validation split. Everything computable lives
# in `ens.train`, `ens.models`, `ens.solvers` and `ens.evaluate`; nothing here looks at a test set.

# %% tags=["parameters"]
profile = "default"  # "ci" | "default" | "paper": whose shipped checkpoints are evaluated in section 3
live_family = "helmholtz"  # family trained live in section 1 (always at the small ci profile)
live_epochs = None  # None -> the ci profile's number of epochs
families = None  # families evaluated in section 3; None -> all six
results_dir = "../results"  # figures go to results_dir/figures/02_*.png

# %%
import pandas as pd
from IPython.display import display

from ens import notebook, plots
from ens.data import generate
from ens.evaluate import (
    ens_vs_surrogate,
    history_frame,
    iterate_errors,
    iterate_loss_frame,
    load_trained,
    require_shipped,
)
from ens.experiments import dataset_spec, in_distribution_setting
from ens.notebook import machine_stable, sig3
from ens.train import KINDS, TrainConfig, budget_study_path, recipe_study_path, recipe_summary, train
from ens.workers import default_workers

nb = notebook.setup("02", profile, results_dir, live_family=live_family, live_epochs=live_epochs, families=families)
families = nb.params["families"]
live_dir = nb.results_dir / "checkpoints_live"
print(f"profile={profile!r}  live_family={live_family!r}  families={families}")

# %% [markdown]
# ## 1 · A small ENS trained live
#
# The `ci` profile's tiny networks (width 12, 6 Fourier modes, two blocks) on 32 training samples
# at $S = 32$ train in seconds. That is far too little data to be accurate; the point is to watch
# the mechanics: the loss of every unrolled iterate, and the validation error of ENS's last
# training iterate next to the surrogate's, epoch by epoch. The missing `ci` datasets are
# generated on the fly.

# %%
live = {}
for kind in ("surrogate", "ens"):
    overrides = {} if live_epochs is None else {"epochs": live_epochs}
    config = TrainConfig.for_profile("ci", live_family, kind, **overrides)
    path = train(config, out_dir=live_dir, resume=False, progress=False)
    live[kind] = load_trained("ci", live_family, kind, root=live_dir)
live_history = pd.concat([history_frame(ck) for ck in live.values()], ignore_index=True)
print(f"ENS: alpha_test={live['ens'].inference['alpha']:g}, T_test={live['ens'].inference['steps']} "
      f"(chosen on {live['ens'].inference['n_val']} validation samples)")
display(live_history.pivot(index="epoch", columns="model", values="val_rel_l2").map(sig3))

# %%
plots.plot_iterate_losses(iterate_loss_frame(live["ens"]), path=nb.figure("live_iterate_losses"));

# %%
plots.plot_training_curves(live_history, path=nb.figure("live_validation"));

# %% [markdown]
# Every unrolled iterate is supervised, so the loss falls along the iterates within an epoch
# (left to right) as well as over the epochs (dark to light): the corrector learns to reduce the
# predictor's error from the residual it is shown.
#
# ## 2 · Recipe choices, decided on validation data
#
# The paper's recipe leaves open how the residual enters the corrector, which unroll variant to
# train and how to pick $\alpha$ and $T$ at test time. A small study on Helmholtz ($S = 64$,
# 256 training samples, 3 epochs, the `default` backbone) trained one ENS per variant with the
# same data, seed and budget (`ens.train.recipe_study`; rerun it with
# `ens study --profile default --family helmholtz`). Its table ships with the package data, so this
# section shows the same evidence under every profile.
#
# * **Residual scaling.** The residual of a good prediction is dominated by grid-scale noise, and
#   the 5-point Laplacian amplifies such noise by $\sim 1/h^2$: a corrector fed the raw residual at
#   $S$ sees inputs four times larger at $2S$. The `h2` scaling multiplies by $(h/h_\text{train})^2$
#   and divides by one constant from the training split (the RMS of $R(0; c)$, i.e. of the forcing);
#   at the training grid it *equals* the constant scaling, so no validation set at $S$ can tell them
#   apart — it is chosen because it is resolution-consistent (notebook 04 measures that on the
#   super-resolution test sets). Compared here: per-sample normalisation by the forcing's RMS, and an
#   extra low-pass filter keeping the lower half of the modes.
# * **Unroll.** Full unroll (gradient through the additive chain) against truncated (each step
#   trained on the detached state it saw).
# * **$\alpha$ and $T$.** For each trained model, the validation error of every iterate up to
#   $T = 100$ for $\alpha \in \{0.25, 0.5, 1\}$; the pair with the lowest validation error is
#   stored in the checkpoint. The curves show whether the rollout stays stable beyond
#   $T_\text{train} = 5$.

# %%
study = pd.read_csv(recipe_study_path("default", "helmholtz"))
display(recipe_summary(study).map(lambda x: sig3(x) if isinstance(x, float) else x))

# %%
plots.plot_stability(study, by="variant", path=nb.figure("recipe_stability"));

# %% [markdown]
# What the study measured (one seed, 256 samples, 3 epochs: indicative, not conclusive — the
# differences are ~10 %):
#
# * **The low-pass filter helped most**: best validation error 0.314 against 0.355 (`h2`),
#   0.378 (per-sample) and 0.379 (truncated), and it is the only variant whose rollout stays
#   finite up to $T = 100$ for every $\alpha$. Filtering removes the grid-scale part of the
#   residual — the part that grows like $1/h^2$ and says least about the smooth error. It is the
#   default of `TrainConfig` (`scaling="h2"`, `lowpass=0.5`) and every shipped model uses it.
# * **Per-sample normalisation did not help** in distribution (the forcing scale hardly varies
#   there); it stays an option for the forcing-scale shift of notebook 04.
# * **Full unroll beat truncated** at this budget (0.355 against 0.379).
# * **Stability.** No variant is stable far beyond the five steps it was trained on: with
#   $\alpha = 1$ the error starts to grow after 5 steps and diverges before 50 (100 with the
#   filter); smaller steps postpone that. A learned corrector is not a contraction by construction.
#   Hence $\alpha_\text{test}$ and $T_\text{test}$ are chosen where the *validation* error is lowest
#   ($\alpha = 0.25$, $T = 10$ here), before the growth sets in.
# * **The residual is a poor stopping signal here.** The residual of a network prediction is
#   dominated by grid-scale noise: for the low-pass model $\|R(u_0)\| \approx 7\,\|f\|$ while its
#   error is 57 %, and along the chosen rollout the error falls to 31 % while the residual *rises*
#   to $7.6\,\|f\|$ (table below). ENS learns to remove the smooth error that the (filtered)
#   residual reveals, not to minimise the residual. The residual-based stop rule, which needs no
#   reference solution, therefore stops after the first step or two and is worse in distribution
#   (0.430 against 0.314).

# %%
lowpass_runs = study[study.variant.str.startswith("h2 + low-pass")]
display(lowpass_runs.pivot_table(index="alpha", columns="step", values=["val_rel_l2", "val_rel_residual"]).map(sig3))

# %% [markdown]
# ## 3 · The shipped checkpoints: ENS against both surrogates, per family
#
# For every family, the shipped ENS, surrogate (ENS's epochs) and compute-matched surrogate (ENS's
# training time) checkpoints of the chosen profile are evaluated on that profile's **validation**
# split (the data their $\alpha$ and $T$ were chosen on; the test sets belong to notebooks 03 and
# 04). ENS runs its stored $T_\text{test}$ steps with its stored $\alpha_\text{test}$. The matched
# surrogate's epochs are ENS's times the per-batch training cost ratio, measured once per family
# with both models on the same batches in one process (`ens.train.measure_cost_ratio`, stored in
# `ens.experiments.COMPUTE_RATIO`). Each checkpoint also records its own training wall time, which
# carries the load of the shared machine it ran on; the last table of section 3 lists both.

# %%
shipped = require_shipped(profile, families)
# the validation sets of a fresh clone are generated first, one family per core
generate([dataset_spec(profile, f, "val", in_distribution_setting(f)) for f in shipped], workers=default_workers())
frames, histories, choices = [], [], []
for fam in shipped:
    cks = {kind: load_trained(profile, fam, kind) for kind in KINDS}
    for ck in cks.values():
        frames.append(iterate_errors(ck))
        histories.append(history_frame(ck))
    inf = cks["ens"].inference
    choices.append({"family": fam, "alpha_test": inf["alpha"], "T_test": inf["steps"],
                    "ens_train_min": cks["ens"].raw["training"]["wall_time_s"] / 60,
                    "surrogate_train_min": cks["surrogate"].raw["training"]["wall_time_s"] / 60,
                    "matched_train_min": cks["surrogate_matched"].raw["training"]["wall_time_s"] / 60,
                    "matched_epochs": cks["surrogate_matched"].raw["training"]["epochs"],
                    "surrogate_epochs": cks["surrogate"].raw["training"]["epochs"]})
iterates = pd.concat(frames, ignore_index=True)
summary = ens_vs_surrogate(iterates).merge(pd.DataFrame(choices), on="family")
nb.tables().mkdir(parents=True, exist_ok=True)
summary.to_csv(nb.tables() / "summary.csv", index=False)

# %%
# NBVAL_CHECK_OUTPUT
print(f"profile {profile}: validation rel. L2 of the surrogate (ENS's epochs), the compute-matched surrogate "
      f"(ENS's training time) and ENS")
ratios = ["surrogate_rel_l2", "matched_rel_l2", "ens_u0_rel_l2", "ens_rel_l2", "surrogate_over_ens",
          "matched_over_ens", "alpha_test"]
stable, chaotic = machine_stable(summary[["family", *ratios, "T_test"]])
print(stable.to_string(index=False, formatters={c: sig3 for c in ratios}))

# %%
# the chaotic Kolmogorov flow's data carry the CPU's FFT rounding (1e-2 level): shown, not checked
print(chaotic.to_string(index=False, formatters={c: sig3 for c in ratios}))

# %%
print("relative residual ||R(u)|| / ||R(0; c)|| of the final estimates:")
residuals = ["surrogate_rel_residual", "matched_rel_residual", "ens_rel_residual"]
print(summary[["family", *residuals]].to_string(index=False, formatters={c: sig3 for c in residuals}))

# %%
plots.plot_iterate_errors(iterates, path=nb.figure("iterate_errors"));

# %%
# against training wall time: the compute-matched surrogate's curve ends where ENS's does
plots.plot_training_curves(pd.concat(histories, ignore_index=True), path=nb.figure("training_curves"), x="minutes");

# %% [markdown]
# The stability evidence of every shipped ENS: the validation error after $T$ steps for each
# $\alpha$ of the selection grid (stored in the checkpoint when it was trained; diverged rollouts
# are left out). The chosen $(\alpha_\text{test}, T_\text{test})$ sits at the minimum, before the
# error grows again.

# %%
selection = pd.concat([pd.DataFrame(load_trained(profile, f, "ens").inference["table"]).assign(family=f)
                       for f in shipped], ignore_index=True)
plots.plot_stability(selection, by="family", path=nb.figure("stability"));

# %%
for column, what in (("surrogate_over_ens", "the surrogate trained for ENS's epochs"),
                     ("matched_over_ens", "the surrogate trained for ENS's training time")):
    wins = summary[summary[column] > 1].family.tolist()
    losses = summary[summary[column] <= 1].family.tolist()
    print(f"ENS is more accurate than {what} on the validation split for {len(wins)} of {len(summary)} "
          f"families" + (f"; not for {losses}" if losses else "") + ".")
# the matched run's epochs at the 8-epoch surrogate's own pace: what its wall time would have been
# with that run's load on the shared machine (the epochs are matched by the measured per-batch
# cost ratio, not by these wall times)
summary["matched_at_surrogate_pace_min"] = summary.surrogate_train_min * summary.matched_epochs / summary.surrogate_epochs
print("training wall time per model (minutes; the matched surrogate's epochs, and its minutes at the "
      "same-epochs surrogate's pace):")
times = ["ens_train_min", "surrogate_train_min", "matched_train_min", "matched_at_surrogate_pace_min"]
print(summary[["family", *times, "matched_epochs"]].to_string(index=False, formatters={c: sig3 for c in times}))

# %% [markdown]
# ## 4 · How the comparison moves with the training budget
#
# Every shipped model is far from converged (the reference code trains for thousands of epochs),
# so the comparison above is one point of a curve. The training-budget study
# (`ens.evaluate.budget_study`; rerun it with `ens study --profile default --budget`) trained ENS,
# the surrogate for ENS's epochs and the compute-matched surrogate (`round(B × ratio)` epochs) at
# $B = 2, 8, 32$ ENS epochs on Helmholtz (`default` data and networks; $B = 8$ is the shipped
# checkpoints), and evaluated each on the whole validation split and on the test sets $k = 1, 3, 4$
# of notebook 03 (ENS with the $\alpha$ and $T$ it chose on validation data). Like the recipe
# study, its table ships with the package data, so this section shows the same evidence under
# every profile.

# %%
budget = pd.read_csv(budget_study_path("default", "helmholtz"))
budget_wide = budget.pivot_table(index=["split", "setting", "budget"], columns="model", values="rel_l2").reset_index()
budget_wide["surrogate_over_ens"] = budget_wide.surrogate / budget_wide.ens
budget_wide["matched_over_ens"] = budget_wide.surrogate_matched / budget_wide.ens
minutes = budget[budget.split == "val"].pivot_table(index="budget", columns="model", values="train_min")
epochs = budget[budget.split == "val"].pivot_table(index="budget", columns="model", values="epochs")

# %%
# NBVAL_CHECK_OUTPUT
print("Helmholtz, default: final rel. L2 per training budget (ENS epochs), and the two ratios (> 1: ENS ahead)")
print(budget_wide.to_string(index=False, formatters={c: sig3 for c in budget_wide.columns[3:]}))
print("epochs per model:")
print(epochs.astype(int).to_string())

# %%
print("training wall time per model (minutes; the runs shared the machine, see the text):")
print(minutes.map(sig3).to_string())

# %%
plots.plot_budget_study(budget, path=nb.figure("budget_study"));

# %% [markdown]
# What the study measured (one seed, three budgets; `train_min` carries the load of the shared
# machine the runs trained on, the epochs are the budget):
#
# * **In distribution the compute-matched surrogate stays ahead at every budget, by less as the
#   budget grows**: validation rel. L2 0.045 against ENS's 0.119 at $B = 2$ (matched / ENS 0.38),
#   0.020 against 0.049 at $B = 8$ (0.41), 0.011 against 0.016 at $B = 32$ (0.72). ENS gains more
#   from each fourfold budget (2.5× and 3.1× lower error) than the matched surrogate (2.3× and
#   1.7×). Against the surrogate trained for ENS's *epochs*, ENS is ahead at every budget (1.2–2.3×).
# * **On the ill-conditioned shifts ENS's lead grows with the budget, and the surrogates do not
#   move**: on $k = 3$ ENS falls from 0.385 to 0.294 to 0.259 while both surrogates stay at
#   0.38–0.39 from $B = 8$ on (matched / ENS 1.00, 1.30, 1.48); on $k = 4$ ENS goes 0.743, 0.686,
#   0.658 against the matched surrogate's 0.755–0.757 (1.02, 1.10, 1.15). A surrogate trained on
#   $k = 1$ predicts a $k = 1$-like field whatever its training budget; ENS's corrector reads the
#   $k = 3, 4$ residual, and its corrections improve with training.
# * **What the trend supports**: that the ordering on the shifted sets is not an artefact of
#   under-training (it widens as both models train longer), and that the in-distribution gap
#   closes with the budget. **What it does not support**: a forecast of the paper's GPU-scale
#   numbers. Three budgets and one seed fit many curves: if the in-distribution ratio kept its last
#   step (×1.76 per fourfold budget), ENS would draw level with the matched surrogate at about
#   70 epochs, but nothing here measures beyond 32, and the reference code trains for thousands.
#   On $k = 3$ the lead grew by 0.30 and then 0.17 per fourfold budget: it is slowing down, and
#   the 3× lead that notebook 03's target asks for is far outside this trend. Notebook 03's ENS+
#   reaches it on $k = 3$ at inference instead: the residual stop rule lets the shipped ENS run
#   100 steps there rather than its validation $T = 11$.

# %%
nb.finish()
