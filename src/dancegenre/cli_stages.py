"""Subcommands after prepare: train, evaluate, predict, demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from dancegenre.cli import add_scheduler_option, command, existing_path, positive_int, probability
from dancegenre.config import TrainConfig
from dancegenre.errors import ConfigError
from dancegenre.models import ACTIVATIONS, MODELS, POOLINGS


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the later stages' subcommands on ``sub``."""
    d = TrainConfig()
    p = sub.add_parser("train", help="train a network on a prepared store (grouped split)")
    p.add_argument("store", type=existing_path, help="folder written by `dancegenre prepare`")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, metrics, curves)")
    p.add_argument("--model", choices=list(MODELS), default="cnn1d", help="network (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    m = p.add_argument_group("model (defaults depend on --model)")
    m.add_argument("--pooling", choices=POOLINGS, default=None, help="temporal pooling (default max)")
    m.add_argument("--activation", choices=list(ACTIVATIONS), default=None, help="default relu")
    m.add_argument("--dropout", type=probability, default=None, help="dense-layer dropout (default 0.5)")
    m.add_argument("--filters", type=_int_tuple, default=None, help="channels per conv block, e.g. 64,128,128")
    m.add_argument("--kernel-size", type=positive_int, default=None)
    m.add_argument("--pool-sizes", type=_int_tuple, default=None, help="max pooling per block, e.g. 4,2,2")
    m.add_argument("--dense", type=positive_int, default=None, help="hidden dense units (default 128)")
    m.add_argument("--rnn", choices=["gru", "lstm"], default=None, help="crnn only (default gru)")
    m.add_argument("--head", choices=["linear", "mlp"], default=None,
                   help="classifier on the pooled features (default: mlp; musicnn-*: linear)")
    m.add_argument("--finetune", type=int, default=None,
                   help="musicnn-*: train the last N backbone blocks too (backend, mid3, mid2, mid1, frontend); "
                        "default 0: frozen, a head on cached features")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, default=d.epochs, help="maximum epochs (default %(default)s)")
    t.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="default %(default)s")
    t.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (default %(default)s)")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default %(default)s")
    t.add_argument("--patience", type=positive_int, default=d.patience,
                   help="early stop after this many epochs without validation improvement (default %(default)s)")
    t.add_argument("--split-by", default=None,
                   help="grouping column (default: artist, else artist_id, else track_id, else item)")
    t.add_argument("--val-fraction", type=float, default=d.val_fraction, help="default %(default)s")
    t.add_argument("--test-fraction", type=float, default=d.test_fraction, help="default %(default)s")
    t.add_argument("--folds", type=int, default=0,
                   help="k-fold grouped cross-validation: all folds into OUT/fold-<i> and OUT/cv.json")
    t.add_argument("--fold", type=int, default=None, help="with --folds: run only this fold")
    t.add_argument("--labels", type=lambda s: tuple(s.split(",")), default=None,
                   help="train on these genres only, e.g. bouncy,tekno,warzone")
    t.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    t.add_argument("--augment", action="store_true", help="time shift, SpecAugment masks and mixup")
    t.add_argument("--ensemble", action="store_true",
                   help="with --folds and a frozen musicnn-*: also write OUT/ensemble.pt, the folds' heads averaged")
    t.add_argument("--seed", type=int, default=d.seed, help="default %(default)s")
    t.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ... (default %(default)s)")
    _add_evaluate_predict(sub)
    add_analysis_parsers(sub)
    add_collect_parser(sub)
    p = sub.add_parser("serve", help="a local web page and JSON API for trying a model")
    p.add_argument("checkpoint", type=existing_path, help="run folder or .pt checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="default %(default)s (this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default %(default)s (0: any free port)")
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload (default %(default)s MB)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer to this Host name (a DNS name or reverse proxy in front); repeatable")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages of this origin (https://example.org, or *) POST to /api/predict; repeatable")
    p.add_argument("--request-timeout", type=positive_int, default=30,
                   help="close a connection silent this many seconds (default %(default)s)")


@command("train")
def _cmd_train(args: argparse.Namespace) -> int:
    from dancegenre.train import fit

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        patience=args.patience, split_by=args.split_by, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, folds=args.folds, fold=args.fold, seed=args.seed,
        class_weights=args.class_weights, augment=args.augment, device=args.device, labels=args.labels,
    )
    options = {"pooling": args.pooling, "activation": args.activation, "dropout": args.dropout,
               "filters": args.filters, "kernel_size": args.kernel_size, "pool_sizes": args.pool_sizes,
               "dense": args.dense, "rnn": args.rnn, "head": args.head, "finetune": args.finetune}
    if args.ensemble and (args.folds < 2 or args.fold is not None):
        raise ConfigError("--ensemble averages the models of --folds K (K >= 2, without --fold)")
    if args.folds >= 2 and args.fold is None:
        from dancegenre.train import cross_validate

        cross_validate(args.store, out=args.out, folds=args.folds, model=args.model, model_options=options,
                       config=config, progress=not args.quiet, ensemble=args.ensemble)
        print(f"cross-validation results in {args.out / 'cv.json'} and {args.out / 'cv.csv'}")
        return 0
    result = fit(args.store, out=args.out, model=args.model, model_options=options, config=config,
                 resume=args.resume, progress=not args.quiet)
    print(f"run {result.run_dir}: best epoch {result.best_epoch} of {result.epochs_run}, "
          f"{result.seconds:.0f} s; checkpoint {result.checkpoint}")
    return 0


