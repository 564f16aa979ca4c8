"""The ``dancegenre`` command line: one subcommand per stage.

User mistakes (a missing file, a bad option, a store from another config) end with one
line on stderr and exit code 2; Ctrl-C with exit code 130.  Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dancegenre import __version__
from dancegenre.config import FeatureConfig
from dancegenre.errors import DanceGenreError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn
    return register


def _number(cast: Callable[[str], float], low: float, high: float, what: str) -> Callable[[str], float]:
    """An argparse type: ``cast`` the text and require ``low <= value <= high``."""
    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not low <= value <= high:
            bounds = f"at least {low:g}" if high == float("inf") else f"between {low:g} and {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    return parse


positive_int = _number(int, 1, float("inf"), "a whole number")
probability = _number(float, 0.0, 1.0, "a number")


def scheduler_name(text: str) -> str:
    from dancegenre.errors import ConfigError
    from dancegenre.scheduler import check_scheduler

    try:
        return check_scheduler(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_scheduler_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", type=scheduler_name, default="processes",
                   help="where the files are decoded: processes (local cores, default), dask-local "
                        "(a Dask LocalCluster of --workers processes) or a Dask scheduler address, "
                        "e.g. tcp://10.0.0.5:8786")


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text}")
    return path


def _add_feature_options(p: argparse.ArgumentParser) -> None:
    from dancegenre.config import FRONTENDS

    d = FeatureConfig()
    g = p.add_argument_group("feature config (stored with the output; later stages read it back)")
    g.add_argument("--frontend", choices=list(FRONTENDS), default="study",
                   help="a preset: study (22,050 Hz, 128 bands, dB; default) or musicnn (16 kHz, 96 bands, "
                        "log10(1+10000 mel), 187-frame segments: what musicnn-msd/-mtt take); the options "
                        "below change single values of it")
    g.add_argument("--sample-rate", type=positive_int, default=None, help=f"Hz (study: {d.sample_rate})")
    g.add_argument("--n-fft", type=positive_int, default=None, help=f"STFT size (study: {d.n_fft})")
    g.add_argument("--hop-length", type=positive_int, default=None, help=f"STFT hop (study: {d.hop_length})")
    g.add_argument("--n-mels", type=positive_int, default=None, help=f"mel bands (study: {d.n_mels})")
    g.add_argument("--segment-frames", type=positive_int, default=None,
                   help=f"frames per segment (study: {d.segment_frames} = 2.97 s; musicnn: 187 = 3 s)")
    g.add_argument("--segment-hop", type=positive_int, default=None,
                   help="frames between segment starts; smaller overlaps (default: --segment-frames)")


def _feature_config(args: argparse.Namespace) -> FeatureConfig:
    names = ("sample_rate", "n_fft", "hop_length", "n_mels", "segment_frames", "segment_hop")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if "segment_frames" in overrides and "segment_hop" not in overrides:
        overrides["segment_hop"] = overrides["segment_frames"]
    return FeatureConfig.preset(args.frontend, **overrides)


def _with_parents(add_parser: Callable, common: argparse.ArgumentParser) -> Callable:
    def add(name: str, **kwargs: object) -> argparse.ArgumentParser:
        return add_parser(name, parents=[common], **kwargs)
    return add


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dancegenre",
        description="Tell dance-music genres apart from audio: corpus -> prepare -> train -> "
                    "evaluate -> predict.",
    )
    parser.add_argument("--version", action="version", version=f"dancegenre {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Every subcommand takes -q after its name: `dancegenre prepare -q IN OUT`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub.add_parser = _with_parents(sub.add_parser, common)  # type: ignore[method-assign]

    p = sub.add_parser("synth", help="write a synthetic techno/EDM corpus with a catalog.csv")
    p.add_argument("out", type=Path, help="output folder: OUT/<genre>/<id>.<format>, OUT/catalog.csv")
    p.add_argument("--per-genre", type=positive_int, default=100, help="clips per genre (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--format", choices=["mp3", "wav", "flac", "ogg"], default="mp3",
                   help="audio format (default %(default)s; flac/wav encode faster)")
    p.add_argument("--artists", type=positive_int, default=None,
                   help="artists per genre (default: one per 6 clips, at least 2)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")

    p = sub.add_parser("prepare", help="decode audio into a memory-mapped log-mel segment store")
    p.add_argument("input", type=existing_path, help="folder laid out as <label>/<file>, or a catalog CSV with path,label")
    p.add_argument("out", type=Path, help="store folder (created; rerun to resume or update)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--shard-items", type=positive_int, default=None,
                   help="files per shard a worker writes (default: 1-64, several shards per worker)")
    add_scheduler_option(p)
    _add_feature_options(p)

    from dancegenre import (  # the later stages register their own parsers
        cli_pretrained,
        cli_research,
        cli_stages,
    )

    cli_stages.add_parsers(sub)
    cli_research.add_parsers(sub)
    cli_pretrained.add_parsers(sub)
    return parser


@command("synth")
def _cmd_synth(args: argparse.Namespace) -> int:
    from dancegenre.synth import synthesize

    catalog = synthesize(args.out, per_genre=args.per_genre, seed=args.seed, fmt=args.format,
                         workers=args.workers, artists_per_genre=args.artists,
                         progress=not args.quiet)
    print(f"wrote {2 * args.per_genre} clips and {catalog}")
    return 0


@command("prepare")
def _cmd_prepare(args: argparse.Namespace) -> int:
    from dancegenre.dataset import prepare

    s = prepare(args.input, args.out, config=_feature_config(args), workers=args.workers,
                progress=not args.quiet, scheduler=args.scheduler, shard_items=args.shard_items)
    labels = ", ".join(f"{k} {v}" for k, v in s.labels.items())
    print(f"store {s.out}: {s.items - s.skipped} items ({labels}), {s.segments} segments; "
          f"{s.prepared} prepared, {s.reused} reused, {s.skipped} skipped"
          + (f" (reasons in {Path(s.out) / 'failures.csv'})" if s.skipped else "")
          + f"; {s.seconds:.1f} s, {s.items_per_second:.1f} files/s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("dancegenre: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DanceGenreError as exc:
        from dancegenre.errors import Interrupted

        print(f"dancegenre {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(exc, Interrupted) else EXIT_USAGE
    except OSError as exc:
        # The file system said no (permission, disk full, a file where a folder should
        # be): the user's environment, not a bug.  One line, as for any input error.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"dancegenre {args.command}: error: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return EXIT_USAGE


def one_line(text: str) -> str:
    """``text`` on one line: a message may quote input that holds line breaks."""
    return " ".join(text.split("\n")).replace("\r", " ")


__all__ = ["command", "main"]
