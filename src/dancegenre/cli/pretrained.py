"""Subcommands of the pretrained network: pretrained fetch|info, embed, tag."""

from __future__ import annotations

import argparse

from dancegenre.cli.common import add_max_duration_option, command, existing_path, named_path, one_line, positive_int

ENGINE_HELP = ("how the pretrained network runs: onnxruntime (from an ONNX file made once in the cache folder, "
               "about a third faster here) or torch; auto takes onnxruntime where it can (default %(default)s)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from dancegenre.config import EMBED_LAYERS as LAYERS
    from dancegenre.config import ENGINES
    from dancegenre.config import PRETRAINED_NAMES as PRETRAINED

    p = sub.add_parser("pretrained", help="get the pretrained musicnn weights (verified, cached) or say where they are")
    p.add_argument("action", choices=["fetch", "info"], help="fetch: download (pip) or read "
                   "$DANCEGENRE_MUSICNN_WHEEL, verify and cache; info: the cache and licence")
    p.add_argument("--model", choices=list(PRETRAINED), action="append", default=None,
                   help="which weights (default: all)")

    p = sub.add_parser("embed", help="one vector per file (or per segment) from musicnn or a trained run")
    p.add_argument("inputs", nargs="+", type=existing_path, help="audio files, folders, catalogs (.csv), stores")
    p.add_argument("--model", default="musicnn-msd",
                   help=f"{' or '.join(PRETRAINED)} (pretrained), or a run folder / .pt (its penultimate layer); "
                        "default %(default)s")
    p.add_argument("--out", type=named_path, required=True, help="FILE.npy (+ FILE.csv beside it) or FILE.parquet")
    p.add_argument("--layer", choices=LAYERS, default="all",
                   help="musicnn layer: all = max_pool + mean_pool + penultimate + taggram (default)")
    p.add_argument("--per-segment", action="store_true", help="one vector per 3-s segment, not per file")
    p.add_argument("--engine", choices=ENGINES, default="auto", help=ENGINE_HELP)

    p = sub.add_parser("tag", help="the pretrained network's own tags (MSD or MTT) per file, and a tag timeline")
    p.add_argument("inputs", nargs="+", type=existing_path, help="audio files, folders, catalogs (.csv), stores")
    p.add_argument("--model", choices=list(PRETRAINED), default="musicnn-msd", help="default %(default)s")
    p.add_argument("--top", type=positive_int, default=5, help="tags per file (default %(default)s)")
    p.add_argument("--out", type=named_path, default=None, help="the table as CSV")
    p.add_argument("--timeline", type=named_path, default=None, help="JSON lines: every patch's 50 tag probabilities")
    add_max_duration_option(p)
    p.add_argument("--engine", choices=ENGINES, default="auto", help=ENGINE_HELP)


@command("pretrained")
def _cmd_pretrained(args: argparse.Namespace) -> int:
    from dancegenre.models import pretrained

    if args.action == "fetch":
        log = (lambda *_: None) if args.quiet else print
        for path in pretrained.fetch(args.model, log=log):
            if args.quiet:
                print(path)
        return 0
    from dancegenre.training.backbone import onnx_folder

    for name in args.model or list(pretrained.PRETRAINED):
        path = pretrained.weights_path(name)
        print(f"{name}: {path}" + ("" if path.is_file() else " (not fetched yet: dancegenre pretrained fetch)"))
    onnx = onnx_folder()
    made = sorted(onnx.glob("*.onnx")) if onnx.is_dir() else []
    print(f"onnxruntime copies (made on first use; safe to delete): {onnx}" + (f", {len(made)} file(s)" if made
                                                                                   else ", none yet"))
    print(pretrained.MUSICNN_LICENSE)
    return 0


@command("embed")
def _cmd_embed(args: argparse.Namespace) -> int:
    from dancegenre.inference.embed import embed_files

    embed_files(args.inputs, args.out, model=args.model, layer=args.layer, per_segment=args.per_segment,
                engine=args.engine, progress=not args.quiet)
    return 0


@command("tag")
def _cmd_tag(args: argparse.Namespace) -> int:
    from dancegenre.inference.embed import tag_files

    table = tag_files(args.inputs, model=args.model, top=args.top, out=args.out, timeline=args.timeline,
                      engine=args.engine, progress=not args.quiet, max_duration=args.max_duration)
    for row in table.to_dict(orient="records"):
        if row["error"]:
            print(one_line(f"{row['path']}: error: {row['error']}"))
            continue
        tags = ", ".join(f"{row[f'tag{r}']} {row[f'p{r}']:.2f}" for r in range(1, args.top + 1) if f"tag{r}" in row
                         and isinstance(row[f"tag{r}"], str))
        print(one_line(f"{row['path']}: {tags}"))
    for target in (args.out, args.timeline):
        if target is not None:
            print(f"wrote {target}")
    return 0 if (table["error"] == "").any() else 1
