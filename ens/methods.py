"""The methods of the comparison, each declared once (:data:`METHOD_SPECS`).

A :class:`Method` says what a row of the comparison is: its name (the ``method`` column of every
table), its label (figures and tables), how it runs on one batch, which families it applies to,
which budget entries its result depends on (they enter its cache key), the smaller budget of its
warm-up call and which validation choice it needs. :mod:`ens.evaluate` runs, caches and
tabulates every method through this table, and :mod:`ens.plots` labels and colours them from it;
:func:`register_method` adds one (a new baseline is its runner plus one declaration).

The runners import the solvers when they run, so that the labels are available without torch's
model stack (the theory notebook draws with :mod:`ens.plots`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Method", "RunContext", "METHOD_SPECS", "METHODS", "LABELS", "ENS_RESIDUAL", "ens_start", "method_spec",
           "methods_for", "register_method", "unregister_method"]

#: the ENS row with the label-free residual stop rule (an optional extra row of the comparison)
ENS_RESIDUAL = "ens_residual"


@dataclass
class RunContext:
    """What a runner gets: the PDE, one batch of inputs ``c`` and reference solutions ``u`` (for the
    error metric only), the shipped checkpoints ``models`` by kind (:data:`ens.train.KINDS`: at
    least the ones its method names in :attr:`Method.models`), the evaluation budget and the
    validation choices (``tto``: ``{"lr", "steps"}``; ``stop_lowpass``; ``ens_plus``: the
    start, refiner and steps of :func:`ens.evaluate.select_ens_plus`)."""

    pde: Any
    c: torch.Tensor
    u: torch.Tensor
    models: dict
    budget: dict
    tto: dict | None = None
    stop_lowpass: float = 1.0
    ens_plus: dict | None = None

    @property
    def ens(self):
        return self.models["ens"]

    @property
    def sur(self):
        return self.models["surrogate"]

    @property
    def common(self) -> dict:
        return {"u_true": self.u, "on_divergence": "stop"}

    def surrogate_start(self) -> tuple[torch.Tensor, float]:
        """The surrogate's prediction (the hybrids' start) and the seconds it took."""
        t0 = time.perf_counter()
        with torch.no_grad():
            u0 = self.sur.model.predict(self.pde, self.c)
        if self.c.device.type == "cuda":
            torch.cuda.synchronize()
        return u0, time.perf_counter() - t0


def _always(pde) -> bool:
    return True


@dataclass(frozen=True)
class Method:
    """One row of the comparison (module docstring). ``run(ctx)`` returns a
    :class:`ens.solvers.Trajectory` for the batch of ``ctx``; ``budget`` names the entries of
    :data:`ens.experiments.EVALUATION` it reads (the test samples and batches always count);
    ``warmup`` overrides them for the one-sample warm-up call; ``applies(pde)`` says whether it
    runs on a family by default; ``choice`` is the validation choice it needs (a key of
    :data:`ens.evaluate.SELECTIONS`); an ``extra`` method runs only when asked for; ``cost`` is its run time
    relative to the others' (the scheduler starts the longest jobs first); ``models`` are the
    checkpoint kinds (:data:`ens.train.KINDS`) its result depends on (they enter its cache key)."""

    name: str
    label: str
    run: Callable[[RunContext], Any]
    budget: tuple[str, ...] = ()
    warmup: dict = field(default_factory=dict)
    applies: Callable[[Any], bool] = _always
    choice: str | None = None
    extra: bool = False
    cost: float = 0.1
    models: tuple[str, ...] = ("ens", "surrogate")


def _reference(ctx: RunContext):
    """The numerical solver as a one-point trajectory: float64 solve on the CPU, timed whole."""
    from .solvers import Recorder
    pde, c64 = ctx.pde, ctx.c.detach().cpu().double()
    t0 = time.perf_counter()
    sol = pde.solve(c64)
    elapsed = time.perf_counter() - t0
    rec = Recorder(pde, c64, ctx.u.detach().cpu().double())
    rec.record(sol, pde.residual(sol, c64, check=False), residual_evals=0)
    tr = rec.trajectory("reference", sol)
    tr.wall_time[:] = elapsed
    return tr


def _one_shot(kind: str) -> Callable[[RunContext], Any]:
    """The prediction of the trained surrogate of checkpoint kind ``kind``, as a one-point
    trajectory named ``kind``."""
    def run(ctx: RunContext):
        from .solvers import surrogate_solve
        tr = surrogate_solve(ctx.models[kind].model, ctx.pde, ctx.c, u_true=ctx.u)
        tr.method = kind
        return tr
    return run


def _ens(ctx: RunContext):
    from .solvers import ens_solve
    inf = ctx.ens.inference
    return ens_solve(ctx.ens.model, ctx.pde, ctx.c, alpha=inf["alpha"], steps=inf["steps"], **ctx.common)


def _ens_residual(ctx: RunContext):
    from .solvers import ens_solve
    inf = ctx.ens.inference
    tr = ens_solve(ctx.ens.model, ctx.pde, ctx.c, alpha=inf["alpha"], steps=inf["max_steps"], stop="residual",
                   stop_lowpass=ctx.stop_lowpass, **ctx.common)
    tr.method = ENS_RESIDUAL
    return tr


def ens_start(inference: dict, start: str, stop_lowpass: float | None = None) -> dict:
    """ENS's part of ENS+ as :func:`ens.solvers.ens_plus` arguments: ``start="steps"`` runs the
    checkpoint's ``T_test`` steps (the ENS row), ``"residual"`` the residual stop rule with filter
    ``stop_lowpass`` up to ``max_steps`` (the ENS residual-stop row)."""
    if start == "steps":
        return {"alpha": inference["alpha"], "steps": inference["steps"]}
    if start == "residual":
        return {"alpha": inference["alpha"], "steps": inference["max_steps"], "stop": "residual",
                "stop_lowpass": stop_lowpass}
    raise ValueError(f"unknown ENS+ start {start!r}; expected 'steps' or 'residual'")


def _ens_plus(ctx: RunContext):
    from .solvers import ens_plus
    ch = ctx.ens_plus
    return ens_plus(ctx.ens.model, ctx.pde, ctx.c, **ens_start(ctx.ens.inference, ch["start"], ch["stop_lowpass"]),
                    refine=ch["refine"], refine_steps=ch["refine_steps"], cg_iterations=ctx.budget["cg_iterations"],
                    **ctx.common)


def _tto(ctx: RunContext):
    from .solvers import test_time_optimisation
    steps = min(ctx.tto["steps"], ctx.budget["tto_steps"])
    return test_time_optimisation(ctx.sur.model, ctx.pde, ctx.c, steps=steps, lr=ctx.tto["lr"], **ctx.common)


def _hybrid(solve: Callable) -> Callable[[RunContext], Any]:
    """A residual-based solver started from the surrogate's prediction; the prediction's cost is
    part of its wall time."""
    def run(ctx: RunContext):
        u0, t_pred = ctx.surrogate_start()
        tr = solve(ctx, u0)
        tr.wall_time += t_pred
        return tr
    return run


def _gd(ctx: RunContext, u0):
    from .solvers import gradient_descent
    return gradient_descent(ctx.pde, ctx.c, u0, steps=ctx.budget["gd_steps"], **ctx.common)


def _gauss_newton(ctx: RunContext, u0):
    from .solvers import gauss_newton
    b = ctx.budget
    return gauss_newton(ctx.pde, ctx.c, u0, steps=b["gn_steps"], cg_iterations=b["cg_iterations"], **ctx.common)


def _newton(ctx: RunContext, u0):
    from .solvers import newton
    return newton(ctx.pde, ctx.c, u0, steps=ctx.budget["newton_steps"], **ctx.common)


def _nonlinear_with_newton(pde) -> bool:
    # for a linear problem one Newton step is the reference solve itself
    return pde.supports_newton and not pde.linear


#: name -> method, in table and legend order
METHOD_SPECS: dict[str, Method] = {m.name: m for m in (
    Method("reference", "reference solver", _reference, models=()),
    Method("surrogate", "surrogate", _one_shot("surrogate"), models=("surrogate",)),
    Method("surrogate_matched", "surrogate, ENS's training time", _one_shot("surrogate_matched"),
           models=("surrogate_matched",)),
    Method("ens", "ENS", _ens, models=("ens",)),
    # start, refiner and steps chosen on validation data within the Gauss-Newton and Newton rows' budgets
    Method("ens_plus", "ENS+ (ENS, then Gauss–Newton or Newton)", _ens_plus,
           ("gn_steps", "cg_iterations", "newton_steps", "n_sensitivity", "ens_plus_tolerance"), {"cg_iterations": 2},
           choice="ens_plus", cost=3.0, models=("ens",)),
    Method("gd", "residual GD", _hybrid(_gd), ("gd_steps",), {"gd_steps": 1}, cost=3.0, models=("surrogate",)),
    Method("gauss_newton", "Gauss–Newton (LM)", _hybrid(_gauss_newton), ("gn_steps", "cg_iterations"),
           {"gn_steps": 1, "cg_iterations": 2}, cost=3.0, models=("surrogate",)),
    Method("newton", "Newton", _hybrid(_newton), ("newton_steps",), {"newton_steps": 1},
           applies=_nonlinear_with_newton, cost=0.5, models=("surrogate",)),
    Method("tto", "test-time opt.", _tto, ("tto_steps", "tto_lrs", "n_select"), {"tto_steps": 1}, choice="tto",
           cost=2.0, models=("surrogate",)),
    Method(ENS_RESIDUAL, "ENS, residual stop", _ens_residual, ("n_sensitivity",), choice="stop_lowpass",
           extra=True, cost=1.5, models=("ens",)),
)}


class _DefaultMethods(Sequence):
    """The names of the methods that are not extras, in table order: a live view of METHOD_SPECS."""

    def _names(self) -> list[str]:
        return [m.name for m in METHOD_SPECS.values() if not m.extra]

    def __getitem__(self, i):
        return self._names()[i]

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


class _Labels(Mapping):
    """Method name -> label: a live view of METHOD_SPECS."""

    def __getitem__(self, name: str) -> str:
        return METHOD_SPECS[name].label

    def __iter__(self):
        return iter(METHOD_SPECS)

    def __len__(self) -> int:
        return len(METHOD_SPECS)

    def __repr__(self) -> str:
        return repr(dict(self))


#: the default rows of the comparison (every method that is not an extra), in table order; a view
#: of METHOD_SPECS, so a registered method is in it
METHODS: Sequence[str] = _DefaultMethods()
#: method -> label, for figures and tables; a view of METHOD_SPECS
LABELS: Mapping[str, str] = _Labels()


def method_spec(name: str) -> Method:
    """The :class:`Method` called ``name``; ``ValueError`` lists the known ones."""
    if name not in METHOD_SPECS:
        raise ValueError(f"unknown method {name!r}; expected one of {list(METHOD_SPECS)}")
    return METHOD_SPECS[name]


def methods_for(family: str) -> list[str]:
    """The default methods that apply to a family's PDE (Newton only to a nonlinear problem with an
    assembled Jacobian: the nonlinear Helmholtz family)."""
    from .pdes import get_pde
    pde = get_pde(family)
    return [name for name in METHODS if METHOD_SPECS[name].applies(pde)]


def register_method(method: Method) -> None:
    """Add a method to the comparison (after the existing ones); in this process only, like
    :func:`ens.experiments.register_family`."""
    if method.name in METHOD_SPECS:
        raise ValueError(f"method {method.name!r} exists already")
    METHOD_SPECS[method.name] = method


def unregister_method(name: str) -> None:
    """Remove a method added by :func:`register_method`."""
    METHOD_SPECS.pop(name, None)
