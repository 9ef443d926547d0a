"""Training: the unrolled loss and its gradients, an end-to-end ci run, resume after an
interruption (bit-identical to an uninterrupted run on the CPU), determinism, config checks.

The runs read the ci Helmholtz train / val sets (32 + 16 samples at S = 32) of the session's
``ci_root`` (``conftest.py``), on one torch thread; every training run uses the ci profile's tiny FNO-CNN for 2 epochs of 4
batches (about a second each).
"""

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import torch_threads

from ens.experiments import COMPUTE_RATIO, TRAINING
from ens.models import load_checkpoint
from ens.pdes import get_pde
from ens.train import (
    KINDS,
    RECIPE_VARIANTS,
    UNROLLS,
    TrainConfig,
    _build,
    matched_epochs,
    measure_cost_ratio,
    recipe_study,
    train,
    unrolled_loss,
)

FAMILY = "helmholtz"
N_BATCHES = 4  # 32 ci training samples / batch size 8


def config(**overrides):
    # alpha = 0.5 so that the inference grid is alphas * 0.5; max_steps 10 keeps selection fast
    return TrainConfig.for_profile("ci", FAMILY, **{"epochs": 2, "alpha": 0.5, "max_steps": 10, **overrides})


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with torch_threads(1):  # bit-identical comparisons need the same reduction order in every run
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ci_root):
    """One uninterrupted ENS run: (config, out_dir, final checkpoint path)."""
    cfg = config()
    out = tmp_path_factory.mktemp("ref")
    path = train(cfg, out_dir=out, data_root=ci_root, progress=False)
    return cfg, out, path


def small_batch(n=4, seed=0):
    pde = get_pde(FAMILY)
    c = pde.sample_inputs(n, 32, torch.Generator().manual_seed(seed), dtype=torch.float32)
    return pde, c, pde.solve(c.double()).float()


def grad_norms(net):
    return sum(float(p.grad.norm()) ** 2 for p in net.parameters() if p.grad is not None) ** 0.5


def build(kind="ens", **overrides):
    pde, c, u = small_batch()
    model, _, _ = _build(config(kind=kind, **overrides), pde, c, u)
    return model, pde, c, u


# ---- the unrolled loss --------------------------------------------------------------------------
@pytest.mark.parametrize("unroll", UNROLLS)
def test_both_unroll_variants_train_predictor_and_corrector(unroll):
    model, pde, c, u = build(unroll=unroll)
    loss, _ = unrolled_loss(model, pde, c, u, steps=3, alpha=0.5, unroll=unroll)
    loss.backward()
    # the reference code's defect: one variant left a network without gradient
    assert grad_norms(model.predictor) > 0
    assert grad_norms(model.corrector) > 0
    # every parameter of both networks takes part
    for name, p in model.named_parameters():
        assert p.grad is not None, name


def test_unroll_variants_differ_only_beyond_the_first_step():
    grads = {}
    for steps in (1, 3):
        for unroll in UNROLLS:
            model, pde, c, u = build()
            unrolled_loss(model, pde, c, u, steps=steps, alpha=0.5, unroll=unroll)[0].backward()
            grads[steps, unroll] = torch.cat([p.grad.flatten() for p in model.predictor.parameters()])
    # one step: u_1 = u_0 + alpha G1 in both variants, the same computation
    assert torch.equal(grads[1, "full"], grads[1, "truncated"])
    # three steps: "full" back-propagates the later iterates' losses into G0, "truncated" does not
    assert not torch.allclose(grads[3, "full"], grads[3, "truncated"])


def test_surrogate_loss_trains_its_predictor():
    model, pde, c, u = build(kind="surrogate")
    assert model.corrector is None
    loss, per_it = unrolled_loss(model, pde, c, u, steps=5, alpha=0.5)
    loss.backward()
    assert grad_norms(model.predictor) > 0 and len(per_it) == 1
    with torch.no_grad():
        want = torch.mean((model.predict(pde, c) - u) ** 2) / model.normalization.state_scale ** 2
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-6)  # float32 reductions, same order
    assert per_it[0] == pytest.approx(float(loss.detach()), rel=1e-7)


