"""Command line: ``ens data generate|verify|info``, ``ens train|study|evaluate|generalize`` (also
``python -m ens``).

Examples::

    ens data generate --profile ci                       # every dataset of the ci profile
    ens data generate --profile default --family darcy   # one family
    ens data generate --profile ci --repair              # also regenerate corrupt files
    ens data generate --profile paper --shard 0/4        # shard 0 of 4 (one per machine, one data root)
    ens data verify --profile ci                         # checksums + residual of every file
    ens data info                                        # what exists, per profile
    ens train --profile ci --family helmholtz            # ENS and the same-budget surrogate
    ens train --profile default --all                    # every family (resumes interrupted runs)
    ens train --profile ci --family poisson --kind ens --unroll truncated --out /tmp/ck
    ens study --profile default --family helmholtz       # the recipe study (one ENS per variant)
    ens evaluate --profile ci --family helmholtz         # every method on the test settings
    ens generalize --profile default --study superres    # generalisation studies (+ alpha/T sensitivity)

The data root is ``--root``, else ``$ENS_DATA_DIR``, else ``data/`` at the repository root;
checkpoints go to ``--out``, else ``$ENS_CHECKPOINT_DIR``, else ``data/checkpoints``, under
``<profile>/<family>_<kind>.pt``. Missing training data are generated first.
Exit status: 0 on success, 1 when ``verify`` finds a bad or missing file or ``generate``
refused to overwrite a corrupt one, 2 for invalid arguments (argparse lists the valid choices).
An expected failure -- a corrupt, foreign or missing file, a full disk, a diverged run -- ends
with one line ``error: ...`` saying what was expected, and exit status 1; Ctrl-C ends with
``interrupted: ...`` and 130 (finished files and checkpoints are kept, partial runs resume).
``--debug`` (or ``ENS_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import errno
import os
import sys
import threading
import time
from pathlib import Path

from .experiments import PROFILES, SPLITS, STUDIES, datasets
from .paths import data_root, results_dir
from .pdes import FAMILIES
from .workers import default_workers, tune_allocator

__all__ = ["main", "run", "build_parser"]

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ens", description="Error-Conditioned Neural Solvers companion")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=bool(os.environ.get("ENS_DEBUG")),
                        help="show the traceback of a failure instead of one line (also: ENS_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = commands.add_parser("data", help="generate, verify and list the datasets",
                               description="Datasets of every paper setting (HDF5 + manifest.json)")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")

    def add(name, help, profile_required=True, filters=True):
        p = actions.add_parser(name, parents=[common], help=help, description=help)
        p.add_argument("--profile", choices=PROFILES, required=profile_required,
                       help="run profile (sizes)" + ("" if profile_required else "; all profiles if omitted"))
        if filters:
            p.add_argument("--family", choices=list(FAMILIES), help="only this PDE family")
            p.add_argument("--split", choices=SPLITS, action="append",
                           help="only this split (repeat the option for several)")
        p.add_argument("--root", help="data root (default: $ENS_DATA_DIR or data/ at the repository root)")
        return p

    gen = add("generate", "generate missing, unrecorded or stale datasets; keep valid ones")
    gen.add_argument("--repair", action="store_true", help="also regenerate files whose checksum is wrong")
    gen.add_argument("--device", type=_device, default="cpu", help="torch device for sampling and solving (default: cpu)")
    gen.add_argument("--workers", type=_positive_int, default=None,
                     help="files generated at once, one process of one torch thread each, the longest first "
                          "(default: $ENS_WORKERS or the number of cores; the same bytes)")
    gen.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                     help="generate only shard I of N (0 <= I < N) of the selected files, large files split by "
                          "chunks; give every shard the same selection; the run that writes a file's last part "
                          "assembles it, byte-identical to one run (default: RANK/WORLD_SIZE under torchrun, else all)")
    add("verify", "recompute the checksum and the residual R(u*) of every file")
    add("info", "list the datasets of a profile and whether they exist (no checksums)",
        profile_required=False, filters=False)

    from .models import SCALINGS
    from .train import KINDS, UNROLLS
    tr = commands.add_parser("train", parents=[common], help="train ENS and/or the surrogates of a family",
                             description="Train on the profile's train split, select alpha/T on its validation split")
    tr.add_argument("--profile", choices=PROFILES, required=True, help="run profile (data sizes and budget)")
    which = tr.add_mutually_exclusive_group(required=True)
    which.add_argument("--family", choices=list(FAMILIES), help="train this PDE family")
    which.add_argument("--all", action="store_true", help="train every family")
    tr.add_argument("--kind", choices=list(KINDS) + ["all"], default="all",
                    help="which model: ENS, the surrogate with ENS's epochs, the surrogate with ENS's training "
                         "time (round(epochs x the measured cost ratio) epochs) (default: all three)")
    tr.add_argument("--device", type=_device, default="cpu", help="torch device (default: cpu)")
    tr.add_argument("--out", help="checkpoint root (default: $ENS_CHECKPOINT_DIR or data/checkpoints)")
    tr.add_argument("--root", help="data root (default: $ENS_DATA_DIR or data/)")
    tr.add_argument("--no-resume", action="store_true", help="start over even if a finished or partial run exists")
    tr.add_argument("--epochs", type=_positive_int, help="override the profile's number of epochs (for "
                    "surrogate_matched: ENS's epochs, converted by the cost ratio)")
    tr.add_argument("--unroll", choices=UNROLLS, help="override the unroll variant (default: full)")
    tr.add_argument("--scaling", choices=SCALINGS, help="override the residual scaling (default: constant)")
    tr.add_argument("--seed", type=_seed, help="override the seed, 1 to 2**63 - 1 (default: 33)")
    tr.add_argument("--compile", action="store_true", help="run the training loss through torch.compile (GPUs, long runs)")
    tr.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bfloat16 autocast of the network passes in training (default: the profile's; paper: on)")

    ev = commands.add_parser("evaluate", parents=[common], help="every method on the test settings of a profile (tidy CSV tables)",
                             description="Run the reference solver, surrogate, ENS, GD, Gauss-Newton, Newton and "
                                         "test-time optimisation on each family's in-distribution and ill-conditioned "
                                         "test sets; write OUT/trajectories/*.csv and OUT/summary.csv (resumable)")
    ev.add_argument("--profile", choices=PROFILES, required=True, help="run profile (data, checkpoints, budgets)")
    ev.add_argument("--family", choices=list(FAMILIES), action="append", help="only this family (repeatable)")
    ev.add_argument("--out", default=None, help="output folder (default: results/<profile>)")
    _add_run_arguments(ev)

    ge = commands.add_parser("generalize", parents=[common], help="zero-shot shift, cross-equation and super-resolution studies",
                             description="Run every method of `ens evaluate` plus ENS with the residual stop rule on "
                                         "each study's test sets, then the alpha/T sensitivity sweep on the zero-shot "
                                         "and cross-equation sets; write OUT/<study>/ and OUT/sensitivity/ (resumable)")
    ge.add_argument("--profile", choices=PROFILES, required=True, help="run profile (data, checkpoints, budgets)")
    ge.add_argument("--study", choices=list(STUDIES), action="append", help="only this study (repeatable)")
    ge.add_argument("--family", choices=list(FAMILIES), action="append", help="only this family (repeatable)")
    ge.add_argument("--no-sensitivity", action="store_true", help="skip the alpha/T sensitivity sweep")
    ge.add_argument("--out", default=None, help="output folder (default: results/04_<profile>, notebook 04's)")
    _add_run_arguments(ge)

    st = commands.add_parser("study", parents=[common], help="the recipe study: one ENS per recipe variant, validation errors",
                             description="Train one ENS per variant of ens.train.RECIPE_VARIANTS (same data, seed, "
                                         "budget) and write the validation table to OUT/recipe_<profile>_<family>.csv")
    st.add_argument("--profile", choices=PROFILES, default="default", help="data profile (default: default)")
    st.add_argument("--family", choices=list(FAMILIES), default="helmholtz", help="PDE family (default: helmholtz)")
    st.add_argument("--n-train", type=_positive_int, default=256, help="training samples per run (default: 256)")
    st.add_argument("--epochs", type=_positive_int, default=3, help="epochs per run (default: 3)")
    st.add_argument("--out", default=None, help="output folder (default: data/studies of the checkout)")
    st.add_argument("--work", default=None, help="folder for the runs' checkpoints (default: OUT/runs)")
    st.add_argument("--root", help="data root (default: $ENS_DATA_DIR or data/)")
    st.add_argument("--device", type=_device, default="cpu", help="torch device (default: cpu)")
    st.add_argument("--budget", action="store_true",
                    help="the training-budget study instead (ens.evaluate.budget_study): ENS, the same-epochs and "
                         "the compute-matched surrogate at each budget, full training sets; writes "
                         "OUT/budget_<profile>_<family>.csv (--n-train and --epochs do not apply)")
    st.add_argument("--budgets", type=_positive_int, nargs="+", default=None,
                    help="with --budget: the budgets in ENS epochs (default: ens.experiments.BUDGET_STUDY)")
    pu = commands.add_parser("publish", parents=[common], help="publish a default-profile `make reproduce` run",
                             description="Copy the executed notebooks of RESULTS over notebooks/*.ipynb, their tables "
                                         "to reports/default/ and rewrite the README's result tables (ens.report)")
    pu.add_argument("--results", default=str(results_dir()), help="the run's folder (default: results/)")
    be = commands.add_parser("bench", parents=[common], help="benchmarks of the kernels against references timed in "
                             "the same run (ens.bench)",
                             description="Time each kernel and its reference side by side and print one table "
                                         "(ratio, goal, threads, device, torch); writes OUT/bench_<size>.csv")
    from .bench import BENCHMARKS, SIZES
    be.add_argument("--size", choices=sorted(SIZES), default="full", help="problem sizes (default: full)")
    be.add_argument("--only", choices=list(BENCHMARKS), nargs="+", default=None, help="run only these benchmarks")
    be.add_argument("--out", default=None, help="output folder (default: results/bench)")
    be.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def _seed(text: str) -> int:
    value = _positive_int(text)
    if value >= 2 ** 63:  # torch generators take 64-bit seeds; the data seeds are derived from it
        raise argparse.ArgumentTypeError(f"expected a seed between 1 and 2**63 - 1, got {value}")
    return value


def _device(text: str) -> str:
    import torch
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"expected an available device: CUDA is not available here "
                                         f"(torch {torch.__version__}), use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"expected a CUDA device index below {torch.cuda.device_count()}, "
                                         f"got {device.index}")
    return text


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N with integers 0 <= I < N, e.g. 0/2, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, e.g. 0/2, got {text!r}")
    return i, n


def _launcher_shard() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when started by torchrun (or another launcher that sets both) with more than one process."""
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, world) if world > 1 and 0 <= rank < world else None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _train(args) -> int:
    from . import distributed
    ctx = distributed.init_from_env(args.device)  # a group of one unless started by torchrun
    try:
        return _train_all(args, ctx)
    finally:
        distributed.close()


