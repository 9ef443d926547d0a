"""Training of ENS and of the same-budget neural surrogate: the unrolled loss, resume, selection.

ENS (``kind="ens"``) trains the predictor ``G0`` and the corrector ``G1`` jointly on the unrolled
loop ``u_{t+1} = u_t + alpha_train G1([c, u_t, s R(u_t)])``, ``t = 0 .. T_train - 1``, with the
loss ``mean_{t=1..T} MSE(u_t, u*) / state_scale^2`` (every iterate supervised). The corrector's
input is built without gradient. Two unroll variants:

* ``"full"``: gradient flows through the additive chain ``u_t = u_0 + alpha sum G1(...)``;
* ``"truncated"``: ``u_t`` is detached after each step (``t >= 1``), so each correction is
  trained for the state it saw; ``u_0`` is not detached, so ``G0`` learns from the first step's
  loss. (Detaching ``u_0`` too would leave the predictor without gradient -- a defect of one
  reference variant; ``tests/test_train.py`` checks that both networks receive gradient.)

The surrogate (``kind="surrogate"``) is the same backbone trained alone with the loss
``MSE(u_0, u*)``, for the same number of epochs on the same data, batches and optimiser. One ENS
epoch costs several surrogate epochs (the unrolled corrector), so the same epochs are not the same
compute: the *compute-matched* surrogate (``kind="surrogate_matched"``) is the surrogate trained for
ENS's training compute, ``round(epochs * ratio)`` epochs, where ``ratio`` is ENS's measured time
per training batch over the surrogate's (:data:`ens.experiments.COMPUTE_RATIO`, measured by
:func:`measure_cost_ratio`). The checkpoints' recorded wall times also carry the load of the
machine they trained on, so they match only where both runs had the same load.

Optimiser AdamW, optional cosine schedule (per optimiser step) and gradient-norm clipping. After
every epoch the mean relative L2 error on the validation split (ENS: the iterate ``T_train``;
surrogate: ``u_0``) decides the best weights. When training ends, ``alpha_test`` and ``T_test``
are chosen on the validation split only (:func:`select_inference`) and stored in the checkpoint.

Resume: ``<name>.last.pt`` holds the weights, optimiser and scheduler state, the epoch and batch
position and the running sums, saved atomically at the end of every epoch and every
``save_every_s`` seconds within one. The order of the batches of epoch ``e`` comes from a
generator seeded with ``(seed, e)``, so a job killed at any point and restarted continues the
same sequence of updates and ends with the same weights as an uninterrupted run (bit-identical
on the CPU with the same thread count). The finished checkpoint ``<name>.pt`` holds the best
weights, the history and the inference choice; the ``.last.pt`` file is then removed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import distributed
from .checks import check_choice, check_int, check_number
from .data import load_dataset
from .experiments import COMPUTE_RATIO, TRAINING, dataset_spec, in_distribution_setting
from .models import (
    BACKBONES,
    SCALINGS,
    Checkpoint,
    CheckpointError,
    NeuralSolver,
    Normalization,
    ResidualScaling,
    build_backbone,
    load_checkpoint,
    read_checkpoint,
    record_checkpoint,
    save_checkpoint,
)
from .models.checkpoint import solver_state
from .paths import checkpoint_root, studies_dir
from .pdes import FAMILIES, PDE
from .solvers import ens_solve, surrogate_solve

__all__ = ["TrainConfig", "KINDS", "UNROLLS", "RECIPE_VARIANTS", "checkpoint_dir", "checkpoint_path", "load_trained",
           "unrolled_loss", "train", "select_inference", "evaluate_split", "recipe_study", "recipe_study_path", "budget_study_path",
           "recipe_summary", "measure_cost_ratio", "matched_epochs"]

#: the trained roles: ENS, the surrogate with ENS's epochs, the surrogate with ENS's training time
KINDS = ("ens", "surrogate", "surrogate_matched")
UNROLLS = ("full", "truncated")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint).

    ``backbone_kwargs`` are the backbone's constructor arguments besides the channel counts;
    ``alphas`` and ``max_steps`` span the validation grid of :func:`select_inference`;
    ``n_select`` validation samples are used for it (the first ones of the split). ``amp``
    runs the network passes of the training loss under bfloat16 autocast (the ``paper``
    profile's choice for GPUs); residuals, the loss, the optimiser, validation and inference
    stay float32.
    """

    profile: str
    family: str
    kind: str = "ens"
    backbone: str = "fno_cnn"
    backbone_kwargs: tuple = (("width", 24), ("modes", 12), ("layers", 4))
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    grad_clip: float | None = 1.0
    steps: int = 5
    alpha: float = 1.0
    unroll: str = "full"
    scaling: str = "h2"
    lowpass: float | None = 0.5
    n_train: int | None = None
    seed: int = 33
    alphas: tuple = (0.25, 0.5, 1.0)
    max_steps: int = 50
    n_select: int = 64
    save_every_s: float = 60.0
    amp: bool = False

    def __post_init__(self):
        check_choice("family", self.family, FAMILIES)
        check_choice("kind", self.kind, KINDS)
        check_choice("backbone", self.backbone, BACKBONES)
        check_choice("unroll", self.unroll, UNROLLS)
        check_choice("scaling", self.scaling, SCALINGS)
        check_choice("schedule", self.schedule, ("cosine", "none"))
        kwargs = self.backbone_kwargs.items() if isinstance(self.backbone_kwargs, dict) else self.backbone_kwargs
        object.__setattr__(self, "backbone_kwargs", tuple(sorted((str(k), v) for k, v in kwargs)))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        for name in ("epochs", "batch_size", "steps", "max_steps", "n_select", "seed"):
            check_int(getattr(self, name), name, 0 if name == "seed" else 1)
        for name in ("lr", "alpha", "save_every_s"):
            check_number(getattr(self, name), name)
        if not self.alphas or any(not (math.isfinite(a) and a > 0) for a in self.alphas):
            raise ValueError(f"expected alphas to be positive numbers, got {self.alphas!r}")
        if self.n_train is not None:
            check_int(self.n_train, "n_train (or None)")

    @classmethod
    def for_profile(cls, profile: str, family: str, kind: str = "ens", **overrides) -> "TrainConfig":
        """The profile's settings (``ens.experiments.TRAINING``) with ``overrides`` on top."""
        check_choice("profile", profile, TRAINING)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; expected some of {sorted(fields)}")
        base = TRAINING[profile]
        settings = {**base.get("all", {}), **base.get(family, {}), **overrides}
        if kind == "surrogate_matched":  # the epochs given are ENS's
            settings["epochs"] = matched_epochs(profile, family, settings.get("epochs", cls.epochs))
        return cls(profile=profile, family=family, kind=kind, **settings)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["backbone_kwargs"] = dict(self.backbone_kwargs)
        d["alphas"] = list(self.alphas)
        if not self.amp:  # a float32 run is described as before the option existed (shipped checkpoints)
            del d["amp"]
        return d

    @property
    def name(self) -> str:
        return f"{self.family}_{self.kind}"


