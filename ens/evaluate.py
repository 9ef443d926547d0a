"""Evaluation of trained solvers: per-iterate errors on a split, training histories, summaries.

Tables are tidy (long format): one row per (family, method, iteration) or per (model, epoch),
ready for seaborn. Only validation data are used here to *choose* anything; test sets are
evaluated with the choices already stored in the checkpoints.
"""

from __future__ import annotations

import pandas as pd
import torch

from .data import load_dataset
from .experiments import dataset_spec, in_distribution_setting
from .models import Checkpoint, load_checkpoint
from .train import checkpoint_path, evaluate_split

__all__ = ["load_trained", "history_frame", "iterate_loss_frame", "iterate_errors", "ens_vs_surrogate"]


def load_trained(profile: str, family: str, kind: str, root=None) -> Checkpoint:
    """The trained checkpoint ``<root>/<profile>/<family>_<kind>.pt`` (see :func:`ens.train.checkpoint_path`)."""
    return load_checkpoint(checkpoint_path(profile, family, kind, root), family=family)


def history_frame(ck: Checkpoint) -> pd.DataFrame:
    """Per-epoch training loss, validation rel L2 and wall time of a checkpoint."""
    return pd.DataFrame([{"family": ck.family, "model": ck.kind, "epoch": h["epoch"], "train_loss": h["train_loss"],
                          "val_rel_l2": h["val_rel_l2"], "wall_time_s": h["wall_time_s"]} for h in ck.history])


def iterate_loss_frame(ck: Checkpoint) -> pd.DataFrame:
    """Training MSE of every unrolled iterate per epoch (ENS: iterates 0..T_train)."""
    return pd.DataFrame([{"family": ck.family, "model": ck.kind, "epoch": h["epoch"], "iterate": t, "train_mse": v}
                         for h in ck.history for t, v in enumerate(h["train_mse_per_iterate"])])


def iterate_errors(ck: Checkpoint, split: str = "val", setting: str | None = None, steps: int | None = None,
                   alpha: float | None = None, profile: str | None = None, data_root=None,
                   generate_missing: bool = True, device="cpu") -> pd.DataFrame:
    """Mean relative L2 error and residual of every iterate of ``ck`` on a split, long format.

    ENS runs ``steps`` iterations (default: its chosen ``T_test``) with ``alpha`` (default: its
    chosen ``alpha_test``); a surrogate gives iteration 0 only. ``profile`` defaults to the
    checkpoint's training profile.
    """
    profile = profile or ck.config["profile"]
    spec = dataset_spec(profile, ck.family, split, setting or in_distribution_setting(ck.family))
    c, u = load_dataset(spec, data_root, generate_missing).tensors()
    model = ck.model.to(device)
    is_ens = ck.kind == "ens"
    steps = (steps if steps is not None else ck.inference["steps"]) if is_ens else 0
    alpha = (alpha if alpha is not None else ck.inference["alpha"]) if is_ens else None
    with torch.no_grad():
        ev = evaluate_split(model, spec.pde(), c.to(device), u.to(device), alpha=alpha, steps=steps)
    return pd.DataFrame({"family": ck.family, "method": ck.kind, "split": split, "setting": spec.setting,
                         "iteration": range(ev["rel_error"].shape[0]),
                         "rel_l2": ev["rel_error"].mean(1).numpy(),
                         "rel_residual": ev["rel_residual"].mean(1).numpy(), "n_samples": len(c)})


def ens_vs_surrogate(frames: pd.DataFrame) -> pd.DataFrame:
    """Summary per family from :func:`iterate_errors` frames: the surrogate's rel L2, ENS's at
    iteration 0 and at its last one, the ratio surrogate / ENS (> 1: ENS is more accurate), and
    both methods' final relative residuals."""
    rows = []
    for family, df in frames.groupby("family", sort=False):
        sur = df[df.method == "surrogate"]
        ens = df[df.method == "ens"].sort_values("iteration")
        if sur.empty or ens.empty:
            raise ValueError(f"{family}: need both a surrogate and an ENS frame")
        rows.append({"family": family, "surrogate_rel_l2": float(sur.rel_l2.iloc[0]),
                     "ens_u0_rel_l2": float(ens.rel_l2.iloc[0]), "ens_rel_l2": float(ens.rel_l2.iloc[-1]),
                     "ens_steps": int(ens.iteration.iloc[-1]),
                     "surrogate_over_ens": float(sur.rel_l2.iloc[0] / ens.rel_l2.iloc[-1]),
                     "surrogate_rel_residual": float(sur.rel_residual.iloc[0]),
                     "ens_rel_residual": float(ens.rel_residual.iloc[-1])})
    return pd.DataFrame(rows)
