"""Command line: ``ens data generate|verify|info`` (also ``python -m ens``).

Examples::

    ens data generate --profile ci                       # every dataset of the ci profile
    ens data generate --profile default --family darcy   # one family
    ens data generate --profile ci --repair              # also regenerate corrupt files
    ens data verify --profile ci                         # checksums + residual of every file
    ens data info                                        # what exists, per profile

The data root is ``--root``, else ``$ENS_DATA_DIR``, else ``data/`` at the repository root.
Exit status: 0 on success, 1 when ``verify`` finds a bad or missing file or ``generate``
refused to overwrite a corrupt one, 2 for invalid arguments (argparse lists the valid choices).
"""

from __future__ import annotations

import argparse
import sys
import time

from .experiments import PROFILES, SPLITS, datasets
from .pdes import FAMILIES

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ens", description="Error-Conditioned Neural Solvers companion")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = commands.add_parser("data", help="generate, verify and list the datasets",
                               description="Datasets of every paper setting (HDF5 + manifest.json)")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")

    def add(name, help, profile_required=True, filters=True):
        p = actions.add_parser(name, help=help, description=help)
        p.add_argument("--profile", choices=PROFILES, required=profile_required,
                       help="run profile (sizes)" + ("" if profile_required else "; all profiles if omitted"))
        if filters:
            p.add_argument("--family", choices=list(FAMILIES), help="only this PDE family")
            p.add_argument("--split", choices=SPLITS, help="only this split")
        p.add_argument("--root", help="data root (default: $ENS_DATA_DIR or data/ at the repository root)")
        return p

    gen = add("generate", "generate missing, unrecorded or stale datasets; keep valid ones")
    gen.add_argument("--repair", action="store_true", help="also regenerate files whose checksum is wrong")
    gen.add_argument("--device", default="cpu", help="torch device for sampling and solving (default: cpu)")
    add("verify", "recompute the checksum and the residual R(u*) of every file")
    add("info", "list the datasets of a profile and whether they exist (no checksums)",
        profile_required=False, filters=False)
    return parser


def _generate(args) -> int:
    from .data import generate
    t0 = time.perf_counter()
    actions = generate(datasets(args.profile, args.family, args.split), root=args.root, repair=args.repair,
                       device=args.device, log=print)
    refused = [spec.path for spec, action in actions.items() if action == "refused"]
    print(f"done in {time.perf_counter() - t0:.1f} s: " + ", ".join(
        f"{sum(a == act for a in actions.values())} {act}" for act in sorted(set(actions.values()))))
    if refused:
        print(f"error: {len(refused)} corrupt file(s) left untouched; rerun with --repair: {refused}",
              file=sys.stderr)
        return 1
    return 0


def _verify(args) -> int:
    from .data import verify
    reports = verify(datasets(args.profile, args.family, args.split), root=args.root)
    print(f"{'status':<11} {'max ||R||/scale':>15} {'tolerance':>10} {'worst R/tol':>11}  file")
    for r in reports:
        print(f"{r.status:<11} {r.max_residual:>15.2e} {r.tolerance:>10.2e} {r.worst_ratio:>11.2f}  {r.path}"
              + (f"  ({r.message})" if r.message else ""))
    bad = [r for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)}/{len(reports)} files ok")
    return 1 if bad else 0


def _info(args) -> int:
    from .data import data_root, file_status, read_manifest
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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return {"generate": _generate, "verify": _verify, "info": _info}[args.action](args)
