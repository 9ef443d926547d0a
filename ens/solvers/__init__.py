"""Solvers that take any PDE object: the ENS loop, ENS+ (ENS, then a classical refiner), the plain surrogate and the residual-based
baselines (gradient descent, Gauss--Newton / Levenberg--Marquardt, Newton for the Helmholtz
family, PINO-style test-time optimisation); every one returns a :class:`Trajectory`.

The solvers that run a network (``ens_solve``, ``surrogate_solve``, ``test_time_optimisation``)
are imported on first use, so the residual-based ones (and :mod:`ens.theory`, which uses them)
load without the model stack (neuraloperator)."""

import importlib

from .gauss_newton import gauss_newton
from .newton import newton
from .residual_descent import estimate_jacobian_norm, gradient_descent
from .trajectory import DivergenceError, Recorder, Trajectory, chain

_LAZY = {"ens_solve": ".ens", "surrogate_solve": ".ens", "ens_plus": ".ens", "STOP_RULES": ".ens", "REFINERS": ".ens", "test_time_optimisation": ".test_time"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["ens_solve", "surrogate_solve", "ens_plus", "STOP_RULES", "REFINERS", "Trajectory", "Recorder", "DivergenceError", "chain",
           "gradient_descent", "estimate_jacobian_norm", "gauss_newton", "newton", "test_time_optimisation",
           "BASELINES"]

#: the residual-based baselines that start from a given ``u0``: ``f(pde, c, u0, *, steps, ...)``
BASELINES = {"gd": gradient_descent, "gauss_newton": gauss_newton, "newton": newton}