def _add_evaluate_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics, confusion matrix and calibration of a run or checkpoint")
    p.add_argument("checkpoint", type=existing_path, help="run folder or .pt checkpoint")
    p.add_argument("store", type=existing_path, nargs="?", default=None,
                   help="a prepared store to score (default: the run's own test split)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default RUN/evaluation)")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("predict", help="genre of audio files or folders, with a per-segment timeline")
    p.add_argument("checkpoint", type=existing_path, help="run folder or .pt checkpoint")
    p.add_argument("paths", nargs="+", help="audio files or folders (recursive)")
    p.add_argument("--out", type=Path, default=None, help="results file: .csv or .jsonl (with timelines)")
    p.add_argument("--timeline", type=Path, default=None, help="per-segment timeline of every file as CSV")
    p.add_argument("--sort-into", type=Path, default=None, help="copy each file into DIR/<genre>/")
    p.add_argument("--move", action="store_true", help="with --sort-into: move instead of copy")
    p.add_argument("--min-confidence", type=probability, default=0.0,
                   help="with --sort-into: below this, files go to DIR/_unsure/")
    p.add_argument("--dry-run", action="store_true", help="with --sort-into: only show what would happen")
    p.add_argument("--workers", type=positive_int, default=None, help="decoding processes (default: all cores)")
    add_scheduler_option(p)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("demo", help="synthetic corpus -> prepare -> train -> evaluate -> predict -> HTML report")
    p.add_argument("out", type=Path, nargs="?", default=Path("demo-out"), help="output folder (default %(default)s)")
    p.add_argument("--per-genre", type=positive_int, default=40, help="clips per genre (default %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=15, help="maximum epochs (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)


@command("evaluate")
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dancegenre.evaluate import evaluate

    ev = evaluate(args.checkpoint, args.store, out=args.out, device=args.device)
    print(f"{ev.split}")
    for level, m in (("items", ev.item), ("segments", ev.segment)):
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        print(f"  {level:8s} n={m['n']:5d}  accuracy {m['accuracy']:.3f}  balanced {m['balanced_accuracy']:.3f}  "
              f"macro-F1 {m['macro_f1']:.3f}  ROC-AUC {auc}")
    print(f"report: {ev.out / 'report.md'} (metrics.json, items.csv, confusion.png, reliability.png)")
    return 0


@command("predict")
def _cmd_predict(args: argparse.Namespace) -> int:
    import json

    from dancegenre.predict import Classifier, expand_paths, results_table, sort_into, timeline_table

    from dancegenre.safety import Inputs, check_distinct, check_output_file, check_target_folder

    for what, path, suffixes in (("--out", args.out, (".csv", ".jsonl")), ("--timeline", args.timeline, (".csv",))):
        if path is not None:
            check_output_file(path, suffixes=suffixes, what=what)
    check_distinct({"--out": args.out, "--timeline": args.timeline})
    if args.sort_into is not None:
        check_target_folder(args.sort_into, what="--sort-into")
    clf = Classifier.load(args.checkpoint, device=args.device)
    paths = expand_paths(args.paths, exclude=[args.sort_into] if args.sort_into is not None else [])
    inputs = Inputs([*paths, clf.checkpoint.path])
    for what, path in (("--out", args.out), ("--timeline", args.timeline)):
        if path is not None:
            check_output_file(path, inputs=inputs, what=what)
    from tqdm import tqdm

    preds = list(tqdm(clf.predict_many(paths, workers=args.workers, scheduler=args.scheduler), total=len(paths), desc="predict",
                      unit="file", disable=args.quiet))
    table = results_table(preds, clf.labels)
    from dancegenre.safety import atomic_write

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix.lower() == ".csv":
            atomic_write(args.out, table.to_csv(index=False))
        else:
            atomic_write(args.out, "".join(json.dumps(p.to_dict()) + "\n" for p in preds))
    if args.timeline is not None:
        args.timeline.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.timeline, timeline_table(preds).to_csv(index=False))
    if not args.quiet or args.out is None:
        show = table[["path", "genre", "confidence", "segments", "error"]].copy()
        show["path"] = show["path"].map(lambda s: s if len(s) < 60 else "..." + s[-57:])
        print(show.to_string(index=False))
    bad = int((table["error"] != "").sum())
    print(f"{len(preds) - bad} predicted, {bad} failed" + (f"; results in {args.out}" if args.out else ""))
    if args.sort_into is not None:
        actions = sort_into(preds, args.sort_into, move=args.move, min_confidence=args.min_confidence,
                            dry_run=args.dry_run)
        verb = "would " if args.dry_run else ""
        for a in actions:
            if args.dry_run or not args.quiet:
                print(f"{verb}{a.action} {a.source}" + (f" -> {a.destination}" if a.destination else f" ({a.reason})"))
        done = sum(a.action != "skip" for a in actions)
        print(f"{verb}{'move' if args.move else 'copy'} {done} file(s) into {args.sort_into}")
    return 0 if len(preds) > bad else 2