def test_corrector_input_is_built_without_gradient():
    model, pde, c, u = build()
    u0 = model.predict(pde, c)
    assert u0.requires_grad
    x = model.corrector_input(pde, c, u0, pde.residual(u0, c, check=False))
    assert not x.requires_grad and x.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("unroll", UNROLLS)
def test_ens_loss_is_the_mean_of_the_per_iterate_mses(unroll):
    model, pde, c, u = build()
    steps, alpha = 4, 0.5
    loss, per_it = unrolled_loss(model, pde, c, u, steps=steps, alpha=alpha, unroll=unroll)
    assert len(per_it) == steps + 1
    # float32 losses converted to Python floats: agreement to float32 round-off
    assert float(loss.detach()) == pytest.approx(sum(per_it[1:]) / steps, rel=1e-6)
    assert float(loss.detach()) != pytest.approx(sum(per_it) / (steps + 1), rel=1e-6)  # u_0 is not in the ENS loss
    s2 = model.normalization.state_scale ** 2
    with torch.no_grad():
        u_t = model.predict(pde, c)
        for t in range(steps + 1):
            assert per_it[t] == pytest.approx(float(torch.mean((u_t - u) ** 2) / s2), rel=1e-6)
            u_t = u_t + alpha * model.correction(pde, c, u_t, pde.residual(u_t, c))


# ---- the training job ---------------------------------------------------------------------------
def test_training_end_to_end(reference):
    cfg, out, path = reference
    assert path == out / "ci" / "helmholtz_ens.pt" and path.is_file()
    # no .last.pt, no .tmp: the checkpoint and the manifest that records it (and the lock that guards that)
    assert sorted(p.name for p in path.parent.iterdir()) == [".manifest.lock", "helmholtz_ens.pt", "manifest.json"]
    ck = load_checkpoint(path, family=FAMILY, in_channels=1, out_channels=1)
    assert ck.kind == "ens" and ck.resolution == 32 and ck.model.is_ens
    assert ck.config == cfg.to_dict() and ck.pde() == get_pde(FAMILY, k=1.0)
    assert [h["epoch"] for h in ck.history] == [1, 2]
    for h in ck.history:
        assert math.isfinite(h["val_rel_l2"]) and math.isfinite(h["train_loss"])
        assert len(h["train_mse_per_iterate"]) == cfg.steps + 1
        assert len(h["val_rel_l2_per_iterate"]) == cfg.steps + 1
        assert h["val_rel_l2"] == h["val_rel_l2_per_iterate"][-1]
    inf = ck.inference
    assert inf["alpha"] in [a * cfg.alpha for a in cfg.alphas]
    assert 1 <= inf["steps"] <= cfg.max_steps and inf["max_steps"] == cfg.max_steps
    assert inf["n_val"] == min(cfg.n_select, 16)
    # the choice is the minimum of its own table at the reported steps
    rows = [r for r in inf["table"] if r["alpha"] == inf["alpha"]]
    assert min(r["val_rel_l2"] for r in rows if r["step"] >= 1) >= inf["val_rel_l2"] - 1e-12
    assert ck.raw["training"]["optimizer_steps"] == 2 * N_BATCHES
    # the kept weights are the best epoch's
    best = min(range(2), key=lambda e: ck.history[e]["val_rel_l2"])
    assert ck.history[best]["val_rel_l2"] == min(h["val_rel_l2"] for h in ck.history)


def test_existing_final_checkpoint_is_kept(reference, ci_root):
    cfg, out, path = reference
    before = path.read_bytes()
    assert train(cfg, out_dir=out, data_root=ci_root, progress=False) == path
    assert path.read_bytes() == before


def test_surrogate_training_end_to_end(tmp_path, ci_root):
    cfg = config(kind="surrogate", epochs=1)
    ck = load_checkpoint(train(cfg, out_dir=tmp_path, data_root=ci_root, progress=False))
    assert ck.kind == "surrogate" and ck.model.corrector is None and ck.model.scaling is None
    assert ck.inference["alpha"] is None and ck.inference["steps"] == 0 and len(ck.history) == 1
    assert len(ck.history[0]["train_mse_per_iterate"]) == 1


