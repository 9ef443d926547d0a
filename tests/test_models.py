"""Backbones, the learned solver's scalings and boundary handling, and checkpoint I/O.

Everything here uses tiny untrained networks (a few thousand weights), so the file runs in seconds.
"""

import dataclasses
import math

import pytest
import torch
from torch import nn

import ens
from ens.models import (
    BACKBONES,
    FNOCNN,
    CheckpointError,
    NeuralSolver,
    Normalization,
    ResidualScaling,
    build_backbone,
    grid_spacing,
    load_checkpoint,
    lowpass,
    save_checkpoint,
)
from ens.models.checkpoint import FORMAT, FORMAT_VERSION, solver_state
from ens.models.fno_cnn import wrap_padded
from ens.pdes import get_pde
from ens.pdes.stencil import dst1_matrix

TINY = {"fno_cnn": {"width": 8, "modes": 4, "layers": 2}, "unet": {"width": 4, "depth": 2}}


def tiny(name, cin, cout, seed=0):
    torch.manual_seed(seed)
    return build_backbone(name, in_channels=cin, out_channels=cout, **TINY[name])


def tiny_solver(pde, backbone="fno_cnn", ens_kind=True, seed=0, S=32, scaling="constant"):
    """An untrained NeuralSolver for ``pde``, with scalings fitted on a few random inputs."""
    g = torch.Generator().manual_seed(seed)
    c = pde.sample_inputs(4, S, g, dtype=torch.float32)
    u = torch.randn(4, pde.out_channels, S, S, generator=g)
    pred = tiny(backbone, pde.in_channels, pde.out_channels, seed)
    corr = tiny(backbone, pde.in_channels + 2 * pde.out_channels, pde.out_channels, seed + 1) if ens_kind else None
    sc = ResidualScaling.fit(scaling, pde, c) if ens_kind else None
    return NeuralSolver(pred, corr, Normalization.fit(c, u), sc), c


# ---- backbones ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("S", [32, 33, 64])  # 33: an odd node grid (super-resolution uses 2S - 1)
def test_backbone_maps_shapes_on_device(name, S, device):
    net = tiny(name, 3, 2).to(device)
    y = net(torch.randn(2, 3, S, S, device=device))
    assert y.shape == (2, 2, S, S) and y.device.type == device.type
    assert torch.isfinite(y).all()


