"""Companion package to *Error-Conditioned Neural Solvers* (ENS).

``ens.pdes`` holds the PDE families (residuals, reference solvers, input laws); ``ens.theory``
the conditioning theory; ``ens.plots`` the figures shared by the notebooks.
"""

from .pdes import FAMILIES, PDE, Darcy, Helmholtz, Kolmogorov, NavierStokes, Poisson, get_pde

__version__ = "0.1.0"

__all__ = ["FAMILIES", "PDE", "Darcy", "Helmholtz", "Kolmogorov", "NavierStokes", "Poisson", "get_pde",
           "__version__"]
