"""Benchmarks of the package's kernels against a reference measured in the same run (``ens bench``).

Each benchmark times one of our kernels and a reference for it on the same tensors, in the same
process, with the same threads: the *ratio* is what a benchmark reports, since the absolute
times of a shared machine move by tens of per cent from run to run while the ratio of two
kernels timed side by side moves far less. Every timing is the minimum (and median) of
``repeats`` calls after ``warmup`` untimed ones, with CUDA synchronised before the clock is read;
a kernel and its reference in the same process alternate call by call (:func:`time_pair`).

A row of the table (:func:`run_benchmarks`): ``benchmark, case, ours_ms, reference, reference_ms,
ratio, goal, meets, threads, device, torch``. ``ratio`` is ``ours / reference`` for a time
(lower is better) and ``reference / ours`` for a speed-up (higher is better); ``goal`` says which
and what it is held against; a row whose goal starts with ``"report"`` has none and only reports
its figure (the command's summary counts the rows with a goal). Sizes are named (:data:`SIZES`): ``"full"`` is the issue's
(batch x grid = 64 x 256 for the residuals), ``"tiny"`` a smoke test that runs in seconds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from .checks import check_choice

# torch and pandas are imported where they run, so that the command line lists the benchmarks
# without loading them

__all__ = ["SIZES", "BENCHMARKS", "time_call", "time_pair", "run_benchmarks", "write_table"]

#: problem sizes per named size: residual batch and grid, data-generation samples and grid
SIZES: dict[str, dict] = {
    "tiny": {"batch": 4, "S": 32, "gen_n": 4, "gen_S": 32, "darcy_n": 2, "ns_batch": 2, "ns_S": 32,
             "repeats": 3, "warmup": 1, "profile": "ci", "ens_n": 4, "flow": {32: 4}, "flow_batch": 2,
             "solve_repeats": 2, "train_batches": 2, "train_rounds": 2},
    "full": {"batch": 64, "S": 256, "gen_n": 256, "gen_S": 64, "darcy_n": 16, "ns_batch": 16, "ns_S": 64,
             "repeats": 10, "warmup": 3, "profile": "default", "ens_n": 16,
             "flow": {64: 40, 128: 10, 256: 4}, "flow_batch": 32, "solve_repeats": 3, "train_batches": 4,
             "train_rounds": 3},
}


def _sync(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _clock(fn: Callable[[], object], device) -> float:
    """Seconds of one call of ``fn``, CUDA synchronised before the clock is read."""
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def time_call(fn: Callable[[], object], repeats: int, warmup: int, device="cpu") -> tuple[float, float]:
    """``(min, median)`` seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = [_clock(fn, device) for _ in range(repeats)]
    return min(times), statistics.median(times)


def time_pair(fn: Callable[[], object], ref: Callable[[], object], repeats: int, warmup: int,
              device="cpu") -> tuple[tuple[float, float], tuple[float, float]]:
    """:func:`time_call` of ``fn`` and of ``ref``, their calls alternating, so that both see the
    same state of a shared machine and of its caches (a reference timed alone before the kernels
    moved by 3x between runs of the same day)."""
    for _ in range(warmup):
        fn()
        ref()
    _sync(device)
    times = list(zip(*[(_clock(fn, device), _clock(ref, device)) for _ in range(repeats)]))
    return tuple((min(t), statistics.median(t)) for t in times)


def _row(benchmark, case, ours, reference, ref, goal, meets, higher=False) -> dict:
    """One table row from ``(min, median)`` timings of ours and of the reference."""
    ratio = ref[0] / ours[0] if higher else ours[0] / ref[0]
    return {"benchmark": benchmark, "case": case, "ours_ms": ours[0] * 1e3, "ours_median_ms": ours[1] * 1e3,
            "reference": reference, "reference_ms": ref[0] * 1e3, "ratio": ratio, "goal": goal,
            "meets": bool(meets(ratio))}