def test_fno_cnn_runs_the_same_weights_at_twice_the_resolution():
    net = tiny("fno_cnn", 1, 1)
    n_params = sum(p.numel() for p in net.parameters())
    assert net(torch.randn(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    assert net(torch.randn(1, 1, 63, 63)).shape == (1, 1, 63, 63)
    # resolution invariance: no weight depends on the grid size
    assert sum(p.numel() for p in net.parameters()) == n_params


def _smooth_nonperiodic(S, channels):
    """A smooth field on the node grid that is not periodic (its values at x = 0 and 1 differ)."""
    x = torch.linspace(0.0, 1.0, S)
    X, Y = torch.meshgrid(x, x, indexing="ij")
    f = torch.sin(math.pi * X) * torch.cos(2 * math.pi * Y) + X * Y + 0.5 * torch.exp(-10 * ((X - 0.3) ** 2 + (Y - 0.6) ** 2))
    return f[None, None] * torch.linspace(0.5, 1.5, channels)[None, :, None, None]


def test_wrap_padded_interpolates_across_the_wrap():
    h = torch.arange(12.0).view(1, 1, 3, 4)
    assert wrap_padded(h, 0) is h
    p = wrap_padded(h, 1)
    assert p.shape == (1, 1, 4, 5) and torch.equal(p[..., :3, :4], h)
    assert torch.allclose(p[0, 0, 3, :4], (h[0, 0, -1] + h[0, 0, 0]) / 2)  # between the last and first rows
    assert torch.allclose(p[0, 0, :, 4], (p[0, 0, :, 3] + p[0, 0, :, 0]) / 2)
    with pytest.raises(ValueError, match="non-negative int"):
        wrap_padded(h, -1)


def test_wrap_pad_keeps_the_training_period_and_parity():
    pde, ns_pde = get_pde("poisson"), get_pde("navier_stokes")
    model, _ = tiny_solver(pde, S=64)
    assert model.normalization.resolution == 64
    assert [model.wrap_pad(pde, S) for S in (64, 127, 253, 33)] == [0, 1, 3, 0]  # 127 + 1 = 2 * 64: period 1 + h_64
    assert model.wrap_pad(ns_pde, 128) == 0  # the torus: the FFT's period is the domain at any N
    odd, _ = tiny_solver(pde, S=17)
    assert odd.wrap_pad(pde, 33) == 2  # the period would need 34; the training size's parity wins
    legacy = NeuralSolver(model.predictor, None, dataclasses.replace(model.normalization, resolution=None))
    assert legacy.wrap_pad(pde, 127) == 0


@pytest.mark.parametrize("S", [32, 64])
def test_padded_spectral_layer_is_consistent_on_a_nested_finer_grid(S):
    """The same smooth non-periodic field at S and at 2S - 1 (whose even nodes are the S grid):
    with the padding, one spectral layer gives the same output at the shared nodes up to the
    sampling of the wrap ramp (measured 1e-3); without it, the period changes and neuraloperator
    2.0.0 shifts the frequencies of the odd axis by one (measured > 1)."""
    torch.manual_seed(0)
    layer = FNOCNN(1, 1, width=8, modes=6, layers=1).blocks.convs[0]
    coarse, fine = _smooth_nonperiodic(S, 8), _smooth_nonperiodic(2 * S - 1, 8)
    with torch.no_grad():
        want = layer(coarse)
        padded = layer(wrap_padded(fine, 1))[..., :2 * S - 1, :2 * S - 1][..., ::2, ::2]
        plain = layer(fine)[..., ::2, ::2]
    err_padded = float((padded - want).norm() / want.norm())
    err_plain = float((plain - want).norm() / want.norm())
    assert err_padded < 0.01 and err_plain > 10 * err_padded


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_rejects_wrong_channel_count_and_rank(name):
    net = tiny(name, 3, 1)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3, S, S\)"):
        net(torch.randn(2, 2, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        net(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        net(torch.randn(1, 1, 3, 32, 32))


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'resnet'.*fno_cnn.*unet"):
        build_backbone("resnet", in_channels=1, out_channels=1)


@pytest.mark.parametrize("name, kwargs", [
    ("fno_cnn", {"in_channels": 1, "out_channels": 1, "depth": 3}),   # a U-Net argument
    ("unet", {"in_channels": 1, "out_channels": 1, "modes": 4}),     # an FNO argument
    ("unet", {"in_channels": 1}),                                     # missing out_channels
    ("fno_cnn", {"in_channels": 0, "out_channels": 1}),
    ("fno_cnn", {"in_channels": 1, "out_channels": 1, "modes": 2.5}),
    ("fno_cnn", {"in_channels": 1, "out_channels": 1, "width": True}),
    ("unet", {"in_channels": 1, "out_channels": 1, "depth": 0}),
    ("unet", {"in_channels": 1, "out_channels": -2}),
])
def test_bad_backbone_arguments_raise_value_error(name, kwargs):
    with pytest.raises(ValueError, match=f"bad arguments for backbone '{name}'|to be a positive int"):
        build_backbone(name, **kwargs)


def test_fno_grid_too_coarse_for_its_modes():
    net = build_backbone("fno_cnn", in_channels=1, out_channels=1, width=4, modes=12, layers=1)
    with pytest.raises(ValueError, match="too coarse for 12 Fourier modes.*S >= 24"):
        net(torch.randn(1, 1, 16, 16))
    assert net(torch.randn(1, 1, 24, 24)).shape == (1, 1, 24, 24)  # the limit itself is accepted


# ---- boundary conditions of the learned solver --------------------------------------------------
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_predictions_and_corrections_vanish_on_the_dirichlet_boundary(backbone, device):
    pde = ens.get_pde("poisson")
    model, c = tiny_solver(pde, backbone)
    model.to(device)
    c = c.to(device)
    with torch.no_grad():
        u = model.predict(pde, c)
        du = model.correction(pde, c, u, pde.residual(u, c))
    for field in (u, du):
        assert field.shape == (4, 1, 32, 32)
        edge = torch.cat([field[..., 0, :], field[..., -1, :], field[..., :, 0], field[..., :, -1]], -1)
        assert torch.equal(edge, torch.zeros_like(edge))  # exact zeros, by construction
        assert field[..., 1:-1, 1:-1].abs().max() > 0  # the interior is not trivially zero


def test_periodic_predictions_are_unconstrained():
    pde = ens.get_pde("navier_stokes")
    assert pde.out_channels == 10
    model, c = tiny_solver(pde)
    with torch.no_grad():
        u = model.predict(pde, c)
        du = model.correction(pde, c, u, pde.residual(u, c))
        raw = model.normalization.state_scale * model.predictor(model.normalization.inputs(c))
    assert u.shape == du.shape == (4, 10, 32, 32)
    assert torch.equal(u, raw)  # apply_bc is the identity on the torus
    for field in (u, du):
        assert field[..., 0, :].abs().max() > 0 and field[..., :, -1].abs().max() > 0


def test_surrogate_has_no_corrector():
    pde = ens.get_pde("poisson")
    model, c = tiny_solver(pde, ens_kind=False)
    assert not model.is_ens
    with pytest.raises(RuntimeError, match="no corrector"):
        model.correction(pde, c, c, c)
    with pytest.raises(ValueError, match="ResidualScaling"):
        NeuralSolver(tiny("unet", 1, 1), tiny("unet", 3, 1), Normalization((0.0,), (1.0,), 1.0), None)


# ---- residual scalings --------------------------------------------------------------------------
def test_constant_scaling_divides_by_the_constant_and_fit_uses_the_rms_of_the_forcing():
    pde = get_pde("poisson")
    c = pde.sample_inputs(5, 32, torch.Generator().manual_seed(1))
    r = torch.randn(5, 1, 32, 32, dtype=torch.float64)
    sc = ResidualScaling("constant", 7.5, 32)
    # r * (1 / 7.5) and r / 7.5 may differ in the last bit
    torch.testing.assert_close(sc(pde, c, r), r / 7.5, rtol=1e-15, atol=0)
    fitted = ResidualScaling.fit("constant", pde, c)
    r0 = pde.residual(torch.zeros_like(c), c)
    assert fitted.resolution == 32 and fitted.kind == "constant" and fitted.lowpass is None
    assert math.isclose(fitted.constant, float(r0.square().mean().sqrt()), rel_tol=1e-12)


@pytest.mark.parametrize("family, S_train, S_fine", [("poisson", 32, 63), ("navier_stokes", 32, 64)])
def test_h2_scaling_equals_constant_at_training_resolution_and_a_quarter_on_the_2x_grid(family, S_train, S_fine):
    pde = get_pde(family)
    C = pde.out_channels
    cst = ResidualScaling("constant", 3.0, S_train)
    h2 = ResidualScaling("h2", 3.0, S_train)
    c = torch.ones(2, pde.in_channels, S_train, S_train, dtype=torch.float64)
    r = torch.randn(2, C, S_train, S_train, dtype=torch.float64)
    assert torch.equal(h2(pde, c, r), cst(pde, c, r))
    cf = torch.ones(2, pde.in_channels, S_fine, S_fine, dtype=torch.float64)
    rf = torch.randn(2, C, S_fine, S_fine, dtype=torch.float64)
    factor = (grid_spacing(pde, S_fine) / grid_spacing(pde, S_train)) ** 2
    assert factor == 0.25  # h halves exactly: 2S - 1 nodes (Dirichlet), 2S cells (torus)
    assert torch.equal(h2(pde, cf, rf), cst(pde, cf, rf) * 0.25)  # power-of-2 scalings are exact


def test_grid_spacing_of_node_and_cell_grids():
    assert grid_spacing(get_pde("poisson"), 33) == 1 / 32
    assert grid_spacing(get_pde("navier_stokes"), 32) == 1 / 32


@pytest.mark.parametrize("family", ["helmholtz", "darcy"])
def test_sample_scaling_gives_unit_rms_per_sample_and_is_scale_free(family):
    pde = get_pde(family)
    c = pde.sample_inputs(3, 32, torch.Generator().manual_seed(2))
    c = c * torch.tensor([1.0, 10.0, 0.01], dtype=torch.float64)[:, None, None, None]  # very different sizes
    sc = ResidualScaling("sample", 1.0, 32)
    r0 = pde.residual(torch.zeros(3, 1, 32, 32, dtype=torch.float64), c)
    out = sc(pde, c, r0)
    rms = out.flatten(1).square().mean(1).sqrt()
    torch.testing.assert_close(rms, torch.ones(3, dtype=torch.float64), rtol=1e-12, atol=0)  # round-off only
    # the same r for the same problem scaled by 7 gives the same network input (scale-free);
    # Darcy: only the forcing channel scales the residual, the permeability must stay the same
    r = torch.randn_like(r0)
    c7 = c.clone()
    c7[:, -1] *= 7
    torch.testing.assert_close(sc(pde, c7, 7 * r), sc(pde, c, r), rtol=1e-12, atol=1e-15)


def _dst_mode(S, k, l):
    q = dst1_matrix(S - 2)
    u = torch.zeros(1, 1, S, S, dtype=torch.float64)
    u[0, 0, 1:-1, 1:-1] = torch.outer(q[k], q[l])
    return u


def test_lowpass_on_the_dirichlet_grid_keeps_low_and_removes_high_dst_modes():
    S, n = 32, 30
    low, high, mixed = _dst_mode(S, 2, 5), _dst_mode(S, 25, 1), _dst_mode(S, 3, 20)
    r = torch.randn(2, 1, S, S, dtype=torch.float64)
    assert lowpass(r, 1.0, False) is r  # the identity
    # fraction 0.5 keeps the indices < ceil(0.5 * 30) = 15 per axis; DST-I is exact to round-off
    torch.testing.assert_close(lowpass(low, 0.5, False), low, rtol=0, atol=1e-13)
    assert lowpass(high, 0.5, False).abs().max() < 1e-13
    assert lowpass(mixed, 0.5, False).abs().max() < 1e-13  # one axis above the cut removes the mode
    out = lowpass(low + high + 0.3 * mixed, 0.5, False)
    torch.testing.assert_close(out, low, rtol=0, atol=1e-13)
    out = lowpass(r, 0.3, False)
    edge = torch.cat([out[..., 0, :], out[..., -1, :], out[..., :, 0], out[..., :, -1]], -1)
    assert torch.equal(edge, torch.zeros_like(edge))  # the boundary stays zero
    assert 0 < out.norm() < r.norm()
    # 0.95 keeps ceil(28.5) = 29 indices: only the highest mode goes; 0.99 keeps ceil(29.7) = 30, i.e. all
    top = _dst_mode(S, n - 1, 0)
    assert lowpass(top, 0.95, False).abs().max() < 1e-13
    torch.testing.assert_close(lowpass(top, 0.99, False), top, rtol=0, atol=1e-13)


def test_lowpass_on_the_torus_keeps_low_and_removes_high_fourier_modes():
    S = 32
    x = torch.arange(S, dtype=torch.float64) / S
    X, Y = torch.meshgrid(x, x, indexing="ij")
    low = (torch.sin(2 * math.pi * 3 * X) * torch.cos(2 * math.pi * 2 * Y))[None, None]
    high = torch.cos(2 * math.pi * 12 * X)[None, None].expand(1, 1, S, S)
    high_y = torch.sin(2 * math.pi * 10 * Y)[None, None].expand(1, 1, S, S)
    const = torch.full((1, 1, S, S), 2.5, dtype=torch.float64)
    # fraction 0.5 keeps |k| <= 0.5 * 32 / 2 = 8 per axis; FFT round-off only
    for keep in (low, const):
        torch.testing.assert_close(lowpass(keep, 0.5, True), keep, rtol=0, atol=1e-13)
    for drop in (high, high_y):
        assert lowpass(drop, 0.5, True).abs().max() < 1e-13
    torch.testing.assert_close(lowpass(low + high + high_y, 0.5, True), low, rtol=0, atol=1e-13)


def test_scaling_applies_its_lowpass():
    pde = get_pde("poisson")
    c = torch.ones(1, 1, 32, 32, dtype=torch.float64)
    sc = ResidualScaling("constant", 2.0, 32, lowpass=0.5)
    low, high = _dst_mode(32, 1, 1), _dst_mode(32, 28, 28)
    torch.testing.assert_close(sc(pde, c, low + high), low / 2, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "rms"}, "unknown residual scaling 'rms'.*constant.*sample.*h2"),
    ({"constant": 0.0}, "positive finite"),
    ({"constant": -1.0}, "positive finite"),
    ({"constant": float("nan")}, "positive finite"),
    ({"constant": float("inf")}, "positive finite"),
    ({"lowpass": 0.0}, "lowpass"),
    ({"lowpass": 1.5}, "lowpass"),
])
def test_invalid_scaling_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResidualScaling(**kwargs)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01])
def test_invalid_lowpass_fraction_raises(fraction):
    with pytest.raises(ValueError, match=r"low-pass fraction in \(0, 1\]"):
        lowpass(torch.zeros(1, 1, 8, 8), fraction, False)


