"""What-if analysis on the shipped checkpoints (notebook 05 and its web app): a scenario in; the
fields, the per-iterate trajectories, the timings, the condition number and the modal error split out.

A :class:`Scenario` names a family, PDE parameters within the family's knobs
(:attr:`ens.experiments.FamilySpec.knobs`), a test sample, the grid, the methods, ENS's ``alpha``,
``T`` and stop rule, and the hybrids' budgets. :meth:`WhatIf.run` runs it on the checkpoints of a
profile and returns a :class:`Result`. Nothing here draws or builds widgets (:mod:`ens.plots` draws a
result, :mod:`ens.whatif_panel` wires the widgets to this module).

The input. Sample ``i`` is the ``i``-th input of the random stream of the family's in-distribution
test set (chunk ``i // CHUNK_SIZE``, :func:`ens.data.chunk_inputs`), drawn with the scenario's
parameters on its grid. At the training parameters and grid it is that test file's sample ``i`` bit
for bit; a changed parameter keeps the random draw where the parameter does not enter it (the same
forcing at another wavenumber, as the paired Helmholtz test sets have it) and draws anew where it
does (a Darcy permeability of another contrast, a Kolmogorov state on another attractor). The
reference solution is the family's float64 solver; the methods see input and reference in float32,
as they see the data files.

One code path. Every method runs through its runner in :data:`ens.methods.METHOD_SPECS` on a
:class:`~ens.methods.RunContext`, as :func:`ens.evaluate.run_setting` runs it (a test checks that
both give the same numbers on the same sample), after one warm-up call per method, family and grid;
ENS's ``alpha`` and ``T`` enter as its checkpoint's inference choice. The test-time optimisation's
learning rate and steps and the residual stop rule's filter are the validation choices of
:func:`ens.evaluate.cached_choice`: computed once per family on validation data (never on the
sample shown) and cached under ``results/cache``.

Caching. A session keeps what does not change between two scenarios: the loaded checkpoints, the
drawn inputs, the reference solutions, the validation choices, the condition numbers and every
method's trajectory, each under a key of exactly what it depends on (a method: its input, its budget
entries and validation choice, and for ENS ``alpha``, ``T`` and the stop rule). So moving ENS's
``alpha`` reruns ENS only, and a parameter change reruns everything but loads no checkpoint.
:attr:`Result.computed` lists what a call computed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checks import check_choice, check_int, check_number
from .data import chunk_inputs
from .experiments import CHUNK_SIZE, EVALUATION, dataset_spec, family_spec, in_distribution_setting, sizes
from .methods import ENS_RESIDUAL, LABELS, METHOD_SPECS, METHODS, RunContext
from .paths import results_dir
from .pdes import FAMILIES, PDE

__all__ = ["Scenario", "Result", "WhatIf", "ScenarioError", "GRIDS", "STOPS", "BUDGET_KEYS", "MAX_STEPS",
           "MAX_ALPHA", "FAST_METHODS", "grid_size", "QUESTIONS", "answer", "APP_ENV",
           "served_as_app"]

#: the grids of a scenario: the profile's resolution, and the super-resolution study's finer one
GRIDS = ("native", "fine")
#: ENS's stop rules: after ``T`` steps (the validation choice), or the label-free residual rule
#: (at most ``T`` steps; :data:`ens.methods.ENS_RESIDUAL`)
STOPS = ("steps", "residual")
#: the budget entries a scenario may override: the iterations of the hybrids and of test-time optimisation
BUDGET_KEYS = ("gd_steps", "gn_steps", "cg_iterations", "newton_steps", "tto_steps")
#: the largest ENS ``T`` and ``alpha`` a scenario accepts (the validation grid stops at 100 steps
#: and alpha 1; ENS's iterates diverge well before alpha 4 on every family)
MAX_STEPS = 1000
MAX_ALPHA = 4.0
#: what each validation choice of a method (:attr:`ens.methods.Method.choice`) is, for progress messages
_CHOICES = {"tto": "the test-time optimisation's lr and steps", "stop_lowpass": "the residual stop rule's filter",
            "ens_plus": "ENS+'s start, refiner and steps"}
#: the methods that cost a few network passes (the panel draws them first, then the hybrids)
FAST_METHODS = ("reference", "surrogate", "surrogate_matched", "ens", ENS_RESIDUAL)


class ScenarioError(ValueError):
    """A scenario that cannot run; the message says what was expected and what was given."""


def _items(value) -> tuple:
    items = value.items() if isinstance(value, dict) else value
    return tuple(sorted((str(k), v) for k, v in items))


@dataclass(frozen=True)
class Scenario:
    """One what-if question (module docstring). ``params`` and ``budget`` override the family's
    training parameters and the profile's evaluation budget (``{name: value}``; stored as sorted
    pairs, so a scenario is hashable); ``None`` means the validation choice (``alpha``, ``steps``)
    or every method that applies (``methods``)."""

    family: str
    params: tuple = ()
    sample: int = 0
    grid: str = "native"
    methods: tuple | None = None
    alpha: float | None = None
    steps: int | None = None
    stop: str = "steps"
    budget: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "params", _items(self.params))
        object.__setattr__(self, "budget", _items(self.budget))
        if self.methods is not None:
            if isinstance(self.methods, str):
                raise ScenarioError(f"expected methods to be a list of method names, got the string {self.methods!r}")
            object.__setattr__(self, "methods", tuple(self.methods))

    def replace(self, **changes) -> Scenario:
        """A copy with some fields changed (``params``/``budget`` given as dicts replace the old ones)."""
        return dataclasses.replace(self, **changes)


@dataclass
class Result:
    """What :meth:`WhatIf.run` returns.

    * ``fields``: 2-D ``(S, S)`` arrays for display -- ``"input"``, ``"solution"`` (the reference
      solution ``u*``) and per method ``m`` its final state ``m``, its error ``"m:error"``
      (``u - u*``) and its residual ``"m:residual"`` (``R(u; c)``); the last channel (the last
      snapshot of a flow);
    * ``trajectories``: the tidy per-iterate table of every method (:meth:`ens.solvers.Trajectory.frame`
      with ``label``);
    * ``summary``: one row per method: final ``rel_l2``, ``rel_residual``, ``iterations``,
      ``ms`` (its wall time on this sample), ``status`` and ``message``;
    * ``kappa``: the condition number of the (linearised) operator at this grid (``NaN`` where it is
      not defined: the flows);
    * ``modes``: the final error of each method per DST eigenmode band (``method, band, rel_l2,
      share``: ``||P_band e|| / ||u*||`` and ``||P_band e||^2 / ||e||^2``) where the operator is
      diagonalised by the DST (Poisson, linear Helmholtz), else ``None``;
    * ``timings``: seconds per stage computed by this call; ``computed``: those stages' names.
    """

    scenario: Scenario
    pde: PDE
    resolution: int
    methods: tuple
    fields: dict
    trajectories: pd.DataFrame
    summary: pd.DataFrame
    kappa: float
    modes: pd.DataFrame | None
    timings: dict = field(default_factory=dict)

    @property
    def computed(self) -> tuple[str, ...]:
        return tuple(self.timings)

    def headline(self) -> pd.DataFrame:
        """The summary rounded to three significant figures, for printing and nbval."""
        out = self.summary[["method", "label", "rel_l2", "rel_residual", "iterations", "status"]].copy()
        for c in ("rel_l2", "rel_residual"):
            out[c] = [float(f"{v:.3g}") if math.isfinite(v) else v for v in out[c]]
        return out


#: set (to 1) in the environment of the Voila server that serves notebook 05 as the app (``make whatif``)
APP_ENV = "ENS_WHATIF_APP"


def served_as_app() -> bool:
    """Whether this kernel runs notebook 05 as the what-if app (:data:`APP_ENV` is set)."""
    return os.environ.get(APP_ENV, "") not in ("", "0")


def grid_size(profile: str, family: str, grid: str) -> int:
    """The grid size ``S`` of ``grid`` (:data:`GRIDS`): the profile's resolution, or the finer grid of
    the super-resolution study (``2 S - 1`` nodes on the elliptic node grid, ``2 S`` cells on the torus)."""
    check_choice("grid", grid, GRIDS)
    S = sizes(profile, family).resolution
    if grid == "native":
        return S
    if not family_spec(family).superres:
        raise ScenarioError(f"{family} has no finer grid in the what-if explorer (its inputs are states on an "
                            f"attractor; drawing one at 2S costs minutes); expected grid 'native'")
    return 2 * S if FAMILIES[family][0].periodic else 2 * S - 1


class WhatIf:
    """A what-if session on the ``profile`` checkpoints under ``checkpoint_root`` (default: the
    shipped ones), keeping the caches of the module docstring. ``data_root`` holds the validation
    sets the two validation choices read (generated when missing), ``cache_dir`` those choices
    (default ``results/cache``, shared with ``make reproduce``)."""

    def __init__(self, profile: str = "default", *, checkpoint_root=None, data_root=None, cache_dir=None,
                 device="cpu"):
        check_choice("profile", profile, EVALUATION)
        self.profile, self.device = profile, device
        self.checkpoint_root, self.data_root = checkpoint_root, data_root
        self.cache_dir = Path(cache_dir) if cache_dir is not None else results_dir() / "cache"
        self._store: dict[tuple, object] = {}
        self._warm: set[tuple] = set()

    # ---- resolution of a scenario ------------------------------------------------------------
    def resolve(self, s: Scenario) -> dict:
        """The scenario checked and made concrete (``pde``, ``S``, ``methods``, ``alpha``, ``steps``,
        ``budget``); ``ScenarioError`` with a one-line message for anything invalid. Loads the
        family's checkpoints (their validation ``alpha`` and ``T`` are the defaults)."""
        if not isinstance(s, Scenario):
            raise ScenarioError(f"expected a Scenario, got {type(s).__name__}")
        try:
            return self._resolve(s)
        except ScenarioError:
            raise
        except (ValueError, TypeError) as e:
            raise ScenarioError(str(e)) from None

    def _resolve(self, s: Scenario) -> dict:
        spec = family_spec(s.family)
        knobs = {k.param: k for k in spec.knobs}
        unknown = [name for name, _ in s.params if name not in knobs]
        if unknown:
            raise ScenarioError(f"{s.family} has no what-if parameter {unknown[0]!r}; expected some of {list(knobs)}")
        pde = spec.pde(**{name: knobs[name].check(value) for name, value in s.params})
        S = grid_size(self.profile, s.family, s.grid)
        n_test = sizes(self.profile, s.family).n_test
        check_int(s.sample, "sample", 0)
        if s.sample >= n_test:
            raise ScenarioError(f"expected sample in [0, {n_test - 1}] (the {self.profile} test set's size), "
                                f"got {s.sample}")
        models = self.checkpoints(s.family)
        ens = models["ens"]
        alpha = ens.inference["alpha"] if s.alpha is None else check_number(s.alpha, "alpha")
        if alpha > MAX_ALPHA:
            raise ScenarioError(f"expected alpha in (0, {MAX_ALPHA:g}], got {s.alpha!r}")
        steps = ens.inference["steps"] if s.steps is None else check_int(s.steps, "T (ENS steps)", 0)
        if steps > MAX_STEPS:
            raise ScenarioError(f"expected T (ENS steps) in [0, {MAX_STEPS}], got {steps}")
        check_choice("stop rule", s.stop, STOPS)
        applies = [m for m in METHODS if METHOD_SPECS[m].applies(pde)]
        methods = list(applies if s.methods is None else s.methods)
        for m in methods:
            check_choice("method", m, [n for n in METHOD_SPECS if n != ENS_RESIDUAL])
            if not METHOD_SPECS[m].applies(pde):
                raise ScenarioError(f"{METHOD_SPECS[m].label} does not apply to {s.family} with {pde.params} "
                                    f"(expected some of {applies})")
        if not methods:
            raise ScenarioError(f"expected at least one method, some of {applies}")
        if len(set(methods)) != len(methods):
            raise ScenarioError(f"expected distinct methods, got {methods}")
        if s.stop == "residual":
            methods = [ENS_RESIDUAL if m == "ens" else m for m in methods]
        budget = dict(EVALUATION[self.profile])
        for name, value in s.budget:
            check_choice("budget entry", name, BUDGET_KEYS)
            budget[name] = check_int(value, name)
        where = (s.family, tuple(sorted(pde.params.items())), S)
        return {"pde": pde, "S": S, "where": where, "methods": tuple(methods), "alpha": float(alpha), "steps": int(steps),
                "budget": budget, "models": models}

    # ---- the cached stages --------------------------------------------------------------------
    def _cached(self, key: tuple, compute: Callable, timings: dict, name: str, progress):
        if key not in self._store:
            if progress:
                progress(name)
            t0 = time.perf_counter()
            self._store[key] = compute()
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return self._store[key]

    def checkpoints(self, family: str):
        """The family's shipped checkpoints by kind (:data:`ens.train.KINDS`; loaded once);
        ``ScenarioError`` names the command that trains missing ones."""
        key = ("checkpoints", family)
        if key not in self._store:
            from .evaluate import shipped_families
            from .train import KINDS, load_trained
            if family not in shipped_families(self.profile, [family], self.checkpoint_root)[0]:
                raise ScenarioError(f"no {self.profile} checkpoints of {family}: train them with `ens train "
                                    f"--profile {self.profile} --family {family}`")
            self._store[key] = {k: load_trained(self.profile, family, k, self.checkpoint_root) for k in KINDS}
        return self._store[key]

    def _choice(self, choice: str, family: str, timings, progress):
        """The validation choice ``choice`` (a :attr:`ens.methods.Method.choice`) of the family."""
        from . import evaluate
        select = evaluate.SELECTIONS[choice]

        def compute():
            return evaluate.cached_choice(select, self.profile, family, self.cache_dir,
                                          checkpoint_root=self.checkpoint_root, data_root=self.data_root,
                                          device=self.device)[0]
        return self._cached(("choice", family, choice), compute, timings,
                            f"validation choice: {_CHOICES[choice]} (once per family)", progress)

    def _input(self, s: Scenario, r: dict, timings, progress) -> torch.Tensor:
        test = dataset_spec(self.profile, s.family, "test", in_distribution_setting(s.family))
        chunk, j = divmod(s.sample, CHUNK_SIZE)
        # the whole chunk, as the test file draws it (its samples depend on the chunk's length)
        n = min(CHUNK_SIZE, test.n_samples - chunk * CHUNK_SIZE)
        inputs = self._cached(("input", *r["where"], chunk), lambda: chunk_inputs(r["pde"], r["S"], test.seed,
                                                                                  chunk, n), timings, "input", progress)
        return inputs[j:j + 1]

    def _reference(self, s, r, c64, timings, progress) -> torch.Tensor:
        return self._cached(("reference", *r["where"], s.sample), lambda: r["pde"].solve(c64),
                            timings, "reference solution", progress)

    def _kappa(self, s, r, c64, u64, timings, progress) -> float:
        pde, S = r["pde"], r["S"]
        if pde.condition_number_needs_samples:
            return self._cached(("kappa", *r["where"], s.sample), lambda: pde.condition_number(S, c64, u64),
                                timings, "condition number", progress)
        return self._cached(("kappa", *r["where"]), lambda: pde.condition_number(S), timings,
                            "condition number", progress)

    def _run_method(self, m: str, s, r, c, u, timings, progress, defer: bool):
        """The method's trajectory, from the cache or computed; ``None`` if ``defer`` and it (or
        the validation choice it needs) is not cached yet."""
        spec, b = METHOD_SPECS[m], r["budget"]
        models = r["models"]
        if defer and spec.choice and ("choice", s.family, spec.choice) not in self._store:
            return None
        chosen = self._choice(spec.choice, s.family, timings, progress) if spec.choice else None
        tto = chosen if spec.choice == "tto" else None
        lowpass = chosen if spec.choice == "stop_lowpass" else 1.0
        plus = chosen if spec.choice == "ens_plus" else None
        settings = tuple((k, b[k]) for k in spec.budget)
        if "ens" in spec.models:
            # the what-if alpha and T as the checkpoint's inference choice (T caps the residual rule)
            inference = {**models["ens"].inference, "alpha": r["alpha"], "steps": r["steps"], "max_steps": r["steps"]}
            models = {**models, "ens": dataclasses.replace(models["ens"], inference=inference)}
            settings += (("alpha", r["alpha"]), ("steps", r["steps"]))
        choice = (tuple(sorted(tto.items())) if tto else None, lowpass, tuple(sorted(plus.items())) if plus else None)
        key = ("run", *r["where"], s.sample, m, settings, choice)
        if defer and key not in self._store:
            return None

        def context(budget):
            return RunContext(r["pde"], c, u, models, budget, tto, lowpass, plus)

        def compute():
            warm = (s.family, r["S"], m)
            if warm not in self._warm:  # one untimed call first, as ens.evaluate.run_setting makes
                spec.run(context({**b, **spec.warmup}))
                self._warm.add(warm)
            return spec.run(context(b))
        return self._cached(key, compute, timings, spec.label, progress)

    # ---- one scenario ----------------------------------------------------------------------------
    def run(self, s: Scenario, progress: Callable[[str], None] | None = None, defer=()) -> Result:
        """Run a scenario (module docstring); ``progress(stage)`` is called before each stage that is
        computed (not read from the caches). The methods in ``defer`` are taken from the cache only:
        one that is not there yet comes back *pending* (status ``"pending"``, NaN fields and metrics,
        no trajectory rows), so a caller can show the fast methods first and the rest when a second
        call without ``defer`` has computed them."""
        r = self.resolve(s)
        timings: dict[str, float] = {}
        pde, S = r["pde"], r["S"]
        c64 = self._input(s, r, timings, progress)
        u64 = self._reference(s, r, c64, timings, progress)
        c, u = c64.float().to(self.device), u64.float().to(self.device)
        trajectories = {m: self._run_method(m, s, r, c, u, timings, progress, m in defer) for m in r["methods"]}
        kappa = self._kappa(s, r, c64, u64, timings, progress)
        return Result(s, pde, S, r["methods"], _fields(pde, c, u, trajectories),
                      _frame(s.family, trajectories), _summary(trajectories), float(kappa),
                      _modes(pde, S, u, trajectories), timings)


