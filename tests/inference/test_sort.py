"""--sort-into against hostile destinations: links out of the target, names already
taken (a dangling link included), a kill in the middle of a copy."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dancegenre.inference import sort
from dancegenre.inference.classifier import Prediction
from dancegenre.inference.sort import sort_into


def pred(path: Path, genre: str = "techno", p: float = 0.9) -> Prediction:
    return Prediction(str(path), genre, {genre: p, "other": 1 - p}, pd.DataFrame())


def source(folder: Path, name: str = "a.flac", data: bytes = b"audio " * 1000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def visible(folder: Path) -> list[str]:
    """The names in ``folder`` a user sees (our temporaries start with a dot)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("move", [False, True])
def test_a_destination_folder_that_is_a_link_is_refused(tmp_path, move):
    a, b, c = (source(tmp_path / "src", n) for n in ("a.flac", "b.flac", "c.flac"))
    target = tmp_path / "sorted"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "_unsure").symlink_to(elsewhere)  # out of the target
    (target / "techno").symlink_to(elsewhere)
    (target / "house").mkdir()
    (target / "edm").symlink_to(target / "house")  # a link inside it is a link too
    acts = sort_into([pred(a, "techno"), pred(b, "techno", 0.3), pred(c, "edm")], target, move=move,
                     min_confidence=0.5)
    assert [x.action for x in acts] == ["skip"] * 3
    assert all("is a link" in x.reason and "the source was kept" in x.reason for x in acts)
    assert not list(elsewhere.iterdir()) and not list((target / "house").iterdir())
    assert a.exists() and b.exists() and c.exists()
    plan = sort_into([pred(a, "techno")], target, dry_run=True)
    assert plan[0].action == "skip" and "is a link" in plan[0].reason


@pytest.mark.parametrize("move", [False, True])
def test_a_kill_during_a_copy_leaves_no_partial_file_under_the_name(tmp_path, move):
    data = os.urandom(300_000)
    a = source(tmp_path / "src", "a.flac", data)
    target = tmp_path / "sorted"
    script = f"""
import os, shutil, signal
import pandas as pd
from dancegenre.inference.classifier import Prediction
from dancegenre.inference.sort import sort_into

def killed_halfway(src, dst, *args):
    dst.write(src.read(1000))
    dst.flush()
    os.kill(os.getpid(), signal.SIGKILL)

shutil.copyfileobj = killed_halfway
sort_into([Prediction({str(a)!r}, "techno", {{"techno": 0.9, "edm": 0.1}}, pd.DataFrame())], {str(target)!r},
          move={move})
"""
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == -9
    assert visible(target / "techno") == [] and a.read_bytes() == data
    acts = sort_into([pred(a)], target, move=move)  # the rerun
    assert acts[0].destination == str(target / "techno" / "a.flac")
    assert visible(target / "techno") == ["a.flac"] and (target / "techno" / "a.flac").read_bytes() == data
    assert a.exists() != move


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_taken_name_is_passed_over_and_a_dangling_link_never_written_through(tmp_path, monkeypatch, hard_links):
    if not hard_links:  # a file system without them (FAT, exFAT): the name is made exclusively
        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(sort.os, "link", no_link)
    a = source(tmp_path / "src", "a.mp3", b"new")
    folder = tmp_path / "sorted" / "techno"
    folder.mkdir(parents=True)
    nowhere = tmp_path / "nowhere.mp3"
    (folder / "a.mp3").symlink_to(nowhere)
    (folder / "a-1.mp3").write_bytes(b"the user's")
    plan = sort_into([pred(a)], tmp_path / "sorted", dry_run=True)
    assert plan[0].destination == str(folder / "a-2.mp3")
    (folder / "a-2.mp3").write_bytes(b"another run's")  # taken after the plan: passed over all the same
    acts = sort_into([pred(a)], tmp_path / "sorted", move=True)
    assert acts[0].action == "move" and acts[0].destination == str(folder / "a-3.mp3")
    assert (folder / "a-3.mp3").read_bytes() == b"new" and not a.exists()
    assert (folder / "a.mp3").is_symlink() and not nowhere.exists()
    assert (folder / "a-1.mp3").read_bytes() == b"the user's" and (folder / "a-2.mp3").read_bytes() == b"another run's"
    assert visible(folder) == ["a-1.mp3", "a-2.mp3", "a-3.mp3", "a.mp3"] and not [
        p for p in folder.iterdir() if p.name.endswith(".part")]


def test_two_names_taken_at_once_in_one_folder(tmp_path):
    a, b = source(tmp_path / "x", "t.flac", b"one"), source(tmp_path / "y", "t.flac", b"two")
    acts = sort_into([pred(a), pred(b)], tmp_path / "s")
    assert [x.destination for x in acts] == [str(tmp_path / "s" / "techno" / n) for n in ("t.flac", "t-1.flac")]
    assert (tmp_path / "s" / "techno" / "t-1.flac").read_bytes() == b"two"
