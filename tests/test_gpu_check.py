"""``make gpu-check`` (``ens.gpu_check``): it refuses to run without CUDA, and its stages run.

The stages are exercised on the CPU against the CPU (at the ci profile, one family): a GPU run
differs only in the device, so a stage that raises or mislabels its rows is caught here, before
the first GPU is lent.
"""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ens import gpu_check

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal cannot be shown here")
def test_without_cuda_it_says_so_in_one_line_and_exits_1(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ens.gpu_check", "--out", str(tmp_path / "t.csv")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: make gpu-check needs a CUDA device"), done.stderr
    assert not (tmp_path / "t.csv").exists()


def test_the_agreement_and_training_stages_run_and_report_rows(ci_root):
    rows = []
    gpu_check._agreement(rows, ci_root, device="cpu", families=["poisson"])
    cases = [r["case"] for r in rows]
    assert cases[:2] == ["poisson residual (f64)", "poisson reference solve (f64)"]
    assert {"poisson ens", "poisson gauss_newton", "poisson reference"} <= set(cases)
    assert all(r["ok"] and r["figure"] == 0 for r in rows)  # the CPU against itself: no difference
    rows = []
    gpu_check._train_steps(rows, steps=1, device="cpu", profile="ci", families=["poisson"])
    (row,) = rows  # ci trains in float32: no autocast row
    assert row["ok"] and row["figure"] > 0 and math.isfinite(row["figure"]) and "epochs of" in row["note"]
    rows = []
    gpu_check._train_steps(rows, steps=1, device="cpu", profile="ci", families=["poisson"], amp=True)
    assert [r["case"] for r in rows] == ["poisson ci bf16-autocast loss vs f32", "poisson ci ENS step (B=8, S=32)"]
    assert rows[0]["ok"] and 0 < rows[0]["figure"] <= gpu_check.LIMITS["amp"]
    rows = []
    gpu_check._memory_per_batch(rows, batches=(2, 4), steps=1, device="cpu", profile="ci", family="poisson")
    assert [r["case"] for r in rows] == ["poisson ci ENS step, batch 2", "poisson ci ENS step, batch 4"]
    assert all(r["ok"] and "ms/sample" in r["note"] for r in rows)  # no GPU memory to read on the CPU: NaN
