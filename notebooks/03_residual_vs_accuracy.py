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
# # 03 · Low residual is not high accuracy: ENS against the residual minimisers
#
# The paper's central experiment (claims 2, 3 and 5). Hybrid methods start from a network's
# prediction and push the PDE residual down with a classical optimiser; on an ill-conditioned
# problem the residual falls while the error does not (notebook 01 showed why: the error modes
# with small singular values are nearly invisible in the residual). ENS instead reads the
# residual field and applies a learned correction.
#
# Every method gets the same test samples, device, batch and dtype (float32), and the hybrids
# start from the same prediction $u_0 = G_0(c)$ of the trained surrogate:
#
# | method | what it does | iterations |
# |---|---|---|
# | reference solver | the numerical solver that made the data (DST-I, sparse LU, pseudo-spectral; float64) | — |
# | surrogate | $G_0(c)$, one shot, trained for ENS's epochs | — |
# | surrogate, ENS's training time | the same backbone trained for ENS's training wall time (45–53 epochs instead of 8, notebook 02): the compute-fair learned baseline | — |
# | ENS | $u_{t+1} = u_t + \alpha G_1([c, u_t, sR(u_t)])$, $\alpha$ and $T$ from validation | $T_\text{test}$ |
# | ENS+ | ENS, then Gauss–Newton (or Newton) steps from ENS's estimate (`ens.solvers.ens_plus`): the learned steps fix the low modes the residual hides, the classical ones the grid-scale error ENS leaves; start, refiner and steps chosen on validation data within the Gauss–Newton and Newton rows' budgets (section 4) | $T_\text{test}$ + chosen steps |
# | residual GD | gradient descent on $\tfrac12\|R(u)\|^2$, step $1/\sigma_{\max}(J)^2$ (power iteration) | many |
# | Gauss–Newton | Levenberg–Marquardt, matrix-free: JVP/VJP with `torch.func` (in closed form for Navier–Stokes and Kolmogorov, `PDE.linearize`), CG on the normal equations | outer × CG |
# | Newton | nonlinear Helmholtz only: exact Jacobian solves (sparse LU) | few |
# | test-time opt. | PINO-style: a copy of the surrogate fine-tuned with Adam on the test inputs' residual (lr and steps from validation, section 4) | up to 100 |
#
# Wall times are whole-method times per sample (the hybrids include the prediction they start
# from). All the computing is `ens.evaluate` (tested in `tests/test_evaluate.py`); the command
# line equivalent is `ens evaluate --profile P`.

# %% tags=["parameters"]
profile = "default"  # "ci" | "default" | "paper": data, shipped checkpoints and iteration budgets
families = None  # None -> all six families (in distribution) plus the ill-conditioned shifts
workers = None  # processes for the method runs (one torch thread each); None -> ens.workers.default_workers()
results_dir = "../results"  # tables go to results_dir/03_<profile>/, figures to results_dir/figures/03_*.png

# %%
import pandas as pd
from IPython.display import display

from ens import notebook, plots, theory
from ens.evaluate import (
    comparison_settings,
    ens_plus_selection,
    equal_time_table,
    evaluate_profile,
    front_table,
    require_shipped,
    tto_selection,
)
from ens.experiments import EVALUATION, ILL_CONDITIONED, dataset_spec
from ens.notebook import machine_stable, residual2, sig2, sig3

nb = notebook.setup("03", profile, results_dir, families=families, workers=workers)
families, workers = require_shipped(profile, nb.params["families"]), nb.params["workers"]
settings = comparison_settings(families)
print(f"profile={profile!r}: {len(settings)} test settings, budget {EVALUATION[profile]}")

# %%
trajectories, summary = evaluate_profile(profile, nb.tables(), settings=settings, cache_dir=nb.cache(), workers=workers,
                                         progress=True)

# %% [markdown]
# ## 1 · Error against residual along every method's iterates
#
# Each panel is one test setting; every curve follows one method's iterates (mean over the test
# samples), single-shot methods are stars. A residual minimiser moves *left*; accuracy is
# *down*. The reference solver is in the tables, not the plots (error $\sim 10^{-8}$).

# %%
plots.plot_error_vs_residual(trajectories, path=nb.figure("error_vs_residual"));

# %% [markdown]
# ## 2 · The summary table
#
# Final relative L2 error and relative residual $\|R(u)\|/\|R(0;c)\|$ of every method;
# `ens_advantage` is the best other learned-or-hybrid method's error divided by ENS's ($> 1$: ENS
# is the most accurate of them; the compute-matched surrogate is one of them). Timings are in the next table (they vary between machines, so the
# checked table leaves them out). A relative residual below $10^{-5}$ is float32 round-off and
# prints as `<1e-05` (its digits change with the CPU's vector instructions). The Kolmogorov rows
# come in a table of their own: the chaotic flow's test data themselves differ between CPUs at the
# $10^{-2}$ level (the FFT library's rounding, amplified along the trajectories), so the checked
# table holds the other families.

