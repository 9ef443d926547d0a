"""Common interface and input validation shared by every PDE family.

A PDE object is a small frozen dataclass of physical parameters. It offers

* ``residual(u, c)`` -- the discrete residual ``R(u; c)`` of a candidate state ``u`` for the
  conditioning input ``c``; batched ``(B, C, S, S)`` torch tensors on any device and dtype,
  differentiable with autograd and ``torch.func`` (JVP/VJP);
* ``linearize(u, c)`` -- ``R(u; c)`` with products by its Jacobian ``J = dR/du`` at ``u`` (a
  :class:`Linearization`): ``torch.func`` by default, a hand-written one where a family has it;
* ``solve(c)`` -- the reference numerical solution ``u*`` with ``R(u*; c) ~ 0``;
* ``sample_inputs(n, S, generator)`` -- random conditioning inputs from the paper's distribution;
* ``apply_bc(u)`` -- the projection onto states that satisfy the boundary condition by
  construction (zero Dirichlet values on the elliptic node grid; the identity for periodic
  problems). Iterative solvers and models call it so that only admissible states are produced.

Tensors are batch-first ``(B, C, H, W)`` with ``H == W == S``. Elliptic problems live on the node
grid ``x_i = i / (S - 1)`` (boundary nodes included, ``h = 1 / (S - 1)``); periodic problems on
the cell grid ``x_i = i / S`` of the unit torus.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch

from ..checks import check_int, check_number
from .stencil import differentiated

__all__ = ["PDE", "Linearization", "check_field", "check_generator", "check_forcing_law"]


class Linearization(NamedTuple):
    """``R(u; c)`` at one state ``u`` and products with the Jacobian ``J = dR/du`` there."""

    residual: torch.Tensor
    #: ``v -> J v`` (``v`` of the state's shape)
    jvp: Callable[[torch.Tensor], torch.Tensor]
    #: ``w -> J^T w`` (``w`` of the residual's shape)
    vjp: Callable[[torch.Tensor], torch.Tensor]


def check_field(x, name: str, channels: int, size: int | None = None, min_size: int = 3,
                finite: bool = True) -> torch.Tensor:
    """Validate a batched field ``(B, channels, S, S)`` and return it unchanged.

    Raises ``TypeError`` for a non-tensor or non-floating tensor and ``ValueError`` for a wrong
    rank, channel count, non-square or too small grid, a resolution other than ``size`` and
    (when ``finite``) NaN or Inf entries. Each message states what was expected.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor of shape (B, {channels}, S, S), "
                        f"got {type(x).__name__}")
    want = f"(B, {channels}, {size if size is not None else 'S'}, {size if size is not None else 'S'})"
    if x.dim() != 4:
        raise ValueError(f"expected {name} of shape {want}, got {tuple(x.shape)} (rank {x.dim()})")
    if not x.is_floating_point():
        raise TypeError(f"expected {name} to have a floating dtype, got {x.dtype}")
    if x.shape[1] != channels:
        raise ValueError(f"expected {name} of shape {want} ({channels} channel(s)), got {tuple(x.shape)}")
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"expected a square grid for {name}, got {x.shape[2]}x{x.shape[3]}")
    if size is not None and x.shape[2] != size:
        raise ValueError(f"resolution mismatch: expected {name} of shape {want}, got {tuple(x.shape)}")
    if x.shape[2] < min_size:
        raise ValueError(f"expected a grid of at least {min_size}x{min_size} for {name}, "
                         f"got {x.shape[2]}x{x.shape[3]}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf entries")
    return x


def check_forcing_law(forcing_scale, grf_alpha, grf_tau) -> None:
    """Check the parameters of a forcing ``forcing_scale * GRF(grf_alpha, grf_tau)``: a positive
    finite scale, ``grf_alpha > 1`` (a field with finite variance in 2-D) and ``grf_tau > 0``."""
    check_number(forcing_scale, "forcing_scale")
    check_number(grf_tau, "grf_tau")
    if check_number(grf_alpha, "grf_alpha") <= 1:
        raise ValueError(f"expected grf_alpha > 1 (a Gaussian random field of finite variance), got {grf_alpha!r}")


def check_generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"expected generator to be a torch.Generator or None, got {type(generator).__name__}")
    return generator