@command("demo")
def _cmd_demo(args: argparse.Namespace) -> int:
    from dancegenre.demo import run_demo

    report = run_demo(args.out, per_genre=args.per_genre, epochs=args.epochs, seed=args.seed,
                      progress=not args.quiet)
    print(f"demo report: {report}")
    return 0


def add_analysis_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="per-track audio descriptors (tempo, loudness, timbre, MFCCs, vocals) to CSV")
    p.add_argument("input", type=existing_path, help="folder <label>/<file>, catalog CSV, or a prepared store")
    p.add_argument("--out", type=Path, required=True, help="CSV to write (rerun to resume or update)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    add_scheduler_option(p)

    p = sub.add_parser("eda", help="compare numeric columns between genres: statistics, histograms, HTML")
    p.add_argument("tables", type=existing_path, nargs="+", help="CSV tables (features output, catalogs)")
    p.add_argument("--label-column", default="label", help="genre column (default %(default)s; "
                   "a table without it is labelled by its file name)")
    p.add_argument("--out", type=Path, required=True, help="report folder")

    p = sub.add_parser("baseline", help="logistic regression and gradient boosting on descriptors, grouped CV")
    p.add_argument("features", type=existing_path, help="CSV from `dancegenre features`")
    p.add_argument("--split-by", default="track_id", help="grouping column (default %(default)s; item for none)")
    p.add_argument("--folds", type=positive_int, default=5)
    p.add_argument("--labels", type=lambda s: s.split(","), default=None, help="only these genres")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the results")

    p = sub.add_parser("figure", help="the study's figures from the training front end")
    p.add_argument("kind", choices=["clip", "grid"], help="clip: waveform + mel power + mel dB of one file; "
                   "grid: the first N segments per genre of a store")
    p.add_argument("source", type=existing_path, help="audio file (clip) or prepared store (grid)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--per-genre", type=positive_int, default=30, help="grid: segments per genre")


@command("features")
def _cmd_features(args: argparse.Namespace) -> int:
    from dancegenre.descriptors import describe_files

    table, failures = describe_files(args.input, args.out, workers=args.workers, progress=not args.quiet,
                                     scheduler=args.scheduler)
    print(f"{len(table)} tracks described into {args.out}; {len(failures)} skipped"
          + (f" (reasons in {args.out.with_name(args.out.stem + '.failures.csv')})" if len(failures) else ""))
    return 0


@command("eda")
def _cmd_eda(args: argparse.Namespace) -> int:
    from dancegenre.eda import run_eda

    stats = run_eda(args.tables, args.out, label_column=args.label_column)
    print(stats[["rank", "column", "test", "p_value", "effect_size"]].head(12).to_string(index=False))
    print(f"report: {args.out / 'index.html'} (statistics.csv, histograms.png)")
    return 0


@command("baseline")
def _cmd_baseline(args: argparse.Namespace) -> int:
    from dancegenre.eda import run_baseline

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
    from dancegenre.report import clip_figure, store_grid_figure

    if args.kind == "clip":
        clip_figure(args.source, args.out)
    else:
        store_grid_figure(args.source, args.out, per_label=args.per_genre)
    print(f"wrote {args.out}")
    return 0


def add_collect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="tracks and 30-second previews from a Spotify or Deezer playlist, or a Deezer search")
    p.add_argument("service", choices=["spotify", "deezer"])
    p.add_argument("playlist", nargs="?", default=None,
                   help="playlist URL, URI or id; for spotify also login (sign in as yourself) or logout")
    p.add_argument("--search", default=None,
                   help="deezer: collect from the playlists Deezer's playlist search finds for this text")
    p.add_argument("--max-tracks", type=positive_int, default=1500,
                   help="with --search: stop at this many distinct tracks (default %(default)s)")
    p.add_argument("--label", default=None, help="genre of this playlist's tracks (a folder name)")
    p.add_argument("--out", type=Path, default=None, help="data folder: OUT/catalog.csv, OUT/<label>/<id>.mp3")
    p.add_argument("--port", type=positive_int, default=8888,
                   help="login: the loopback redirect port, http://127.0.0.1:PORT/callback (default %(default)s)")
    p.add_argument("--no-browser", action="store_true",
                   help="login: print the sign-in URL and read the redirected URL pasted back")
    p.add_argument("--workers", type=positive_int, default=4, help="parallel downloads (default %(default)s)")


