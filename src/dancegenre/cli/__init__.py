"""The ``dancegenre`` command line."""

from dancegenre.cli.parser import main

__all__ = ["main"]
