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
# # 04 · Does the learned correction carry over? Zero-shot shift, cross-equation, super-resolution
#
# The paper's claim 6: the policy ENS learns (read the residual field, correct the state) carries
# over to problems it was not trained on, and its advantage is largest where the system is
# ill-conditioned. Three studies, each with every method of notebook 03 on every set:
#
# | study | model trained on | tested on |
# |---|---|---|
# | zero-shot shift | the in-distribution setting | Helmholtz $k = 2, 3, 4$; Poisson forcing scale 200; Darcy contrast 8 and GRF forcing; Navier–Stokes $\nu = 10^{-4}$ and forcing $4\pi$ |
# | cross-equation | Poisson (resp. Helmholtz $k=1$) | Helmholtz $k=1$ (resp. Poisson), fed the *test* equation's residual |
# | super-resolution | grid $S$ | grid $2S-1$ (elliptic) or $2S$ (Navier–Stokes) |
#
# **Choosing $\alpha$ and $T$ without the test labels.** The reference code hand-tunes the step
# size and the number of corrector steps on every test set. Here nothing is tuned on a shifted
# set. Two label-free rules are reported side by side:
#
# * **validation rule** (`ENS`): $\alpha$ and $T$ chosen on the *in-distribution* validation split at
#   training time, used unchanged everywhere;
# * **residual rule** (`ENS, residual stop`): the validation $\alpha$; iterate up to the validation
#   grid's largest $T$ and keep, per sample, the iterate with the smallest *low-pass filtered*
#   residual (its lowest fraction $q$ of modes, $q \in \{1, \tfrac12, \tfrac14, \tfrac18\}$ chosen
#   on in-distribution validation data). The unfiltered norm is the wrong signal: a network's
#   iterate carries grid-scale noise whose residual is amplified by $1/h^2$ (notebook 01), and
#   ENS's corrections raise that noise while they lower the error, so $\|R\|$ stops decreasing
#   after a few steps whatever the error does (notebook 02).
#
# Section 5 shows how much the choice matters, including the best point of the $\alpha\times T$
# grid on the test set: an *oracle* that reads the test labels, shown only as the ceiling that
# per-set hand tuning could reach.
#
# All the computing is `ens.generalization` (tested in `tests/test_generalization.py`).

# %% tags=["parameters"]
profile = "default"  # "ci" | "default" | "paper": data, shipped checkpoints and iteration budgets
families = None  # None -> every family with shipped checkpoints
studies = None  # None -> all of ("zero_shot", "cross_equation", "superres")
workers = None  # processes for the method runs (one torch thread each); None -> ens.workers.default_workers()
results_dir = "../results"  # tables go to results_dir/04_<profile>/, figures to results_dir/figures/04_*.png

# %%
import pandas as pd
from IPython.display import display

from ens import notebook, plots
from ens.evaluate import require_shipped
from ens.experiments import EVALUATION
from ens.generalization import (
    advantage_rank_correlation,
    advantage_table,
    advantage_vs_condition,
    condition_numbers,
    cross_equation_table,
    method_table,
    run_studies,
    sensitivity_settings,
    sensitivity_study,
    shift_frame,
    study_findings,
    study_settings,
)
from ens.notebook import sig2

nb = notebook.setup("04", profile, results_dir, families=families, studies=studies, workers=workers)
studies, workers = nb.params["studies"], nb.params["workers"]
families = require_shipped(profile, nb.params["families"])
settings = {s: study_settings(s, families, profile) for s in studies}
settings = {s: v for s, v in settings.items() if v}
print(f"profile={profile!r}: " + ", ".join(f"{s}: {len(v)} sets" for s, v in settings.items()))
print(f"budget {EVALUATION[profile]}")

# %%
# every study's method runs in one pool of workers (ens.generalization.run_studies)
results = run_studies(list(settings), profile, nb.tables(), families, cache_dir=nb.cache(), workers=workers,
                      progress=True)
summary = pd.concat([r[1] for r in results.values()], ignore_index=True)

# %% [markdown]
# ## 1 · Zero-shot parameter shift
#
# Final relative L2 error of every method; each shifted set is next to the in-distribution set it
# is shifted from (the first row of each family). `ens` uses the validation rule, `ens_residual`
# the residual rule.