def _train_all(args, ctx) -> int:
    from .train import KINDS, TrainConfig, load_trained, train
    overrides = {k: getattr(args, k) for k in ("epochs", "unroll", "scaling", "seed", "amp") if getattr(args, k) is not None}
    families = list(FAMILIES) if args.all else [args.family]
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    for family in families:
        for kind in kinds:
            config = TrainConfig.for_profile(args.profile, family, kind, **overrides)
            t0 = time.perf_counter()
            path = train(config, out_dir=args.out, data_root=args.root, device=args.device,
                         resume=not args.no_resume, log=print, compile=args.compile)
            if not ctx.main:
                continue
            ck = load_trained(args.profile, family, kind, args.out)
            inf = ck.inference
            extra = f", alpha={inf['alpha']:g}, T={inf['steps']}" if ck.kind == "ens" else ""
            print(f"{family} {kind}: validation rel L2 {inf['val_rel_l2']:.4g}{extra}; "
                  f"{time.perf_counter() - t0:.0f} s in this call -> {path}")
    return 0


def _selected(args) -> list:
    """The datasets of ``--profile``, ``--family`` and every ``--split`` given (all if none)."""
    return [s for s in datasets(args.profile, args.family) if not args.split or s.split in args.split]


def _generate(args) -> int:
    from .data import generate
    t0 = time.perf_counter()
    launched = args.shard is None and _launcher_shard() is not None
    shard = args.shard or _launcher_shard()
    # torchrun's processes on one node share its cores
    workers = (args.workers or max(1, default_workers() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
               if launched else _workers(args))
    actions = generate(_selected(args), root=args.root, repair=args.repair, device=args.device,
                       workers=workers, shard=shard, log=print)
    refused = [spec.path for spec, action in actions.items() if action == "refused"]
    waiting = sum(action == "partial" for action in actions.values())
    if waiting:
        print(f"{waiting} file(s) wait for other shards' parts; the shard that writes a file's last part assembles it")
    print(f"done in {time.perf_counter() - t0:.1f} s: " + ", ".join(
        f"{sum(a == act for a in actions.values())} {act}" for act in sorted(set(actions.values()))))
    if refused:
        print(f"error: {len(refused)} corrupt file(s) left untouched; rerun with --repair: {refused}",
              file=sys.stderr)
        return 1
    return 0


def _verify(args) -> int:
    from .data import verify
    reports = verify(_selected(args), root=args.root)
    print(f"{'status':<11} {'max ||R||/scale':>15} {'tolerance':>10} {'worst R/tol':>11}  file")
    for r in reports:
        print(f"{r.status:<11} {r.max_residual:>15.2e} {r.tolerance:>10.2e} {r.worst_ratio:>11.2f}  {r.path}"
              + (f"  ({r.message})" if r.message else ""))
    bad = [r for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)}/{len(reports)} files ok")
    return 1 if bad else 0


