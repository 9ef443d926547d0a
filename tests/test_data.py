"""Dataset layer: the experiment config, generation, determinism, resume, integrity, lazy loading.

The session fixture ``ci_root`` (``conftest.py``) holds the whole ``ci`` profile.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import shas

from ens.data import (
    GENERATOR_VERSION,
    CorruptDataError,
    PDEDataset,
    file_status,
    generate,
    generate_file,
    generation_cost,
    load_dataset,
    n_chunks,
    part_chunks,
    read_manifest,
    sha256sum,
    shard_plan,
    verify,
)
from ens.experiments import (
    CHUNK_SIZE,
    EVALUATION,
    PAIRED_TEST_KEY,
    PROFILES,
    SPLITS,
    DatasetSpec,
    cross_equation_pairs,
    dataset_spec,
    datasets,
    derive_seed,
    sizes,
)
from ens.pdes import FAMILIES

REPO = Path(__file__).resolve().parents[1]


def ci_specs(*families):
    return [s for f in families for s in datasets("ci", f)]


# ---- the configuration --------------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES)
def test_every_family_has_disjoint_splits_and_its_shifted_test_sets(profile):
    expected_tests = {
        "poisson": {"scale=100", "scale=200", "superres"},
        "helmholtz": {"k=1", "k=2", "k=3", "k=4", "superres"},
        "nonlinear_helmholtz": {"k=2_lam=-1", "superres"},
        "darcy": {"contrast=4", "contrast=8", "forcing=grf", "superres"},
        "navier_stokes": {"nu=1e-3", "nu=1e-4", "forcing=4pi", "superres"},
        "kolmogorov": {"nu=5e-4"},
    }
    assert set(expected_tests) == set(FAMILIES)
    for family, tests in expected_tests.items():
        specs = datasets(profile, family)
        by_split = {split: {s.setting for s in specs if s.split == split} for split in SPLITS}
        assert by_split["test"] == tests
        # validation is in-distribution only: one setting, the training one
        assert len(by_split["train"]) == 1 and by_split["val"] == by_split["train"]
        assert by_split["train"] <= tests
        size = sizes(profile, family)
        for s in specs:
            n = {"train": size.n_train, "val": size.n_val, "test": size.n_test}[s.split]
            # a super-resolution set holds the samples its study reads, no more
            assert s.n_samples == (min(n, EVALUATION[profile]["n_superres"]) if s.setting == "superres" else n)
            assert s.chunk_size == CHUNK_SIZE
            if s.setting == "superres":
                # node grids: 2S-1 nodes halve h exactly; periodic cell grids: 2S
                assert s.resolution == (2 * size.resolution if family == "navier_stokes" else 2 * size.resolution - 1)
                assert s.params == next(t for t in specs if t.split == "train").params
            else:
                assert s.resolution == size.resolution
        assert len({s.path for s in specs}) == len(specs)


def test_profiles_change_sizes_only():
    for family in FAMILIES:
        keys = [[(s.split, s.setting, s.params, s.seed) for s in datasets(p, family)] for p in PROFILES]
        assert keys[0] == keys[1] == keys[2]
    assert [sizes(p, "poisson").resolution for p in PROFILES] == [32, 64, 128]


def test_shift_values_live_in_params_not_only_in_names():
    cases = {("helmholtz", "k=3"): {"k": 3.0}, ("helmholtz", "k=4"): {"k": 4.0},
             ("poisson", "scale=200"): {"forcing_scale": 200.0},
             ("darcy", "contrast=8"): {"a_low": 3.0, "a_high": 24.0, "forcing": "constant"},
             ("darcy", "forcing=grf"): {"forcing": "grf"},
             ("navier_stokes", "nu=1e-4"): {"nu": 1e-4}, ("navier_stokes", "forcing=4pi"): {"forcing_wavenumber": 2},
             ("nonlinear_helmholtz", "k=2_lam=-1"): {"k": 2.0, "lam": -1.0}}
    for (family, setting), values in cases.items():
        spec = dataset_spec("default", family, "test", setting)
        pde = spec.pde()
        for key, val in values.items():
            assert dict(spec.params)[key] == val and getattr(pde, key) == val
    # the training settings differ from the shifted ones in exactly those values
    assert dataset_spec("default", "helmholtz", "train", "k=1").pde().k == 1.0
    assert dataset_spec("default", "navier_stokes", "train", "nu=1e-3").pde().nu == 1e-3
    assert dataset_spec("default", "darcy", "train", "contrast=4").pde().a_high == 12.0


def test_seeds_are_stable_distinct_and_shared_only_by_the_paired_test_sets():
    # pinned value: the derivation must never change (it would silently change every dataset)
    assert derive_seed("poisson/train/scale=100") == 2123348587
    specs = datasets("paper")
    paired = {s for s in specs if s.seed == derive_seed(PAIRED_TEST_KEY)}
    assert {(s.family, s.setting) for s in paired} == {("poisson", "scale=100"), ("helmholtz", "k=1"),
                                                       ("helmholtz", "k=2"), ("helmholtz", "k=3"), ("helmholtz", "k=4")}
    assert all(s.split == "test" for s in paired)
    others = [s.seed for s in specs if s not in paired]
    assert len(set(others)) == len(others)
    assert all(0 <= s.seed < 2 ** 31 for s in specs)
    # a seed depends only on family/split/setting, not on the profile or on the other specs
    assert [s.seed for s in datasets("ci")] == [s.seed for s in specs]
    assert dataset_spec("ci", "darcy", "test", "contrast=8").seed == derive_seed("darcy/test/contrast=8")


def test_cross_equation_pairs_are_poisson_and_helmholtz_with_shared_seeds():
    pairs = cross_equation_pairs("default")
    assert [(train, s.family, s.setting) for train, s in pairs] == [("poisson", "helmholtz", "k=1"),
                                                                   ("helmholtz", "poisson", "scale=100")]
    assert pairs[0][1].seed == pairs[1][1].seed


def test_unknown_names_raise_listing_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown profile 'laptop'.*'ci', 'default', 'paper'"):
        datasets("laptop")
    with pytest.raises(ValueError, match=r"unknown family 'burgers'.*'poisson'.*'kolmogorov'"):
        datasets("ci", "burgers")
    with pytest.raises(ValueError, match=r"unknown split 'dev'.*'train', 'val', 'test'"):
        datasets("ci", split="dev")
    with pytest.raises(ValueError, match=r"unknown setting.*'k=1', 'k=2', 'k=3', 'k=4', 'superres'"):
        dataset_spec("ci", "helmholtz", "test", "k=5")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['kappa'\]"):
        DatasetSpec("ci", "helmholtz", "test", "x", {"kappa": 1.0}, 32, 4, 0)
    with pytest.raises(ValueError, match="must match"):
        DatasetSpec("ci", "helmholtz", "test", "../x", {}, 32, 4, 0)


# ---- generation, verification, determinism --------------------------------------------------------
def test_ci_profile_end_to_end(ci_root):
    specs = datasets("ci")
    assert set(shas(ci_root)) == {s.path for s in specs}
    assert not list(Path(ci_root).rglob("*.tmp"))
    for spec in specs:
        pde = spec.pde()
        with h5py.File(Path(ci_root) / "ci" / spec.path, "r") as f:
            S = spec.resolution
            assert f["inputs"].shape == (spec.n_samples, pde.in_channels, S, S)
            assert f["solutions"].shape == (spec.n_samples, pde.out_channels, S, S)
            assert f["inputs"].dtype == np.float32 and f["solutions"].dtype == np.float32
            assert f["inputs"].chunks == (1, pde.in_channels, S, S)
            assert json.loads(f.attrs["params"]) == pde.params  # every PDE parameter, shifts included
            assert json.loads(f.attrs["spec"]) == spec.to_dict()
            assert f.attrs["seed"] == spec.seed and f.attrs["resolution"] == S
            assert f.attrs["generator_version"] == GENERATOR_VERSION
            assert np.isfinite(f["solutions"][:]).all() and np.abs(f["solutions"][:]).max() > 0
            # every sample is a new draw (chunks have their own random streams)
            assert len(np.unique(f["inputs"][:].reshape(spec.n_samples, -1), axis=0)) == spec.n_samples


def test_residual_of_every_generated_file_is_at_its_floor(ci_root):
    reports = verify(datasets("ci"), root=ci_root, progress=False)
    assert reports and all(r.ok for r in reports), [r for r in reports if not r.ok]
    for r in reports:
        assert 0 < r.max_residual <= r.tolerance and r.worst_ratio <= 1
        family = r.path.split("/")[0]
        if family in ("navier_stokes", "kolmogorov"):
            # the trapezoidal-in-time floor is dt^2-small: ~1e-3 (NS), ~1e-2 (Kolmogorov, bursty)
            assert r.max_residual < 5e-2
        else:
            # the float32 storage floor: ~1e-5 at S=32, ~3e-5 at S=63
            assert r.max_residual < 1e-4


def test_the_residual_check_catches_a_wrong_solution(ci_root, tmp_path):
    spec = dataset_spec("ci", "helmholtz", "test", "k=4")
    shutil.copytree(Path(ci_root) / "ci", tmp_path / "ci")
    path = tmp_path / "ci" / spec.path
    with h5py.File(path, "r+") as f:
        f["solutions"][3] *= 1.001  # a 0.1% error in one sample, e.g. a solver stopped early
    manifest = read_manifest(tmp_path / "ci")
    manifest["files"][spec.path].update(sha256=sha256sum(path), bytes=path.stat().st_size)
    (tmp_path / "ci" / "manifest.json").write_text(json.dumps(manifest))
    (report,) = verify([spec], root=tmp_path, progress=False)
    assert report.status == "residual" and not report.ok and report.worst_ratio > 1


@pytest.mark.parametrize("family", ["navier_stokes", "kolmogorov"])
def test_the_residual_check_catches_a_trajectory_with_the_wrong_viscosity(family, tmp_path, monkeypatch):
    spec = DatasetSpec("ci", family, "test", "small", {"warmup": 0.5, "n_snapshots": 6}, 16, 4, 3)
    generate([spec], root=tmp_path, progress=False)
    (good,) = verify([spec], root=tmp_path, progress=False)
    assert good.ok
    cls = type(spec.pde())
    solve = cls.solve
    monkeypatch.setattr(cls, "solve", lambda self, c: solve(dataclasses.replace(self, nu=1.5 * self.nu), c))
    generate([spec], root=tmp_path / "wrong", progress=False)
    monkeypatch.undo()
    (bad,) = verify([spec], root=tmp_path / "wrong", progress=False)
    assert bad.status == "residual" and bad.worst_ratio > 2  # measured >= 4.9 on the default sets


def test_two_generations_give_identical_checksums(ci_root, tmp_path):
    families = ["poisson", "nonlinear_helmholtz", "darcy"]
    generate(ci_specs(*families), root=tmp_path, progress=False)  # later, and with torch's default threads
    ref = shas(ci_root)
    new = shas(tmp_path)
    assert set(new) == {s.path for s in ci_specs(*families)}
    assert all(new[k] == ref[k] for k in new)


def test_paired_cross_equation_test_sets_hold_the_same_forcings(ci_root):
    read = lambda fam, split, setting: PDEDataset(dataset_spec("ci", fam, split, setting), root=ci_root)
    p, h3 = read("poisson", "test", "scale=100"), read("helmholtz", "test", "k=3")
    assert torch.equal(p[5][0], h3[5][0]) and not torch.equal(p[5][1], h3[5][1])
    assert not torch.equal(p[5][0], read("poisson", "train", "scale=100")[5][0])


def test_rerun_keeps_valid_files_and_regenerates_unrecorded_and_stale_ones(ci_root, tmp_path):
    shutil.copytree(Path(ci_root) / "ci" / "darcy", tmp_path / "ci" / "darcy")
    shutil.copy(Path(ci_root) / "ci" / "manifest.json", tmp_path / "ci")
    specs = ci_specs("darcy")
    manifest = read_manifest(tmp_path / "ci")
    del manifest["files"][specs[0].path]                       # killed between rename and record
    manifest["files"][specs[1].path]["spec"]["n_samples"] = 3  # the config changed since
    manifest["files"][specs[2].path]["params"]["grf_tau"] = 4.0  # a family default changed since
    (tmp_path / "ci" / "manifest.json").write_text(json.dumps(manifest))
    assert [file_status(s, tmp_path) for s in specs[:4]] == ["unrecorded", "stale", "stale", "ok"]
    actions = generate(specs, root=tmp_path, progress=False)
    assert [actions[s] for s in specs] == ["regenerated"] * 3 + ["kept"] * (len(specs) - 3)
    assert all(shas(tmp_path)[s.path] == shas(ci_root)[s.path] for s in specs)


def test_loading_with_generate_missing_regenerates_a_stale_file_but_refuses_a_corrupt_one(ci_root, tmp_path):
    shutil.copytree(Path(ci_root) / "ci" / "darcy", tmp_path / "ci" / "darcy")
    shutil.copy(Path(ci_root) / "ci" / "manifest.json", tmp_path / "ci")
    stale, corrupt = ci_specs("darcy")[:2]
    manifest = read_manifest(tmp_path / "ci")
    manifest["files"][stale.path]["generator_version"] = GENERATOR_VERSION - 1  # made before an upgrade
    manifest["files"][corrupt.path]["sha256"] = "0" * 64
    (tmp_path / "ci" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptDataError, match="stale"):
        load_dataset(stale, tmp_path)
    assert load_dataset(stale, tmp_path, generate_missing=True).n_samples == stale.n_samples
    assert file_status(stale, tmp_path) == "ok" and shas(tmp_path)[stale.path] == shas(ci_root)[stale.path]
    with pytest.raises(CorruptDataError, match="corrupt"):
        load_dataset(corrupt, tmp_path, generate_missing=True)


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    spec = DatasetSpec("ci", "poisson", "test", "fail", {}, 16, 2 * CHUNK_SIZE, 1)
    calls = []

    def solve_then_fail(self, c):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("solver failure")
        return c

    monkeypatch.setattr(type(spec.pde()), "solve", solve_then_fail)
    with pytest.raises(RuntimeError, match="solver failure"):
        generate([spec], root=tmp_path, progress=False)
    assert len(calls) == 2
    assert list((tmp_path / "ci" / "poisson").iterdir()) == []
    assert read_manifest(tmp_path / "ci")["files"] == {}


def test_killed_generation_resumes_to_the_uninterrupted_checksums(ci_root, tmp_path):
    cmd = [sys.executable, "-m", "ens", "data", "generate", "--profile", "ci", "--family", "navier_stokes",
           "--split", "test", "--root", str(tmp_path), "--workers", "1"]
    # one thread, as for the reference run (see ci_root); one file after the other
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    specs = datasets("ci", "navier_stokes", "test")
    first, second = (tmp_path / "ci" / s.path for s in specs[:2])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        tmp_of_second = second.with_name(f"{second.name}.{proc.pid}.tmp")  # the writer's pid names its file
        while not tmp_of_second.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # mid-run: the first file is done, the second half-written
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert first.exists() and tmp_of_second.exists() and not second.exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{specs[0].path}: ok (checksum matches the manifest), kept" in done.stdout
    assert not list(tmp_path.rglob("*.tmp"))
    ref = shas(ci_root)
    assert shas(tmp_path) == {s.path: ref[s.path] for s in specs}


def test_corrupt_file_is_reported_refused_and_repaired(ci_root, tmp_path):
    shutil.copytree(Path(ci_root) / "ci" / "poisson", tmp_path / "ci" / "poisson")
    shutil.copy(Path(ci_root) / "ci" / "manifest.json", tmp_path / "ci")
    specs = ci_specs("poisson")
    spec = specs[0]
    path = tmp_path / "ci" / spec.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4] = bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 4])
    path.write_bytes(bytes(data))
    corrupted = sha256sum(path)

    reports = {r.path: r for r in verify(specs, root=tmp_path, progress=False)}
    assert reports[spec.path].status == "corrupt" and not reports[spec.path].ok
    assert all(r.ok for p, r in reports.items() if p != spec.path)
    with pytest.raises(CorruptDataError, match="sha256 differs.*--repair"):
        PDEDataset(spec, root=tmp_path)
    assert generate(specs, root=tmp_path, progress=False)[spec] == "refused"
    assert sha256sum(path) == corrupted  # left untouched without --repair
    assert generate(specs, root=tmp_path, repair=True, progress=False)[spec] == "repaired"
    assert sha256sum(path) == shas(ci_root)[spec.path]
    assert len(PDEDataset(spec, root=tmp_path)) == spec.n_samples


# ---- the torch Dataset -------------------------------------------------------------------------------
def test_dataset_returns_the_stored_float32_pairs(ci_root):
    spec = dataset_spec("ci", "darcy", "test", "forcing=grf")
    ds = PDEDataset(spec, root=ci_root)
    assert len(ds) == spec.n_samples and ds.params["forcing"] == "grf"
    x, u = ds[-1]
    assert x.dtype == u.dtype == torch.float32 and x.shape == (2, 32, 32) and u.shape == (1, 32, 32)
    with h5py.File(Path(ci_root) / "ci" / spec.path, "r") as f:
        assert np.array_equal(x.numpy(), f["inputs"][spec.n_samples - 1])
        assert np.array_equal(u.numpy(), f["solutions"][spec.n_samples - 1])
    with pytest.raises(IndexError):
        ds[spec.n_samples]
    with pytest.raises(FileNotFoundError, match="ens data generate --profile ci --family darcy"):
        PDEDataset(spec, root=Path(ci_root) / "nowhere")


def test_dataset_works_with_dataloader_workers(ci_root):
    ds = PDEDataset(dataset_spec("ci", "helmholtz", "test", "k=2"), root=ci_root)
    ds[0]  # the parent opens its handle first: each forked worker must open its own
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    xs = torch.cat([x for x, _ in loader])
    assert torch.equal(xs, torch.stack([ds[i][0] for i in range(len(ds))]))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io to count bytes read")
def test_reading_one_sample_reads_one_chunk_not_the_file(tmp_path):
    spec = DatasetSpec("ci", "poisson", "train", "large", {}, 32, 2048, 11)
    generate([spec], root=tmp_path, progress=False)
    size = (tmp_path / "ci" / spec.path).stat().st_size

    def bytes_read():
        return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])

    before = bytes_read()
    ds = PDEDataset(spec, root=tmp_path, verify=False)  # verify=True would hash (read) the whole file once
    x, u = ds[1234]
    read = bytes_read() - before
    # 2 chunks of 4 KiB plus HDF5 metadata (superblock, object headers, chunk B-tree nodes)
    assert read < 0.01 * size, f"read {read} bytes of a {size}-byte file"
    assert x.shape == (1, 32, 32) and float(x.abs().max()) > 0
    assert not torch.equal(ds[0][0], ds[CHUNK_SIZE][0])  # chunks are drawn from different streams


def test_parallel_generation_starts_the_longest_files_first(tmp_path, monkeypatch):
    import ens.workers
    submitted = []

    def record(fn, jobs, **kw):
        submitted.extend(job[0].path for job in jobs)
        return [(0.0, True)] * len(jobs)

    monkeypatch.setattr(ens.workers, "map_jobs", record)
    monkeypatch.setattr("ens.data.file_status", lambda spec, root: "missing")
    monkeypatch.setattr("ens.data.data_root", lambda root: tmp_path)
    for spec in datasets("ci", split="test"):  # done() reports each file's size
        (tmp_path / "ci" / spec.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ci" / spec.path).write_bytes(b"")
    specs = datasets("ci", split="test")
    generate(specs, root=tmp_path, workers=2)
    costs = {s.path: generation_cost(s) for s in specs}
    assert sorted(submitted) == sorted(costs)
    assert [costs[p] for p in submitted] == sorted(costs.values(), reverse=True)
    # the time-stepped flows cost most per sample; a super-resolution file ~4x per sample
    assert submitted[0].startswith(("kolmogorov/", "navier_stokes/"))
    assert submitted[-1].startswith(("poisson/", "helmholtz/"))
    assert generation_cost(dataset_spec("ci", "poisson", "test", "superres")) > generation_cost(
        dataset_spec("ci", "poisson", "test", "scale=100"))


def test_parallel_generation_writes_the_bytes_of_a_serial_one(tmp_path):
    specs = [s for s in datasets("ci", "poisson") if s.split == "test"] + datasets("ci", "navier_stokes", "val")
    generate(specs, root=tmp_path / "serial", progress=False)
    actions = generate(specs, root=tmp_path / "parallel", workers=2)
    assert set(actions.values()) == {"generated"}
    serial, parallel = (read_manifest(tmp_path / r / "ci")["files"] for r in ("serial", "parallel"))
    assert {k: v["sha256"] for k, v in serial.items()} == {k: v["sha256"] for k, v in parallel.items()}
    assert len(parallel) == len(specs)


# ---- sharded generation -------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["default", "paper"])
@pytest.mark.parametrize("n_shards", [2, 3, 8])
def test_shard_plan_covers_every_chunk_once_and_balances_the_work(profile, n_shards):
    specs = datasets(profile)
    plan = shard_plan(specs, n_shards)
    assert plan == shard_plan(list(specs), n_shards)  # a pure function of the specs: every shard agrees
    chunks = {}
    for units in plan:
        for spec, part, parts in units:
            chunks.setdefault(spec, []).extend(part_chunks(spec, part, parts))
    assert {s: sorted(c) for s, c in chunks.items()} == {s: list(range(n_chunks(s))) for s in specs}
    unit_cost = lambda s, p, m: generation_cost(s) * len(part_chunks(s, p, m)) / n_chunks(s)
    loads = [sum(unit_cost(*u) for u in units) for units in plan]
    share = sum(map(generation_cost, specs)) / n_shards
    largest = max(unit_cost(*u) for units in plan for u in units)
    # longest-first list scheduling: no shard exceeds the fair share by more than its largest unit,
    # and the large files are split into units of at most one share (a chunk costs less than one here)
    assert max(loads) <= share + largest + 1e-9 and largest <= share * (1 + 1e-9)


def test_two_concurrent_shards_write_the_single_process_checksums(ci_root, tmp_path):
    """The whole ci profile as two processes started together on one data root (``--shard 0/2`` and
    ``1/2``): the files, and the manifest they both update, equal the single-process run's."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ens", "data", "generate", "--profile", "ci", "--root", str(tmp_path), "--workers", "1"]
    procs = [subprocess.Popen([*cmd, "--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert all("other shard" in out for out, _ in outs)
    assert shas(tmp_path) == shas(ci_root) and len(shas(ci_root)) == len(datasets("ci"))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or ".part" in p.name and "lock" not in p.name]


def test_a_file_split_across_shards_is_assembled_byte_identical_and_parts_resume(tmp_path):
    spec = dataclasses.replace(dataset_spec("ci", "kolmogorov", "train", "nu=5e-4"), n_samples=8, chunk_size=2)
    generate_file(spec, tmp_path / "one.h5", progress=False)
    plan = shard_plan([spec], 3)
    # 4 chunks, a share of 4/3 chunk: 4 parts of one chunk, shard 0 takes the fourth as well
    assert sorted((p, m) for units in plan for _, p, m in units) == [(0, 4), (1, 4), (2, 4), (3, 4)]
    root, folder = tmp_path / "root", tmp_path / "root" / "ci" / "kolmogorov"
    first = [i for i in range(3) if plan[i][0][1] == 0][0]
    actions = generate([spec], root=root, shard=(first, 3), progress=False)
    assert actions[spec] == "partial" and file_status(spec, root) == "missing"
    part = folder / "train_nu=5e-4.h5.part1of4"
    assert part.exists() and (folder / (part.name + ".json")).exists()
    # a part of an interrupted run is kept; a damaged one is never used: it is generated again
    logs = []
    generate([spec], root=root, shard=(first, 3), progress=False, log=logs.append)
    assert any("part 1/4: written by a concurrent or earlier run (checksum matches), kept" in line for line in logs)
    with h5py.File(part, "r+") as f:
        f["solutions"][0] = 0.0
    generate([spec], root=root, shard=(first, 3), progress=False)
    for i in range(3):
        if i != first:
            actions = generate([spec], root=root, shard=(i, 3), progress=False)
    assert actions[spec] == "generated" and file_status(spec, root) == "ok"
    assert read_manifest(root / "ci")["files"][spec.path]["sha256"] == sha256sum(tmp_path / "one.h5")
    assert sorted(p.name for p in folder.iterdir()) == ["train_nu=5e-4.h5"]  # the parts are removed


def test_a_bad_shard_is_refused_with_one_line(tmp_path, capsys):
    from ens.cli import main
    with pytest.raises(ValueError, match=r"expected shard \(i, n\) with 0 <= i < n"):
        generate(datasets("ci", "poisson"), root=tmp_path, shard=(2, 2))
    with pytest.raises(SystemExit) as exc:
        main(["data", "generate", "--profile", "ci", "--shard", "2/2", "--root", str(tmp_path)])
    assert exc.value.code == 2 and "expected I/N with 0 <= I < N, e.g. 0/2, got '2/2'" in capsys.readouterr().err


def test_generate_under_torchrun_takes_its_shard_from_rank_and_world_size(tmp_path, monkeypatch, capsys):
    from ens.cli import main
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["data", "generate", "--profile", "ci", "--family", "poisson", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    mine = {s.path for s, _, _ in shard_plan(datasets("ci", "poisson"), 2)[1]}
    assert "shard 1/2:" in out and set(shas(tmp_path)) == mine and 0 < len(mine) < len(datasets("ci", "poisson"))