# %%
# NBVAL_CHECK_OUTPUT
table = summary.assign(setting=summary.family + " / " + summary.setting.astype(str))
columns = ["setting", "method", "rel_l2", "rel_residual", "iterations", "ens_advantage"]
formats = {"rel_l2": sig2, "rel_residual": residual2, "ens_advantage": sig2}
stable, chaotic = machine_stable(table[["family", *columns]])
print(stable[columns].to_string(index=False, formatters=formats))

# %%
# the chaotic Kolmogorov flow's data carry the CPU's FFT rounding (1e-2 level): shown, not checked
print(chaotic[columns].to_string(index=False, formatters=formats))

# %%
times = table.pivot_table(index="setting", columns="method", values="ms_per_sample", sort=False)
cost = times.div(times["ens"], axis=0)
print("wall time per sample [ms]:")
display(times.map(sig3))
print("time relative to ENS (> 1: slower than ENS):")
display(cost.map(sig3))

# %% [markdown]
# How to read the table (the statements below the last cell are computed from it):
#
# * The **reference solver** is exact to the data's float32 storage and, for the linear elliptic
#   problems, hundreds of times faster than any learned method (one DST pass). ENS is not an
#   alternative to a fast direct solver; the paper's comparison is with the *hybrid* methods, and
#   with problems that have no such solver.
# * The **surrogate trained for ENS's training time** (notebook 02) is the compute-fair learned
#   baseline. At the `default` profile it is more accurate than ENS in distribution on every
#   family, at under a fifth of ENS's inference time: with 8 ENS epochs every model here
#   is far from converged, and the surrogate turns the same compute into six times more optimiser
#   steps. ENS's case rests on the ill-conditioned shifts, where the extra training buys the
#   surrogate almost nothing.
# * **ENS+** follows ENS with the classical steps chosen on validation data (section 4): within
#   the Gauss–Newton row's budget, or the Newton row's on nonlinear Helmholtz, started from ENS's
#   estimate instead of the surrogate's. Where the error ENS leaves is grid-scale, which the
#   residual sees (Darcy, the flows), the classical steps remove it; where it sits in the low
#   modes (Helmholtz $k = 3, 4$) they change almost nothing, as notebook 01 predicts. There the
#   gain of ENS+ comes from its start instead: on Helmholtz the validation choice is the residual
#   stop rule, and on the shifted sets the filtered residual keeps falling, so ENS runs its 100
#   allowed steps rather than its validation $T = 11$ (on $k = 3$ its error goes from 0.44 to 0.30
#   after 10 steps and 0.115 after 100; one Gauss–Newton step then gives 0.109).
# * **Newton** (nonlinear Helmholtz) is a classical solver started from the network's
#   prediction: with exact Jacobian solves it converges quadratically to solver accuracy.
# * On the **elliptic** problems the residual minimisers lower the residual several times more
#   than the error (section 4), as the theory predicts, while ENS lowers the error directly.
# * On **Navier–Stokes and Kolmogorov flow** the space-time residual is that of a time-stepping
#   scheme: its Jacobian is block lower-bidiagonal with diagonal blocks
#   $I/\Delta t - \tfrac12 \partial N/\partial w$, whose diffusion part has eigenvalues between
#   $1/\Delta t$ and $1/\Delta t + \nu k_{\max}^2/2$ — far better conditioned than an elliptic
#   operator. So Gauss–Newton can recover the trajectory from the prediction (at a higher cost per
#   sample than ENS) wherever its budget suffices; the table says whether it does here.
#
# ## 3 · At equal compute
#
# A single final number hides the trade-off: given enough iterations a Krylov method solves a
# linear system exactly. The curves show each method's error against its wall time per sample,
# and the table reads them at ENS's own time, 10× and 100× it.

# %%
plots.plot_error_vs_time(trajectories, path=nb.figure("error_vs_time"));

# %%
equal = equal_time_table(trajectories)
display(equal.assign(setting=equal.family + " / " + equal.setting.astype(str))
        .pivot_table(index=["setting", "budget"], columns="method", values="rel_l2", sort=False).map(sig3))

