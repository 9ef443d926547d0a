"""The benchmark harness (ens.bench, `ens bench`): a smoke run at the tiny size. Nothing here
asserts a time: the table's ratios are read by people, from one run on one machine."""

import pandas as pd
import pytest

from ens.bench import BENCHMARKS, time_call, time_pair
from ens.cli import main


def test_time_call_returns_the_minimum_and_median_of_the_timed_calls():
    calls = []
    best, median = time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and 0 <= best <= median


def test_time_pair_alternates_the_two_calls():
    calls = []
    (best, median), (ref_best, ref_median) = time_pair(lambda: calls.append("a"), lambda: calls.append("b"),
                                                      repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4 and 0 <= best <= median and 0 <= ref_best <= ref_median


def test_bench_prints_and_writes_one_table_at_the_tiny_size(tmp_path, capsys):
    assert main(["bench", "--size", "tiny", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "bench_tiny.csv")
    out = capsys.readouterr().out
    assert all(f"== {name}" in out for name in BENCHMARKS) and "rows meet their goal" in out
    assert "rows report a figure" in out
    # every FD residual in three modes and compiled, both elliptic generators, Darcy's solve
    # and both spectral residuals, the flow stepper against its two peers, ENS against GN per family,
    # ENS's training step against the surrogate's per family
    assert len(table) == 3 * 4 + 2 + 2 + 2 + 1 + 6 + 6
    fused = table[table.case.str.contains("torch.compile")]
    assert len(fused) == 3 and fused.goal.str.startswith("report").all()  # compiled here (gcc is on the machine)
    assert {"ratio", "goal", "meets", "threads", "device", "torch"} <= set(table.columns)
    times = table[~table.benchmark.isin(["data generation", "ens inference", "flow solver"])]
    assert set(times.benchmark) == {"fd residual", "spectral residual", "training throughput"}
    assert times.ratio.to_numpy() == pytest.approx((times.ours_ms / times.reference_ms).to_numpy())
    training = table[table.benchmark == "training throughput"]  # ENS's step runs the predictor and
    assert (training.ratio > 1).all() and training.case.str.contains("samples/s").all()  # T correctors
    darcy = table[table.case.str.startswith("darcy n=")].iloc[0]  # a speed-up: reference over ours
    assert darcy.ratio == pytest.approx(darcy.reference_ms / darcy.ours_ms)
    assert (table.ours_ms > 0).all() and (table.ours_ms <= table.ours_median_ms).all()
    flow = table[table.benchmark == "flow solver"]  # a peer that is installed is timed, a speed-up
    timed = flow[flow.reference_ms.notna()]
    assert timed.ratio.to_numpy() == pytest.approx((timed.reference_ms / timed.ours_ms).to_numpy())
    assert flow[flow.reference_ms.isna()].reference.str.contains("pip install -r requirements-bench.txt").all()
    assert timed.goal.str.startswith(">= 1").sum() == min(1, len(timed))  # held against the faster peer only


def test_a_peer_that_is_not_installed_gets_a_row_that_says_how_to_install_it(monkeypatch):
    import builtins

    from ens import bench
    real_import = builtins.__import__

    def no_peers(name, *args, **kwargs):
        if name.split(".")[0] in ("jax", "jax_cfd", "kolsol"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_peers)
    rows = bench._flow_solver(bench.SIZES["tiny"], "cpu")
    assert len(rows) == 2 and all(r["ours_ms"] > 0 and not r["meets"] for r in rows)
    assert all("not installed: pip install -r requirements-bench.txt" in r["reference"] for r in rows)


def test_a_residual_that_cannot_be_compiled_gets_a_row_that_says_why(monkeypatch):
    import torch

    from ens import bench
    from ens.pdes import get_pde

    def no_compiler(fn, **kwargs):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(torch, "compile", no_compiler)
    pde, u = get_pde("poisson"), torch.zeros(1, 1, 8, 8)
    row = bench._fused_residual(pde, u, u, lambda: None, {"repeats": 1, "warmup": 0}, "poisson forward")
    assert row["case"].endswith(": RuntimeError") and row["ratio"] != row["ratio"] and not row["meets"]


def test_an_unknown_size_or_benchmark_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--only", "nope"])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
