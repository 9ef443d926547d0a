"""ens.workers: jobs in spawned processes give the results of running them here, in job order."""

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


def test_bad_arguments_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="expected workers to be a positive int, got 0"):
        map_jobs(abs, [1], workers=0)
    monkeypatch.setenv("ENS_WORKERS", "two")
    with pytest.raises(ValueError, match="ENS_WORKERS to be a positive integer, got 'two'"):
        default_workers()
    monkeypatch.setenv("ENS_WORKERS", "3")
    assert default_workers() == 3
