"""Data-parallel runs on ``torch.distributed``, started by ``torchrun``.

``torchrun`` starts one process per device and describes the group in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`init_from_env`
joins that group (NCCL for CUDA devices, Gloo for the CPU), :func:`current` says which rank this
process is; without a launcher both describe a group of one and nothing changes.

How :func:`ens.train.train` uses it: every rank reads the whole training set and draws the same
per-epoch order; global batch ``b`` is split into ``world`` contiguous pieces (sizes differing by
at most one) and rank ``r`` trains on piece ``r`` inside ``DistributedDataParallel``. DDP averages
the gradients over the ranks, so each rank's loss is weighted by ``n_r world / n`` (``n_r`` its
samples of the batch's ``n``): the update is the gradient of the batch-mean loss, the same as one
process with the same global batch, up to the order of floating-point summation. Validation is
split across the ranks and its sums reduced; the alpha/T selection and every checkpoint belong to
rank 0 (written atomically), the other ranks wait at a barrier.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Context", "current", "init_from_env", "split_batch", "all_reduce_sum", "barrier", "close"]


@dataclass(frozen=True)
class Context:
    """This process's place in the group: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether there is more than one process (collectives are needed)."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process logs, selects and writes checkpoints (rank 0)."""
        return self.rank == 0


def current() -> Context:
    """The group this process belongs to (a group of one if none was initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device="cpu", timeout_min: float = 60.0) -> Context:
    """Join the process group torchrun describes in the environment (a no-op without one).

    The backend is NCCL when ``device`` is a CUDA device (each process then uses
    ``cuda:LOCAL_RANK``), Gloo otherwise. ``timeout_min`` bounds how long a rank waits in a
    collective, e.g. for rank 0's alpha/T selection at the end of a training run.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {missing} are not set: start the job with torchrun "
                         f"(torchrun --nproc-per-node N -m ens train ...), which sets them")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_min))
    return current()


def split_batch(idx: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, float]:
    """This rank's piece of a global batch ``idx`` and the weight ``n_r world / n`` of its loss.

    A rank left without samples (a last batch smaller than the group) trains on the batch's first
    sample with weight 0, so every rank takes part in the gradient reduction."""
    if not ctx.active:
        return idx, 1.0
    piece = torch.tensor_split(idx, ctx.world)[ctx.rank]
    if len(piece) == 0:
        return idx[:1], 0.0
    return piece, len(piece) * ctx.world / len(idx)


def all_reduce_sum(values: list[float], ctx: Context, device) -> list[float]:
    """The sum over the ranks of ``values`` (float64 on ``device``; returned as given without a group)."""
    if not ctx.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def close() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
