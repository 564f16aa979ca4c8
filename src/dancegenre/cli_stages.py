"""Parsers of the stages after prepare (train, evaluate, predict, demo)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the later stages' subcommands on ``sub``."""
