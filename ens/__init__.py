"""Companion package to *Error-Conditioned Neural Solvers* (ENS).

``ens.pdes`` holds the PDE families (residuals, reference solvers, input laws); ``ens.experiments``
every dataset and training setting per profile; ``ens.data`` the datasets on disk; ``ens.models``
the backbones, the learned solver and checkpoints; ``ens.solvers`` the ENS loop; ``ens.train``
training; ``ens.evaluate`` evaluation tables; ``ens.theory`` the conditioning theory; ``ens.whatif``
the what-if explorer (``ens.whatif_panel`` its widgets); ``ens.plots`` the figures shared by the
notebooks.
"""

__version__ = "0.1.0"

import importlib  # noqa: E402

from .pdes import FAMILIES, PDE, Darcy, Helmholtz, Kolmogorov, NavierStokes, Poisson, get_pde  # noqa: E402
from .solvers import DivergenceError, Trajectory  # noqa: E402

# the model stack (torch.nn, neuraloperator) is imported on first use: ``import ens.theory`` and
# the data tools do not need it
_LAZY = {"NeuralSolver": ".models", "build_backbone": ".models", "load_checkpoint": ".models",
         "ens_solve": ".solvers", "surrogate_solve": ".solvers", "Scenario": ".whatif", "WhatIf": ".whatif"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["FAMILIES", "PDE", "Darcy", "Helmholtz", "Kolmogorov", "NavierStokes", "Poisson", "get_pde",
           "NeuralSolver", "build_backbone", "load_checkpoint", "DivergenceError", "Trajectory", "ens_solve",
           "surrogate_solve", "Scenario", "WhatIf", "__version__"]
