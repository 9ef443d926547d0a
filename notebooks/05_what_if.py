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
# # 05 · What if? The shipped solvers on one sample, under your parameters
#
# Notebooks 03 and 04 answer fixed questions on whole test sets. This one answers yours, on one
# sample at a time, with the shipped checkpoints and every method of notebook 03, run by the same
# code (`ens.whatif` calls the runners of `ens.methods`, as `ens.evaluate` does; a test checks
# that both give the same numbers on the same sample):
#
# * **the problem**: the family, its physical parameters (within the ranges of
#   `ens.experiments.FAMILY_SPECS[...].knobs`, which contain every shift of notebook 04 and go
#   between and beyond them), the sample, and the grid (the training grid or the super-resolution
#   study's finer one);
# * **ENS**: its step size $\alpha$, its number of steps $T$ and its stop rule (after $T$ steps, or
#   the label-free residual rule of notebook 04 with at most $T$ steps); the defaults are the
#   validation choices;
# * **the competitors**: which methods run, and the iteration budgets of the hybrids and of
#   test-time optimisation.
#
# For each scenario you see every method's final state, its error $u-u^*$ and its residual
# $R(u)$, how error and residual fall with the iterations and with wall time, the condition
# number of the (linearised) operator where it is defined, and for Poisson and linear Helmholtz
# which DST eigenmodes hold the remaining error (notebook 01's bands: the smooth modes the
# residual hardly sees against the rough ones it amplifies).
#
# Sample $i$ is the $i$-th draw of the in-distribution test set's random stream under your
# parameters: at the training parameters it is that test set's sample $i$, and a new wavenumber
# keeps the forcing (a Darcy contrast or a Kolmogorov viscosity draws a new input, since the input
# depends on them).
#
# **Run it as an app**: `make whatif` serves this notebook with Voila at http://localhost:8866
# (the panel only). In Jupyter, run the notebook: the panel is section 1. A repository
# browser shows the static answers of section 2; the panel needs a live kernel.

# %% tags=["parameters"]
profile = "default"  # "ci" | "default" | "paper": the shipped checkpoints and iteration budgets
family = "helmholtz"  # the family the panel starts with
questions = None  # answer the canned what-if questions below: None -> yes, unless served as the app (make whatif)
results_dir = "../results"  # figures go to results_dir/figures/05_*.png

# %%
from IPython.display import display

from ens import notebook, plots
from ens.evaluate import require_shipped
from ens.notebook import sig2
from ens.whatif import QUESTIONS, WhatIf, answer, served_as_app

nb = notebook.setup("05", profile, results_dir, family=family, questions=questions)
families = require_shipped(profile)
if family not in families:
    raise ValueError(f"expected family to be one of the shipped {profile} families {families}, got {family!r}")
questions = not served_as_app() if questions is None else questions
session = WhatIf(profile, cache_dir=nb.cache())

# %% [markdown]
# ## 1 · The panel
#
# Change anything; with *auto-update* on, the figures follow (sliders on release), the fast methods
# (reference, surrogate, ENS) first and the hybrids when they are done. Switch it off to change
# several things and press *Run*. The status line says what is computing, what came out of the
# cache, and why a scenario cannot run. The first use of test-time optimisation or of the
# residual rule on a family chooses their settings on validation data (once; cached with notebook
# 03's choices).

# %%
from ens.whatif_panel import WhatIfPanel

panel = WhatIfPanel(session, family=family)
display(panel)

# %% [markdown]
# ## 2 · Some questions, answered
#
# Each row is one scenario on sample 0 (final relative $L^2$ error per method; the reference
# solver's is its float32 round-off). The columns are the methods of notebook 03; an empty entry
# is a method that does not apply (Newton needs a nonlinear problem). These are single samples:
# they show what happens, the test-set tables of notebooks 03 and 04 say how often.

# %%
# NBVAL_CHECK_OUTPUT
if questions:
    answers = answer(session, families=families, progress=True)
    table = answers.pivot_table(index="question", columns="label", values="rel_l2", sort=False)
    print(table.to_string(float_format=sig2))
    failed = answers[~answers.status.isin(["ok", "stopped"])]  # "stopped": the residual stop rule ended ENS
    print("every method finished" if failed.empty else
          "did not finish: " + "; ".join(f"{r.question}: {r.label} {r.status}" for r in failed.itertuples()))
else:
    print("skipped here (questions=False, or served as the app); the published notebook 05 has them")

# %% [markdown]
# The first question in full: Helmholtz at $k = 3.5$, between the studies' $k = 3$ and $4$ and
# closer to the first resonance ($k \approx 4.44$). Top: each method's state, error and residual
# on one colour scale per row; bottom: error and residual along the iterations, error against
# wall time, and the final error per eigenmode band.

# %%
if questions and "helmholtz" in families:
    result = session.run(QUESTIONS[0][1])
    display(plots.plot_whatif_fields(result, path=nb.figure("fields_helmholtz_k3.5")))
    display(plots.plot_whatif_curves(result, path=nb.figure("curves_helmholtz_k3.5")))

# %%
nb.finish()
