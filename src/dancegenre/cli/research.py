"""Research commands: eda, baseline, figure, experiment, explain, report."""

from __future__ import annotations

import argparse

from dancegenre.cli.common import (
    command,
    existing_path,
    genre_list,
    named_path,
    number_in,
    positive_int,
    seed_number,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register experiment, explain and report on ``sub``."""
    p = sub.add_parser("experiment", help="a grid of configurations, each scored by grouped k-fold CV")
    p.add_argument("spec", type=existing_path, help="TOML spec (see experiments/*.toml)")
    p.add_argument("--store", type=existing_path, required=True, help="folder written by `dancegenre prepare`")
    p.add_argument("--out", type=named_path, required=True, help="experiment folder (rerun to resume)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="training runs at once; each gets cores/jobs threads (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="list the configurations and what is done, train nothing")
    add_explain_report(sub)
    p = sub.add_parser("eda", help="compare numeric columns between genres: statistics, histograms, HTML")
    p.add_argument("tables", type=existing_path, nargs="+", help="CSV tables (features output, catalogs)")
    p.add_argument("--label-column", default="label", help="genre column (default %(default)s; "
                   "a table without it is labelled by its file name)")
    p.add_argument("--out", type=named_path, required=True, help="report folder")

    p = sub.add_parser("baseline", help="logistic regression and gradient boosting on descriptors, grouped CV")
    p.add_argument("features", type=existing_path, help="CSV from `dancegenre features`")
    p.add_argument("--split-by", default="track_id", help="grouping column (default %(default)s; item for none)")
    p.add_argument("--folds", type=positive_int, default=5)
    p.add_argument("--labels", type=genre_list, default=None, help="only these genres")
    p.add_argument("--seed", type=seed_number, default=0)
    p.add_argument("--out", type=named_path, default=None, help="JSON file for the results")

    p = sub.add_parser("figure", help="the study's figures from the training front end")
    p.add_argument("kind", choices=["clip", "grid"], help="clip: waveform + mel power + mel dB of one file; "
                   "grid: the first N segments per genre of a store")
    p.add_argument("source", type=existing_path, help="audio file (clip) or prepared store (grid)")
    p.add_argument("--out", type=named_path, required=True, help="PNG to write")
    p.add_argument("--per-genre", type=positive_int, default=30, help="grid: segments per genre")
    p.add_argument("--store", type=existing_path, default=None,
                   help="clip: draw through this store's front end (default: the study's)")


@command("experiment")
def _cmd_experiment(args: argparse.Namespace) -> int:
    from dancegenre.research.experiment import run_experiment

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


def add_explain_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="what a model looks at: saliency, Grad-CAM, feature maps, bands, filters")
    p.add_argument("checkpoint", type=existing_path, help="run folder or .pt checkpoint")
    p.add_argument("audio", type=existing_path, nargs="*", help="audio files to explain")
    p.add_argument("--store", type=existing_path, default=None,
                   help="also analyse the first-layer filters over this store's segments")
    p.add_argument("--out", type=named_path, required=True, help="folder for PNGs, CSVs and explain.html")
    p.add_argument("--max-seconds", type=number_in(float, 1.0, 1e7, "a number"), default=600.0,
                   help="explain at most this much of each track (default %(default)s)")
    p.add_argument("--max-segments", type=positive_int, default=2000, help="store segments to scan (evenly spaced)")
    p = sub.add_parser("report", help="one self-contained HTML page for a run, a cross-validation, an ensemble "
                       "or an experiment")
    p.add_argument("target", type=existing_path,
                   help="run folder, `train --folds` folder, `ensemble` folder or experiment folder")
    p.add_argument("--out", type=named_path, required=True, help="the .html file to write")
    p.add_argument("--features", type=existing_path, default=None,
                   help="a descriptor CSV from `dancegenre features`: adds an EDA section")
    p.add_argument("--explain", type=existing_path, nargs="+", default=[], metavar="AUDIO",
                   help="tracks to explain with the (best) model")


@command("explain")
def _cmd_explain(args: argparse.Namespace) -> int:
    from dancegenre.research.explanation import explain_to

    log = (lambda *a: None) if args.quiet else print
    page = explain_to(args.checkpoint, args.out, audio=args.audio, store=args.store,
                      max_seconds=args.max_seconds, max_segments=args.max_segments, log=log)
    print(f"explanations in {page}")
    return 0


@command("report")
def _cmd_report(args: argparse.Namespace) -> int:
    from dancegenre.research.report import build_report

    log = (lambda *a: None) if args.quiet else print
    out = build_report(args.target, args.out, features=args.features, explain_audio=args.explain, log=log)
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, images embedded)")
    return 0


@command("eda")
def _cmd_eda(args: argparse.Namespace) -> int:
    from dancegenre.research.eda import run_eda

    stats = run_eda(args.tables, args.out, label_column=args.label_column)
    print(stats[["rank", "column", "test", "p_value", "effect_size"]].head(12).to_string(index=False))
    print(f"report: {args.out / 'index.html'} (statistics.csv, histograms.png)")
    return 0


@command("baseline")
def _cmd_baseline(args: argparse.Namespace) -> int:
    from dancegenre.research.eda import run_baseline

    res = run_baseline(args.features, split_by=args.split_by, folds=args.folds, seed=args.seed, labels=args.labels,
                       out=args.out)
    print(f"{res['split']}, {res['n']} tracks, {len(res['features'])} descriptors")
    for name in ("logistic_regression", "gradient_boosting"):
        m = res[name]
        print(f"  {name:20s} accuracy {m['accuracy_mean']:.3f} ± {m['accuracy_std']:.3f}   "
              f"macro-F1 {m['macro_f1_mean']:.3f} ± {m['macro_f1_std']:.3f}")
    return 0


@command("figure")
def _cmd_figure(args: argparse.Namespace) -> int:
    from dancegenre.research.figures import clip_figure, store_grid_figure
    from dancegenre.safety import check_output_file

    check_output_file(args.out, inputs=[args.source], suffixes=(".png",))
    if args.kind == "clip":
        config = None
        if args.store is not None:
            from dancegenre.data.store import SegmentStore

            config = SegmentStore(args.store).config
        clip_figure(args.source, args.out, config=config)
    else:
        store_grid_figure(args.source, args.out, per_label=args.per_genre)
    print(f"wrote {args.out}")
    return 0
