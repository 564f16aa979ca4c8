"""The ``dancegenre`` command line: the parser over every command group, and ``main``.

User mistakes (a missing file, a bad option, a store from another config) end with one
line on stderr and exit code 2; Ctrl-C with exit code 130.  Anything else is a bug and
keeps its traceback.  The groups only parse arguments and call the library.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from dancegenre import __version__
from dancegenre.cli import data, model, pretrained, research
from dancegenre.cli.common import (
    COMMANDS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    _with_parents,
    one_line,
)
from dancegenre.errors import DanceGenreError


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

    for group in (data, model, pretrained, research):
        group.add_parsers(sub)
    return parser


class PrintableOut:
    """Standard output that shows control characters, lone surrogates (undecodable
    bytes of a file name) and the like as escapes (:func:`~dancegenre.safety.one_line_text`),
    the line breaks and tabs of our own tables aside: a file name or tag printed in a
    table or a list can never drive the terminal nor stop the command.  Progress bars go
    to stderr and keep theirs; a name printed alone goes through ``one_line``, which
    escapes its line breaks too."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write("".join(part if part in "\n\t" else one_line(part) for part in _LAYOUT.split(text)))
        return len(text)

    def __getattr__(self, name: str) -> object:  # flush, isatty, encoding...: the stream's own
        return getattr(self._stream, name)


_LAYOUT = re.compile(r"([\n\t])")  # the characters of our own layout, kept as they are


def main(argv: Sequence[str] | None = None) -> int:
    from dancegenre.safety import releasing

    stdout = sys.stdout
    sys.stdout = PrintableOut(stdout)  # type: ignore[assignment]
    try:
        return releasing(_main)(argv)  # the folders a command locked are let go when it ends
    finally:
        sys.stdout = stdout


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    from dancegenre.data.scheduler import keep_heap

    keep_heap()  # every command that decodes runs a file's front end here or in forked workers
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
        where = f": {one_line(str(exc.filename))}" if exc.filename else ""
        print(f"dancegenre {args.command}: error: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return EXIT_USAGE


__all__ = ["build_parser", "main"]