def _fd_residuals(size: dict, device) -> list[dict]:
    """The finite-difference residuals (Poisson, Helmholtz, Darcy): forward, JVP and VJP, each
    against an elementwise add over the same bytes (the memory-bandwidth bound of a stencil that
    reads its inputs and writes its output once)."""
    import torch

    from .pdes import get_pde
    rows, B, S = [], size["batch"], size["S"]
    t = {"repeats": size["repeats"], "warmup": size["warmup"], "device": device}
    gen = torch.Generator().manual_seed(0)
    for family in ("poisson", "helmholtz", "darcy"):
        pde = get_pde(family)
        c = pde.sample_inputs(B, S, gen, dtype=torch.float32).to(device)
        u = torch.randn(B, pde.out_channels, S, S, generator=gen).to(device)
        v = torch.randn_like(u)
        lin = pde.linearize(u, c)
        # the stencil reads u and c and writes r once: an add (two reads, one write) of as many bytes
        n = (2 * u.numel() + c.numel()) // 3
        a, b = torch.randn(n, generator=gen).to(device), torch.randn(n, generator=gen).to(device)

        def add():
            torch.add(a, b)
        goal = "<= 2 (>= 50 % of the add's bandwidth)"
        for case, fn in (("forward", lambda: pde.residual(u, c, check=False)), ("jvp", lambda: lin.jvp(v)),
                         ("vjp", lambda: lin.vjp(v))):
            ours, ref = time_pair(fn, add, **t)
            rows.append(_row("fd residual", f"{family} {case} B={B} S={S}", ours, "add over the same bytes", ref, goal,
                             lambda r: r <= 2))
        rows.append(_fused_residual(pde, u, c, add, t, f"{family} forward B={B} S={S}"))
    return rows


def _fused_residual(pde, u, c, add, t, case) -> dict:
    """What one fused loop reaches: ``torch.compile`` of the differentiable residual (the
    package's own kernels stay eager: no compilation per shape, no C++ compiler needed, the same
    bits everywhere), timed against the same ``add``; NaN with the reason where it cannot compile."""
    import torch
    what = "torch.compile of the differentiable form, one fused loop (reference only, not used)"
    try:
        fused = torch.compile(pde._residual, dynamic=False)
        fused(u, c)  # compilation, untimed
    except Exception as exc:  # noqa: BLE001 - no compiler or an unsupported backend: report why
        return {**_row("fd residual", f"{case}, {what}: {type(exc).__name__}", (math.nan,) * 2, "add over the "
                       "same bytes", (math.nan,) * 2, "report", lambda r: False), "ratio": math.nan}
    ours, ref = time_pair(lambda: fused(u, c), add, **t)
    return _row("fd residual", f"{case}, {what}", ours, "add over the same bytes", ref,
                "report (the eager rows' attainable bound)", lambda r: False)


def _spectral_residual(size: dict, device) -> list[dict]:
    """The pseudo-spectral Navier--Stokes and Kolmogorov residuals against the FFT passes they
    cannot avoid, on tensors of the same shapes: per snapshot one forward transform of ``w``, the
    inverse transforms of its four gradient fields, one forward transform of the advection product
    and one inverse of the tendency (7 transforms of a field)."""
    import torch

    from .pdes import get_pde
    rows, B, S = [], size["ns_batch"], size["ns_S"]
    t = {"repeats": size["repeats"], "warmup": size["warmup"], "device": device}
    gen = torch.Generator().manual_seed(0)
    for family in ("navier_stokes", "kolmogorov"):
        pde = get_pde(family)
        c = pde.sample_inputs(B, S, gen, dtype=torch.float32).to(device)
        u = torch.randn(B, pde.out_channels, S, S, generator=gen).to(device)
        w = torch.cat([c, u], 1)
        w4_hat = torch.fft.rfft2(w).unsqueeze(-3).expand(-1, -1, 4, -1, -1).contiguous()

        def ffts():
            torch.fft.rfft2(w)
            torch.fft.irfft2(w4_hat, s=(S, S))
            torch.fft.irfft2(torch.fft.rfft2(w), s=(S, S))
        ours, ref = time_pair(lambda: pde.residual(u, c, check=False), ffts, **t)
        rows.append(_row("spectral residual", f"{family} forward B={B} T={pde.out_channels} S={S}", ours,
                         "its 7 FFT passes per snapshot", ref, "<= 1.5", lambda r: r <= 1.5))
    return rows


#: the peers of :func:`_flow_solver` and where they come from (``requirements-bench.txt``)
PEERS_HINT = "not installed: pip install -r requirements-bench.txt (make bench does)"