# %% [markdown]
# **The error-versus-time front.** A method's final point is *on the front* when no other method
# (the reference solver aside) has an iterate with at most its wall time and a lower error; the
# *equal-time ratio* is the lowest error any method outside ENS's own rows reaches within that
# time, divided by the method's own ($> 1$: it is the more accurate at its wall time). The
# issue's targets for ENS+: on the front in at least 90 % of settings, and an equal-time ratio of
# at least 3 on Helmholtz $k = 3, 4$ and Navier–Stokes $\nu = 10^{-4}$.

# %%
front = front_table(trajectories).assign(setting=lambda d: d.family + " / " + d.setting.astype(str))
display(front.pivot_table(index="setting", columns="method", values="on_front", aggfunc="first", sort=False)
        .map(lambda on: "on the front" if on is True else ("—" if on != on else "dominated")))
for m in ("ens", "ens_plus"):
    rows = front[front.method == m]
    off = rows[~rows.on_front]
    print(f"{m}: on the front in {int(rows.on_front.sum())} of {len(rows)} settings"
          + (f"; dominated in {dict(zip(off.setting, off.dominated_by))}" if len(off) else ""))
# the same computation timed twice in one run: ENS's own run and the first T steps of ENS+ (for the
# families whose ENS+ starts with the ENS row, section 4)
plus_choices = ens_plus_selection(profile, families, nb.cache(), workers=workers)
plus_chosen = plus_choices[plus_choices.chosen].set_index("family")
key = ["family", "setting"]
ens_end = trajectories[(trajectories.method == "ens")
                       & trajectories.family.map(plus_chosen.start).eq("steps")].sort_values("iteration").groupby(
    key, sort=False).last()
plus_t = trajectories[trajectories.method == "ens_plus"].set_index([*key, "iteration"]).time_per_sample_s
twice = pd.Series([plus_t.loc[(*k, int(r.iteration))] / r.time_per_sample_s for k, r in ens_end.iterrows()])
print(f"timing noise: the T ENS steps inside ENS+ took {twice.min():.2f}-{twice.max():.2f}x the time of ENS's own run "
      f"of them (median {twice.median():.2f}x): read front and ratio entries within that factor as ties")
hard = [f"{t.family} / {t.setting}" for t in ILL_CONDITIONED]
ratios = front[front.setting.isin(hard) & front.method.isin(["ens", "ens_plus"])]
print("equal-time ratio (best non-ENS error within the method's time / its error; target for ENS+: >= 3):")
print(ratios.pivot_table(index="setting", columns="method", values="equal_time_ratio", sort=False).map(sig3).to_string())

# %% [markdown]
# **Against the targets** (the `default` run published with this notebook; the cells above
# recompute them for the profile they run at):
#
# * **Front: 6 of 9, target 90 % missed.** ENS+ cannot reach the front on Poisson and Helmholtz
#   $k = 1$. The matched surrogate is more accurate there than anything ENS+ reaches, and ENS's
#   own steps already take longer than the surrogate's one pass. On nonlinear Helmholtz, Newton
#   from the surrogate reaches round-off in less time than ENS's steps take.
# * **Equal time, target 3.** Met on Helmholtz $k = 3$ (3.5). Missed on $k = 4$ (1.9): the
#   residual rule's 100 steps bring ENS from 0.69 to 0.40, and the classical steps cannot touch the
#   low-mode error that remains. Missed on Navier–Stokes $\nu = 10^{-4}$ (1.0): Gauss–Newton from
#   the surrogate reaches the same $7 \cdot 10^{-4}$ plateau in the same time, so a better start
#   buys nothing there.

# %% [markdown]
# ## 4 · The budgets of test-time optimisation and ENS+, chosen on validation data
#
# Test-time optimisation has two hyper-parameters, Adam's learning rate and the number of steps.
# Both are chosen together on validation samples (`ens.evaluate.select_tto`), as ENS's $\alpha$
# and $T$ are: the $(\text{lr}, \text{steps})$ with the lowest validation error, so the method is
# compared at its best rather than after a fixed number of steps. The curves show why that matters:
# on the elliptic families the residual of the fine-tuned predictor falls while its error *rises*
# from the first steps on (the theory's low-residual-high-error trap, now inside a network's
# weights), so the validation choice is the smallest learning rate and a handful of steps — and
# test-time optimisation then barely changes the surrogate. A fixed budget of 100 steps, as in an
# earlier version of this notebook, reported errors four times the surrogate's. On Navier–Stokes
# and Kolmogorov flow the error first jumps and then falls again; there the choice sits at the edge
# of the grid (the largest learning rate, all 100 steps), so a larger budget might still help it.
# A candidate stops early once its validation error has stayed above its best for 20 steps and is
# 1.5× that best (a later, lower minimum would first have to undo the rise): the elliptic curves
# end after 20–30 steps, and the choices are those of the full 100-step curves.