def _assert_same_run(path_a, path_b):
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    for part in ("predictor", "corrector"):
        sa, sb = a.raw[part]["state_dict"], b.raw[part]["state_dict"]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{part}.{k}"
    assert [h["val_rel_l2"] for h in a.history] == [h["val_rel_l2"] for h in b.history]
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["train_mse_per_iterate"] for h in a.history] == [h["train_mse_per_iterate"] for h in b.history]
    for key in ("alpha", "steps", "val_rel_l2", "table", "stop_rule_val_rel_l2"):
        assert a.inference[key] == b.inference[key], key


def test_same_seed_gives_identical_weights(reference, tmp_path, ci_root):
    cfg, _, path = reference
    _assert_same_run(path, train(cfg, out_dir=tmp_path, data_root=ci_root, progress=False))


def test_another_seed_gives_other_weights(reference, tmp_path, ci_root):
    cfg, _, path = reference
    other = load_checkpoint(train(config(seed=34), out_dir=tmp_path, data_root=ci_root, progress=False))
    ref = load_checkpoint(path)
    k = next(iter(ref.raw["predictor"]["state_dict"]))
    assert not torch.equal(ref.raw["predictor"]["state_dict"][k], other.raw["predictor"]["state_dict"][k])


@pytest.mark.parametrize("interruptions", [(6,), (N_BATCHES,), (3, 2)],
                         ids=["mid-epoch-2", "end-of-epoch-1", "twice"])
def test_resume_after_interruption_is_bit_identical(reference, tmp_path, ci_root, interruptions):
    cfg, _, ref_path = reference
    last = tmp_path / "ci" / "helmholtz_ens.last.pt"
    final = tmp_path / "ci" / "helmholtz_ens.pt"
    done = 0
    for k in interruptions:
        assert train(cfg, out_dir=tmp_path, data_root=ci_root, progress=False, stop_after_batches=k) == last
        done += k
        assert last.is_file() and not final.exists()
        raw = torch.load(last, weights_only=True)
        state = raw["resume"]["state"]
        # an interruption after an epoch's last batch comes before that epoch's validation
        epoch = (done - 1) // N_BATCHES
        assert (state["epoch"], state["batch"]) == (epoch, done - epoch * N_BATCHES)
        assert len(state["history"]) == state["epoch"]
    log = []
    assert train(cfg, out_dir=tmp_path, data_root=ci_root, progress=False, log=log.append) == final
    assert any("resuming" in m for m in log)
    assert not last.exists()
    _assert_same_run(ref_path, final)


def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(reference, tmp_path, ci_root):
    """A real SIGKILL of a training process (not a cooperative stop), then a resumed run."""
    import signal
    import subprocess
    import sys
    import time
    _, _, ref_path = reference
    cfg = config(save_every_s=1e-6)  # save after every batch, so the kill lands between saves
    last, final = tmp_path / "ci" / "helmholtz_ens.last.pt", tmp_path / "ci" / "helmholtz_ens.pt"
    script = ("import torch; torch.set_num_threads(1)\n"
              "from ens.train import TrainConfig, train\n"
              f"cfg = TrainConfig(**{cfg.to_dict()!r})\n"
              f"train(cfg, out_dir={str(tmp_path)!r}, data_root={str(ci_root)!r}, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline, state = time.monotonic() + 120, None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.exists():
                try:
                    state = torch.load(last, weights_only=True)["resume"]["state"]
                except Exception:  # noqa: BLE001 -- replaced while reading; try again
                    state = None
                if state is not None and state["epoch"] == 1 and state["batch"] >= 1:
                    break
            time.sleep(0.01)
        assert proc.poll() is None, "the training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert state["epoch"] == 1 and 1 <= state["batch"] <= N_BATCHES and not final.exists()
    log = []
    assert train(cfg, out_dir=tmp_path, data_root=ci_root, progress=False, log=log.append) == final
    assert any("resuming at epoch 2" in m for m in log)
    _assert_same_run(ref_path, final)


def test_resume_file_of_another_config_is_refused(tmp_path, ci_root):
    cfg = config()
    last = train(cfg, out_dir=tmp_path, data_root=ci_root, progress=False, stop_after_batches=1)
    with pytest.raises(ValueError, match="another configuration.*--no-resume"):
        train(config(lr=2e-3), out_dir=tmp_path, data_root=ci_root, progress=False)
    assert last.is_file()  # the refused resume file is left alone
    # the resume file is not a finished checkpoint, but it is a valid ENS file
    assert load_checkpoint(last).inference == {}


# ---- configuration checks -----------------------------------------------------------------------
@pytest.mark.parametrize("field, value, choices", [
    ("family", "burgers", "poisson"),
    ("kind", "pinn", "surrogate"),
    ("backbone", "resnet", "unet"),
    ("unroll", "partial", "truncated"),
    ("scaling", "rms", "h2"),
    ("schedule", "step", "cosine"),
])
def test_unknown_choices_are_listed(field, value, choices):
    with pytest.raises(ValueError, match=f"unknown {field} '{value}'; expected one of .*'{choices}'"):
        TrainConfig(**{"profile": "ci", "family": "poisson", field: value})


@pytest.mark.parametrize("overrides, match", [
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"steps": True}, "steps"),
    ({"lr": -1e-3}, "lr"),
    ({"alpha": math.nan}, "alpha"),
    ({"alphas": ()}, "alphas"),
    ({"alphas": (0.5, -1.0)}, "alphas"),
    ({"n_train": 0}, "n_train"),
    ({"seed": -1}, "seed"),
])
def test_invalid_values_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.for_profile("ci", "poisson", **overrides)