def checkpoint_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    """Where the checkpoints of a profile live: ``root`` if given, else ``$ENS_CHECKPOINT_DIR``,
    else ``data/checkpoints`` of the checkout; then ``/<profile>``."""
    return checkpoint_root(root) / profile


def checkpoint_path(profile: str, family: str, kind: str, root=None) -> Path:
    check_choice("kind", kind, KINDS)
    return checkpoint_dir(profile, root) / f"{family}_{kind}.pt"


def load_trained(profile: str, family: str, kind: str, root=None) -> Checkpoint:
    """The trained checkpoint of a role, ``<root>/<profile>/<family>_<kind>.pt``, verified
    (:func:`ens.models.read_checkpoint`) and checked to be that family's ``kind`` trained at
    ``profile`` (a file copied over another role's is refused)."""
    return load_checkpoint(checkpoint_path(profile, family, kind, root), family=family, kind=kind, profile=profile)


# ---- the unrolled loss -------------------------------------------------------------------------
def unrolled_loss(model: NeuralSolver, pde: PDE, c: torch.Tensor, u_true: torch.Tensor, steps: int,
                  alpha: float, unroll: str = "full", amp: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Training loss of one batch and the per-iterate MSEs (state units).

    Surrogate: ``MSE(u_0, u*)``; ENS: the mean over ``t = 1 .. steps`` (see the module docstring).
    ``amp``: the predictor's and corrector's passes run under bfloat16 autocast and their outputs
    are cast back to float32 before they enter the iterate, so the residuals the corrector sees
    and the loss are float32.
    """
    def net(fn, *args):
        if not amp:
            return fn(*args)
        with torch.autocast(c.device.type, dtype=torch.bfloat16):
            out = fn(*args)
        return out.float()

    scale2 = model.normalization.state_scale ** 2
    u = net(model.predict, pde, c)
    per_iterate = [torch.mean((u - u_true) ** 2) / scale2]
    if not model.is_ens:
        return per_iterate[0], [float(per_iterate[0].detach())]
    for t in range(steps):
        with torch.no_grad():
            r = pde.residual(u.detach(), c, check=False)
        base = u.detach() if (unroll == "truncated" and t > 0) else u
        u = base + alpha * net(model.correction, pde, c, u.detach(), r)
        per_iterate.append(torch.mean((u - u_true) ** 2) / scale2)
    loss = torch.stack(per_iterate[1:]).mean()
    return loss, [float(x.detach()) for x in per_iterate]


class _UnrolledLoss(torch.nn.Module):
    """:func:`unrolled_loss` as a module's forward, the form ``DistributedDataParallel`` wraps."""

    def __init__(self, model: NeuralSolver, pde: PDE, config: "TrainConfig"):
        super().__init__()
        self.model, self.pde, self.config = model, pde, config

    def forward(self, c: torch.Tensor, u: torch.Tensor):
        return unrolled_loss(self.model, self.pde, c, u, self.config.steps, self.config.alpha, self.config.unroll,
                             self.config.amp)


def _train_step(model: NeuralSolver, opt, sched, config: "TrainConfig", pde: PDE, c: torch.Tensor,
                u: torch.Tensor, *, loss_fn=None, weight: float = 1.0,
                ctx: distributed.Context = distributed.Context()) -> tuple[float, list[float]]:
    """One optimiser step on one batch: the loss value and the per-iterate MSEs.

    In a group of processes (``ctx``), ``loss_fn`` is the DDP-wrapped :class:`_UnrolledLoss`, this
    rank's loss counts with ``weight`` (:func:`ens.distributed.split_batch`) and the values
    returned are the whole batch's."""
    loss, per_it = (loss_fn if loss_fn is not None else _UnrolledLoss(model, pde, config))(c, u)
    loss_value = float(loss.detach())
    if ctx.active:
        share = [weight / ctx.world * x for x in [loss_value, *per_it]]
        loss_value, *per_it = distributed.all_reduce_sum(share, ctx, c.device)
    if not math.isfinite(loss_value):
        return loss_value, per_it
    opt.zero_grad(set_to_none=True)
    (loss * (weight if ctx.active else 1.0)).backward()
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    opt.step()
    if sched is not None:
        sched.step()
    return loss_value, per_it


# ---- compute matching --------------------------------------------------------------------------
def matched_epochs(profile: str, family: str, ens_epochs: int) -> int:
    """The compute-matched surrogate's epochs for ``ens_epochs`` ENS epochs: ``round(ens_epochs *
    ratio)`` with the measured cost ratio of :data:`ens.experiments.COMPUTE_RATIO` (at least 1)."""
    check_int(ens_epochs, "epochs")
    check_choice("profile", profile, COMPUTE_RATIO)
    if family not in COMPUTE_RATIO[profile]:
        raise ValueError(f"no measured compute ratio of {family!r} at {profile!r} (expected one of "
                         f"{list(COMPUTE_RATIO[profile])}): measure it with ens.train.measure_cost_ratio and "
                         f"register it (ens.experiments.register_family(..., compute_ratio=...))")
    return max(1, round(ens_epochs * COMPUTE_RATIO[profile][family]))


def measure_cost_ratio(profile: str, family: str, *, batches: int = 8, rounds: int = 3, data_root=None,
                       device="cpu", generate_missing: bool = True, split: str = "train") -> dict:
    """ENS's and the surrogate's seconds per training batch, measured in this process on the same
    batches with the same optimiser and threads, and their ratio (how many surrogate epochs one ENS
    epoch buys; the basis of :data:`ens.experiments.COMPUTE_RATIO`).

    Each of ``rounds`` rounds times ``batches`` optimiser steps of ENS, then of the surrogate, after
    one untimed warm-up step of each; the per-batch time of a model is its fastest round (the least
    disturbed by other load; ``*_s_per_batch_median`` is the median round). The per-epoch validation pass (a few percent of an epoch) is not part
    of it; the checkpoints' recorded wall times include it. The batches come from ``split`` (the
    training split by default; ``ens bench`` times the validation split, same shapes, which a fresh
    clone generates in seconds rather than minutes)."""
    check_int(batches, "batches")
    check_int(rounds, "rounds")
    configs = {kind: TrainConfig.for_profile(profile, family, kind) for kind in ("ens", "surrogate")}
    spec = dataset_spec(profile, family, split, in_distribution_setting(family))
    bs = configs["ens"].batch_size
    c, u = load_dataset(spec, data_root, generate_missing).tensors(0, bs * batches)
    c, u, pde, dev = c.to(device), u.to(device), spec.pde(), torch.device(device)
    n_full = len(c) // bs  # a small training set is cycled
    runs = {}
    for kind, config in configs.items():
        model = _build(config, pde, c, u)[0].to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        runs[kind] = (model.train(), opt, config)
        _train_step(model, opt, None, config, pde, c[:bs], u[:bs])  # warm-up
    per_round = {kind: [] for kind in runs}
    for _ in range(rounds):
        for kind, (model, opt, config) in runs.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for b in range(batches):
                sl = slice((b % n_full) * bs, (b % n_full + 1) * bs)
                _train_step(model, opt, None, config, pde, c[sl], u[sl])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            per_round[kind].append((time.perf_counter() - t0) / batches)
    best = {kind: min(times) for kind, times in per_round.items()}
    return {"profile": profile, "family": family, "ens_s_per_batch": best["ens"],
            "surrogate_s_per_batch": best["surrogate"], "ratio": best["ens"] / best["surrogate"],
            **{f"{kind}_s_per_batch_median": statistics.median(times) for kind, times in per_round.items()},
            "batch_size": bs, "threads": torch.get_num_threads(), "device": dev.type}


# ---- evaluation on a split ---------------------------------------------------------------------
def evaluate_split(model: NeuralSolver, pde: PDE, c: torch.Tensor, u: torch.Tensor, *, alpha: float | None,
                   steps: int, batch_size: int = 64, stop: str | None = None) -> dict[str, torch.Tensor]:
    """Per-iterate relative L2 error and residual ``(steps + 1, N)`` over a whole split, batched.

    ``alpha=None`` or a surrogate evaluates ``u_0`` only. Divergence is not raised: the iterates
    after it are reported as ``inf``.
    """
    errs, ress = [], []
    model.eval()
    for i in range(0, len(c), batch_size):
        cb, ub = c[i:i + batch_size], u[i:i + batch_size]
        if model.is_ens and alpha is not None and steps > 0:
            tr = ens_solve(model, pde, cb, alpha=alpha, steps=steps, u_true=ub, stop=stop, on_divergence="stop")
        else:
            tr = surrogate_solve(model, pde, cb, u_true=ub)
        n = steps + 1 if (model.is_ens and alpha is not None) else 1
        pad = n - tr.rel_error.shape[0]
        fill = torch.full((pad, len(cb)), math.inf, dtype=torch.float64)
        # a stopped run keeps its last estimate; a diverged one reports inf after the divergence
        last_err = tr.rel_error[-1:].expand(pad, -1) if tr.status == "stopped" else fill
        last_res = tr.rel_residual[-1:].expand(pad, -1) if tr.status == "stopped" else fill
        errs.append(torch.cat([tr.rel_error, last_err]))
        ress.append(torch.cat([tr.rel_residual, last_res]))
    return {"rel_error": torch.cat(errs, 1), "rel_residual": torch.cat(ress, 1)}


REPORT_STEPS = (0, 1, 5, 10, 20, 50, 100, 200)


def select_inference(model: NeuralSolver, pde: PDE, c_val: torch.Tensor, u_val: torch.Tensor,
                     alphas, max_steps: int) -> dict:
    """Choose ``alpha_test`` and ``T_test`` on validation data: the pair with the lowest mean
    relative L2 error over ``alphas x {1 .. max_steps}``. Returns the choice, the table of
    mean errors and residuals at ``REPORT_STEPS`` per alpha (the stability evidence), and the
    error of the residual stop rule at the chosen alpha."""
    rows, best = [], (math.inf, None, None)
    for a in alphas:
        ev = evaluate_split(model, pde, c_val, u_val, alpha=a, steps=max_steps)
        err, res = ev["rel_error"].mean(1), ev["rel_residual"].mean(1)
        t = int(torch.argmin(err[1:])) + 1
        if float(err[t]) < best[0]:
            best = (float(err[t]), a, t)
        for s in sorted(set(REPORT_STEPS) | {max_steps}):
            if s <= max_steps:
                rows.append({"alpha": a, "step": s, "val_rel_l2": float(err[s]), "val_rel_residual": float(res[s])})
    if best[1] is None:
        raise RuntimeError("every alpha diverged on the validation split; retrain with a smaller alpha")
    _, alpha, steps = best
    stop = evaluate_split(model, pde, c_val, u_val, alpha=alpha, steps=max_steps, stop="residual")
    return {"alpha": alpha, "steps": steps, "val_rel_l2": best[0], "max_steps": max_steps,
            "table": rows, "stop_rule_val_rel_l2": float(stop["rel_error"][-1].mean()),
            "n_val": len(c_val)}


# ---- the training job --------------------------------------------------------------------------
def _build(config: TrainConfig, pde: PDE, c: torch.Tensor, u: torch.Tensor):
    kwargs = dict(config.backbone_kwargs)
    pk = {"in_channels": pde.in_channels, "out_channels": pde.out_channels, **kwargs}
    ck = {"in_channels": pde.in_channels + 2 * pde.out_channels, "out_channels": pde.out_channels, **kwargs}
    torch.manual_seed(config.seed)
    predictor = build_backbone(config.backbone, **pk)
    corrector = build_backbone(config.backbone, **ck) if config.kind == "ens" else None
    scaling = ResidualScaling.fit(config.scaling, pde, c, config.lowpass) if config.kind == "ens" else None
    model = NeuralSolver(predictor, corrector, Normalization.fit(c, u), scaling)
    return model, pk, (ck if config.kind == "ens" else None)


#: the batches of a call timed for the estimate of its remaining training time (after as many to warm up)
ESTIMATE_AFTER = 3


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def train(config: TrainConfig, *, out_dir=None, data_root=None, device="cpu", resume: bool = True,
          generate_missing: bool = True, progress: bool | None = None,
          log: Callable[[str], None] | None = None, stop_after_batches: int | None = None,
          compile: bool = False) -> Path:
    """Train one model and write ``<out_dir>/<family>_<kind>.pt``; returns its path.

    ``stop_after_batches`` ends the job after that many optimiser steps of this call, leaving
    only the ``.last.pt`` resume file (used by the tests to simulate an interruption).
    ``compile`` runs the training loss through ``torch.compile`` (the same updates up to
    floating-point reassociation; it pays off on GPUs for long runs, after a compile of seconds
    to minutes). After the first batches of a call the log gives the measured seconds per batch
    and the time the run's remaining batches will take at that rate.

    Started by ``torchrun`` (after :func:`ens.distributed.init_from_env`), the processes train
    one model data-parallel with the global batch ``config.batch_size`` (see
    :mod:`ens.distributed`); a CUDA ``device`` becomes ``cuda:LOCAL_RANK``. Rank 0 logs, selects
    alpha/T and writes the checkpoints; every rank returns the same path.
    """
    ctx = distributed.current()
    device = torch.device(device)
    if ctx.active and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    log = log if (log is not None and ctx.main) else (lambda msg: None)
    out = checkpoint_dir(config.profile, out_dir)
    final_path, last_path = out / f"{config.name}.pt", out / f"{config.name}.last.pt"
    train_spec = dataset_spec(config.profile, config.family, "train", in_distribution_setting(config.family))
    val_spec = dataset_spec(config.profile, config.family, "val", in_distribution_setting(config.family))
    pde = train_spec.pde()
    c_tr, u_tr = load_dataset(train_spec, data_root, generate_missing, log=log).tensors(0, config.n_train)
    c_va, u_va = load_dataset(val_spec, data_root, generate_missing, log=log).tensors()
    model, pk, ck = _build(config, pde, c_tr, u_tr)
    model.to(device)
    loss_fn = None
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel
        loss_fn = DistributedDataParallel(_UnrolledLoss(model, pde, config), broadcast_buffers=False,
                                          device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        loss_fn = torch.compile(loss_fn if loss_fn is not None else _UnrolledLoss(model, pde, config))
    c_tr, u_tr, c_va, u_va = (x.to(device) for x in (c_tr, u_tr, c_va, u_va))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_batches = math.ceil(len(c_tr) / config.batch_size)
    total = config.epochs * n_batches
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
             if config.schedule == "cosine" else None)
    state = {"epoch": 0, "batch": 0, "sums": [0.0] * (config.steps + 1 if config.kind == "ens" else 1),
             "loss_sum": 0.0, "history": [], "best": None, "best_val": math.inf, "wall_time_s": 0.0}
    if resume and last_path.exists():
        try:
            raw = read_checkpoint(last_path, map_location=device)
        except CheckpointError as err:
            raise CheckpointError(f"{err}. It is the partial run's state: delete it or pass resume=False "
                                  f"(--no-resume) to start over") from None
        if raw.get("config") != config.to_dict() or "resume" not in raw:
            raise ValueError(f"{last_path} belongs to a run with another configuration; delete it or pass "
                             f"resume=False (--no-resume) to start over")
        model.load_state_dict(raw["resume"]["model"])
        opt.load_state_dict(raw["resume"]["optimizer"])
        if sched is not None:
            sched.load_state_dict(raw["resume"]["scheduler"])
        state = raw["resume"]["state"]
        log(f"{config.name}: resuming at epoch {state['epoch'] + 1}, batch {state['batch']}")
    elif final_path.exists() and resume:
        have = read_checkpoint(final_path).get("config")
        if have != config.to_dict():
            diff = {k: (have.get(k) if isinstance(have, dict) else None, v) for k, v in config.to_dict().items()
                    if not isinstance(have, dict) or have.get(k) != v}
            raise CheckpointError(f"{final_path} was trained with another configuration (file, requested: {diff}); "
                                  f"pass resume=False (--no-resume) to retrain it, or --out to train elsewhere")
        log(f"{config.name}: {final_path} exists, nothing to do (pass resume=False to retrain)")
        return final_path

    def payload(weights: dict | None = None, extra: dict | None = None) -> dict:
        model_state = solver_state(model, config.backbone, pk, ck)
        if weights is not None:  # the best weights instead of the current ones
            for part in ("predictor", "corrector"):
                if model_state[part] is not None:
                    model_state[part]["state_dict"] = {k[len(part) + 1:]: v for k, v in weights.items()
                                                       if k.startswith(part + ".")}
        return {"kind": config.kind, "family": config.family, "pde_params": pde.params,
                "in_channels": pde.in_channels, "out_channels": pde.out_channels,
                "resolution": train_spec.resolution, **model_state, "config": config.to_dict(),
                "history": state["history"], "inference": {}, **(extra or {})}

    def save_last():
        if not ctx.main:
            return
        resume_state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict() if sched is not None else None, "state": state}
        save_checkpoint(payload(extra={"resume": resume_state}), last_path)

    steps_this_call, samples_this_call, last_save = 0, 0, time.perf_counter()
    show = (progress if progress is not None else True) and ctx.main
    for epoch in range(state["epoch"], config.epochs):
        model.train()
        order = _epoch_order(len(c_tr), config.seed, epoch)
        bar = tqdm(total=n_batches, initial=state["batch"], desc=f"{config.name} epoch {epoch + 1}/{config.epochs}",
                   disable=not show, leave=False)
        t_epoch = time.perf_counter()
        for b in range(state["batch"], n_batches):
            idx, weight = distributed.split_batch(order[b * config.batch_size:(b + 1) * config.batch_size], ctx)
            loss_value, per_it = _train_step(model, opt, sched, config, pde, c_tr[idx], u_tr[idx], loss_fn=loss_fn,
                                             weight=weight, ctx=ctx)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"{config.name}: non-finite training loss at epoch {epoch + 1}, batch {b}; "
                                         f"lower lr (now {config.lr:g}) or alpha (now {config.alpha:g})")
            state["batch"] = b + 1
            state["loss_sum"] += loss_value
            state["sums"] = [s + x for s, x in zip(state["sums"], per_it)]
            bar.update()
            bar.set_postfix(loss=f"{loss_value:.3g}")
            steps_this_call += 1
            if steps_this_call == ESTIMATE_AFTER + 1:  # the first batches warm up (allocator, compile, cuFFT plans)
                t_rate = time.perf_counter()
            elif steps_this_call == 2 * ESTIMATE_AFTER + 1:
                rate = (time.perf_counter() - t_rate) / ESTIMATE_AFTER
                left = (config.epochs - epoch) * n_batches - (b + 1)
                log(f"{config.name}: {rate:.3g} s per batch of {config.batch_size} ({ctx.world} process(es), "
                    f"{device.type}); the remaining {left} batches take about {rate * left / 60:.1f} min "
                    f"(+ validation each epoch)")
            samples_this_call += len(idx) if weight > 0 else 0
            now = time.perf_counter()
            state["wall_time_s"] += now - t_epoch
            t_epoch = now
            if stop_after_batches is not None and steps_this_call >= stop_after_batches:
                save_last()
                bar.close()
                log(f"{config.name}: stopped after {steps_this_call} batches (resume file {last_path})")
                distributed.barrier(ctx)
                return last_path
            if now - last_save > config.save_every_s:
                save_last()
                last_save = time.perf_counter()
        bar.close()
        model.eval()
        val_per_iterate = _validate(model, pde, c_va, u_va, config, ctx)
        val = val_per_iterate[-1]
        state["wall_time_s"] += time.perf_counter() - t_epoch
        record = {"epoch": epoch + 1, "train_loss": state["loss_sum"] / n_batches,
                  "train_mse_per_iterate": [s / n_batches for s in state["sums"]],
                  "val_rel_l2": val, "val_rel_l2_per_iterate": val_per_iterate,
                  "lr": opt.param_groups[0]["lr"], "wall_time_s": state["wall_time_s"]}
        state["history"].append(record)
        if val < state["best_val"]:
            state["best_val"], state["best"] = val, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        log(f"{config.name} epoch {epoch + 1}/{config.epochs}: train loss {record['train_loss']:.4g}, "
            f"val rel L2 {val:.4g} ({state['wall_time_s']:.0f} s)")
        state.update(epoch=epoch + 1, batch=0, loss_sum=0.0, sums=[0.0] * len(state["sums"]))
        save_last()
        last_save = time.perf_counter()

    # the samples each process trained on in this call (the data-parallel split, measured)
    per_process = distributed.all_reduce_sum([samples_this_call if r == ctx.rank else 0 for r in range(ctx.world)],
                                             ctx, device)
    if state["best"] is None:
        raise FloatingPointError(
            f"{config.name}: the validation error was not finite after any epoch (the unrolled corrector "
            f"diverges); retrain with a smaller alpha (now {config.alpha:g}) or lr (now {config.lr:g}): "
            f"delete {last_path} or pass resume=False (--no-resume)")
    model.load_state_dict(state["best"])
    model.eval()
    if not ctx.main:  # rank 0 selects alpha/T and writes the checkpoint
        distributed.barrier(ctx)
        return final_path
    t0 = time.perf_counter()
    if config.kind == "ens":
        n = min(config.n_select, len(c_va))
        inference = select_inference(model, pde, c_va[:n], u_va[:n], [a * config.alpha for a in config.alphas],
                                     config.max_steps)
        log(f"{config.name}: chose alpha={inference['alpha']:g}, T={inference['steps']} on {n} validation samples "
            f"(val rel L2 {inference['val_rel_l2']:.4g}; stop rule {inference['stop_rule_val_rel_l2']:.4g})")
    else:
        inference = {"alpha": None, "steps": 0, "val_rel_l2": state["best_val"], "table": [], "n_val": len(c_va)}
    inference["selection_time_s"] = time.perf_counter() - t0
    final = payload(state["best"])
    final["inference"] = inference
    final["training"] = {"wall_time_s": state["wall_time_s"], "epochs": config.epochs,
                         "optimizer_steps": config.epochs * n_batches, "n_train": len(c_tr),
                         "device": device.type, "torch_version": str(torch.__version__),
                         "threads": torch.get_num_threads(), "processes": ctx.world,
                         "samples_per_process_last_call": [int(n) for n in per_process]}
    save_checkpoint(final, final_path)
    record_checkpoint(final_path)
    last_path.unlink(missing_ok=True)
    log(f"{config.name}: wrote {final_path} ({final_path.stat().st_size / 2 ** 20:.1f} MiB)")
    distributed.barrier(ctx)
    return final_path