# %%
tto_curves = tto_selection(profile, families, nb.cache(), workers=workers)
plots.plot_tto_selection(tto_curves, path=nb.figure("tto_selection"));

# %%
print("test-time optimisation, chosen on validation data:")
print(tto_curves.groupby("family", sort=False)[["chosen_lr", "chosen_steps"]].first().to_string())

# %% [markdown]
# **ENS+.** Which classical steps follow ENS is chosen the same way (`ens.evaluate.select_ens_plus`,
# on 16 in-distribution validation samples per family). The candidates: ENS's part is the ENS row
# ($\alpha_\text{test}$, $T_\text{test}$) or ENS under the residual stop rule (notebook 04); the
# refiner is Gauss–Newton with the Gauss–Newton row's budget or, on nonlinear Helmholtz, Newton
# with the Newton row's; every prefix of the refiner's run is a candidate (0 steps: ENS alone).
# The choice is the candidate with the fewest iterations (ENS's steps plus the refiner's; unlike a
# measured time, the same on every machine) whose validation error is within 10 % of the lowest of all
# (`ens_plus_tolerance` of `ens.experiments.EVALUATION`): the curves below flatten after the
# first few steps on most families, and 16 samples do not separate errors closer than that. Each line starts at ENS alone; the
# circle is the choice.

# %%
plots.plot_ens_plus_selection(plus_choices, path=nb.figure("ens_plus_selection"));

# %%
print("ENS+, chosen on validation data (validation rel. L2 and ms per sample of the choice, of ENS alone, "
      "and the lowest of all candidates):")
alone = plus_choices[(plus_choices.start == "steps") & (plus_choices.refine_steps == 0)].groupby("family").first()
lowest = plus_choices.groupby("family").val_rel_l2.min()
print(plus_chosen.assign(ens_alone=alone.val_rel_l2, ens_alone_ms=alone.ms_per_sample, lowest=lowest)[
    ["start", "refine", "refine_steps", "val_rel_l2", "ms_per_sample", "ens_alone", "ens_alone_ms", "lowest"]]
    .to_string(formatters={c: sig3 for c in ["val_rel_l2", "ms_per_sample", "ens_alone", "ens_alone_ms", "lowest"]}))

# %% [markdown]
# ## 5 · Back to the theory: conditioning and the hybrids' stall
#
# For the Helmholtz settings the condition number of $\Delta_h + k^2$ is known in closed form
# (notebook 01). How much the hybrids lower the residual, compared with how much they lower the
# error, should grow with it.

# %%
rows = []
for setting in ("k=1", "k=3", "k=4"):
    sel = table[table.setting == f"helmholtz / {setting}"].set_index("method")
    if sel.empty:
        continue
    spec = dataset_spec(profile, "helmholtz", "test", setting)
    for m in ("gd", "gauss_newton", "tto"):
        if m in sel.index:
            start = sel.loc["surrogate"]
            rows.append({"setting": setting, "kappa": theory.condition_number(spec.resolution, spec.pde().k), "method": m,
                         "residual_reduction": start.rel_residual / sel.loc[m].rel_residual,
                         "error_reduction": start.rel_l2 / sel.loc[m].rel_l2,
                         "ens_error_reduction": start.rel_l2 / sel.loc["ens"].rel_l2})
if rows:
    display(pd.DataFrame(rows).set_index(["setting", "method"]).map(sig3))

# %%
wins = table[table.method == "ens"].dropna(subset=["ens_advantage"])
best = wins[wins.ens_advantage > 1].setting.tolist()
print(f"ENS is the most accurate learned/hybrid method in {len(best)} of {len(wins)} settings"
      + (f"; not in {sorted(set(wins.setting) - set(best))}" if len(best) < len(wins) else "") + ".")
final = table.pivot_table(index="setting", columns="method", values="rel_l2", sort=False)
ahead = final[final.ens < final.surrogate_matched].index.tolist()
print(f"At equal training compute, ENS is more accurate than the surrogate trained for its training time in "
      f"{len(ahead)} of {len(final)} settings" + (f"; not in {sorted(set(final.index) - set(ahead))}"
                                                    if len(ahead) < len(final) else "") + ".")
plus = table[table.method == "ens_plus"].dropna(subset=["ens_advantage"])
print(f"ENS+ is more accurate than every other learned/hybrid method (at its end) in "
      f"{int((plus.ens_advantage > 1).sum())} of {len(plus)} settings, and more accurate than ENS in "
      f"{int((final.ens_plus < final.ens).sum())} of {len(final)}.")
nb.finish()