def _last(x: torch.Tensor) -> np.ndarray:
    return x[0, -1].detach().cpu().double().numpy()


def _fields(pde: PDE, c, u, trajectories) -> dict:
    out = {"input": _last(c), "solution": _last(u)}
    c64, u64 = c.double(), u.double()
    for m, tr in trajectories.items():
        if tr is None:
            out[m] = out[f"{m}:error"] = out[f"{m}:residual"] = np.full_like(out["solution"], np.nan)
            continue
        x = tr.u.detach().to(c.device).double()
        out[m] = _last(x)
        out[f"{m}:error"] = _last(x - u64)
        with torch.no_grad():
            out[f"{m}:residual"] = _last(pde.residual(x, c64, check=False))
    return out


def _frame(family: str, trajectories) -> pd.DataFrame:
    frames = [tr.frame(family=family, label=LABELS[m]) for m, tr in trajectories.items() if tr is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["method", "family", "label", "iteration", "rel_residual", "wall_time_s", "rel_l2", "status"])


def _summary(trajectories) -> pd.DataFrame:
    nan = math.nan
    return pd.DataFrame([{"method": m, "label": LABELS[m], "rel_l2": nan, "rel_residual": nan, "iterations": 0,
                          "ms": nan, "status": "pending", "message": "not computed yet"} if tr is None else
                         {"method": m, "label": LABELS[m], "rel_l2": float(tr.rel_error[-1, 0]),
                          "rel_residual": float(tr.rel_residual[-1, 0]), "iterations": tr.iterations,
                          "ms": 1e3 * float(tr.wall_time[-1]), "status": tr.status, "message": tr.message}
                         for m, tr in trajectories.items()])


