"""Model commands: train, ensemble, evaluate, predict, export, untag, demo, serve."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dancegenre.cli.common import (
    add_max_duration_option,
    add_scheduler_option,
    command,
    existing_path,
    genre_list,
    named_path,
    one_line,
    port_number,
    positive_int,
    probability,
    process_count,
    seed_number,
    upload_mb,
)
from dancegenre.config import (
    ACTIVATIONS,
    ENGINES,
    MODEL_DEFAULTS,
    POOLINGS,
    TrainConfig,
)
from dancegenre.errors import ConfigError
from dancegenre.safety import write_table


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _model_default(field: str) -> str:
    """``default X`` for a ModelConfig field, read from the config and the registry's
    per-model defaults: each default is written once, in the code that uses it."""
    import dataclasses

    from dancegenre.config import ModelConfig

    base = {f.name: f.default for f in dataclasses.fields(ModelConfig)}[field]
    show = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
    others = {name: values[field] for name, values in MODEL_DEFAULTS.items()
              if field in values and values[field] != base}
    extra = "".join(f"; {name}: {show(v)}" for name, v in others.items())
    return f"default {show(base)}{extra}"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the later stages' subcommands on ``sub``."""
    d = TrainConfig()
    p = sub.add_parser("train", help="train a network on a prepared store (grouped split)")
    p.add_argument("store", type=existing_path, help="folder written by `dancegenre prepare`")
    p.add_argument("--out", type=named_path, required=True, help="run folder (checkpoints, metrics, curves)")
    p.add_argument("--model", choices=list(MODEL_DEFAULTS), default="cnn1d", help="network (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    m = p.add_argument_group("model (defaults depend on --model)")
    m.add_argument("--pooling", choices=POOLINGS, default=None, help=f"temporal pooling ({_model_default('pooling')})")
    m.add_argument("--activation", choices=ACTIVATIONS, default=None, help=_model_default("activation"))
    m.add_argument("--dropout", type=probability, default=None,
                   help=f"dense-layer dropout ({_model_default('dropout')})")
    m.add_argument("--filters", type=_int_tuple, default=None,
                   help=f"channels per conv block ({_model_default('filters')})")
    m.add_argument("--kernel-size", type=positive_int, default=None, help=_model_default("kernel_size"))
    m.add_argument("--pool-sizes", type=_int_tuple, default=None,
                   help=f"max pooling per block ({_model_default('pool_sizes')})")
    m.add_argument("--dense", type=positive_int, default=None, help=f"hidden dense units ({_model_default('dense')})")
    m.add_argument("--rnn", choices=["gru", "lstm"], default=None, help=f"crnn only ({_model_default('rnn')})")
    m.add_argument("--head", choices=["linear", "mlp"], default=None,
                   help=f"classifier on the pooled features ({_model_default('head')})")
    m.add_argument("--finetune", type=int, default=None,
                   help="musicnn-*: train the last N backbone blocks too (backend, mid3, mid2, mid1, frontend); "
                        f"{_model_default('finetune')}: frozen, a head on cached features; 1-4 train on the "
                        "cached front end (minutes on a CPU); 5 runs the whole network every step")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, default=d.epochs, help="maximum epochs (default %(default)s)")
    t.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="default %(default)s")
    t.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (default %(default)s)")
    t.add_argument("--backbone-lr", type=float, default=None,
                   help="with --finetune: learning rate of the unfrozen pretrained blocks (default: a third of --lr)")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default %(default)s")
    t.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="validate, keep and test a moving average of the weights, updated every step with this "
                        "decay, e.g. 0.999 (default %(default)s: off)")
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
    t.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                   help="train towards 1 - S + S/K for the genre and S/K for the others (default %(default)s)")
    t.add_argument("--augment", action="store_true",
                   help="time shift, SpecAugment masks and mixup (a frozen musicnn: mixup of its features; "
                        "--finetune 1-4: random stretches of time of its cached front end)")
    t.add_argument("--mixup", type=float, default=None, metavar="ALPHA",
                   help="with --augment: mix pairs of examples and their labels, the weight drawn from "
                        "Beta(ALPHA, ALPHA) (default 0.2; with --finetune 1-4 off unless given; 0: off)")
    t.add_argument("--ensemble", action="store_true",
                   help="with --folds and a musicnn-* whose front end stays frozen (--finetune 0-4): also write "
                        "OUT/ensemble.pt (and .onnx), the fold models' probabilities averaged")
    t.add_argument("--seed", type=seed_number, default=d.seed, help="default %(default)s")
    t.add_argument("--device", default=d.device,
                   help="auto, cpu, cuda or cuda:N; auto: cuda when torch sees one (default %(default)s)")
    t.add_argument("--engine", choices=["auto", "torch"], default=d.engine,
                   help="how a pretrained network's frozen part is computed, once per store, for its cache on the "
                        "CPU: auto with onnxruntime (about a third faster) where it can, else torch; torch: always "
                        "torch (default %(default)s)")
    _add_evaluate_predict(sub)
    p = sub.add_parser("serve", help="a local web page and JSON API for trying a model")
    add_max_duration_option(p)
    p.add_argument("checkpoint", type=existing_path, help="run folder or .pt checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="default %(default)s (this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="default %(default)s (0: any free port)")
    p.add_argument("--max-upload-mb", type=upload_mb, default=100.0,
                   help="largest upload (default %(default)s MB)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer to this Host name (a DNS name or reverse proxy in front); repeatable")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages of this origin (https://example.org, or *) POST to /api/predict; repeatable")
    p.add_argument("--request-timeout", type=positive_int, default=30,
                   help="close a connection silent this many seconds (default %(default)s)")
    p.add_argument("--only", type=genre_list, default=None, metavar="GENRE,GENRE...",
                   help="verdicts among these of the model's genres only (at least two), as predict --only "
                        "gives them; /model adds the held-out figures among them")


@command("train")
def _cmd_train(args: argparse.Namespace) -> int:
    from dancegenre.training.fit import fit

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, backbone_lr=args.backbone_lr,
        weight_decay=args.weight_decay,
        patience=args.patience, split_by=args.split_by, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, folds=args.folds, fold=args.fold, seed=args.seed,
        class_weights=args.class_weights, label_smoothing=args.label_smoothing, augment=args.augment,
        device=args.device, engine=args.engine, labels=args.labels, ema=args.ema, mixup_alpha=args.mixup,
    )
    if args.mixup is not None and not args.augment:
        raise ConfigError("--mixup is part of --augment: add --augment")
    options = {"pooling": args.pooling, "activation": args.activation, "dropout": args.dropout,
               "filters": args.filters, "kernel_size": args.kernel_size, "pool_sizes": args.pool_sizes,
               "dense": args.dense, "rnn": args.rnn, "head": args.head, "finetune": args.finetune}
    if args.ensemble and (args.folds < 2 or args.fold is not None):
        raise ConfigError("--ensemble averages the models of --folds K (K >= 2, without --fold)")
    if args.folds >= 2 and args.fold is None:
        from dancegenre.training.fit import cross_validate

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
    p.add_argument("--out", type=named_path, default=None, help="report folder (default RUN/evaluation)")
    p.add_argument("--device", default="cpu",
                   help="auto, cpu, cuda or cuda:N: where the network runs (default %(default)s)")

    p = sub.add_parser("predict", help="genre of audio files or folders, with a per-segment timeline")
    p.add_argument("checkpoint", type=existing_path, help="run folder, .pt checkpoint or exported .onnx model")
    p.add_argument("paths", nargs="+", help="audio files or folders (recursive)")
    p.add_argument("--out", type=named_path, default=None, help="results file: .csv or .jsonl (with timelines)")
    p.add_argument("--timeline", type=named_path, default=None, help="per-segment timeline of every file as CSV")
    p.add_argument("--sort-into", type=named_path, default=None, help="copy each file into DIR/<genre>/")
    p.add_argument("--move", action="store_true", help="with --sort-into: move instead of copy")
    p.add_argument("--min-confidence", type=probability, default=0.0,
                   help="below this, --sort-into and --playlists put files in _unsure and --write-tags writes "
                        "nothing")
    p.add_argument("--dry-run", action="store_true",
                   help="with --sort-into or --write-tags: only show what would happen")
    p.add_argument("--top-k", type=positive_int, default=1,
                   help="also give the runners-up: genre_2, p_2 ... genre_K, p_K, K at most the model's genres "
                        "(default %(default)s)")
    p.add_argument("--only", type=genre_list, default=None, metavar="GENRE,GENRE...",
                   help="verdicts among these of the model's genres only (at least two), their probabilities "
                        "scaled to sum to 1: e.g. a 7-subgenre model asked about 5 of them")
    p.add_argument("--write-tags", action="store_true",
                   help="write the genre into each file's tags (ID3 TCON, Vorbis GENRE, MP4 \u00a9gen) and the "
                        "whole result into a DANCEGENRE field; undo with `dancegenre untag JOURNAL`")
    p.add_argument("--tag-mode", choices=["replace", "append", "only-empty"], default="replace",
                   help="with --write-tags: replace the genre, append to it, or tag only files without one "
                        "(default %(default)s)")
    p.add_argument("--tag-journal", type=named_path, default=None,
                   help="with --write-tags: the CSV of previous values (default dancegenre-tags-<time>.csv here)")
    p.add_argument("--playlists", type=named_path, default=None, metavar="DIR",
                   help="one M3U8 per genre and a rekordbox collection XML (DIR/rekordbox.xml)")
    p.add_argument("--workers", type=process_count, default=None, help="decoding processes (default: all cores)")
    add_scheduler_option(p)
    p.add_argument("--device", default="cpu",
                   help="auto, cpu, cuda or cuda:N: where the network runs; auto: cuda when torch sees one "
                        "(default %(default)s)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="run the network from the run's ONNX export (onnxruntime, no torch import) or from its "
                        "checkpoint (torch); auto takes the export on the CPU when it matches the checkpoint "
                        "(default %(default)s)")
    p.add_argument("--features", choices=["auto", "workers", "device"], default="auto",
                   help="where the log-mel segments are made: in the decoding workers (numpy) or by torch on "
                        "--device next to the network, the workers only decoding; auto: on the device when it "
                        "is a GPU (default %(default)s)")

    p = sub.add_parser("export", help="write a run's network, labels and feature config as one ONNX file")
    p.add_argument("checkpoint", type=existing_path, help="run folder or .pt checkpoint")
    p.add_argument("--out", type=named_path, default=None,
                   help="the .onnx file (default: beside the checkpoint, best.pt -> best.onnx)")

    p = sub.add_parser("ensemble", help="average several runs of one pretrained model (seeds, CV folds) into one")
    p.add_argument("sources", type=existing_path, nargs="+", metavar="SOURCE",
                   help="run folder, cross-validation folder (all its folds) or .pt checkpoint (an ensemble.pt "
                        "gives all its members)")
    p.add_argument("--out", type=named_path, required=True,
                   help="new folder: best.pt and best.onnx (use it like a run), ensemble.json, and cv-items.csv "
                        "and ensemble-size.csv when every source is a cross-validation of the same items")
    p.add_argument("--only", type=genre_list, default=None, metavar="GENRE,GENRE...",
                   help="also give the held-out figure among these genres only: their items, the most likely of "
                        "them as the verdict (what predict --only gives); the model keeps every genre")

    p = sub.add_parser("untag", help="restore the tags that predict --write-tags changed, from its journal")
    p.add_argument("journal", type=existing_path, help="the --tag-journal CSV of predict --write-tags")
    p.add_argument("--dry-run", action="store_true", help="only show what would be restored")

    p = sub.add_parser("demo", help="synthetic corpus -> prepare -> train -> evaluate -> predict -> HTML report")
    p.add_argument("out", type=named_path, nargs="?", default=Path("demo-out"), help="output folder (default %(default)s)")
    p.add_argument("--per-genre", type=positive_int, default=40, help="clips per genre (default %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=15, help="maximum epochs (default %(default)s)")
    p.add_argument("--seed", type=seed_number, default=0)


@command("evaluate")
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dancegenre.inference.evaluate import evaluate

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

    from dancegenre.inference.classifier import (
        Classifier,
        expand_paths,
        predict_files,
        results_table,
        timeline_table,
    )
    from dancegenre.inference.sort import sort_into
    from dancegenre.safety import (
        Inputs,
        check_distinct,
        check_output_file,
        check_target_folder,
    )

    for what, path, suffixes in (("--out", args.out, (".csv", ".jsonl")), ("--timeline", args.timeline, (".csv",))):
        if path is not None:
            check_output_file(path, suffixes=suffixes, what=what)
    journal = None
    if args.write_tags:
        import time

        from dancegenre.inference.library import check_journal

        journal = args.tag_journal or Path(f"dancegenre-tags-{time.strftime('%Y%m%d-%H%M%S')}.csv")
        check_output_file(journal, suffixes=(".csv",), what="--tag-journal")
        check_journal(journal)
    check_distinct({"--out": args.out, "--timeline": args.timeline, "--tag-journal": journal})
    if args.sort_into is not None:
        check_target_folder(args.sort_into, what="--sort-into")
        _check_not_an_input(args.sort_into, args.paths)
    if args.playlists is not None:
        from dancegenre.inference.library import check_playlists_folder

        check_playlists_folder(args.playlists, create=False)
        if args.move:
            raise ConfigError("--playlists points at the files where they are; with --move they would not be "
                              "there (sort first, then make playlists of DIR)")
    clf = Classifier.load(args.checkpoint, device=args.device, engine=args.engine, features=args.features)
    if args.only is not None:
        clf.restrict(args.only)
    args.top_k = min(args.top_k, len(clf.labels))  # columns past the model's genres would always be empty
    paths = expand_paths(args.paths, exclude=_sorted_already(args.sort_into, args.paths, clf.labels))
    inputs = Inputs([*paths, *clf.model_files])
    for what, path, columns in (("--out", args.out, PREDICTION_COLUMNS), ("--timeline", args.timeline, ("path", "start")),
                                ("--tag-journal", journal, None)):
        if path is not None:  # an input, or a file that is not a table of ours (a catalog), is refused
            check_output_file(path, inputs=inputs, what=what, columns=columns)
    # with an output to attach it to, a journal: an interrupted predict resumes where it stopped
    anchor = args.out or args.timeline
    if anchor is not None:
        anchor.parent.mkdir(parents=True, exist_ok=True)
    preds = predict_files(clf, paths, journal=anchor, workers=args.workers, scheduler=args.scheduler,
                          progress=not args.quiet)
    table = results_table(preds, clf.labels, top_k=args.top_k)
    from dancegenre.safety import atomic_write

    if args.out is not None:
        if args.out.suffix.lower() == ".csv":
            write_table(args.out, table)
        else:
            atomic_write(args.out, "".join(json.dumps(p.to_dict(top_k=args.top_k)) + "\n" for p in preds))
    if args.timeline is not None:
        args.timeline.parent.mkdir(parents=True, exist_ok=True)
        write_table(args.timeline, timeline_table(preds))
    if anchor is not None:
        from dancegenre.data.jobs import Journal

        Journal(anchor, "predict-journal").remove()  # the outputs are whole
    failed = table["error"] != ""
    if not args.quiet or args.out is None:
        ranked = [c for r in range(2, args.top_k + 1) for c in (f"genre_{r}", f"p_{r}")]
        show = table.loc[~failed, ["path", "genre", "confidence", *ranked, "segments"]].copy()
        show["path"] = show["path"].map(lambda s: one_line(s if len(s) < 60 else "..." + s[-57:]))
        if len(show):
            print(show.to_string(index=False))
    for path, error in table.loc[failed, ["path", "error"]].itertuples(index=False):
        # the reason, not a row of zeros under the verdicts (and the path once); with -q too
        print(f"failed: {one_line(path)}: {one_line(error.removesuffix(f': {path}'))}", file=sys.stderr)
    bad = int(failed.sum())
    print(f"{len(preds) - bad} predicted, {bad} failed" + (f"; results in {args.out}" if args.out else ""))
    if preds and bad == len(preds):
        print(f"dancegenre predict: error: none of the {bad} file(s) could be predicted; the reasons are above",
              file=sys.stderr)
    if args.write_tags:
        from dancegenre.inference.library import write_tags

        tagged = write_tags(preds, journal=journal, mode=args.tag_mode, min_confidence=args.min_confidence,
                            top_k=args.top_k, model_id=_model_id(clf), dry_run=args.dry_run)
        verb = "would tag" if args.dry_run else "tagged"
        for a in tagged:
            if args.dry_run or not args.quiet or a.action == "skip":
                print(one_line(f"{verb if a.action == 'write' else 'skip'} {a.path}: "
                               + ("; ".join(a.genres) if a.action == "write" else a.reason)))
        done = sum(a.action == "write" for a in tagged)
        print(f"{verb} {done} of {len(tagged)} file(s)"
              + ("" if args.dry_run or not done else f"; undo with: dancegenre untag {journal}"))
    if args.playlists is not None:
        from dancegenre.inference.library import write_playlists

        files = write_playlists(preds, args.playlists, min_confidence=args.min_confidence)
        for path, reason in files.left_out:
            print(one_line(f"left out of the M3U8: {path}: {reason}"))
        print(f"playlists: {len(files) - 1} M3U8 and {files[-1]}")
    if args.sort_into is not None:
        actions = sort_into(preds, args.sort_into, move=args.move, min_confidence=args.min_confidence,
                            dry_run=args.dry_run)
        verb = "would " if args.dry_run else ""
        for a in actions:
            if args.dry_run or not args.quiet or a.action == "skip":  # a skip and its reason, with -q too
                print(one_line(f"{verb}{a.action} {a.source}"
                               + (f" -> {a.destination}" if a.destination else f" ({a.reason})")))
        done = sum(a.action != "skip" for a in actions)
        print(f"{verb}{'move' if args.move else 'copy'} {done} file(s) into {args.sort_into}")
    return 0 if len(preds) > bad else 2


def _sorted_already(target: Path | None, paths: list[Path], labels: list[str]) -> list[Path]:
    """What the listing of the inputs leaves out: the ``--sort-into`` target, whose files
    are sorted already; but where an input lies inside the target (an inbox sorted into
    its parent), only the target's genre and ``_unsure`` folders."""
    if target is None:
        return []
    real = Path(os.path.realpath(target))
    if any(Path(os.path.realpath(p)).is_relative_to(real) for p in paths):
        return [target / name for name in (*labels, "_unsure")]
    return [target]


def _check_not_an_input(target: Path, paths: list[Path]) -> None:
    """ConfigError when the ``--sort-into`` folder is one of the input folders: its files
    would be sorted into itself (and the listing, which leaves the target out, found
    nothing)."""
    real = os.path.realpath(target)
    for path in paths:
        if os.path.realpath(path) == real:
            raise ConfigError(f"--sort-into {target} is the input folder {path}; sort into another folder "
                              "(a folder inside the input is fine)")


PREDICTION_COLUMNS = ("path", "genre", "confidence")  # in predict's CSV header and each JSON line


def _model_id(clf) -> str:
    """What the custom tag field names as the model: its name and checkpoint."""
    return f"{clf.model_name}:{clf.path}"


@command("export")
def _cmd_export(args: argparse.Namespace) -> int:
    from dancegenre.safety import Inputs, check_output_file
    from dancegenre.training.export import export_onnx, onnx_path_of

    source = args.checkpoint / "best.pt" if args.checkpoint.is_dir() else args.checkpoint
    check_output_file(args.out or onnx_path_of(source), suffixes=(".onnx",), inputs=Inputs([source]), what="--out")
    path = export_onnx(source, args.out)  # without --out, beside the checkpoint: never a user's file there
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB): the network with softmax, its labels and feature config; "
          f"dancegenre predict {path} FILES runs it without torch")
    return 0


