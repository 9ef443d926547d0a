"""Independent jobs on several CPU cores: a pool of worker processes, one torch thread each.

Measured on the 2-core project machine at ``S = 64``: two threads run one evaluation job 1.5--2.1x
faster than one thread; two one-thread jobs side by side each run at 0.87--1.08x their speed
alone, so two workers finish a batch of independent jobs somewhat sooner (about 15 % over a whole
``make reproduce``). :func:`map_jobs` runs
picklable jobs in ``spawn``-started workers (never ``fork``: torch's thread pools do not survive
it), each with ``threads`` torch threads, and returns their results in job order. The workers
stay alive for the next call (starting them costs seconds: each imports torch and the package);
:func:`shutdown_pool`, exit, or an error or interrupt inside a call stops them. With
``workers <= 1`` it runs them in this process, one after another, with the same thread count, so
the numbers are the same either way (each job is deterministic and independent of the others).
A job that raises re-raises here; the jobs not yet started are cancelled.

:func:`tune_allocator` keeps glibc from returning large freed blocks to the kernel: by default
every block over 32 MB is ``mmap``-ed and unmapped again, so each large tensor costs fresh page
faults. Measured on the 2-core project VM (Navier--Stokes residual, 16 x 10 x 128 x 128 float32,
2 threads, one process, one run each): residual 85 -> 37 ms, VJP 159 -> 52 ms, JVP 230 -> 81 ms;
for the small tensors at ``S = 64`` no difference beyond 4 % (a Darcy evaluation). The notebooks,
the CLI, the worker processes and the tests call it. The arithmetic is the same; on the project's
AMD EPYC the results are bit-identical, while on a CI machine with another CPU they differed in the
last bits, a kernel there (MKL's FFT, most likely) choosing its code by the buffers' addresses
(``tests/test_workers.py`` holds the two to float32 round-off).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import torch
from tqdm.auto import tqdm

from .checks import check_int

__all__ = ["default_workers", "run_threads", "map_jobs", "shutdown_pool", "tune_allocator"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's malloc.h
_RETAIN_BYTES = 1 << 30


def tune_allocator() -> bool:
    """Serve blocks up to 1 GiB from the heap and keep up to 1 GiB of freed memory (glibc only).

    Returns whether the allocator was tuned (``False`` off Linux/glibc, or when ``$ENS_MALLOC``
    is ``default``). The cost is memory: the process keeps its peak heap instead of unmapping it.
    """
    if not sys.platform.startswith("linux") or os.environ.get("ENS_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _RETAIN_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _RETAIN_BYTES))


def default_workers() -> int:
    """``$ENS_WORKERS`` if set, else the number of CPU cores (one torch thread per worker)."""
    value = os.environ.get("ENS_WORKERS")
    if value is None:
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"expected ENS_WORKERS to be a positive integer, got {value!r}")
    return int(value)


def run_threads(workers: int) -> int:
    """Torch threads of each job: this process's own when it runs the jobs itself (``workers = 1``),
    one in every worker process otherwise (part of the jobs' cache keys: results depend on it)."""
    return torch.get_num_threads() if workers == 1 else 1


def _init(threads: int) -> None:
    # Ctrl-C (and a notebook kernel's shutdown, which interrupts its whole process group) is for
    # the caller: it stops the pool (shutdown_pool); a kept idle worker would die printing a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_allocator()
    torch.set_num_threads(threads)


def map_jobs(fn: Callable, jobs: Sequence, *, workers: int = 1, threads: int = 1, progress: bool = False,
             desc: str = "jobs", after: dict[int, tuple[int, str]] | None = None) -> list:
    """``[fn(job) for job in jobs]``, run by ``workers`` processes of ``threads`` torch threads.

    ``fn`` must be importable (a module-level function) and ``jobs`` picklable dicts. Jobs start
    in list order (put the longest first) as workers come free. ``after`` makes a job wait for an
    earlier one: ``after[i] = (j, key)`` (``j < i``) starts job ``i`` once job ``j`` is done, with
    ``jobs[i][key]`` set to its result, so dependent jobs need no barrier between them and the
    others. ``progress`` shows a ``tqdm.auto`` bar of finished jobs.
    """
    check_int(workers, "workers")
    check_int(threads, "threads")
    jobs, after = list(jobs), dict(after or {})
    for i, (j, _) in after.items():
        if not 0 <= j < i < len(jobs):
            raise ValueError(f"expected after[{i}] to name an earlier job, got {j}")
    out = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress or not jobs)

    def finished(i, result):
        out[i] = result
        bar.update()
        for k, (j, key) in after.items():
            if j == i:
                jobs[k][key] = result

    if workers == 1 or len(jobs) <= 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for i, job in enumerate(jobs):
                finished(i, fn(job))
            return out
        finally:
            torch.set_num_threads(before)
            bar.close()
    pool = _pool(workers, threads)
    ready = [i for i in range(len(jobs)) if i not in after]  # kept in list order
    running, ok = {}, False
    try:
        while ready or running:
            while ready and len(running) < workers:
                i = ready.pop(0)
                running[pool.submit(fn, jobs[i])] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)  # a worker is free: refill it
            for f in done:
                if f.exception() is not None:
                    raise f.exception()
                i = running.pop(f)
                finished(i, f.result())
                ready = sorted(ready + [k for k, (j, _) in after.items() if j == i])
        ok = True
        return out
    finally:
        bar.close()
        if not ok:  # an error or an interrupt: drop the pool, so no stale job runs on behind the caller
            shutdown_pool(cancel=True)


_POOL: dict = {}  # the one live pool: {"key": (workers, threads), "pool": ProcessPoolExecutor}


def _pool(workers: int, threads: int) -> ProcessPoolExecutor:
    """The process's pool of ``workers`` spawned processes with ``threads`` torch threads each,
    started on first use and kept for the next :func:`map_jobs` (each start costs seconds: the
    workers import torch and the package); another shape replaces it."""
    if _POOL.get("key") != (workers, threads):
        shutdown_pool()
        _POOL["pool"] = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init, initargs=(threads,))
        _POOL["key"] = (workers, threads)
    return _POOL["pool"]


def shutdown_pool(cancel: bool = False) -> None:
    """Stop the kept worker processes (also at exit); ``cancel`` (after an error or an interrupt)
    drops the jobs not started yet and terminates the running ones."""
    pool = _POOL.pop("pool", None)
    _POOL.pop("key", None)
    if pool is None:
        return
    if cancel:
        processes = list(getattr(pool, "_processes", {}).values())  # no public handle before Python 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
    pool.shutdown(wait=True)


atexit.register(shutdown_pool)