def _validate(model: NeuralSolver, pde: PDE, c: torch.Tensor, u: torch.Tensor, config: TrainConfig,
              ctx: distributed.Context) -> list[float]:
    """Mean relative L2 error per iterate on the validation split (ENS: ``t = 0 .. steps``;
    surrogate: ``u_0``); in a group each rank evaluates a contiguous piece and the sums are reduced."""
    kw = {"alpha": config.alpha, "steps": config.steps} if config.kind == "ens" else {"alpha": None, "steps": 0}
    model.eval()
    with torch.no_grad():
        if not ctx.active:
            return evaluate_split(model, pde, c, u, **kw)["rel_error"].mean(1).tolist()
        piece = torch.tensor_split(torch.arange(len(c)), ctx.world)[ctx.rank]
        sums = (evaluate_split(model, pde, c[piece], u[piece], **kw)["rel_error"].sum(1).tolist() if len(piece)
                else [0.0] * (kw["steps"] + 1))
    return [s / len(c) for s in distributed.all_reduce_sum(sums, ctx, c.device)]



# ---- the recipe study --------------------------------------------------------------------------
#: the recipe study's variants (TrainConfig overrides), each trained with the same data, seed and
#: budget. "h2" equals the constant scaling at the training resolution, so the two cannot differ on
#: validation data; the low-pass variant is TrainConfig's default (notebook 02 shows the evidence,
#: data/studies/recipe_default_helmholtz.csv).
RECIPE_VARIANTS: dict[str, dict] = {
    "h2, full unroll": {"lowpass": None},
    "h2, truncated unroll": {"unroll": "truncated", "lowpass": None},
    "per-sample, full unroll": {"scaling": "sample", "lowpass": None},
    "h2 + low-pass 1/2, full unroll": {"lowpass": 0.5},
}


