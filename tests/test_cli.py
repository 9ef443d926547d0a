"""Command line ``ens data generate|verify|info``: argument errors, output and exit codes.

Runs ``ens.cli.main`` in-process on the Poisson ``ci`` sets (well under a second to generate);
``tests/test_data.py`` runs ``python -m ens`` in a subprocess for the kill-and-resume test.
"""

import shutil
from pathlib import Path

import pytest

from ens.cli import main
from ens.experiments import datasets


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
    (["train"], "'data'"),
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


def test_info_lists_what_exists(root, capsys):
    assert main(["data", "info", "--profile", "ci", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    poisson = {p: status for p, status in lines.items() if p.startswith("poisson/")}
    assert poisson == {s.path: "present" for s in datasets("ci", "poisson")}
    assert lines["darcy/train_contrast=4.h5"] == "missing"
    assert "{'k': 3.0}" in out  # shift values are printed from the config
