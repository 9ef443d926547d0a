"""Shared test settings: the off-screen figure backend, exact float arithmetic on CUDA (no TF32) and the devices to test on."""

import matplotlib
import pytest
import torch

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