def recipe_study_path(profile: str, family: str, root: str | os.PathLike | None = None) -> Path:
    """The recipe study's table ``<root>/recipe_<profile>_<family>.csv``; ``root`` defaults to the
    shipped ``data/studies`` of the checkout (where ``ens study`` writes and notebook 02 reads)."""
    return (Path(root) if root is not None else studies_dir()) / f"recipe_{profile}_{family}.csv"


def budget_study_path(profile: str, family: str, root: str | os.PathLike | None = None) -> Path:
    """The training-budget study's table ``<root>/budget_<profile>_<family>.csv``
    (:func:`ens.evaluate.budget_study`; ``root`` as for :func:`recipe_study_path`)."""
    return (Path(root) if root is not None else studies_dir()) / f"budget_{profile}_{family}.csv"


def recipe_summary(study, at_step: int = 5, at_alpha: float = 1.0):
    """One row per variant of a recipe study table (:func:`recipe_study`): its validation error at
    ``T = at_step`` with ``alpha = at_alpha`` (the training unroll), its best validation error and
    the ``(alpha, T)`` chosen there, the residual stop rule's error and the training minutes."""
    best = (study.groupby("variant", sort=False)
            .agg(best_val_rel_l2=("best_val_rel_l2", "first"), alpha=("chosen_alpha", "first"),
                 T=("chosen_steps", "first"), stop_rule=("stop_rule_val_rel_l2", "first"),
                 train_min=("train_time_s", lambda t: t.iloc[0] / 60)))
    at_train = study[(study.step == at_step) & (study.alpha == at_alpha)].set_index("variant").val_rel_l2
    best.insert(0, f"val_rel_l2_T{at_step}_alpha{at_alpha:g}", at_train)
    return best


