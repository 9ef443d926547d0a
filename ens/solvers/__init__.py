"""Solvers that take any PDE object: the ENS loop and the plain surrogate (the residual-based
baselines join them in ``ens.solvers``); every one returns a :class:`Trajectory`."""

from .ens import STOP_RULES, ens_solve, surrogate_solve
from .trajectory import DivergenceError, Recorder, Trajectory

__all__ = ["ens_solve", "surrogate_solve", "STOP_RULES", "Trajectory", "Recorder", "DivergenceError"]