# ---- normalisation ------------------------------------------------------------------------------
def test_normalization_standardises_each_input_channel():
    g = torch.Generator().manual_seed(3)
    c = torch.randn(20, 2, 16, 16, generator=g, dtype=torch.float64)
    c[:, 0] = 5.0 + 3.0 * c[:, 0]
    c[:, 1] = -100.0 + 0.01 * c[:, 1]
    u = 4.0 * torch.randn(20, 1, 16, 16, generator=g, dtype=torch.float64)
    norm = Normalization.fit(c, u)
    x = norm.inputs(c)
    # fitted and applied in float64 on the same data: round-off only
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(2, dtype=torch.float64), rtol=1e-10, atol=0)
    assert math.isclose(norm.state_scale, float(u.square().mean().sqrt()), rel_tol=1e-12)
    assert norm.inputs(c.float()).dtype == torch.float32


# ---- checkpoints --------------------------------------------------------------------------------
def _payload(model, pde, family, backbone="fno_cnn", S=32):
    pk = {"in_channels": pde.in_channels, "out_channels": pde.out_channels, **TINY[backbone]}
    ck = ({"in_channels": pde.in_channels + 2 * pde.out_channels, "out_channels": pde.out_channels, **TINY[backbone]}
          if model.is_ens else None)
    return {"kind": "ens" if model.is_ens else "surrogate", "family": family,
            "pde_params": pde.params, "in_channels": pde.in_channels, "out_channels": pde.out_channels,
            "resolution": S, **solver_state(model, backbone, pk, ck), "config": {"note": "test"},
            "history": [{"epoch": 1, "val_rel_l2": 0.5}], "inference": {"alpha": 0.5, "steps": 3}}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("scaling", ["constant", "h2"])
