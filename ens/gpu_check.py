"""``make gpu-check`` (``python -m ens.gpu_check``): what a CUDA machine must show before the
``paper`` profile runs there, in one run and one summary table.

1. ``tests``: every CUDA-parametrised test (``-k cuda`` over the test modules that take the
   ``device`` fixture), TF32 off (``tests/conftest.py``); a run that collects no CUDA test fails.
2. ``agreement``: per family, in float64 on the ``ci`` validation samples, the residual and the
   reference solver on the GPU against the CPU (relative max difference); then every method of
   the comparison (:func:`ens.evaluate.run_setting` on the ``ci`` test set, the shipped ``ci``
   checkpoints, the CPU run's validation choices) on both, their final mean relative L2 errors
   compared. The limits: 1e-9 for the float64 elliptic operators (rounding, ~1e-15 per
   operation), 1e-6 for the time-stepped flows (rounding grows along the trajectory), 5 % of the
   error for the methods (float32 networks and reductions in another order; to be confirmed on
   the first GPU run).
3. ``train``: per family, optimiser steps of the ``paper`` ENS network and batch on synthetic
   inputs of the paper's grid: milliseconds per step (with the profile's bfloat16 autocast of the
   networks), peak GPU memory, and the full ENS training time it implies (paper epochs x batches
   per epoch); first the autocast loss against the float32 one on the same weights and batch
   (limit 3 %: 2e-4 -- 3e-3 measured on the CPU at the ci profile); nothing is written.
4. ``memory``: peak GPU memory and ms per step of the ``paper`` Helmholtz ENS step at batch
   8 -- 128, the basis for choosing a batch per GPU.
5. ``ddp``: with two or more GPUs visible, ``torchrun --nproc-per-node 2`` trains the ``ci``
   Poisson ENS for one epoch with NCCL and must write exactly one checkpoint.

Exits 0 when every row is within its limit, 1 otherwise, and 1 at once, with one line saying
so, where CUDA is not available: it never skips. Target: under 8 minutes on one GPU.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .paths import checkout

__all__ = ["main", "require_cuda"]

#: test modules whose tests take the ``device`` fixture (cpu and cuda)
CUDA_TEST_MODULES = ("test_pdes.py", "test_models.py", "test_baselines.py", "test_darcy.py", "test_navier_stokes.py")
LIMITS = {"elliptic": 1e-9, "flow": 1e-6, "method": 0.05, "amp": 0.03}


def require_cuda() -> None:
    """Raise ``SystemExit(1)`` with one line when this torch sees no CUDA device."""
    if not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        print(f"error: make gpu-check needs a CUDA device, and torch {torch.__version__} ({build}) sees none; "
              f"run it on a GPU machine with the CUDA build of torch (make setup TORCH_SPEC=torch, or "
              f"make gpu-check GPU_PYTHON=<a python whose torch has CUDA>)", file=sys.stderr)
        raise SystemExit(1)


def _row(rows: list, check: str, case: str, figure: float, unit: str, limit: float | None, ok: bool, note: str = ""):
    rows.append({"check": check, "case": case, "figure": figure, "unit": unit, "limit": limit, "ok": bool(ok),
                 "note": note})
    print(f"  {check:<10} {case:<34} {figure:>11.4g} {unit:<12} {'' if limit is None else f'<= {limit:g}':<10} "
          f"{'ok' if ok else 'FAILED'} {note}", flush=True)


def _tests(rows: list) -> None:
    tests = checkout() / "tests"
    cmd = [sys.executable, "-m", "pytest", *(str(tests / m) for m in CUDA_TEST_MODULES), "-k", "cuda", "-q",
           "-p", "no:cacheprovider", "-p", "no:nbval"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=checkout())
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    passed = next((int(w) for w, nxt in zip(tail.split(), tail.split()[1:]) if nxt.startswith("passed")), 0)
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    _row(rows, "tests", "CUDA-parametrised tests, TF32 off", passed, "passed", None,
         done.returncode == 0 and passed > 0, f"{time.perf_counter() - t0:.0f} s: {tail}")


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.cpu() - b.cpu()).abs().max() / b.cpu().abs().max().clamp_min(1e-300))


def _agreement(rows: list, data_root, device="cuda", families=None) -> None:
    from .data import load_dataset
    from .evaluate import run_setting
    from .experiments import TestSet, dataset_spec, in_distribution_setting
    from .pdes import FAMILIES
    for family in families or FAMILIES:
        setting = in_distribution_setting(family)
        spec = dataset_spec("ci", family, "val", setting)
        pde = spec.pde()
        c, u = (x.double() for x in load_dataset(spec, data_root, generate_missing=True).tensors(0, 4))
        kind = "flow" if pde.periodic else "elliptic"
        d = _max_rel(pde.residual(u.to(device), c.to(device), check=False), pde.residual(u, c, check=False))
        _row(rows, "agreement", f"{family} residual (f64)", d, "max rel diff", LIMITS[kind], d <= LIMITS[kind])
        s_cpu = pde.solve(c)
        d = _max_rel(pde.solve(c.to(device)), s_cpu)
        _row(rows, "agreement", f"{family} reference solve (f64)", d, "max rel diff", LIMITS[kind], d <= LIMITS[kind])
        test = TestSet(family, setting)
        budget = {"n_samples": 4, "batch_size": 4}
        cpu = {tr.method: tr for tr in run_setting("ci", test, budget=budget, data_root=data_root, device="cpu")}
        choices = {k: v for k, v in ((k, tr.info.get(k)) for tr in cpu.values() for k in ("tto", "stop_lowpass", "ens_plus"))
                   if v is not None}
        gpu = {tr.method: tr for tr in run_setting("ci", test, budget=budget, data_root=data_root, device=device,
                                                   **choices)}
        for method, tr in cpu.items():
            e_cpu, e_gpu = float(tr.rel_error[-1].mean()), float(gpu[method].rel_error[-1].mean())
            d = abs(e_gpu - e_cpu) / max(e_cpu, 1e-12)
            ok = d <= LIMITS["method"] or (math.isinf(e_cpu) and math.isinf(e_gpu))
            _row(rows, "agreement", f"{family} {method}", d, "rel err diff", LIMITS["method"], ok,
                 f"rel L2 cpu {e_cpu:.3g}, gpu {e_gpu:.3g}")


def _train_steps(rows: list, steps: int = 10, device="cuda", profile: str = "paper", families=None,
                 amp: bool | None = None) -> None:
    from .experiments import dataset_spec, in_distribution_setting, sizes
    from .pdes import FAMILIES
    from .train import TrainConfig, _build, _train_step, _UnrolledLoss, unrolled_loss
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for family in families or FAMILIES:
        config = TrainConfig.for_profile(profile, family, "ens", **({} if amp is None else {"amp": amp}))
        size = sizes(profile, family)
        pde = dataset_spec(profile, family, "train", in_distribution_setting(family)).pde()
        gen = torch.Generator().manual_seed(0)
        c = pde.sample_inputs(config.batch_size, size.resolution, gen).float()
        u = torch.randn(config.batch_size, pde.out_channels, size.resolution, size.resolution, generator=gen)
        model = _build(config, pde, c, u)[0].to(dev).train()
        c, u = c.to(dev), u.to(dev)
        if config.amp:  # bfloat16 autocast of the networks against float32, same weights and batch
            with torch.no_grad():
                l32, l16 = (float(unrolled_loss(model, pde, c, u, config.steps, config.alpha, config.unroll, amp)[0])
                            for amp in (False, True))
            d = abs(l16 - l32) / abs(l32)
            _row(rows, "train", f"{family} {profile} bf16-autocast loss vs f32", d, "rel diff", LIMITS["amp"],
                 d <= LIMITS["amp"], f"loss f32 {l32:.4g}, bf16 {l16:.4g}")
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = _UnrolledLoss(model, pde, config)
        for _ in range(2):  # warm-up: cuFFT plans, the allocator
            _train_step(model, opt, None, config, pde, c, u, loss_fn=loss_fn)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            _train_step(model, opt, None, config, pde, c, u, loss_fn=loss_fn)
        sync()
        s = (time.perf_counter() - t0) / steps
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else math.nan
        hours = s * config.epochs * math.ceil(size.n_train / config.batch_size) / 3600
        _row(rows, "train", f"{family} {profile} ENS step (B={config.batch_size}, S={size.resolution})", s * 1e3, "ms/step",
             None, math.isfinite(s), f"peak {peak:.2f} GiB; {config.epochs} epochs of {size.n_train} samples: "
                                     f"about {hours:.2f} h on this GPU")
        del model, opt, loss_fn
        if cuda:
            torch.cuda.empty_cache()


def _memory_per_batch(rows: list, batches=(8, 16, 32, 64, 128), steps: int = 3, device="cuda", profile: str = "paper",
                      family: str = "helmholtz") -> None:
    """Peak GPU memory and ms per step of the ``profile`` ENS training step of ``family`` per batch size
    (the batch a GPU holds; the paper's is 32)."""
    from .experiments import dataset_spec, in_distribution_setting, sizes
    from .train import TrainConfig, _build, _train_step, _UnrolledLoss
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    size = sizes(profile, family)
    pde = dataset_spec(profile, family, "train", in_distribution_setting(family)).pde()
    for bs in batches:
        config = TrainConfig.for_profile(profile, family, "ens", batch_size=bs)
        gen = torch.Generator().manual_seed(0)
        c = pde.sample_inputs(bs, size.resolution, gen).float()
        u = torch.randn(bs, pde.out_channels, size.resolution, size.resolution, generator=gen)
        model = _build(config, pde, c, u)[0].to(dev).train()
        c, u = c.to(dev), u.to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
        loss_fn = _UnrolledLoss(model, pde, config)
        _train_step(model, opt, None, config, pde, c, u, loss_fn=loss_fn)  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            _train_step(model, opt, None, config, pde, c, u, loss_fn=loss_fn)
        if cuda:
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / steps * 1e3
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else math.nan
        _row(rows, "memory", f"{family} {profile} ENS step, batch {bs}", peak, "GiB peak", None, math.isfinite(ms),
             f"{ms:.1f} ms/step, {ms / bs:.2f} ms/sample")
        del model, opt, loss_fn
        if cuda:
            torch.cuda.empty_cache()


def _ddp(rows: list, data_root) -> None:
    n = torch.cuda.device_count()
    if n < 2:
        _row(rows, "ddp", "2-GPU NCCL smoke run", n, "GPUs", None, True, "not run: fewer than 2 GPUs visible")
        return
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "ens", "train",
               "--profile", "ci", "--family", "poisson", "--kind", "ens", "--epochs", "1", "--device", "cuda",
               "--out", out, *(["--root", str(data_root)] if data_root else [])]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=checkout(),
                              env={**os.environ, "PYTHONPATH": str(checkout())})
        written = sorted(p.name for p in Path(out, "ci").glob("*.pt")) if Path(out, "ci").exists() else []
        if done.returncode != 0:
            print(done.stderr[-3000:])
        _row(rows, "ddp", "2-GPU NCCL smoke run", len(written), "checkpoints", None,
             done.returncode == 0 and written == ["poisson_ens.pt"], f"{time.perf_counter() - t0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m ens.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="data root for the ci sets (default: $ENS_DATA_DIR or data/)")
    parser.add_argument("--out", help="where to write the table as CSV (default: results/gpu-check.csv)")
    args = parser.parse_args(argv)
    require_cuda()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import pandas as pd

    from .paths import results_dir, write_csv
    print(f"gpu-check: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    rows, t0 = [], time.perf_counter()
    for name, step in (("tests", lambda: _tests(rows)), ("agreement", lambda: _agreement(rows, args.root)),
                       ("train", lambda: _train_steps(rows)), ("memory", lambda: _memory_per_batch(rows)),
                       ("ddp", lambda: _ddp(rows, args.root))):
        print(f"== {name}", flush=True)
        try:
            step()
        except Exception as err:  # a failed stage is a failed row, and the other stages still run
            _row(rows, name, "stage raised", math.nan, "", None, False, f"{type(err).__name__}: {err}"[:300])
    table = pd.DataFrame(rows)
    path = Path(args.out) if args.out else results_dir() / "gpu-check.csv"
    write_csv(table, path)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    bad = int((~table.ok).sum())
    print(f"{len(table) - bad} of {len(table)} rows ok in {time.perf_counter() - t0:.0f} s; wrote {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
