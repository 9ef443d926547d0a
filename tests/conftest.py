"""Shared test settings: the off-screen figure backend, exact float arithmetic on CUDA (no TF32),
the devices to test on, and the one session-wide ``ci`` data root (shared utilities: ``helpers.py``)."""

import matplotlib
import pytest
import torch
from helpers import torch_threads

from ens.data import generate
from ens.experiments import datasets
from ens.workers import tune_allocator

# figures in this (plain-Python) test process are drawn off-screen; set here, not through
# MPLBACKEND, which notebook kernels started by the tests would inherit (and lose their figures)
matplotlib.use("Agg")

tune_allocator()  # large tensors without fresh page faults (see ens.workers); no change in results

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="session")
def ci_root(tmp_path_factory):
    """The whole ``ci`` profile's data, generated once per session; tests read it and copy what
    they modify."""
    root = tmp_path_factory.mktemp("data")
    # One torch thread: on a 2-core machine shared with another busy process, torch's spinning
    # OpenMP threads made the Navier-Stokes sets 60x slower (190 s against 3 s, measured).
    with torch_threads(1):
        generate(datasets("ci"), root=root, progress=False)
    return root