@command("collect")
def _cmd_collect(args: argparse.Namespace) -> int:
    from dancegenre.collect import collect_deezer, collect_spotify

    if args.service == "spotify" and args.playlist in ("login", "logout"):
        from dancegenre.collect import login

        if args.playlist == "logout":
            print("signed out: the stored Spotify login is removed" if login.logout()
                  else "no stored Spotify login")
            return 0
        path = login.login(port=args.port, open_browser=not args.no_browser)
        print(f"signed in; the login is kept in {path} (readable by you only); "
              "collect spotify now reads your own and collaborative playlists")
        return 0
    if not args.label or not args.out:
        raise ConfigError("collect needs --label and --out")
    if args.service == "spotify":
        if args.search or not args.playlist:
            raise ConfigError("collect spotify takes a PLAYLIST (--search is for deezer)")
        s = collect_spotify(args.playlist, label=args.label, out=args.out, workers=args.workers,
                            progress=not args.quiet)
    else:
        if bool(args.search) == bool(args.playlist):
            raise ConfigError("collect deezer takes a PLAYLIST or --search TEXT (one of them)")
        s = collect_deezer(args.playlist, label=args.label, out=args.out, workers=args.workers,
                           progress=not args.quiet, search=args.search, max_tracks=args.max_tracks)
    sources = ", ".join(f"{k} {v}" for k, v in sorted(s.previews.items()))
    print(f"{s.tracks} tracks; previews by source: {sources}; {s.downloaded} downloaded, {s.kept} already there, "
          f"{s.failed} failed, {s.missing} without a preview (listed in {args.out}/missing_previews_{args.label}.csv); "
          f"catalog {s.catalog}")
    return 0 if s.downloaded + s.kept else 2


@command("serve")
def _cmd_serve(args: argparse.Namespace) -> int:
    from dancegenre.serve import serve

    serve(args.checkpoint, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
          allow_hosts=args.allow_host, allow_origins=args.allow_origin, request_timeout=args.request_timeout)
    return 0