class PDE:
    """Base class of the PDE families (subclasses are frozen dataclasses).

    Subclasses set the class attributes ``name``, ``in_channels`` and ``periodic`` and implement
    ``_residual``, ``solve`` and ``sample_inputs``; ``out_channels`` is a class attribute or a
    property (the Navier--Stokes trajectory length is a parameter).
    """

    name: ClassVar[str]
    in_channels: ClassVar[int]
    out_channels: int = 1
    periodic: ClassVar[bool] = False
    #: smallest admissible grid size S
    min_size: ClassVar[int] = 4
    #: seconds to generate one sample (input and reference solution) at S = 64 on one core,
    #: measured (the README's generation table); only orders generation jobs, longest first
    generation_cost: float = 1e-3
    #: whether the generated data depend on the machine's floating-point rounding: trajectories of a
    #: chaotic flow separate exponentially, so the FFT library's rounding (MKL picks its kernels by
    #: CPU) grows into differences at the 1e-2 level; such a family's numbers are not compared
    #: digit for digit across machines (:func:`ens.notebook.machine_stable`)
    chaotic: ClassVar[bool] = False
    #: whether the residual is affine in ``u`` (then one Newton step is a linear solve)
    linear: bool = False
    #: whether the family has ``newton_iterates`` (an assembled Jacobian for :func:`ens.solvers.newton`)
    supports_newton: ClassVar[bool] = False
    #: whether the family has ``_eager_residual``, an in-place kernel that :meth:`residual` uses where
    #: nothing is differentiated (``_residual`` is the differentiable form; tests hold one to the other)
    has_eager_residual: ClassVar[bool] = False

    @property
    def params(self) -> dict:
        """The physical parameters as a plain (JSON-serialisable) dict."""
        return dataclasses.asdict(self)

    # ---- validation -------------------------------------------------------------------------
    def check_input(self, c: torch.Tensor, finite: bool = True) -> torch.Tensor:
        return check_field(c, "c (the conditioning input)", self.in_channels,
                           min_size=self.min_size, finite=finite)

    def check_state(self, u: torch.Tensor, c: torch.Tensor, finite: bool = True) -> None:
        self.check_input(c, finite=finite)
        check_field(u, "u (the state)", self.out_channels, size=c.shape[-1],
                    min_size=self.min_size, finite=finite)
        if u.shape[0] != c.shape[0]:
            raise ValueError(f"batch mismatch: u has {u.shape[0]} samples, c has {c.shape[0]}")

    # ---- interface --------------------------------------------------------------------------
    def residual(self, u: torch.Tensor, c: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Residual ``R(u; c)``, a tensor of the shape of ``u``.

        ``check=False`` skips the input validation (inner loops of iterative solvers, where the
        NaN/Inf test would cost a device synchronisation on every call).
        """
        if check:
            self.check_state(u, c)
        if self.has_eager_residual and not differentiated(u, c):
            return self._eager_residual(u, c)
        return self._residual(u, c)

    def linearize(self, u: torch.Tensor, c: torch.Tensor) -> Linearization:
        """``R(u; c)`` and ``J(u)``'s products, for the iterative solvers (no input validation).

        This default differentiates :meth:`_residual` with ``torch.func``: the VJP reuses the
        graph of the one residual evaluation, each JVP evaluates the residual again (forward
        mode carries primal and tangent together). A family whose Jacobian has a cheap closed
        form overrides it (:class:`ens.pdes.NavierStokes`); its tests hold it against this one.
        """
        def fn(v):
            return self._residual(v, c)

        r, pullback = torch.func.vjp(fn, u)
        return Linearization(r, lambda v: torch.func.jvp(fn, (u,), (v,))[1], lambda w: pullback(w)[0])

    def residual_scale(self, c: torch.Tensor) -> torch.Tensor:
        """Per-sample size of the problem ``||R(0; c)||``, shape ``(B,)``.

        For the elliptic families this is the norm of the forcing on the interior nodes, so
        ``||R(u; c)|| / residual_scale(c)`` is the familiar ``||r|| / ||f||``; for Navier--Stokes
        it is dominated by ``||w0|| / dt_snapshot``. Solvers report residuals relative to it.
        """
        zero = torch.zeros(c.shape[0], self.out_channels, c.shape[-2], c.shape[-1], dtype=c.dtype, device=c.device)
        return self._residual(zero, c).flatten(1).norm(dim=1)

    #: whether :meth:`condition_number` needs a test set's inputs and reference solutions
    condition_number_needs_samples: bool = False

    def condition_number(self, S: int, c: torch.Tensor | None = None, u: torch.Tensor | None = None) -> float:
        """2-norm condition number of the family's (linearised) operator at grid size ``S``; where
        it depends on the sample (:attr:`condition_number_needs_samples`), for the inputs ``c``
        and reference solutions ``u`` of a test set, averaged over the batch. ``NaN`` where the
        problem has no single such operator (the flows: their space-time Jacobian, notebook 03)."""
        return math.nan

    @property
    def modal_wavenumber(self) -> float | None:
        """``k`` where the operator is ``Delta_h + k^2`` on the Dirichlet node grid, which the
        orthonormal DST-I diagonalises (so an error splits into its eigenmode bands,
        :func:`ens.theory.mode_band_masks`); ``None`` for every other operator."""
        return None

    def operator_norm_bound(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """An upper bound of ``||dR/du||_2`` at ``u``, per sample ``(B,)``: what ``ens data verify``
        multiplies the float32 storage error by (elliptic families; the periodic flows are checked
        against their time-truncation error instead, see :mod:`ens.data`)."""
        raise NotImplementedError(f"{type(self).__name__} has no operator_norm_bound, which the verification "
                                  f"tolerance of an elliptic family needs")

    def _residual(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def solve(self, c: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample_inputs(self, n: int, S: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def apply_bc(self, u: torch.Tensor) -> torch.Tensor:
        """Project ``u`` onto the states that satisfy the boundary condition."""
        if self.periodic:
            return u
        return u * interior_mask(u.shape[-1], u.dtype, u.device)

    def grid(self, S: int, dtype: torch.dtype = torch.float64, device="cpu"):
        """Coordinates ``(X, Y)`` of shape ``(S, S)``, ``X[i, j] = x_i``, ``Y[i, j] = y_j``.

        Array axis -2 is ``x`` and axis -1 is ``y``.
        """
        if self.periodic:
            x = torch.arange(S, dtype=dtype, device=device) / S
        else:
            x = torch.linspace(0.0, 1.0, S, dtype=dtype, device=device)
        return torch.meshgrid(x, x, indexing="ij")

    def _check_sample_args(self, n: int, S: int, generator) -> None:
        check_int(n, "n (number of samples)")
        check_int(S, "S (grid size)", self.min_size)
        check_generator(generator)


def interior_mask(S: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``(S, S)`` tensor that is 1 on interior nodes and 0 on the boundary."""
    m = torch.zeros(S, S, dtype=dtype, device=device)
    m[1:-1, 1:-1] = 1
    return m