# %%
# NBVAL_CHECK_OUTPUT
if "zero_shot" in results:
    zs = results["zero_shot"][1]
    print(method_table(zs).to_string(float_format=sig2))

# %%
if "zero_shot" in results:
    plots.plot_shift(shift_frame(zs), path=nb.figure("zero_shot"));

# %% [markdown]
# ## 2 · Cross-equation transfer
#
# The Poisson-trained predictor and corrector on the Helmholtz test set (same forcings), fed the
# Helmholtz residual, and the reverse. The hybrids start from the transferred surrogate's
# prediction. For scale, the model trained on the test equation itself (from section 1) is
# the `native ENS` column.

# %%
# NBVAL_CHECK_OUTPUT
if "cross_equation" in results:
    print(cross_equation_table(results["cross_equation"][1], summary[summary.study == "zero_shot"])
          .to_string(float_format=sig2))

# %% [markdown]
# ## 3 · Super-resolution
#
# Models trained at $S$ run at twice the resolution (the residual scaling follows the grid
# spacing, the FNO's Fourier modes are resolution-free, its convolutions are not). The same
# models' errors at the training resolution are in section 1 and notebook 03.

# %%
# NBVAL_CHECK_OUTPUT
if "superres" in results:
    print(method_table(results["superres"][1]).to_string(float_format=sig2))

# %% [markdown]
# ## 4 · ENS's advantage against the condition number
#
# `ens_advantage` is the best other learned-or-hybrid method's error divided by ENS's, for each
# ENS rule ($> 1$: ENS is the most accurate of them). $\kappa$ is the condition number of the test
# operator at the test resolution: closed form for Poisson and Helmholtz (notebook 01), sparse
# eigenvalue solves for Darcy's finite-volume matrix and the nonlinear Helmholtz Jacobian at the
# reference solution. Navier–Stokes has no single elliptic operator (its space-time Jacobian is
# well conditioned, notebook 03) and is left out of the figure.

# %%
kappas = condition_numbers(profile, [fs for v in settings.values() for fs in v])
adv = advantage_vs_condition(summary, kappas)
display(advantage_table(adv).map(lambda x: f"{x:#.3g}"))
plots.plot_advantage_vs_condition(adv, path=nb.figure("advantage_vs_condition"));

# %%
for r in advantage_rank_correlation(adv).itertuples():
    print(f"{r.method}: Spearman rank correlation of ENS's advantage with kappa over {r.n_sets} elliptic sets: "
          f"{r.spearman:+.2f}")

# %% [markdown]
# ## 5 · How much do $\alpha$ and $T$ matter?
#
# For the shifted and cross-equation sets (in distribution, $\alpha$ and $T$ were chosen on the
# validation split, notebook 02): the test error along ENS's whole validation grid
# (every $\alpha$, $T = 0 \dots T_\max$) on the first test samples, with the validation rule's point,
# the residual rule's error and the oracle's point. The table gives the three on the same samples.

# %%
sens_settings = sensitivity_settings(fs for s in ("zero_shot", "cross_equation") for fs in settings.get(s, []))
if sens_settings:
    curves, choices = sensitivity_study(profile, sens_settings, nb.tables(), cache_dir=nb.cache(), workers=workers,
                                        progress=True)
    plots.plot_alpha_t_sensitivity(curves, choices, path=nb.figure("alpha_t_sensitivity"));

# %%
# NBVAL_CHECK_OUTPUT
if sens_settings:
    cols = ["start_rel_l2", "validation_rel_l2", "residual_rule_rel_l2", "oracle_rel_l2"]
    shown = choices.assign(setting=plots.setting_label(choices)).set_index("setting")
    print(shown[cols].to_string(formatters={c: sig2 for c in cols}))

# %% [markdown]
# Where each rule stops (the oracle's $\alpha$ and $T$ are an argmin over a flat valley, so they
# are shown but not checked by nbval):

# %%
if sens_settings:
    display(shown[["validation_alpha", "validation_T", "residual_rule_lowpass", "residual_rule_steps", "oracle_alpha",
                   "oracle_T"]])

# %% [markdown]
# ## What this says
#
# The statements below are computed from the tables above.

# %%
print("\n".join(study_findings(summary, choices if sens_settings else None)))
nb.finish()
