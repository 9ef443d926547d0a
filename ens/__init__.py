"""Companion package to *Error-Conditioned Neural Solvers* (ENS).

``ens.pdes`` holds the PDE families (residuals, reference solvers, input laws); ``ens.experiments``
every dataset and training setting per profile; ``ens.data`` the datasets on disk; ``ens.models``
the backbones, the learned solver and checkpoints; ``ens.solvers`` the ENS loop; ``ens.train``
training; ``ens.evaluate`` evaluation tables; ``ens.theory`` the conditioning theory; ``ens.plots``
the figures shared by the notebooks.
"""

__version__ = "0.1.0"

from .models import NeuralSolver, build_backbone, load_checkpoint  # noqa: E402
from .pdes import FAMILIES, PDE, Darcy, Helmholtz, Kolmogorov, NavierStokes, Poisson, get_pde  # noqa: E402
from .solvers import DivergenceError, Trajectory, ens_solve, surrogate_solve  # noqa: E402

__all__ = ["FAMILIES", "PDE", "Darcy", "Helmholtz", "Kolmogorov", "NavierStokes", "Poisson", "get_pde",
           "NeuralSolver", "build_backbone", "load_checkpoint", "DivergenceError", "Trajectory", "ens_solve",
           "surrogate_solve", "__version__"]
