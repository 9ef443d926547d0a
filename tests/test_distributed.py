"""Data-parallel training under torchrun: two CPU processes with Gloo against one process.

Each test launches ``torchrun --nproc-per-node 2`` (about 5 s for a ci Poisson run on 2 cores).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ens.distributed import Context, split_batch
from ens.models import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
# one thread per process, as for the reference run, so that a resumed run is bit-identical
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _free_port() -> str:
    with socket.socket() as s:  # a port the system says is free now (the rendezvous binds it next)
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])

# a training run that saves its resume file after every batch and writes its pid per rank
SCRIPT = """
import os, sys
from pathlib import Path
from ens import distributed
from ens.train import TrainConfig, train
out, root, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = distributed.init_from_env("cpu")
(out / f"rank{ctx.rank}.pid").write_text(str(os.getpid()))
config = TrainConfig.for_profile("ci", "poisson", "ens", epochs=epochs, save_every_s=1e-6)
train(config, out_dir=out, data_root=root, progress=False)
distributed.close()
"""


def _torchrun(*args, **kw):
    return subprocess.run([*TORCHRUN, _free_port(), *args], env=ENV, capture_output=True, text=True,
                          timeout=300, **kw)


def _weights(path):
    raw = read_checkpoint(path)
    return {f"{part}.{k}": v for part in ("predictor", "corrector") for k, v in raw[part]["state_dict"].items()}


def test_split_batch_gives_disjoint_pieces_whose_weights_average_the_batch():
    idx = torch.arange(11) * 3
    pieces = [split_batch(idx, Context(r, 3)) for r in range(3)]
    assert torch.equal(torch.cat([p for p, _ in pieces]), idx)
    assert [len(p) for p, _ in pieces] == [4, 4, 3]
    # DDP averages the ranks' gradients: (1 / world) sum_r w_r mean(piece r) = the batch mean
    loss = idx.double() ** 2  # any per-sample values
    assert sum(w * float(loss[p // 3].mean()) for p, w in pieces) / 3 == pytest.approx(float(loss.mean()), rel=1e-14)
    small = [split_batch(idx[:1], Context(r, 2)) for r in range(2)]
    assert small == [(idx[:1], 2.0), (idx[:1], 0.0)]  # the empty rank joins the reduction with weight 0


def test_two_gloo_processes_train_the_one_process_model_and_write_one_checkpoint(ci_root, tmp_path):
    args = ["train", "--profile", "ci", "--family", "poisson", "--kind", "ens", "--epochs", "2",
            "--root", str(ci_root)]
    one = subprocess.run([sys.executable, "-m", "ens", *args, "--out", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = _torchrun("-m", "ens", *args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("poisson ens: validation rel L2") == 1  # rank 0 reports, rank 1 is silent
    assert sorted(p.name for p in (tmp_path / "two" / "ci").glob("*.pt")) == ["poisson_ens.pt"]
    a, b = _weights(tmp_path / "one" / "ci" / "poisson_ens.pt"), _weights(tmp_path / "two" / "ci" / "poisson_ens.pt")
    # 8 AdamW steps on batches of 8 split 4 + 4: the same updates up to float32 summation order
    # (measured: max relative difference 7.6e-6 of a tensor's largest entry; tolerance 1e-4)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-4 * float(a[k].abs().max())), k
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two processes really computed it
    training = read_checkpoint(tmp_path / "two" / "ci" / "poisson_ens.pt")["training"]
    n_steps = training["optimizer_steps"]
    assert training["processes"] == 2 and training["samples_per_process_last_call"] == [4 * n_steps, 4 * n_steps]


def test_a_killed_rank_resumes_to_the_uninterrupted_two_process_weights(ci_root, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    for d in (ref, cut):
        d.mkdir()
    done = _torchrun(str(script), str(ref), str(ci_root), "12")
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen([*TORCHRUN, _free_port(), str(script), str(cut), str(ci_root), "12"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = cut / "ci" / "poisson_ens.last.pt"
    try:
        deadline = time.monotonic() + 120
        while not (last.exists() and (cut / "rank1.pid").exists()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(int((cut / "rank1.pid").read_text()), signal.SIGKILL)  # rank 1, mid-run
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0 and last.exists() and not (cut / "ci" / "poisson_ens.pt").exists()
    resumed = _torchrun(str(script), str(cut), str(ci_root), "12")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in (cut / "ci").glob("*.pt")) == ["poisson_ens.pt"]  # the resume file is gone
    a, b = _weights(ref / "ci" / "poisson_ens.pt"), _weights(cut / "ci" / "poisson_ens.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical: the same updates in the same order
    steps = read_checkpoint(cut / "ci" / "poisson_ens.pt")["training"]["samples_per_process_last_call"]
    assert 0 < steps[0] == steps[1] < read_checkpoint(ref / "ci" / "poisson_ens.pt")["training"][
        "samples_per_process_last_call"][0]  # the resumed call trained only the rest
