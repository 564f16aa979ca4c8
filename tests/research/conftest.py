"""Fixtures of the research tests: a tiny experiment, run once for the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from dancegenre.cli.parser import main

SPEC = """
name = "tiny"
folds = 2
seeds = [0]
mode = "grid"
[base]
epochs = 1
batch_size = 32
filters = [8, 8, 8]
dense = 16
split_by = "track_id"
[factors]
pooling = ["max", "avg"]
"""


@pytest.fixture(scope="session")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="session")
def finished(spec, corpus_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "exp"
    assert main(["experiment", "-q", str(spec), "--store", str(corpus_store), "--out", str(out), "--jobs", "2"]) == 0
    return out