def test_for_profile_checks_profile_and_overrides():
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['lerning_rate'\].*'lr'"):
        TrainConfig.for_profile("ci", "poisson", lerning_rate=1e-3)
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        TrainConfig.for_profile("huge", "poisson")
    with pytest.raises(ValueError, match="unknown kind"):
        TrainConfig.for_profile("ci", "poisson", kind="both")
    cfg = TrainConfig.for_profile("ci", "poisson", "surrogate", epochs=3)
    assert cfg.kind == "surrogate" and cfg.epochs == 3 and cfg.name == "poisson_surrogate"
    assert dict(cfg.backbone_kwargs) == TRAINING["ci"]["all"]["backbone_kwargs"]
    assert cfg.batch_size == TRAINING["ci"]["all"]["batch_size"]
    assert set(KINDS) == {"ens", "surrogate", "surrogate_matched"}
    # the stored dict round-trips to an equal configuration
    assert TrainConfig(**cfg.to_dict()) == cfg


def test_compute_matched_surrogate_gets_ens_epochs_times_the_cost_ratio():
    for profile in ("ci", "default", "paper"):
        for family, ratio in COMPUTE_RATIO[profile].items():
            ens = TrainConfig.for_profile(profile, family, "ens")
            cfg = TrainConfig.for_profile(profile, family, "surrogate_matched")
            assert cfg.epochs == round(ens.epochs * ratio) == matched_epochs(profile, family, ens.epochs)
            # everything else is the surrogate's
            sur = TrainConfig.for_profile(profile, family, "surrogate")
            assert {**cfg.to_dict(), "epochs": sur.epochs, "kind": "surrogate"} == sur.to_dict()
            assert 1 < ratio < 20  # a measured ratio, not a placeholder of 1
    # an epochs override is ENS's epochs, converted
    assert TrainConfig.for_profile("ci", "poisson", "surrogate_matched", epochs=2).epochs == \
        round(2 * COMPUTE_RATIO["ci"]["poisson"])
    assert matched_epochs("ci", "poisson", 1) >= 1
    with pytest.raises(ValueError, match="epochs"):
        matched_epochs("ci", "poisson", 0)
    with pytest.raises(ValueError, match="unknown profile"):
        matched_epochs("huge", "poisson", 8)
    with pytest.raises(ValueError, match="no measured compute ratio of 'unmeasured'.*measure_cost_ratio"):
        matched_epochs("ci", "unmeasured", 8)


