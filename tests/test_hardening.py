"""Hostile input: corrupted and misplaced checkpoints, broken manifests, misplaced files and folders,
two generators on one data root, a full disk, Ctrl-C. Every case must end in a clear error (one
line naming what was expected, a non-zero exit status) or the right result -- never a silent wrong
result or a traceback."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import shas

from ens.cli import main
from ens.data import CorruptDataError, file_status
from ens.experiments import datasets
from ens.models import CheckpointError, load_checkpoint, save_checkpoint
from ens.models.checkpoint import MANIFEST, content_digest
from ens.paths import checkpoint_root
from ens.train import TrainConfig, checkpoint_path, load_trained, train

REPO = Path(__file__).resolve().parents[1]
SHIPPED = checkpoint_root() / "ci"


def _one_error_line(capsys, rc, expected_rc=1) -> str:
    """The stderr of a CLI call that failed as expected: one ``error:`` line, no traceback."""
    err = capsys.readouterr().err
    assert rc == expected_rc, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def shipped_copy(tmp_path):
    """A copy of the shipped ci checkpoints and their manifest (``<tmp>/ci``)."""
    shutil.copytree(SHIPPED, tmp_path / "ci", ignore=shutil.ignore_patterns(".manifest.lock"))
    return tmp_path


# ---- checkpoints -----------------------------------------------------------------------------
def test_every_shipped_checkpoint_is_listed_in_its_manifest_and_verifies():
    for profile in ("ci", "default"):
        folder = checkpoint_root() / profile
        listed = json.loads((folder / MANIFEST).read_text())["files"]
        # (a partial run's resume file, gitignored, is not a shipped checkpoint)
        assert sorted(listed) == sorted(p.name for p in folder.glob("*.pt") if not p.name.endswith(".last.pt"))
        for name, entry in listed.items():
            family, kind = entry["family"], entry["kind"]
            assert name == f"{family}_{kind}.pt"
            ck = load_trained(profile, family, kind)
            assert (entry["family"], entry["kind"], entry["profile"]) == (family, kind, profile) == (
                ck.family, ck.kind, ck.config["profile"])


@pytest.mark.parametrize("with_manifest", [True, False])
def test_single_byte_flips_of_a_checkpoint_are_refused(shipped_copy, with_manifest):
    """120 random single-bit flips of a shipped checkpoint: with its manifest every one is refused;
    with the content digest alone every flip that changes the content is refused (flips in zip
    headers and padding that torch does not read may load, with the unchanged content)."""
    path = shipped_copy / "ci" / "helmholtz_ens.pt"
    if not with_manifest:
        (shipped_copy / "ci" / MANIFEST).unlink()
    good = path.read_bytes()
    reference = content_digest(load_checkpoint(path).raw)
    rng = random.Random(14)
    refused = 0
    for _ in range(120):
        data = bytearray(good)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            ck = load_checkpoint(path)
        except CheckpointError as err:
            assert str(path) in str(err) and ("git checkout" in str(err) or "not an ENS" in str(err)
                                              or "format version" in str(err)), err
            refused += 1
        else:
            assert content_digest(ck.raw) == reference  # loaded: the very same content
    assert refused == 120 if with_manifest else refused >= 110


def test_a_content_change_that_torch_reads_is_refused_by_the_digest(tmp_path):
    raw = torch.load(SHIPPED / "poisson_ens.pt", weights_only=True)
    name = next(iter(raw["corrector"]["state_dict"]))
    raw["corrector"]["state_dict"][name] = raw["corrector"]["state_dict"][name] + 1e-3
    torch.save(raw, tmp_path / "edited.pt")  # the old digest kept, the weights changed
    with pytest.raises(CheckpointError, match="content does not match its digest"):
        load_checkpoint(tmp_path / "edited.pt")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_on_load(tmp_path, value):
    raw = torch.load(SHIPPED / "poisson_surrogate.pt", weights_only=True)
    name = next(k for k, v in raw["predictor"]["state_dict"].items() if v.is_floating_point())
    raw["predictor"]["state_dict"][name].view(-1)[0] = value
    save_checkpoint(raw, tmp_path / "diverged.pt")  # a valid digest over non-finite weights
    with pytest.raises(CheckpointError, match=f"non-finite weights \\(predictor.{name}\\).*diverged"):
        load_checkpoint(tmp_path / "diverged.pt")


@pytest.mark.parametrize("source, target, field", [
    ("poisson_ens.pt", "poisson_surrogate.pt", "kind='ens', expected 'surrogate'"),
    ("helmholtz_surrogate.pt", "poisson_surrogate.pt", "family='helmholtz', expected 'poisson'"),
])
def test_a_checkpoint_copied_over_another_roles_file_is_refused(shipped_copy, source, target, field):
    (shipped_copy / "ci" / MANIFEST).unlink()  # not caught by the manifest: by the role check
    shutil.copy(shipped_copy / "ci" / source, shipped_copy / "ci" / target)
    family, kind = target[:-3].rsplit("_", 1)
    with pytest.raises(CheckpointError, match=field):
        load_trained("ci", family, kind, shipped_copy)


def test_a_checkpoint_of_another_profile_is_refused_for_this_one(tmp_path):
    (tmp_path / "ci").mkdir()
    shutil.copy(checkpoint_root() / "default" / "poisson_ens.pt", tmp_path / "ci" / "poisson_ens.pt")
    with pytest.raises(CheckpointError, match="profile='default', expected 'ci'"):
        load_trained("ci", "poisson", "ens", tmp_path)


def test_a_broken_checkpoint_manifest_is_named(shipped_copy):
    for text in ("{", "[]", '{"files": {"poisson_ens.pt": {"sha256": "x"}}}'):
        (shipped_copy / "ci" / MANIFEST).write_text(text)
        with pytest.raises(CheckpointError, match="is not a checkpoint manifest.*git checkout"):
            load_trained("ci", "poisson", "ens", shipped_copy)


def test_a_directory_given_as_a_checkpoint_is_named_as_such(tmp_path):
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_float64_inputs_to_a_float32_model_are_refused_naming_both_dtypes():
    ck = load_trained("ci", "poisson", "surrogate")
    pde = ck.pde()
    c = pde.sample_inputs(2, 32, torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(TypeError, match="expected torch.float32 inputs.*got torch.float64"):
        ck.model.predict(pde, c)


# ---- training ------------------------------------------------------------------------------------
def _config(**kw):
    return TrainConfig.for_profile("ci", "poisson", "surrogate", **{"epochs": 1, "n_train": 16, **kw})


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, "truncated", "foreign"])
def test_a_broken_partial_run_is_refused_suggesting_no_resume(tmp_path, ci_root, content):
    last = checkpoint_path("ci", "poisson", "surrogate", tmp_path).with_suffix(".last.pt")
    last.parent.mkdir(parents=True)
    if content == "truncated":
        content = (SHIPPED / "poisson_surrogate.pt").read_bytes()[:5000]
    elif content == "foreign":
        torch.save({"epoch": 3}, last)
        content = last.read_bytes()
    last.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{last}.*--no-resume"):
        train(_config(), out_dir=tmp_path, data_root=ci_root, progress=False)
    # and the way out that the message names works
    assert train(_config(), out_dir=tmp_path, data_root=ci_root, progress=False, resume=False).exists()


def test_a_finished_run_of_another_configuration_is_not_returned_as_this_one(tmp_path, ci_root):
    path = train(_config(), out_dir=tmp_path, data_root=ci_root, progress=False)
    assert json.loads((path.parent / MANIFEST).read_text())["files"][path.name]["kind"] == "surrogate"
    with pytest.raises(CheckpointError, match="another configuration.*'epochs': \\(1, 2\\).*--no-resume"):
        train(_config(epochs=2), out_dir=tmp_path, data_root=ci_root, progress=False)


# ---- the CLI: one clear line, a non-zero exit status ------------------------------------------
@pytest.fixture
def poisson_root(tmp_path, ci_root):
    root = tmp_path / "data"
    (root / "ci").mkdir(parents=True)
    shutil.copytree(ci_root / "ci" / "poisson", root / "ci" / "poisson")
    manifest = json.loads((ci_root / "ci" / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k.startswith("poisson/")}
    (root / "ci" / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize("text, expected", [
    ("{}", "not a dataset manifest"), ("[]", "not a dataset manifest"), ("{", "not valid JSON"),
    ("drop-bytes", "lacks one of"), ("entry-list", "lacks one of"),
])
def test_a_broken_data_manifest_is_one_clear_line(poisson_root, capsys, text, expected):
    path = poisson_root / "ci" / "manifest.json"
    if text == "drop-bytes":
        manifest = json.loads(path.read_text())
        del manifest["files"]["poisson/val_scale=100.h5"]["bytes"]
        text = json.dumps(manifest)
    elif text == "entry-list":
        text = json.dumps({"files": {"poisson/val_scale=100.h5": [1, 2]}})
    path.write_text(text)
    for action in ("generate", "verify"):
        rc = main(["data", action, "--profile", "ci", "--family", "poisson", "--root", str(poisson_root)])
        err = _one_error_line(capsys, rc)
        assert expected in err and str(path) in err and "ens data generate" in err


def test_a_directory_where_a_dataset_should_be_is_named_and_left_alone(poisson_root, capsys):
    path = poisson_root / "ci" / "poisson" / "val_scale=100.h5"
    path.unlink()
    path.mkdir()
    for args in (["generate"], ["generate", "--repair"], ["verify"]):
        rc = main(["data", *args, "--profile", "ci", "--family", "poisson", "--root", str(poisson_root)])
        assert "is not a file (expected the HDF5 file of poisson/val_scale=100.h5)" in _one_error_line(capsys, rc)
    assert path.is_dir()


def test_a_file_where_a_family_folder_should_be_is_named(tmp_path, capsys):
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "poisson").write_text("not a folder")
    rc = main(["data", "generate", "--profile", "ci", "--family", "poisson", "--root", str(tmp_path)])
    assert "expected a folder for the poisson datasets" in _one_error_line(capsys, rc)


def test_a_corrupt_checkpoint_is_one_clear_line_from_evaluate(shipped_copy, ci_root, tmp_path, capsys):
    path = shipped_copy / "ci" / "poisson_ens.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    rc = main(["evaluate", "--profile", "ci", "--family", "poisson", "--checkpoints", str(shipped_copy),
               "--root", str(ci_root), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
               "--workers", "1"])
    err = _one_error_line(capsys, rc)
    assert f"checkpoint {path} is corrupt" in err and "git checkout" in err


@pytest.mark.parametrize("args, expected", [
    (["train", "--profile", "ci", "--family", "poisson", "--seed", str(2 ** 70)], "between 1 and 2**63 - 1"),
    (["train", "--profile", "ci", "--family", "poisson", "--device", "gpu0"], "expected a torch device"),
    (["data", "generate", "--profile", "ci", "--device", "cuda:99"], "CUDA"),
])
def test_out_of_range_arguments_are_refused_at_parse_time(capsys, args, expected):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and expected in capsys.readouterr().err


def test_debug_shows_the_traceback_instead(poisson_root):
    (poisson_root / "ci" / "manifest.json").write_text("[]")
    with pytest.raises(CorruptDataError, match="not a dataset manifest"):
        main(["data", "verify", "--profile", "ci", "--family", "poisson", "--root", str(poisson_root), "--debug"])


# ---- processes: concurrency, a full disk, Ctrl-C -------------------------------------------------
def _ens(*args, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "ens", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_two_generators_on_one_data_root_both_finish_with_one_consistent_manifest(tmp_path, ci_root):
    args = ("data", "generate", "--profile", "ci", "--family", "navier_stokes", "--root", str(tmp_path),
            "--workers", "1")
    runs = [_ens(*args), _ens(*args)]
    outs = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], [o[1][-2000:] for o in outs]
    assert shas(tmp_path) == {k: v for k, v in shas(ci_root).items() if k.startswith("navier_stokes/")}
    assert all(file_status(s, tmp_path) == "ok" for s in datasets("ci", "navier_stokes"))
    assert not list(tmp_path.rglob("*.tmp"))
    # the files were generated once: the second run waited and kept what the first wrote
    assert sum(o[0].count(": generated (") + o[0].count(": written by a concurrent run") for o in outs) == 2 * len(
        datasets("ci", "navier_stokes"))


def _small_filesystem(path: Path, size: str) -> bool:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


def test_a_full_disk_is_one_clear_line_and_leaves_nothing_half_written(tmp_path):
    small = tmp_path / "small"
    if not _small_filesystem(small, "2M"):
        pytest.skip("cannot mount a small tmpfs here (needs root); the full-disk case is not tested")
    try:
        run = _ens("data", "generate", "--profile", "ci", "--root", str(small), "--workers", "1")
        out, err = run.communicate(timeout=600)
        assert run.returncode == 1, err[-2000:]
        assert "Traceback" not in err and err.count("\n") == 1 and "no space left for" in err, err
        assert not list(small.rglob("*.tmp"))
        manifest = json.loads((small / "ci" / "manifest.json").read_text())["files"]
        assert sorted(manifest) == sorted(p.relative_to(small / "ci").as_posix() for p in small.rglob("*.h5"))
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_ctrl_c_is_one_line_exit_130_and_the_run_resumes(tmp_path):
    args = ("data", "generate", "--profile", "ci", "--family", "kolmogorov", "--root", str(tmp_path),
            "--workers", "1")
    # SIGINT as a terminal delivers it: a suite started in the background of a non-interactive shell
    # hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt
    run = _ens(*args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    # interrupt once the first file is written and the others are not: waiting for a *.tmp instead
    # raced with the manifest's own temporary file, written when every file was done (a CI run
    # signalled a finished job that way and got exit 0)
    n_files = len(datasets("ci", "kolmogorov"))
    while not list(tmp_path.rglob("*.h5")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.02)
    written = len(list(tmp_path.rglob("*.h5")))
    assert run.poll() is None and written < n_files, f"the job finished before it could be interrupted ({written} files)"
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130 and err.startswith("interrupted: ") and "Traceback" not in err, err[-2000:]
    assert not list(tmp_path.rglob("*.tmp"))
    rerun = _ens(*args)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    assert all(file_status(s, tmp_path) == "ok" for s in datasets("ci", "kolmogorov"))


def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_the_command(monkeypatch, capsys):
    # a CI run pressed Ctrl-C while tqdm's __del__ ran: Python printed "Exception ignored" and the
    # command finished with exit 0; the interrupt must be delivered again and stop it
    import gc

    from ens import cli

    class RaisesInDel:
        def __del__(self):
            raise KeyboardInterrupt

    def dispatch(args):
        RaisesInDel()  # freed at once: its KeyboardInterrupt goes to sys.unraisablehook
        gc.collect()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return 0

    # a suite started in the background of a non-interactive shell has SIGINT ignored: restore Python's
    hook = sys.unraisablehook
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr(cli, "_dispatch", dispatch)
        assert cli.main(["data", "info"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err.startswith("interrupted: ")
    assert sys.unraisablehook is hook  # the command's hook is gone once it returns


def test_a_retrained_checkpoint_replaces_its_manifest_entry(tmp_path):
    # notebook 02 retrains its live models over the files of its previous run (resume=False)
    from ens.models.checkpoint import record_checkpoint
    from ens.train import TrainConfig, load_trained, train
    cfg = TrainConfig.for_profile("ci", "poisson", "surrogate", epochs=1)
    train(cfg, out_dir=tmp_path, resume=False, progress=False)
    path = tmp_path / "ci" / "poisson_surrogate.pt"
    first = json.loads((tmp_path / "ci" / "manifest.json").read_text())["files"]["poisson_surrogate.pt"]
    train(TrainConfig.for_profile("ci", "poisson", "surrogate", epochs=2), out_dir=tmp_path, resume=False,
          progress=False)
    second = json.loads((tmp_path / "ci" / "manifest.json").read_text())["files"]["poisson_surrogate.pt"]
    assert second["sha256"] != first["sha256"]
    assert len(load_trained("ci", "poisson", "surrogate", root=tmp_path).history) == 2
    record_checkpoint(path)  # recording again is idempotent
    assert json.loads((tmp_path / "ci" / "manifest.json").read_text())["files"]["poisson_surrogate.pt"] == second
