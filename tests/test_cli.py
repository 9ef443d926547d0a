"""Command line ``ens data generate|verify|info``, ``ens train``, ``ens study``, ``ens evaluate``,
``ens generalize``: argument errors, output and exit codes.

Runs ``ens.cli.main`` in-process on the Poisson ``ci`` sets (well under a second to generate), and
every subcommand once end to end as a user does, ``python -m ens`` in a subprocess with temporary
data, checkpoint and output folders (about 40 s on one thread); ``tests/test_data.py`` also runs
``python -m ens`` in a subprocess for the kill-and-resume test.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ens.cli import main
from ens.experiments import COMPUTE_RATIO, datasets
from ens.models import load_checkpoint
from ens.workers import shutdown_pool

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["data", "generate", "--profile", "ci", "--family", "poisson", "--root", str(root)]) == 0
    return root


@pytest.mark.parametrize("args, valid", [
    (["data", "generate", "--profile", "laptop"], "'ci', 'default', 'paper'"),
    (["data", "verify", "--profile", "ci", "--family", "burgers"],
     "'poisson', 'helmholtz', 'nonlinear_helmholtz', 'darcy', 'navier_stokes', 'kolmogorov'"),
    (["data", "generate", "--profile", "ci", "--split", "dev"], "'train', 'val', 'test'"),
    (["data", "info", "--profile", "paper2"], "'ci', 'default', 'paper'"),
    (["data", "purge"], "'generate', 'verify', 'info'"),
    (["fit"], "'data', 'train', 'evaluate', 'generalize', 'study', 'publish'"),
    (["train", "--profile", "ci", "--family", "burgers"], "'poisson', 'helmholtz'"),
    (["train", "--profile", "ci", "--family", "poisson", "--kind", "gan"], "'ens', 'surrogate', 'surrogate_matched', 'all'"),
    (["train", "--profile", "ci", "--family", "poisson", "--unroll", "half"], "'full', 'truncated'"),
    (["train", "--profile", "ci", "--family", "poisson", "--scaling", "raw"], "'constant', 'sample', 'h2'"),
    (["study", "--family", "stokes"], "'poisson', 'helmholtz'"),
    (["generalize", "--profile", "ci", "--study", "few_shot"], "'zero_shot', 'cross_equation', 'superres'"),
])
def test_bad_arguments_exit_2_listing_the_valid_choices(args, valid, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and valid in err


def test_generate_and_verify_require_a_profile(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "verify"])
    assert exc.value.code == 2 and "--profile" in capsys.readouterr().err


def test_generate_reports_each_file_and_keeps_valid_ones(root, capsys):
    assert main(["data", "generate", "--profile", "ci", "--family", "poisson", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    for spec in datasets("ci", "poisson"):
        assert f"{spec.path}: ok (checksum matches the manifest), kept" in out
    assert "done in" in out and "5 kept" in out


def test_verify_prints_residuals_and_fails_on_missing_files(root, capsys):
    assert main(["data", "verify", "--profile", "ci", "--family", "poisson", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "5/5 files ok" in out and "poisson/test_superres.h5" in out
    assert main(["data", "verify", "--profile", "ci", "--family", "darcy", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "0/6 files ok" in out


def test_verify_and_generate_exit_1_on_a_corrupt_file_until_repaired(root, tmp_path, capsys):
    shutil.copytree(Path(root) / "ci", tmp_path / "ci")
    path = tmp_path / "ci" / "poisson" / "val_scale=100.h5"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    args = ["--profile", "ci", "--family", "poisson", "--root", str(tmp_path)]
    assert main(["data", "verify", *args]) == 1
    assert "corrupt" in capsys.readouterr().out
    assert main(["data", "generate", *args]) == 1
    assert "--repair" in capsys.readouterr().err
    assert main(["data", "generate", *args, "--repair"]) == 0
    assert main(["data", "verify", *args]) == 0


def test_a_repeated_split_option_selects_each_of_those_splits(root, capsys):
    args = ["--profile", "ci", "--family", "poisson", "--root", str(root), "--split", "val", "--split", "test"]
    assert main(["data", "verify", *args]) == 0
    listed = {line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:] if line.startswith("ok")}
    assert listed == {s.path for s in datasets("ci", "poisson") if s.split in ("val", "test")}
    assert main(["data", "generate", *args, "--workers", "1"]) == 0
    assert "train" not in capsys.readouterr().out


def test_info_lists_what_exists(root, capsys):
    assert main(["data", "info", "--profile", "ci", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    poisson = {p: status for p, status in lines.items() if p.startswith("poisson/")}
    assert poisson == {s.path: "present" for s in datasets("ci", "poisson")}
    assert lines["darcy/train_contrast=4.h5"] == "missing"
    assert "{'k': 3.0}" in out  # shift values are printed from the config


def test_train_needs_a_family_or_all_and_a_positive_epoch_count(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--profile", "ci"])
    assert exc.value.code == 2 and "one of the arguments --family --all is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--profile", "ci", "--family", "poisson", "--epochs", "0"])
    assert exc.value.code == 2 and "expected a positive integer, got 0" in capsys.readouterr().err


def test_train_writes_a_checkpoint_and_reports_the_choice(root, tmp_path, capsys):
    out = tmp_path / "ck"
    args = ["train", "--profile", "ci", "--family", "poisson", "--root", str(root), "--out", str(out), "--epochs", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "poisson ens: validation rel L2" in text and "alpha=" in text and "poisson surrogate" in text
    # the three checkpoints and the manifest that lists them (with the lock file that guards it)
    assert sorted(p.name for p in (out / "ci").iterdir()) == [".manifest.lock", "manifest.json", "poisson_ens.pt",
                                                             "poisson_surrogate.pt", "poisson_surrogate_matched.pt"]
    assert sorted(json.loads((out / "ci" / "manifest.json").read_text())["files"]) == [
        "poisson_ens.pt", "poisson_surrogate.pt", "poisson_surrogate_matched.pt"]
    assert main(args) == 0  # a finished run is kept, not retrained
    assert "exists, nothing to do" in capsys.readouterr().out


def test_generalize_writes_resumable_study_tables(root, tmp_path, capfd):
    # capfd, not capsys: with several workers the per-run lines are printed by the worker processes;
    # kept workers of an earlier test write to that test's captured descriptors, so start fresh ones
    shutdown_pool()
    args = ["generalize", "--profile", "ci", "--study", "superres", "--family", "poisson", "--no-sensitivity",
            "--root", str(root), "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    out = capfd.readouterr().out
    assert "poisson -> poisson/superres ens_residual" in out and f"wrote {tmp_path}/" in out
    assert (tmp_path / "superres" / "trajectories" / "poisson_superres.csv").exists()
    assert (tmp_path / "superres" / "summary.csv").exists() and not (tmp_path / "sensitivity").exists()
    assert main(args) == 0  # the second run reads every method's run back from the cache
    out = capfd.readouterr().out
    assert "superres: every method read from" in out and "ens_residual" in out


# ---- every subcommand end to end, as a user runs it ----------------------------------------------
def test_every_subcommand_runs_end_to_end_at_the_ci_profile(tmp_path):
    data, checkpoints = tmp_path / "data", tmp_path / "checkpoints"
    # $ENS_DATA_DIR and $ENS_CHECKPOINT_DIR, set as a user would, keep every command out of the checkout
    env = {**os.environ, "PYTHONPATH": str(REPO), "ENS_DATA_DIR": str(data), "ENS_CHECKPOINT_DIR": str(checkpoints)}

    def ens(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ens", *args], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"ens {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        return done.stdout

    poisson = ["--profile", "ci", "--family", "poisson"]
    assert "5 generated" in ens("data", "generate", *poisson)
    assert sorted(p.relative_to(data / "ci").as_posix() for p in data.rglob("*.h5")) == sorted(
        s.path for s in datasets("ci", "poisson"))
    assert "5/5 files ok" in ens("data", "verify", *poisson)
    info = ens("data", "info", "--profile", "ci")
    assert f"data root: {data}" in info and "present    poisson/train_scale=100.h5" in info

    ens("train", *poisson, "--epochs", "1")
    # --epochs is ENS's: the compute-matched surrogate gets round(1 x its cost ratio) epochs
    matched = round(COMPUTE_RATIO["ci"]["poisson"])
    for kind, epochs in (("ens", 1), ("surrogate", 1), ("surrogate_matched", matched)):
        ck = load_checkpoint(checkpoints / "ci" / f"poisson_{kind}.pt", family="poisson")
        assert ck.kind == kind and [h["epoch"] for h in ck.history] == list(range(1, epochs + 1))

    study = tmp_path / "study"
    ens("study", *poisson, "--n-train", "8", "--epochs", "1", "--out", str(study), "--work", str(study / "runs"),
        "--root", str(data))
    table = pd.read_csv(study / "recipe_ci_poisson.csv")
    shipped = pd.read_csv(REPO / "data" / "studies" / "recipe_default_helmholtz.csv")
    assert list(table.columns) == list(shipped.columns)
    # 4 variants x 3 alphas x the report steps {0, 1, 5, 10, 20} and max_steps = 30 of the ci profile
    assert table.variant.nunique() == 4 and len(table) == 4 * 3 * 6
    assert len(list((study / "runs").glob("*/ci/poisson_ens.pt"))) == 4

    # the budget study: budget 1 is the configuration of the three models just trained (read, not
    # retrained); budget 2 trains all three, the matched surrogate for round(2 x ratio) epochs
    ens("study", *poisson, "--budget", "--budgets", "1", "2", "--out", str(study), "--work", str(study / "runs"),
        "--root", str(data))
    budget = pd.read_csv(study / "budget_ci_poisson.csv")
    assert len(budget) == 2 * 3 * 2  # budgets x models x (validation, the in-distribution test set)
    assert budget[budget.budget == 1].shipped.all() and not budget[budget.budget == 2].shipped.any()
    epochs = budget.groupby(["budget", "model"]).epochs.first().to_dict()
    assert epochs == {(1, "ens"): 1, (1, "surrogate"): 1, (1, "surrogate_matched"): matched, (2, "ens"): 2,
                      (2, "surrogate"): 2, (2, "surrogate_matched"): round(2 * COMPUTE_RATIO["ci"]["poisson"])}
    assert sorted(p.name for p in (study / "runs" / "budget" / "b2" / "ci").glob("*.pt")) == [
        "poisson_ens.pt", "poisson_surrogate.pt", "poisson_surrogate_matched.pt"]
    assert ((budget.rel_l2 > 0) & (budget.rel_l2 < 10)).all()

    # evaluate the models just trained (ENS_CHECKPOINT_DIR), not the shipped ones
    cache = ["--cache", str(tmp_path / "cache")]  # not results/cache of the checkout
    ens("evaluate", *poisson, "--out", str(tmp_path / "evaluate"), *cache)
    summary = pd.read_csv(tmp_path / "evaluate" / "summary.csv")
    assert {"reference", "surrogate", "ens", "gd", "gauss_newton", "tto"} <= set(summary.method)
    # "stopped": a residual stop rule ended the run (ENS+ may start with it), not a failure
    assert set(summary.family) == {"poisson"} and summary.status.isin(["ok", "stopped"]).all()
    # the reference solver reproduces the stored solutions (measured 2.5e-8; 40x margin)
    assert summary.loc[summary.method == "reference", "rel_l2"].max() < 1e-6

    ens("generalize", *poisson, "--study", "superres", "--no-sensitivity", "--out", str(tmp_path / "generalize"),
        *cache)
    summary = pd.read_csv(tmp_path / "generalize" / "superres" / "summary.csv")
    assert {"ens", "ens_residual"} <= set(summary.method) and set(summary.setting) == {"superres"}
    assert not (tmp_path / "generalize" / "sensitivity").exists()

    # publish refuses, in one line and with exit code 1, a folder that holds no finished run
    done = subprocess.run([sys.executable, "-m", "ens", "publish", "--results", str(tmp_path / "evaluate")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: nothing to publish: missing")
    assert "run `make reproduce` first" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_study_budgets_without_budget_is_refused_in_one_line(capsys):
    assert main(["study", "--profile", "ci", "--budgets", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--budgets needs --budget" in err and len(err.splitlines()) == 1