def test_checkpoint_round_trip_is_bit_identical(tmp_path, backbone, scaling):
    pde = get_pde("helmholtz", k=2.0)
    model, c = tiny_solver(pde, backbone, scaling=scaling)
    path = save_checkpoint(_payload(model, pde, "helmholtz", backbone), tmp_path / "sub" / "m.pt")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no .tmp file left behind
    ck = load_checkpoint(path, family="helmholtz", in_channels=1, out_channels=1)
    assert ck.kind == "ens" and ck.family == "helmholtz" and ck.resolution == 32
    assert ck.pde() == pde and ck.pde(k=3.0).k == 3.0
    assert ck.history == [{"epoch": 1, "val_rel_l2": 0.5}] and ck.inference == {"alpha": 0.5, "steps": 3}
    assert ck.raw["format"] == FORMAT and ck.raw["format_version"] == FORMAT_VERSION
    assert ck.model.normalization == model.normalization and ck.model.scaling == model.scaling
    assert not ck.model.training  # loaded in eval mode
    with torch.no_grad():
        u, u2 = model.predict(pde, c), ck.model.predict(pde, c)
        r = pde.residual(u, c)
        assert torch.equal(u, u2)
        assert torch.equal(model.correction(pde, c, u, r), ck.model.correction(pde, c, u, r))


