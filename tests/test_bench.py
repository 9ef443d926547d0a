"""The benchmark harness (ens.bench, `ens bench`): a smoke run at the tiny size. Nothing here
asserts a time: the table's ratios are read by people, from one run on one machine."""

import pandas as pd
import pytest

from ens.bench import BENCHMARKS, time_call
from ens.cli import main


def test_time_call_returns_the_minimum_and_median_of_the_timed_calls():
    calls = []
    best, median = time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and 0 <= best <= median


def test_bench_prints_and_writes_one_table_at_the_tiny_size(tmp_path, capsys):
    assert main(["bench", "--size", "tiny", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "bench_tiny.csv")
    out = capsys.readouterr().out
    assert all(f"== {name}" in out for name in BENCHMARKS) and "rows meet their goal" in out
    # every FD residual in three modes, both elliptic generators, Darcy's solve
    assert len(table) == 3 * 3 + 2 + 2 + 1 + 6  # and both spectral residuals, ENS against GN per family
    assert {"ratio", "goal", "meets", "threads", "device", "torch"} <= set(table.columns)
    times = table[~table.benchmark.isin(["data generation", "ens inference"])]
    assert times.ratio.to_numpy() == pytest.approx((times.ours_ms / times.reference_ms).to_numpy())
    darcy = table[table.case.str.startswith("darcy n=")].iloc[0]  # a speed-up: reference over ours
    assert darcy.ratio == pytest.approx(darcy.reference_ms / darcy.ours_ms)
    assert (table.ours_ms > 0).all() and (table.ours_ms <= table.ours_median_ms).all()


def test_an_unknown_size_or_benchmark_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--only", "nope"])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
