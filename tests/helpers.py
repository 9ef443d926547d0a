"""Utilities shared by the test modules (the fixtures are in ``conftest.py``)."""

import contextlib
from pathlib import Path

import torch

import ens
from ens.data import read_manifest


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads, then restore the count: bit-identical comparisons
    need the same reduction order in both runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def norms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample 2-norm of a batch."""
    return x.flatten(1).norm(dim=1)


def problem(family: str, S: int, n: int = 3, seed: int = 1, **params):
    """``(pde, inputs, exact float64 solutions)`` of ``n`` samples of ``family`` on an ``S`` grid."""
    pde = ens.get_pde(family, **params)
    c = pde.sample_inputs(n, S, torch.Generator().manual_seed(seed))
    return pde, c, pde.solve(c)


def shas(root, profile: str = "ci") -> dict:
    """``{file: sha256}`` of a data root's manifest."""
    return {k: v["sha256"] for k, v in read_manifest(Path(root) / profile)["files"].items()}