def test_surrogate_checkpoint_round_trip(tmp_path):
    pde = get_pde("poisson")
    model, c = tiny_solver(pde, "unet", ens_kind=False)
    ck = load_checkpoint(save_checkpoint(_payload(model, pde, "poisson", "unet"), tmp_path / "s.pt"))
    assert ck.kind == "surrogate" and ck.model.corrector is None and ck.model.scaling is None
    with torch.no_grad():
        assert torch.equal(model.predict(pde, c), ck.model.predict(pde, c))


def test_checkpoint_for_another_problem_is_refused_with_its_family(tmp_path):
    pde = get_pde("poisson")
    model, _ = tiny_solver(pde)
    path = save_checkpoint(_payload(model, pde, "poisson"), tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match="family='poisson', expected 'darcy'.*the ens of poisson"):
        load_checkpoint(path, family="darcy")
    with pytest.raises(CheckpointError, match="in_channels=1, expected 2.*the ens of poisson"):
        load_checkpoint(path, in_channels=2)
    with pytest.raises(CheckpointError, match="out_channels=1, expected 10.*the ens of poisson"):
        load_checkpoint(path, out_channels=10)
    assert issubclass(CheckpointError, ValueError)


def test_corrupt_truncated_and_foreign_files_raise_checkpoint_error(tmp_path):
    pde = get_pde("poisson")
    model, _ = tiny_solver(pde)
    good = save_checkpoint(_payload(model, pde, "poisson"), tmp_path / "good.pt")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8).numpy().tobytes())
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for bad in (truncated, noise, empty):
        with pytest.raises(CheckpointError, match="cannot read checkpoint"):
            load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"a": 1}, foreign)
    with pytest.raises(CheckpointError, match="not an ENS checkpoint"):
        load_checkpoint(foreign)
    torch.save([1, 2, 3], foreign)
    with pytest.raises(CheckpointError, match="not an ENS checkpoint"):
        load_checkpoint(foreign)
    # an ENS file of another format version, one with a missing entry, one with mismatched weights
    raw = torch.load(good, weights_only=True)
    torch.save({**raw, "format_version": FORMAT_VERSION + 1}, foreign)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(foreign)
    save_checkpoint({k: v for k, v in raw.items() if k != "normalization"}, foreign)
    with pytest.raises(CheckpointError, match="lacks the entries.*normalization"):
        load_checkpoint(foreign)
    raw["predictor"]["kwargs"]["width"] = 16
    save_checkpoint(raw, foreign)
    with pytest.raises(CheckpointError, match="does not rebuild its model"):
        load_checkpoint(foreign)


def test_missing_checkpoint_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_is_not_executable_pickle(tmp_path):
    """weights_only loading refuses arbitrary objects (a module pickled whole)."""
    path = tmp_path / "module.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "net": nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_fno_cnn_class_is_exported():
    assert BACKBONES["fno_cnn"] is FNOCNN


def test_constant_training_channel_does_not_blow_up_shifted_inputs():
    train_pde, shift_pde = get_pde("darcy"), get_pde("darcy", forcing="grf")
    c = train_pde.sample_inputs(8, 32, torch.Generator().manual_seed(0))
    assert bool((c[:, 1] == 100.0).all())  # the in-distribution forcing is a constant
    norm = Normalization.fit(c, torch.randn(8, 1, 32, 32, dtype=torch.float64))
    x = norm.inputs(shift_pde.sample_inputs(2, 32, torch.Generator().manual_seed(1)))
    # the constant channel is divided by its own size (100): the GRF forcing, of amplitude ~100 --
    # a few hundred at the extremes -- must stay within a few units, not ~1e12 as with a clamped std
    assert float(x[:, 1].abs().max()) < 10
    assert float(x[:, 0].abs().max()) < 10  # the permeability channel is unaffected