def test_measure_cost_ratio_times_both_models_on_the_same_batches(ci_root):
    with torch_threads(1):
        r = measure_cost_ratio("ci", "poisson", batches=2, rounds=1, data_root=ci_root)
    assert {r["profile"], r["family"], r["device"], r["threads"]} == {"ci", "poisson", "cpu", 1}
    assert r["batch_size"] == TRAINING["ci"]["all"]["batch_size"]
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("ens_s_per_batch", "surrogate_s_per_batch"))
    assert r["ratio"] == r["ens_s_per_batch"] / r["surrogate_s_per_batch"]
    with pytest.raises(ValueError, match="batches"):
        measure_cost_ratio("ci", "poisson", batches=0, data_root=ci_root)


# ---- a validation that always diverges gets a clear error, not a TypeError -----------------------
def test_training_whose_validation_always_diverges_fails_clearly(tmp_path, ci_root):
    # alpha = 20: the validation loop's residual grows > 1000x within the 5 training steps (val rel L2 = inf)
    cfg = config(epochs=1, alpha=20.0, grad_clip=None, max_steps=2)
    try:
        path = train(cfg, out_dir=tmp_path, data_root=ci_root, progress=False)
    except (RuntimeError, FloatingPointError, ValueError) as err:  # a clear error is one acceptable fix ...
        assert "alpha" in str(err)
    else:  # ... keeping the last weights is the other
        assert load_checkpoint(path).history[0]["val_rel_l2"] == math.inf


# ---- the recipe study ------------------------------------------------------------------------------
def test_recipe_study_tabulates_every_variant_with_the_shipped_columns(tmp_path, ci_root):
    names = ["h2, full unroll", "h2 + low-pass 1/2, full unroll"]
    variants = {name: RECIPE_VARIANTS[name] for name in names}
    df = recipe_study("ci", FAMILY, tmp_path, variants=variants, data_root=ci_root, epochs=1, max_steps=5)
    # notebook 02 reads the shipped table, so the study writes exactly its columns
    shipped = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "studies" / "recipe_default_helmholtz.csv")
    assert list(df.columns) == list(shipped.columns)
    # per variant: 3 alphas x the report steps {0, 1, 5} up to max_steps = 5
    assert list(df.variant.unique()) == names and len(df) == len(names) * 3 * 3
    assert sorted(set(df.step)) == [0, 1, 5] and len(set(df.alpha)) == 3
    for name in names:
        rows = df[df.variant == name]
        for col in ("chosen_alpha", "chosen_steps", "best_val_rel_l2", "stop_rule_val_rel_l2", "train_time_s"):
            assert rows[col].nunique() == 1, col
        assert rows.train_time_s.iloc[0] > 0 and rows.chosen_alpha.iloc[0] in set(rows.alpha)
        assert rows[rows.step >= 1].val_rel_l2.min() >= rows.best_val_rel_l2.iloc[0] - 1e-12
    # one kept checkpoint per variant, trained with that variant's overrides
    lowpass = {load_checkpoint(p).config["lowpass"] for p in tmp_path.glob(f"*/ci/{FAMILY}_ens.pt")}
    assert lowpass == {None, 0.5}
    with pytest.raises(ValueError, match="at least one recipe variant"):
        recipe_study("ci", FAMILY, tmp_path, variants={})


# ---- evaluation tables of trained checkpoints (ens.evaluate) --------------------------------------
def test_iterate_errors_and_summary_follow_the_stored_choice(tmp_path, ci_root, reference):
    from ens.evaluate import ens_vs_surrogate, history_frame, iterate_errors, iterate_loss_frame
    cfg, out, path = reference
    ens_ck = load_checkpoint(path)
    sur_path = train(config(kind="surrogate"), out_dir=tmp_path, data_root=ci_root, progress=False)
    sur_ck = load_checkpoint(sur_path)
    frames = pd.concat([iterate_errors(ck, data_root=ci_root) for ck in (ens_ck, sur_ck)])
    ens_rows, sur_rows = frames[frames.method == "ens"], frames[frames.method == "surrogate"]
    assert list(ens_rows.iteration) == list(range(ens_ck.inference["steps"] + 1)) and len(sur_rows) == 1
    # the last ENS row is the validation error the selection stored (same samples: n_select = 16 = the split)
    assert ens_rows.rel_l2.iloc[-1] == pytest.approx(ens_ck.inference["val_rel_l2"], rel=1e-6)
    # the surrogate keeps its best epoch's weights: its error is that epoch's validation error
    assert sur_rows.rel_l2.iloc[0] == pytest.approx(min(h["val_rel_l2"] for h in sur_ck.history), rel=1e-6)
    summary = ens_vs_surrogate(frames)
    row = summary.iloc[0]
    assert row.surrogate_over_ens == pytest.approx(row.surrogate_rel_l2 / row.ens_rel_l2)
    with pytest.raises(ValueError, match="both a surrogate and an ENS"):
        ens_vs_surrogate(ens_rows)
    assert list(history_frame(ens_ck).epoch) == [1, 2]
    losses = iterate_loss_frame(ens_ck)
    assert sorted(set(losses.iterate)) == list(range(cfg.steps + 1))