def _modes(pde: PDE, S: int, u, trajectories) -> pd.DataFrame | None:
    k = pde.modal_wavenumber
    if k is None:
        return None
    from .theory import band_errors, mode_band_masks
    masks = mode_band_masks(S, k)
    u64 = u.detach().cpu().double()
    norm = float(u64.flatten().norm())
    rows = []
    for m, tr in trajectories.items():
        if tr is None:
            continue
        e = tr.u.detach().cpu().double() - u64
        total = float(e.flatten().norm()) ** 2
        for band, v in band_errors(e, masks).items():
            v = float(v[0])
            rows.append({"method": m, "label": LABELS[m], "band": band, "rel_l2": v / norm,
                         "share": v ** 2 / total if total > 0 else math.nan})
    return pd.DataFrame(rows)


#: the what-if questions notebook 05 answers without widgets (and nbval checks): ``(question, scenario)``
QUESTIONS: tuple[tuple[str, Scenario], ...] = (
    ("Helmholtz at k = 3.5 (trained at k = 1; the studies test 2, 3, 4)", Scenario("helmholtz", {"k": 3.5})),
    ("Poisson with the forcing twice as strong", Scenario("poisson", {"forcing_scale": 200.0})),
    ("Darcy with permeability contrast 6 (trained at 4)", Scenario("darcy", {"a_high": 18.0})),
    ("Navier-Stokes at viscosity 3e-4 (trained at 1e-3)", Scenario("navier_stokes", {"nu": 3e-4})),
    ("Kolmogorov flow with the forcing wavenumber doubled (4 -> 8)",
     Scenario("kolmogorov", {"forcing_wavenumber": 8})),
    ("ENS runs 200 steps (Helmholtz k = 1)", Scenario("helmholtz", steps=200)),
    ("ENS with alpha = 0.25 (Helmholtz k = 1)", Scenario("helmholtz", alpha=0.25)),
    ("Poisson on a grid twice as fine", Scenario("poisson", grid="fine")),
)


def answer(session: WhatIf, questions=QUESTIONS, families=None, progress: bool = False) -> pd.DataFrame:
    """Every question's final error and residual per method (one row per question and method:
    ``question, family, method, label, rel_l2, rel_residual, iterations, status``), for the
    questions whose family is in ``families`` (default: all). ``progress`` shows a tqdm bar."""
    from tqdm.auto import tqdm
    chosen = [(q, s) for q, s in questions if families is None or s.family in families]
    rows = []
    for q, s in tqdm(chosen, desc="what-if questions", disable=not progress):
        summary = session.run(s).summary
        rows.append(summary.drop(columns=["ms", "message"]).assign(question=q, family=s.family))
    cols = ["question", "family", "method", "label", "rel_l2", "rel_residual", "iterations", "status"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)
