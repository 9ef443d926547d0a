"""The learned solver: a predictor ``G0`` and, for ENS, a corrector ``G1``, with explicit scalings.

``u0 = G0(c)`` and the ENS update ``u_{t+1} = u_t + alpha G1([c, u_t, s R(u_t; c)])`` (the loop
itself is :func:`ens.solvers.ens_solve`). Everything that turns physical fields into network
inputs is explicit configuration stored in the checkpoint, never a hidden constant:

* :class:`Normalization`: inputs are standardised per channel, ``(c - mean) / std``; states are
  divided by one scalar ``state_scale`` (the RMS of the training solutions) and networks output
  states and corrections in those units. All three come from the training split.
* :class:`ResidualScaling`: the factor ``s`` that makes the residual an O(1) network input. The
  residual of a good prediction is dominated by grid-scale noise, whose 5-point Laplacian grows
  like ``1 / h^2``; the choices (compared on validation data in notebook 02) are

  - ``"constant"``: ``s = 1 / constant``, one number from the training split (the RMS of
    ``R(0; c)``, i.e. of the forcing for the elliptic problems);
  - ``"sample"``: ``s = 1 / RMS(R(0; c_i))`` per sample -- the residual relative to the size of
    its own problem (scale-free under a forcing-scale shift);
  - ``"h2"``: ``s = (h / h_train)^2 / constant`` -- resolution-consistent for grid-scale error:
    at the training grid it equals ``"constant"``, on a 2x finer grid it divides by 4;

  optionally followed by a spectral low-pass filter keeping the lowest ``lowpass`` fraction of
  the modes per axis (DST-I on the Dirichlet interior, FFT on the torus). The fraction is of the
  grid's own modes, so a 2x finer grid keeps twice as many physical modes as the training grid.
  (A cut-off fixed in physical frequency was tried: on the super-resolution sets of the
  ``default`` profile ENS's error rose, e.g. 0.09 -> 0.12 for Poisson, so it was not adopted.)

Resolution. The training grid size is part of the normalisation (``Normalization.resolution``);
on another grid the FNO's spectral layers are given the padding that keeps their period the
training one (:meth:`NeuralSolver.wrap_pad`, see :mod:`ens.models.fno_cnn`).

Both networks' outputs pass through ``pde.apply_bc``: predictions and corrections vanish on the
Dirichlet boundary by construction.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..pdes import PDE
from ..pdes.stencil import dst2

__all__ = ["Normalization", "ResidualScaling", "NeuralSolver", "SCALINGS", "grid_spacing", "lowpass"]

SCALINGS = ("constant", "sample", "h2")


def grid_spacing(pde: PDE, S: int) -> float:
    """Grid spacing ``h``: ``1 / (S - 1)`` on the Dirichlet node grid, ``1 / S`` on the torus."""
    return 1.0 / S if pde.periodic else 1.0 / (S - 1)


def lowpass(r: torch.Tensor, fraction: float, periodic: bool) -> torch.Tensor:
    """Keep the lowest ``fraction`` of the modes per axis of ``r`` (``(B, C, S, S)``).

    Dirichlet grids: an orthonormal DST-I of the interior nodes (boundary entries stay zero);
    periodic grids: ``rfft2`` with ``|k_x|, |k_y| <= fraction * S / 2``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"expected the low-pass fraction in (0, 1], got {fraction!r}")
    if fraction == 1.0:
        return r
    S = r.shape[-1]
    if periodic:
        k = torch.fft.fftfreq(S, 1.0 / S, device=r.device).abs()
        keep = (k <= fraction * S / 2)
        mask = keep[:, None] & keep[: S // 2 + 1][None, :]
        return torch.fft.irfft2(torch.fft.rfft2(r) * mask, s=(S, S))
    n = S - 2
    keep = torch.arange(n, device=r.device) < max(1, math.ceil(fraction * n))
    mask = (keep[:, None] & keep[None, :]).to(r.dtype)
    out = torch.zeros_like(r)
    out[..., 1:-1, 1:-1] = dst2(dst2(r[..., 1:-1, 1:-1]) * mask)
    return out


@dataclass(frozen=True)
class Normalization:
    """Per-channel input standardisation and the scalar state scale (from the training split).

    A channel that is constant over the training split keeps its mean and is divided by
    ``|mean|`` (or 1 if it is zero) instead of its zero standard deviation.
    """

    input_mean: tuple[float, ...]
    input_std: tuple[float, ...]
    state_scale: float
    #: grid size of the training data (``None``: unknown, as in checkpoints from before it was stored)
    resolution: int | None = None

    @classmethod
    def fit(cls, c: torch.Tensor, u: torch.Tensor) -> "Normalization":
        """From training inputs ``(N, C_in, S, S)`` and solutions ``(N, C_out, S, S)``."""
        c, u = c.double(), u.double()
        mean = c.mean(dim=(0, 2, 3))
        std = c.std(dim=(0, 2, 3))
        # a channel that is constant in training (Darcy's forcing f = 100) is scaled by its own
        # size, not by a vanishing std, so a shifted input (the GRF forcing) stays O(1)
        constant = std <= 1e-6 * mean.abs().clamp_min(1e-300)
        std = torch.where(constant, torch.where(mean != 0, mean.abs(), torch.ones_like(mean)), std)
        return cls(tuple(mean.tolist()), tuple(std.tolist()), float(u.square().mean().sqrt()), c.shape[-1])

    def inputs(self, c: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.input_mean, dtype=c.dtype, device=c.device)[:, None, None]
        std = torch.tensor(self.input_std, dtype=c.dtype, device=c.device)[:, None, None]
        return (c - mean) / std


@dataclass(frozen=True)
class ResidualScaling:
    """How the residual is scaled before it enters the corrector (see the module docstring)."""

    kind: str = "constant"
    constant: float = 1.0
    resolution: int = 64
    lowpass: float | None = None

    def __post_init__(self):
        if self.kind not in SCALINGS:
            raise ValueError(f"unknown residual scaling {self.kind!r}; expected one of {list(SCALINGS)}")
        if not (isinstance(self.constant, (int, float)) and math.isfinite(self.constant) and self.constant > 0):
            raise ValueError(f"expected a positive finite residual scale constant, got {self.constant!r}")
        if self.lowpass is not None and not 0.0 < self.lowpass <= 1.0:
            raise ValueError(f"expected lowpass in (0, 1] or None, got {self.lowpass!r}")

    @classmethod
    def fit(cls, kind: str, pde: PDE, c: torch.Tensor, lowpass: float | None = None) -> "ResidualScaling":
        """The scaling whose constant is the RMS of ``R(0; c)`` over training inputs ``c``."""
        S = c.shape[-1]
        n_entries = pde.out_channels * S * S
        rms = float(pde.residual_scale(c.double()).square().mean().sqrt()) / math.sqrt(n_entries)
        return cls(kind, rms, S, lowpass)

    def __call__(self, pde: PDE, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The corrector's residual channels ``s R``."""
        if self.kind == "sample":
            rms = pde.residual_scale(c) / math.sqrt(r[0].numel())
            out = r / rms.clamp_min(torch.finfo(r.dtype).tiny)[:, None, None, None]
        else:
            s = 1.0 / self.constant
            if self.kind == "h2":
                S = r.shape[-1]
                s *= (grid_spacing(pde, S) / grid_spacing(pde, self.resolution)) ** 2
            out = r * s
        return out if self.lowpass is None else lowpass(out, self.lowpass, pde.periodic)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class NeuralSolver(nn.Module):
    """Predictor ``G0`` and optional corrector ``G1`` (``None``: the plain neural surrogate).

    ``predict(pde, c)`` returns ``u0`` and ``correction(pde, c, u, r)`` the update direction
    ``G1([c, u, s R])`` (without ``alpha``), both in physical units, both satisfying the boundary
    condition of ``pde``. The corrector's input is built without gradient.
    """

    def __init__(self, predictor: nn.Module, corrector: nn.Module | None, normalization: Normalization,
                 scaling: ResidualScaling | None = None):
        super().__init__()
        if corrector is not None and scaling is None:
            raise ValueError("a corrector needs a ResidualScaling")
        self.predictor, self.corrector = predictor, corrector
        self.normalization, self.scaling = normalization, scaling

    @property
    def is_ens(self) -> bool:
        return self.corrector is not None

    def wrap_pad(self, pde: PDE, S: int) -> int:
        """Samples to append per axis before the FNO's spectral layers on an ``S`` grid (see
        :mod:`ens.models.fno_cnn`): the padded size keeps the training period ``S_train h_train``
        (rounded for non-nested grids) and the training size's parity. ``0`` on the torus (the
        period is the domain), at the training grid, on a coarser grid, or if the training grid
        is unknown; ``1`` at ``2 S_train - 1`` for an even training grid."""
        S0 = self.normalization.resolution
        if pde.periodic or S0 is None or S <= S0:
            return 0
        p = max(0, round(S0 / (S0 - 1) * (S - 1)) - S)
        return p + (S + p - S0) % 2

    def _net(self, net: nn.Module, pde: PDE, x: torch.Tensor) -> torch.Tensor:
        """``net(x)``, with the wrap padding (:meth:`wrap_pad`) passed only when there is any, so
        any ``nn.Module`` serves as a network at the training resolution."""
        weight = next(net.parameters(), None)
        if weight is not None and weight.dtype != x.dtype:
            raise TypeError(f"expected {weight.dtype} inputs, the model's dtype, got {x.dtype}: convert the inputs "
                            f"(c.to({weight.dtype})) or the model (model.to({x.dtype}))")
        p = self.wrap_pad(pde, x.shape[-1])
        return net(x, p) if p else net(x)

    def predict(self, pde: PDE, c: torch.Tensor) -> torch.Tensor:
        return pde.apply_bc(self.normalization.state_scale * self._net(self.predictor, pde, self.normalization.inputs(c)))

    def corrector_input(self, pde: PDE, c: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``[c normalised, u / state_scale, s R]`` along channels, detached."""
        with torch.no_grad():
            return torch.cat([self.normalization.inputs(c), u / self.normalization.state_scale,
                              self.scaling(pde, c, r)], dim=1)

    def correction(self, pde: PDE, c: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        if self.corrector is None:
            raise RuntimeError("this model is a plain surrogate: it has no corrector")
        x = self.corrector_input(pde, c, u, r)
        return pde.apply_bc(self.normalization.state_scale * self._net(self.corrector, pde, x))