def test_recipe_summary_of_the_shipped_study():
    import pandas as pd

    from ens.train import recipe_study_path, recipe_summary
    study = pd.read_csv(recipe_study_path("default", "helmholtz"))
    best = recipe_summary(study)
    assert list(best.index) == list(dict.fromkeys(study.variant))
    first = study[study.variant == best.index[0]]
    assert best.iloc[0].best_val_rel_l2 == first.best_val_rel_l2.iloc[0]
    assert best.iloc[0].val_rel_l2_T5_alpha1 == first[(first.step == 5) & (first.alpha == 1.0)].val_rel_l2.iloc[0]


# ---- the GPU options: bfloat16 autocast of the networks, torch.compile, the time estimate -------
def test_amp_runs_the_networks_in_bfloat16_and_keeps_residual_and_loss_float32(monkeypatch):
    model, pde, c, u = build()
    seen = []
    residual = type(pde).residual

    def spy(self, u_, c_, **kw):
        seen.append((u_.dtype, torch.is_autocast_enabled("cpu")))
        return residual(self, u_, c_, **kw)

    monkeypatch.setattr(type(pde), "residual", spy)
    loss32, per32 = unrolled_loss(model, pde, c, u, steps=3, alpha=0.5)
    loss16, per16 = unrolled_loss(model, pde, c, u, steps=3, alpha=0.5, amp=True)
    assert seen and all(dtype == torch.float32 and not autocast for dtype, autocast in seen)
    assert loss16.dtype == torch.float32
    # bfloat16 has 8 significand bits (relative rounding 2^-9 = 2e-3 per operation): the losses
    # differ, measured by 2e-4 -- 3e-3 relative on this batch; 3e-2 bounds it with a margin of 10
    assert float(loss16) != float(loss32)
    assert float(loss16) == pytest.approx(float(loss32), rel=3e-2)
    assert TrainConfig.for_profile("paper", FAMILY).amp and not TrainConfig.for_profile("default", FAMILY).amp
    # a float32 run is described as before the option existed, so the shipped checkpoints still match
    assert "amp" not in config().to_dict() and config(amp=True).to_dict()["amp"] is True


def test_compiled_training_makes_the_eager_updates_and_logs_an_estimate(tmp_path, ci_root):
    cfg = config(epochs=2)
    logs = []
    eager = train(cfg, out_dir=tmp_path / "eager", data_root=ci_root, progress=False, log=logs.append)
    compiled = train(cfg, out_dir=tmp_path / "compiled", data_root=ci_root, progress=False, compile=True)
    a, b = load_checkpoint(eager), load_checkpoint(compiled)
    # the same 8 updates up to the reassociation of fused kernels (measured: 5e-6 of a tensor's
    # largest entry on Poisson; tolerance 1e-4)
    for part in ("predictor", "corrector"):
        for k, v in a.raw[part]["state_dict"].items():
            w = b.raw[part]["state_dict"][k]
            assert torch.allclose(v, w, rtol=0, atol=1e-4 * float(v.abs().max())), f"{part}.{k}"
    estimate = [line for line in logs if "s per batch of 8" in line]
    assert len(estimate) == 1 and "remaining 1 batches take about" in estimate[0]