def recipe_study(profile: str, family: str, out_dir: str | os.PathLike, *, variants: dict[str, dict] | None = None,
                 data_root=None, device="cpu", log: Callable[[str], None] | None = None, **overrides):
    """Train one ENS per recipe variant (same data, seed and budget) and tabulate validation errors.

    Parameters
    ----------
    profile, family
        The data and training profile (``ens.experiments.PROFILES``) and the PDE family.
    out_dir
        Every run's checkpoint is kept under ``out_dir/<variant slug>/<profile>/`` (finished runs
        are reused, interrupted ones resumed, as with :func:`train`).
    variants
        Variant name -> :class:`TrainConfig` overrides; default :data:`RECIPE_VARIANTS`.
    data_root, device, log
        As for :func:`train`.
    **overrides
        :class:`TrainConfig` options shared by every variant (e.g. ``n_train``, ``epochs``); a
        variant's own overrides take precedence.

    Returns
    -------
    pandas.DataFrame
        One row per (variant, alpha, step) of :func:`select_inference`'s table, with the columns
        ``alpha, step, val_rel_l2, val_rel_residual, variant, chosen_alpha, chosen_steps,
        best_val_rel_l2, stop_rule_val_rel_l2, train_time_s``. Only validation data are used.
    """
    import pandas as pd
    variants = RECIPE_VARIANTS if variants is None else variants
    if not variants:
        raise ValueError("expected at least one recipe variant, got none; pass variants=None for RECIPE_VARIANTS")
    slugs = {name: "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") for name in variants}
    if len(set(slugs.values())) < len(slugs):
        raise ValueError(f"expected variant names whose folder names differ, got {slugs}; rename the variants")
    frames = []
    for name, variant in variants.items():
        config = TrainConfig.for_profile(profile, family, "ens", **{**overrides, **variant})
        path = train(config, out_dir=Path(out_dir) / slugs[name], data_root=data_root, device=device, log=log)
        ck = load_checkpoint(path, family=family, kind="ens", profile=profile)
        inf = ck.inference
        frames.append(pd.DataFrame(inf["table"]).assign(
            variant=name, chosen_alpha=inf["alpha"], chosen_steps=inf["steps"], best_val_rel_l2=inf["val_rel_l2"],
            stop_rule_val_rel_l2=inf["stop_rule_val_rel_l2"], train_time_s=ck.raw["training"]["wall_time_s"]))
    return pd.concat(frames, ignore_index=True)