def _flow_solver(size: dict, device) -> list[dict]:
    """The Navier--Stokes/Kolmogorov stepper (:func:`ens.pdes.time_stepping.imex_heun_steps`, the
    blocks and threads of ``advance``) against two peers on PyPI, per sample and step at the same
    grid ``S``, step ``dt = 2.5e-3``, batch and float64 (KolSol has no other precision). The batch
    of the ``full`` size is 32 independent states, a generation chunk
    (:data:`ens.experiments.CHUNK_SIZE`): what ``ens data generate`` steps at a time.

    * jax-cfd's spectral ``NavierStokes2D`` with ``crank_nicolson_rk2``: the same scheme (CN for
      diffusion, Heun for advection, 2/3 rule) and the same five FFTs per stage, ``jit``-compiled
      and ``vmap``-ed over the batch (compilation untimed); its forcing is off, which spares it two
      FFTs per stage (ours is a precomputed spectrum, free);
    * KolSol's torch solver with its RK4, on a ``2 nk + 1 = S - 1`` grid: a velocity formulation
      whose products are dealiased by zero-padding to ``4 nk + 1`` (four stages per step, so fewer
      repeats).

    A speed-up (higher is better): the peer's time over ours. The CPU only (the peers' GPU builds
    are not installed)."""

    import torch

    from .pdes import get_pde
    from .pdes.spectral import spectral
    from .pdes.time_stepping import block_size, imex_heun_steps, stepping
    pde, B, dt = get_pde("kolmogorov"), size["flow_batch"], 2.5e-3
    rows, t = [], {"repeats": size["repeats"], "warmup": size["warmup"]}
    for S, n in size["flow"].items():
        gen = torch.Generator().manual_seed(0)  # B states (chain_starts(B) draws the chains behind B
        w = torch.cat([pde.chain_starts(1, S, gen) for _ in range(B)])  # inputs: fewer than B)
        sp = spectral(S, torch.float64, torch.device("cpu"))
        a, f_hat, w_hat = 0.5 * dt * pde.nu * sp.k2, torch.fft.rfft2(pde.forcing(S)), torch.fft.rfft2(w)

        def ours(w_hat=w_hat, sp=sp, a=a, f_hat=f_hat, S=S, n=n):
            with stepping("cpu") as run:
                run(lambda b: imex_heun_steps(b, n, dt, a, f_hat, sp, S), w_hat.split(block_size(S, "cpu")))
        mine = tuple(x / (B * n) for x in time_call(ours, **t))
        case = f"kolmogorov S={S} B={B} dt={dt:g} float64"
        goal, here = ">= 1 (speed-up over the faster peer)", []
        for peer, make in (("jax-cfd crank_nicolson_rk2", _jax_cfd_steps), ("KolSol rk4", _kolsol_steps)):
            try:
                fn, steps, reps = make(pde, w, S, n, dt)
            except ImportError:
                here.append({**_row("flow solver", case, mine, f"{peer}: {PEERS_HINT}", (math.nan,) * 2, goal,
                                    lambda r: False, higher=True), "ratio": math.nan})
                continue
            ref = tuple(x / (B * steps) for x in time_call(fn, **reps))
            here.append(_row("flow solver", case + ", ms per sample-step", mine, peer, ref, goal, lambda r: r >= 1,
                             higher=True))
        timed = [r for r in here if not math.isnan(r["reference_ms"])]
        fastest = min((r["reference_ms"] for r in timed), default=None)
        for r in timed:  # the goal is held against the faster peer; the other row is reported
            if r["reference_ms"] != fastest:
                r.update(goal="report (not the faster peer)", meets=False)
        rows += here
    return rows