def _info(args) -> int:
    from .data import file_status, read_manifest
    root = data_root(args.root)
    print(f"data root: {root}")
    for profile in [args.profile] if args.profile else PROFILES:
        manifest = read_manifest(root / profile)
        specs = datasets(profile)
        statuses = [file_status(s, args.root, manifest, check_hash=False) for s in specs]
        size = sum((root / profile / s.path).stat().st_size for s, st in zip(specs, statuses) if st != "missing")
        print(f"\n{profile}: {sum(st == 'ok' for st in statuses)}/{len(specs)} present, {size / 2 ** 20:.1f} MiB "
              f"(sizes checked against the manifest; `ens data verify` checks sha256 and residuals)")
        for spec, st in zip(specs, statuses):
            print(f"  {'present' if st == 'ok' else st:<10} {spec.path:<42} N={spec.n_samples:<6} "
                  f"S={spec.resolution:<4} {dict(spec.params)}")
    return 0


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Where trained models are evaluated: data and checkpoint roots, device."""
    p.add_argument("--root", help="data root (default: $ENS_DATA_DIR or data/)")
    p.add_argument("--checkpoints", help="checkpoint root (default: $ENS_CHECKPOINT_DIR or data/checkpoints)")
    p.add_argument("--device", type=_device, default="cpu", help="torch device (default: cpu)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="processes for the method runs, one torch thread each (default: $ENS_WORKERS or the CPU count)")
    p.add_argument("--cache", help="cache of finished method runs, shared with the notebooks "
                                   "(default: results/cache; entries are keyed by code, checkpoints, data and budget)")


def _cache(args) -> Path:
    return Path(args.cache) if args.cache else results_dir() / "cache"


def _workers(args) -> int:
    return args.workers or default_workers()


def _bench(args) -> int:
    from .bench import run_benchmarks, write_table
    table = run_benchmarks(args.size, args.only, args.device, progress=lambda name: print(f"== {name}", flush=True))
    shown = table.drop(columns=["ours_median_ms"])
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    path = write_table(table, Path(args.out) if args.out else results_dir() / "bench", args.size)
    goals = ~table.goal.str.startswith("report")
    print(f"{int(table.meets[goals].sum())} of {int(goals.sum())} rows meet their goal, {int((~goals).sum())} rows "
          f"report a figure; wrote {path}")
    return 0


def _publish(args) -> int:
    from .report import publish
    try:
        publish(args.results)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate_profile
    out = Path(args.out) if args.out else results_dir() / args.profile
    _, summary = evaluate_profile(args.profile, out, args.family, checkpoint_root=args.checkpoints,
                                  data_root=args.root, device=args.device, cache_dir=_cache(args), workers=_workers(args), log=print)
    cols = ["family", "setting", "method", "rel_l2", "rel_residual", "ms_per_sample", "ens_advantage", "status"]
    print(summary[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"wrote {out / 'summary.csv'} and {out / 'trajectories'}/")
    return 0


def _generalize(args) -> int:
    import pandas as pd

    from .generalization import run_studies, sensitivity_settings, sensitivity_study, study_settings
    out = Path(args.out) if args.out else results_dir() / f"04_{args.profile}"
    kw = {"checkpoint_root": args.checkpoints, "data_root": args.root, "device": args.device}
    studies = [s for s in (args.study or STUDIES) if study_settings(s, args.family, args.profile)]
    results = run_studies(studies, args.profile, out, args.family, cache_dir=_cache(args), workers=_workers(args),
                          log=print, **kw)
    summary = pd.concat([summ for _, summ in results.values()], ignore_index=True)
    cols = ["study", "family", "test_family", "setting", "method", "rel_l2", "ms_per_sample", "ens_advantage"]
    print(summary[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    sens = [fs for s in ("zero_shot", "cross_equation") if s in (args.study or STUDIES)
            for fs in study_settings(s, args.family, args.profile)]
    if sens and not args.no_sensitivity:
        _, choices = sensitivity_study(args.profile, sensitivity_settings(sens), out, cache_dir=_cache(args),
                                       workers=_workers(args), **kw)
        cols = ["family", "test_family", "setting", "validation_rel_l2", "residual_rule_rel_l2", "oracle_rel_l2"]
        print(choices[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"wrote {out}/")
    return 0


def _study(args) -> int:
    from .train import budget_study_path, recipe_study, recipe_study_path
    if args.budgets and not args.budget:
        raise ValueError("--budgets needs --budget (the training-budget study)")
    path = recipe_study_path(args.profile, args.family, args.out)
    out = path.parent
    work = Path(args.work) if args.work else out / "runs"
    if args.budget:
        from .evaluate import budget_study
        path = budget_study_path(args.profile, args.family, out)
        df = budget_study(args.profile, work / "budget", args.family, budgets=args.budgets, data_root=args.root,
                          device=args.device, log=print)
    else:
        df = recipe_study(args.profile, args.family, work, data_root=args.root, device=args.device, log=print,
                          n_train=args.n_train, epochs=args.epochs)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    print(f"wrote {path}")
    return 0


def _one_line(err: BaseException) -> str:
    """An expected failure's message on one line (an OSError's with its file)."""
    if isinstance(err, OSError) and err.errno is not None and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
        if err.errno == errno.ENOSPC and "no space left for" not in text:
            text += " (no space left on the device: free some, or choose another --root / --out)"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


@contextlib.contextmanager
def _redelivered_interrupts():
    """Deliver again a Ctrl-C that Python would drop. A ``KeyboardInterrupt`` raised inside a finalizer
    (tqdm's ``__del__``, say) is printed as "Exception ignored" and the command runs on to exit 0; the
    hook has a timer send it to the main thread once more, a moment later (raised in the hook itself,
    it would be dropped again), where it stops the command like any other Ctrl-C. Should the command
    end first, ``main`` still reports the interrupt (yields the list of dropped interrupts)."""
    default = sys.unraisablehook
    dropped: list[BaseException] = []

    def hook(unraisable):
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            dropped.append(unraisable.exc_value)
            timer = threading.Timer(0.05, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
        else:
            default(unraisable)

    sys.unraisablehook = hook
    try:
        yield dropped
    finally:
        sys.unraisablehook = default


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status. Expected failures (see the module docstring)
    print one line to stderr and return 1 (130 for Ctrl-C), unless ``--debug``."""
    from .data import CorruptDataError
    from .solvers import DivergenceError
    args = build_parser().parse_args(argv)
    tune_allocator()
    try:
        with _redelivered_interrupts() as dropped:
            status = _dispatch(args)
        if dropped:
            raise KeyboardInterrupt
        return status
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted: finished files and checkpoints are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError, CorruptDataError, DivergenceError) as err:
        if args.debug:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            # an HDF5 write that failed for want of space leaves the library in a state whose clean-up
            # (when the failed file object is freed) segfaults; leave now, nothing is half-written
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1


def _dispatch(args) -> int:
    if args.command == "train":
        return _train(args)
    if args.command == "study":
        return _study(args)
    if args.command == "publish":
        return _publish(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "generalize":
        return _generalize(args)
    return {"generate": _generate, "verify": _verify, "info": _info}[args.action](args)


def run() -> None:
    """Entry point of the ``ens`` script and ``python -m ens``: ``main()`` as the exit status; output
    piped into a reader that closes early (``ens data info | head``) is not an error."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    raise SystemExit(status)
