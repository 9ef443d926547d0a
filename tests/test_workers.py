"""ens.workers: jobs in spawned processes give the results of running them here, in job order."""

import os
import subprocess
import sys
import time

import pytest
import torch

from ens.workers import default_workers, map_jobs


def test_map_jobs_runs_in_workers_and_keeps_the_job_order():
    jobs = [3, 1, 2, 5]
    assert map_jobs(abs, jobs, workers=2) == jobs
    assert map_jobs(abs, jobs, workers=1) == jobs
    assert map_jobs(abs, [], workers=2) == []


def test_threads_are_set_in_the_workers_and_restored_here():
    before = torch.get_num_threads()
    assert map_jobs(_threads, [0, 0], workers=2, threads=1) == [1, 1]
    assert map_jobs(_threads, [0], workers=1, threads=1) == [1]
    assert torch.get_num_threads() == before


def _threads(_):
    return torch.get_num_threads()


def test_a_failing_job_raises_here():
    with pytest.raises(ZeroDivisionError):
        map_jobs(_inverse, [1, 0, 2], workers=2)


def _inverse(x):
    return 1 / x


def _chain(job):
    return job["x"] + job.get("given", 0)


def test_dependent_jobs_get_their_results_and_the_pool_is_kept():
    import ens.workers as w
    # job 2 waits for job 0 and job 3 for job 2: same results serially and in workers, job order kept
    jobs = [{"x": 1}, {"x": 10}, {"x": 100}, {"x": 1000}]
    after = {2: (0, "given"), 3: (2, "given")}
    serial = map_jobs(_chain, [dict(j) for j in jobs], workers=1, after=after)
    assert serial == [1, 10, 101, 1101]
    assert map_jobs(_chain, [dict(j) for j in jobs], workers=2, after=after) == serial
    pool = w._POOL["pool"]
    assert map_jobs(abs, [-1, -2], workers=2) == [1, 2] and w._POOL["pool"] is pool  # no fresh spawn
    with pytest.raises(ZeroDivisionError):  # an error drops the kept pool: no stale job runs on
        map_jobs(_inverse, [1, 0, 2], workers=2)
    assert "pool" not in w._POOL
    with pytest.raises(ValueError, match="expected after\\[1\\] to name an earlier job, got 1"):
        map_jobs(_chain, jobs[:2], workers=2, after={1: (1, "given")})


def _nap(seconds):
    time.sleep(seconds)
    return time.monotonic()


def test_a_free_worker_takes_the_next_job_at_once():
    # one long job and four short ones on two workers: the short ones run one after another on the
    # other worker while the long one runs (not in lock-step pairs that wait for the long one)
    ends = map_jobs(_nap, [3.0, 0.2, 0.2, 0.2, 0.2], workers=2)
    assert max(ends[1:]) < ends[0], "a worker waited for the other one's job before taking the next"


def test_bad_arguments_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="expected workers to be a positive int, got 0"):
        map_jobs(abs, [1], workers=0)
    monkeypatch.setenv("ENS_WORKERS", "two")
    with pytest.raises(ValueError, match="ENS_WORKERS to be a positive integer, got 'two'"):
        default_workers()
    monkeypatch.setenv("ENS_WORKERS", "3")
    assert default_workers() == 3


_ALLOC_SCRIPT = """
import sys, torch
from ens.workers import tune_allocator
print(tune_allocator())
from ens.pdes import get_pde
from ens.solvers import _common as cm
pde = get_pde("navier_stokes")
g = torch.Generator().manual_seed(0)
# 16 x 10 x 128 x 128: the gradient spectrum (47 MB) is over glibc's 32 MB mmap limit, so the
# tuned and the default allocator really serve it from different places
c = torch.randn(16, 1, 128, 128, generator=g)
u = torch.randn(16, pde.out_channels, 128, 128, generator=g)
r, jvp, pullback = cm.linearize(pde, c, u)
torch.save([r, pullback(r), jvp(r)], sys.argv[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tune_allocator_changes_no_result(tmp_path):
    """Tuned and default allocator give the same residuals, VJPs and JVPs; ENS_MALLOC=default opts out.

    Same to float32 round-off, not bit for bit: on the project's AMD EPYC they are bit-identical
    (max difference 0), but on the CI machine of a previous run (another CPU: neither of its two
    sha256 was this machine's) the two differed, so a kernel there (MKL's FFT, most likely) picks
    its code by the buffers' addresses. 1e-5 of the largest entry is about 100 float32 ulps: an FFT's round-off, while any
    real change (a wrong buffer, a stale value) shows up at O(1).
    """
    def run(env, name):
        path = tmp_path / name
        flag = subprocess.run([sys.executable, "-c", _ALLOC_SCRIPT, str(path)], capture_output=True, text=True,
                              check=True, env={**os.environ, **env}).stdout.split()[0]
        return flag, torch.load(path)
    (tuned_flag, tuned), (default_flag, default) = run({}, "tuned.pt"), run({"ENS_MALLOC": "default"}, "default.pt")
    assert (tuned_flag, default_flag) == ("True", "False")
    for a, b in zip(tuned, default, strict=True):
        assert a.shape == b.shape and torch.isfinite(a).all()
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
