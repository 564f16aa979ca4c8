"""Subcommands for research: experiment (grids of cross-validated runs), explain, report."""

from __future__ import annotations

import argparse
from pathlib import Path

from dancegenre.cli import command, existing_path, positive_int


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register experiment, explain and report on ``sub``."""
    p = sub.add_parser("experiment", help="a grid of configurations, each scored by grouped k-fold CV")
    p.add_argument("spec", type=existing_path, help="TOML spec (see experiments/*.toml)")
    p.add_argument("--store", type=existing_path, required=True, help="folder written by `dancegenre prepare`")
    p.add_argument("--out", type=Path, required=True, help="experiment folder (rerun to resume)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="training runs at once; each gets cores/jobs threads (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="list the configurations and what is done, train nothing")


@command("experiment")
def _cmd_experiment(args: argparse.Namespace) -> int:
    from dancegenre.experiment import run_experiment

    summary = run_experiment(args.spec, store=args.store, out=args.out, jobs=args.jobs,
                             progress=not args.quiet, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    best = summary[summary["best"]]
    if len(best):
        b = best.iloc[0]
        print(f"best configuration (by validation): {b['name']}: held-out item accuracy "
              f"{b['item_accuracy_mean']:.3f} ± {b['item_accuracy_std']:.3f}, macro-F1 {b['item_macro_f1_mean']:.3f}")
    print(f"tables in {args.out / 'summary.csv'}, {args.out / 'summary.md'}, {args.out / 'summary.html'}")
    return 0