@command("ensemble")
def _cmd_ensemble(args: argparse.Namespace) -> int:
    from dancegenre.training.ensemble import combine

    summary = combine(args.sources, out=args.out, only=args.only, log=print)
    held = summary["held_out"]
    print(f"{args.out / 'best.pt'}: {summary['model']}, the average of {summary['members']} models")
    if held:
        print(f"held out ({held['split']}): item accuracy {held['item_accuracy']:.3f}, "
              f"macro-F1 {held['item_macro_f1']:.3f} on {held['items']} items")
        if summary["by_size"]:
            print("the average of N of them, mean held-out item accuracy over every choice of N: "
                  + ", ".join(f"N={r['sources']} {r['item_accuracy_mean']:.3f}" for r in summary["by_size"])
                  + f" ({args.out / 'ensemble-size.csv'})")
        among = summary.get("held_out_only")
        if among:
            print(f"among {', '.join(among['genres'])} only ({among['items']} items of those genres, the most likely "
                  f"of them as the verdict): item accuracy {among['item_accuracy']:.3f}, "
                  f"macro-F1 {among['item_macro_f1']:.3f} ({args.out / 'cv-items-only.csv'})")
    else:
        print(summary["note"])
    return 0


@command("untag")
def _cmd_untag(args: argparse.Namespace) -> int:
    from dancegenre.inference.library import untag

    actions = untag(args.journal, dry_run=args.dry_run)
    for a in actions:
        if args.dry_run or not args.quiet or a.action == "skip":
            print(one_line(f"{'would restore' if args.dry_run and a.action == 'restore' else a.action} {a.path}"
                           + (f": {'; '.join(a.genres) or '(no genre)'}" if a.action == "restore" else f": {a.reason}")))
    done = sum(a.action == "restore" for a in actions)
    print(f"{'would restore' if args.dry_run else 'restored'} {done} of {len(actions)} file(s)")
    return 0 if done or not actions else 2


@command("demo")
def _cmd_demo(args: argparse.Namespace) -> int:
    from dancegenre.demo import run_demo

    report = run_demo(args.out, per_genre=args.per_genre, epochs=args.epochs, seed=args.seed,
                      progress=not args.quiet)
    print(f"demo report: {report}")
    return 0


@command("serve")
def _cmd_serve(args: argparse.Namespace) -> int:
    from dancegenre.web.app import serve

    serve(args.checkpoint, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
          allow_hosts=args.allow_host, allow_origins=args.allow_origin, request_timeout=args.request_timeout,
          only=args.only, max_duration=args.max_duration)
    return 0