def _jax_cfd_steps(pde, w, S, n, dt):
    """``(fn, steps per call, timing)`` of jax-cfd's spectral solver on the states ``w`` (B, S, S)."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax_cfd.base import funcutils, grids
    from jax_cfd.spectral import equations, time_stepping
    grid = grids.Grid((S, S), domain=((0, 1), (0, 1)))
    eq = equations.NavierStokes2D(viscosity=pde.nu, grid=grid, smooth=True)
    fn = jax.jit(jax.vmap(funcutils.repeated(time_stepping.crank_nicolson_rk2(eq, dt), n)))
    w0 = jnp.fft.rfft2(jnp.asarray(w.numpy()))
    fn(w0).block_until_ready()  # compile
    return (lambda: fn(w0).block_until_ready()), n, {"repeats": 3, "warmup": 1}


def _kolsol_steps(pde, w, S, n, dt):
    """``(fn, steps per call, timing)`` of KolSol's torch solver (RK4) on a random field of its own."""
    from kolsol.torch.solver import KolSol
    from kolsol.utils.integrate import rk4_step
    ks = KolSol(nk=S // 2 - 1, nf=pde.forcing_wavenumber, re=50.0, ndim=2)
    u = ks.random_field(magnitude=1.0, sigma=2.0)[None].repeat(w.shape[0], 1, 1, 1)
    step, steps = rk4_step(ks.dynamics, dt), max(1, n // 8)

    def fn():
        x = u
        for _ in range(steps):
            x = x + step(x)
    return fn, steps, {"repeats": 1, "warmup": 1}


def _elliptic_generation(size: dict, device) -> list[dict]:
    """Poisson/Helmholtz data generation (input draw and DST solve, float64 on the CPU) against one
    ``rfft2`` pass over the same data."""
    import torch

    from .pdes import get_pde
    rows, n, S = [], size["gen_n"], size["gen_S"]
    t = {"repeats": size["repeats"], "warmup": size["warmup"]}
    for family in ("poisson", "helmholtz"):
        pde = get_pde(family)

        def generate():
            pde.solve(pde.sample_inputs(n, S, torch.Generator().manual_seed(0)))
        x = torch.randn(n, 1, S, S, dtype=torch.float64)
        ours, ref = time_pair(generate, lambda: torch.fft.rfft2(x), **t)
        rows.append(_row("data generation", f"{family} n={n} S={S}", ours, "one rfft2 pass", ref, "<= 3",
                         lambda r: r <= 3))
    return rows


def _darcy_generation(size: dict, device) -> list[dict]:
    """Darcy's reference solve (:meth:`ens.pdes.Darcy.solve`) against a per-sample
    ``scipy.sparse.linalg.spsolve`` of the same systems (speed-up, higher is better)."""
    import scipy.sparse.linalg as spla
    import torch

    from .pdes import get_pde
    from .pdes.darcy import fv_matrix
    pde, n, S = get_pde("darcy"), size["darcy_n"], size["gen_S"]
    c = pde.sample_inputs(n, S, torch.Generator().manual_seed(0))
    cn = c.numpy()
    t = {"repeats": size["repeats"], "warmup": 1}

    def spsolve():
        for a, f in cn:
            spla.spsolve(fv_matrix(a).tocsc(), f[1:-1, 1:-1].ravel())
    ours, ref = time_pair(lambda: pde.solve(c), spsolve, **t)
    return [_row("data generation", f"darcy n={n} S={S}", ours, "per-sample scipy spsolve", ref, ">= 5 (speed-up)",
                 lambda r: r >= 5, higher=True)]


def _ens_inference(size: dict, device) -> list[dict]:
    """ENS (the shipped checkpoints of the size's profile, validation alpha and T) against
    Gauss--Newton from the surrogate's prediction on the same validation samples: the time
    Gauss--Newton takes to first reach ENS's mean error, over ENS's time (ENS's speed-up at equal
    error; where Gauss--Newton does not reach it within the evaluation budget, its whole budget's
    time, a lower bound). Both are run ``solve_repeats`` times on the batch after one untimed run on
    one sample; the row's times are the minimum (and median) over the repeats."""

    from .data import load_dataset
    from .experiments import EVALUATION, dataset_spec, in_distribution_setting
    from .pdes import FAMILIES
    from .solvers import ens_solve, gauss_newton, surrogate_solve
    from .train import load_trained
    profile, n = size["profile"], size["ens_n"]
    b = EVALUATION[profile]
    rows = []
    for family in FAMILIES:
        ens, sur = (load_trained(profile, family, kind) for kind in ("ens", "surrogate"))
        spec = dataset_spec(profile, family, "val", in_distribution_setting(family))
        c, u = (x.to(device) for x in load_dataset(spec, None, True).tensors(0, n))
        pde, inf = spec.pde(), ens.inference
        model, surrogate = ens.model.to(device), sur.model.to(device)

        def run_ens(k):
            return ens_solve(model, pde, c[:k], alpha=inf["alpha"], steps=inf["steps"], u_true=u[:k])

        def run_gn(k):
            start = surrogate_solve(surrogate, pde, c[:k])
            tr = gauss_newton(pde, c[:k], start.u, steps=b["gn_steps"], cg_iterations=b["cg_iterations"],
                              u_true=u[:k], on_divergence="stop")
            tr.wall_time += start.wall_time[-1]
            return tr
        run_ens(1), run_gn(1)  # warm-up
        ours, ref = [], []
        for _ in range(size["solve_repeats"]):
            e, g = run_ens(n), run_gn(n)
            target = float(e.rel_error[-1].mean())  # the same on every repeat (deterministic solves)
            reached = (g.rel_error.mean(1) <= target).nonzero()
            ours.append(float(e.wall_time[-1]) / n)
            ref.append(float(g.wall_time[int(reached[0]) if len(reached) else -1]) / n)
        what = ("Gauss–Newton from the surrogate to ENS's error" if len(reached) else
                "Gauss–Newton from the surrogate: not reached, its whole budget (a lower bound)")
        rows.append(_row("ens inference", f"{family} ({profile}) n={n}, error {target:.2g}",
                         (min(ours), statistics.median(ours)), what, (min(ref), statistics.median(ref)),
                         "report (> 1: ENS faster at its own error)", lambda r: r > 1, higher=True))
    return rows


def _training_throughput(size: dict, device) -> list[dict]:
    """Training cost per sample of ENS (unrolled corrector steps) and of the surrogate (one network
    pass) with the size's profile, networks and batches (``ens.train.measure_cost_ratio`` on the
    validation split, same shapes as training): ENS's time over the surrogate's is the cost ratio
    the compute-matched surrogate's epochs come from (:data:`ens.experiments.COMPUTE_RATIO`, measured
    with one thread). The time of one sample is the fastest (and the median) round's batch time
    over the batch size."""
    from .experiments import COMPUTE_RATIO
    from .pdes import FAMILIES
    from .train import measure_cost_ratio
    profile, rows = size["profile"], []
    for family in FAMILIES:
        r = measure_cost_ratio(profile, family, batches=size["train_batches"], rounds=size["train_rounds"],
                               device=device, split="val")
        ens, sur = ((r[f"{kind}_s_per_batch"] / r["batch_size"], r[f"{kind}_s_per_batch_median"] / r["batch_size"])
                    for kind in ("ens", "surrogate"))
        registered = COMPUTE_RATIO[profile][family]
        rows.append(_row("training throughput",
                         f"{family} ({profile}) batch {r['batch_size']}: ENS {1 / ens[0]:.0f} samples/s, surrogate "
                         f"{1 / sur[0]:.0f} samples/s", ens, "surrogate training step, same batches", sur,
                         f"report (the budget study's registered ratio: {registered})", lambda ratio: False))
    return rows


#: benchmark name -> function ``(size, device) -> rows``
BENCHMARKS: dict[str, Callable[[dict, object], list[dict]]] = {
    "fd_residuals": _fd_residuals,
    "spectral_residual": _spectral_residual,
    "flow_solver": _flow_solver,
    "elliptic_generation": _elliptic_generation,
    "darcy_generation": _darcy_generation,
    "ens_inference": _ens_inference,
    "training_throughput": _training_throughput,
}


def run_benchmarks(size: str = "full", only=None, device="cpu", progress=None):
    """Run the benchmarks ``only`` (default: all of :data:`BENCHMARKS`) at the named ``size`` and
    return the table (module docstring); ``progress(name)`` is called before each."""
    check_choice("size", size, SIZES)
    names = list(only or BENCHMARKS)
    for name in names:
        check_choice("benchmark", name, BENCHMARKS)
    rows = []
    for name in names:
        if progress:
            progress(name)
        rows += BENCHMARKS[name](SIZES[size], device)
    import pandas as pd
    import torch
    table = pd.DataFrame(rows)
    return table.assign(threads=torch.get_num_threads(), device=str(torch.device(device)), torch=torch.__version__)


def write_table(table, out_dir, size: str) -> Path:
    """Write the table to ``<out_dir>/bench_<size>.csv`` (atomically) and return the path."""
    from .paths import write_csv
    path = Path(out_dir) / f"bench_{size}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, path)
    return path
