"""Solvers that take any PDE object: the ENS loop, the plain surrogate and the residual-based
baselines (gradient descent, Gauss--Newton / Levenberg--Marquardt, Newton for the Helmholtz
family, PINO-style test-time optimisation); every one returns a :class:`Trajectory`."""

from .ens import STOP_RULES, ens_solve, surrogate_solve
from .gauss_newton import gauss_newton
from .newton import newton
from .residual_descent import estimate_jacobian_norm, gradient_descent
from .test_time import test_time_optimisation
from .trajectory import DivergenceError, Recorder, Trajectory

__all__ = ["ens_solve", "surrogate_solve", "STOP_RULES", "Trajectory", "Recorder", "DivergenceError",
           "gradient_descent", "estimate_jacobian_norm", "gauss_newton", "newton", "test_time_optimisation",
           "BASELINES"]

#: the residual-based baselines that start from a given ``u0``: ``f(pde, c, u0, *, steps, ...)``
BASELINES = {"gd": gradient_descent, "gauss_newton": gauss_newton, "newton": newton}
