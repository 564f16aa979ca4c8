"""Data commands: synth, collect, prepare, features."""

from __future__ import annotations

import argparse
from pathlib import Path

from dancegenre.cli.common import (
    _add_feature_options,
    _feature_config,
    add_scheduler_option,
    command,
    existing_path,
    named_path,
    number_in,
    positive_int,
    process_count,
    seed_number,
)
from dancegenre.errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register synth, collect, prepare and features on ``sub``."""
    p = sub.add_parser("synth", help="write a synthetic techno/EDM corpus with a catalog.csv")
    p.add_argument("out", type=named_path, help="output folder: OUT/<genre>/<id>.<format>, OUT/catalog.csv")
    p.add_argument("--per-genre", type=positive_int, default=100, help="clips per genre (default %(default)s)")
    p.add_argument("--seed", type=seed_number, default=0, help="random seed (default %(default)s)")
    p.add_argument("--format", choices=["mp3", "wav", "flac", "ogg"], default="mp3",
                   help="audio format (default %(default)s; flac/wav encode faster)")
    p.add_argument("--artists", type=positive_int, default=None,
                   help="artists per genre (default: one per 6 clips, at least 2)")
    p.add_argument("--workers", type=process_count, default=None, help="processes (default: all cores)")

    p = sub.add_parser("prepare", help="decode audio into a memory-mapped log-mel segment store")
    p.add_argument("input", type=existing_path, help="folder laid out as <label>/<file>, or a catalog CSV with path,label")
    p.add_argument("out", type=named_path, help="store folder (created; rerun to resume or update)")
    p.add_argument("--workers", type=process_count, default=None, help="processes (default: all cores)")
    p.add_argument("--shard-items", type=positive_int, default=None,
                   help="files per shard a worker writes (default: 1-64, several shards per worker)")
    add_scheduler_option(p)
    _add_feature_options(p)

    p = sub.add_parser("collect", help="tracks and 30-second previews from a Spotify or Deezer playlist, or a Deezer search")
    p.add_argument("service", choices=["spotify", "deezer"])
    p.add_argument("playlist", nargs="?", default=None,
                   help="playlist URL, URI or id; for spotify also login (sign in as yourself) or logout")
    p.add_argument("--search", default=None,
                   help="deezer: collect from the playlists Deezer's playlist search finds for this text")
    p.add_argument("--max-tracks", type=positive_int, default=1500,
                   help="with --search: stop at this many distinct tracks (default %(default)s)")
    p.add_argument("--label", default=None, help="genre of this playlist's tracks (a folder name)")
    p.add_argument("--out", type=named_path, default=None, help="data folder: OUT/catalog.csv, OUT/<label>/<id>.mp3")
    p.add_argument("--port", type=number_in(int, 1, 65535, "a port number"), default=8888,
                   help="login: the loopback redirect port, http://127.0.0.1:PORT/callback (default %(default)s)")
    p.add_argument("--no-browser", action="store_true",
                   help="login: print the sign-in URL and read the redirected URL pasted back")
    p.add_argument("--workers", type=number_in(int, 1, 32, "a whole number"), default=4,
                   help="parallel downloads, 1 to 32 (default %(default)s)")

    p = sub.add_parser("features", help="per-track audio descriptors (tempo, loudness, timbre, MFCCs, vocals) to CSV")
    p.add_argument("input", type=existing_path, help="folder <label>/<file>, catalog CSV, or a prepared store")
    p.add_argument("--out", type=named_path, required=True, help="CSV to write (rerun to resume or update)")
    p.add_argument("--workers", type=process_count, default=None, help="processes (default: all cores)")
    add_scheduler_option(p)


@command("synth")
def _cmd_synth(args: argparse.Namespace) -> int:
    from dancegenre.data.synth import synthesize

    catalog = synthesize(args.out, per_genre=args.per_genre, seed=args.seed, fmt=args.format,
                         workers=args.workers, artists_per_genre=args.artists,
                         progress=not args.quiet)
    print(f"wrote {2 * args.per_genre} clips and {catalog}")
    return 0


@command("prepare")
def _cmd_prepare(args: argparse.Namespace) -> int:
    from dancegenre.data.store import prepare

    s = prepare(args.input, args.out, config=_feature_config(args), workers=args.workers,
                progress=not args.quiet, scheduler=args.scheduler, shard_items=args.shard_items)
    labels = ", ".join(f"{k} {v}" for k, v in s.labels.items())
    print(f"store {s.out}: {s.items - s.skipped} items ({labels}), {s.segments} segments; "
          f"{s.prepared} prepared, {s.reused} reused, {s.skipped} skipped"
          + (f" (reasons in {Path(s.out) / 'failures.csv'})" if s.skipped else "")
          + f"; {s.seconds:.1f} s, {s.items_per_second:.1f} files/s")
    return 0


@command("collect")
def _cmd_collect(args: argparse.Namespace) -> int:
    from dancegenre.data.collect import collect_deezer, collect_spotify

    if args.service == "spotify" and args.playlist in ("login", "logout"):
        from dancegenre.data.collect import login

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


@command("features")
def _cmd_features(args: argparse.Namespace) -> int:
    from dancegenre.research.descriptors import describe_files

    table, failures = describe_files(args.input, args.out, workers=args.workers, progress=not args.quiet,
                                     scheduler=args.scheduler)
    print(f"{len(table)} tracks described into {args.out}; {len(failures)} skipped"
          + (f" (reasons in {args.out.with_name(args.out.stem + '.failures.csv')})" if len(failures) else ""))
    return 0
