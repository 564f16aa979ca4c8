"""The shared safety mechanisms of :mod:`dancegenre.safety`, case by case: folder
ownership, folder locks, temporary files, tables of ours, CSV cells and labels."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from dancegenre import safety
from dancegenre.errors import LabelError, OutputError
from dancegenre.safety import (
    LOCK,
    MARKER,
    atomic_write,
    check_labels,
    check_output_file,
    claim_folder,
    csv_text,
    holding,
    read_table,
    remove_ours,
)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- folder ownership

def test_one_familiar_name_does_not_make_a_folder_ours(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "store.json").write_text("{}")
    (user / "notes.txt").write_text("mine")
    before = files_in(user)
    with pytest.raises(OutputError, match="did not make"):
        claim_folder(user, "store", legacy=("store.json", "config.json"), legacy_others=("summary.json",))
    assert files_in(user) == before and not (user / MARKER).exists()


def test_a_pre_marker_folder_is_known_by_its_complete_set(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("store.json", "config.json", "summary.json"):
        (old / name).write_text("{}")
    with holding(old, "store", legacy=("store.json", "config.json"), legacy_others=("summary.*",)) as folder:
        assert json.loads((folder / MARKER).read_text()) == {"kind": "store"}
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "store.json").write_text("{}")  # one of the two required names
    with pytest.raises(OutputError, match="did not make"):
        claim_folder(partial, "store", legacy=("store.json", "config.json"))


def test_a_planted_link_is_no_marker_and_no_folder_of_ours(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.txt").write_text("mine")
    user = tmp_path / "user"
    user.mkdir()
    (user / "a.txt").write_text("a")
    marker_file = tmp_path / "marker.json"
    marker_file.write_text(json.dumps({"kind": "store"}))
    (user / MARKER).symlink_to(marker_file)
    with pytest.raises(OutputError, match="did not make"):
        claim_folder(user, "store")
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="is a link"):
        claim_folder(tmp_path / "link", "store")
    assert (elsewhere / "mine.txt").read_text() == "mine"


def test_nothing_is_removed_from_a_folder_without_our_marker(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "rows.jsonl").write_text("mine")
    remove_ours(user, ["rows.jsonl", "*"])
    assert (user / "rows.jsonl").read_text() == "mine"
    with holding(tmp_path / "ours", "journal") as ours:
        (ours / "rows.jsonl").write_text("{}")
        (ours / "notes.txt").write_text("a user's")
        (ours / "sub").mkdir()
        remove_ours(ours, ["rows.jsonl", "*.txt.part"])
        assert sorted(p.name for p in ours.iterdir()) == sorted([MARKER, LOCK, "notes.txt", "sub"])
    with holding(tmp_path / "empty-after", "journal") as ours:
        (ours / "rows.jsonl").write_text("{}")
        remove_ours(ours, ["rows.jsonl"])
    assert not (tmp_path / "empty-after").exists()


# ---------------------------------------------------------------- folder locks

HOLDER = textwrap.dedent("""
    import sys, time
    from dancegenre.safety import claim_folder
    claim_folder(sys.argv[1], "store")
    print("held", flush=True)
    time.sleep(60)
""")


def test_a_folder_in_use_is_refused_naming_the_process(tmp_path):
    folder = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"in use by process {holder.pid} "):
            claim_folder(folder, "store")
        with pytest.raises(OutputError, match="in use by process"):
            claim_folder(folder, "store", create=False)  # the early check says so too
    finally:
        holder.kill()
        holder.wait()
    with holding(folder, "store"):  # the lock ends with its process
        pass


def test_the_lock_is_let_go_when_a_library_call_ends(tmp_path):
    @safety.releasing
    def work(out):
        claim_folder(out, "store")
        assert os.path.realpath(out) in safety._HELD

    work(tmp_path / "a")
    assert os.path.realpath(tmp_path / "a") not in safety._HELD


# ---------------------------------------------------------------- temporary files

def test_a_planted_link_at_the_old_temporary_name_is_never_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    crate = tmp_path / "crate"
    crate.mkdir()
    (crate / ".out.csv.part").symlink_to(victim)
    atomic_write(crate / "out.csv", "a,b\n")
    assert victim.read_text() == "precious"
    assert (crate / "out.csv").read_text() == "a,b\n" and not (crate / "out.csv").is_symlink()
    assert [p.name for p in crate.iterdir() if p.name.endswith(".part")] == [".out.csv.part"]  # only the plant


def test_temporaries_are_random_exclusive_and_keep_the_mode(tmp_path, monkeypatch):
    names = []
    real = safety.tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        names.append(name)
        return fd, name

    monkeypatch.setattr(safety.tempfile, "mkstemp", spy)
    target = tmp_path / "t.txt"
    atomic_write(target, "one")
    os.chmod(target, 0o640)
    atomic_write(target, "two")
    assert len(set(names)) == 2 and all(Path(n).parent == tmp_path for n in names)
    assert target.read_text() == "two" and (target.stat().st_mode & 0o777) == 0o640


def test_a_full_disk_names_the_file(tmp_path):
    target = tmp_path / "results.json"
    with pytest.raises(OSError) as caught:
        with safety.atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no temporary left


# ---------------------------------------------------------------- tables and CSV cells

def test_a_table_replaces_only_a_table_of_ours(tmp_path):
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("path,label\na.mp3,techno\n")
    with pytest.raises(OutputError, match="not a table made by dancegenre"):
        check_output_file(catalog, columns=("path", "genre", "confidence"))
    ours = tmp_path / "ours.csv"
    ours.write_text("path,genre,confidence\n")
    assert check_output_file(ours, columns=("path", "genre", "confidence")) == ours
    lines = tmp_path / "p.jsonl"
    lines.write_text(json.dumps({"path": "a", "genre": "x", "confidence": 1}) + "\n")
    check_output_file(lines, columns=("path", "genre", "confidence"))
    notes = tmp_path / "notes.json"
    notes.write_text('{\n  "mine": 1\n}\n')
    with pytest.raises(OutputError):
        check_output_file(notes, columns=("split",))


def test_formula_cells_are_written_inert_and_read_back_whole():
    table = pd.DataFrame({"artist": ["=HYPERLINK(\"http://x\")", "+1+1", "-M-", "@sum", "'quoted", "plain", None],
                          "p": [0.5, -0.25, 1.0, 0.0, 0.1, 0.2, 0.3]})
    text = csv_text(table)
    cells = [line.split(",")[0] for line in text.splitlines()[1:]]
    assert all(not c.startswith(("=", "+", "-", "@")) for c in cells)
    assert "-0.25" in text  # numbers stay numbers
    back = read_table(io.StringIO(text))
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


@pytest.mark.parametrize("labels, needle", [
    (["techno", "TECHNO"], "differ only in case"),
    (["edm."], "reserved"),
    (["=cmd"], "formula"),
    (["-hard"], "formula"),
])
def test_labels_that_collide_or_run_are_refused(labels, needle):
    with pytest.raises(LabelError, match=needle):
        check_labels(labels, "a test")


def test_control_characters_are_shown_as_escapes():
    assert safety.one_line_text("a\x1b[31mb\nc\x00") == "a\\x1b[31mb\\nc\\x00"


def test_a_journal_never_appends_through_a_planted_link(tmp_path):
    from dancegenre.data.jobs import Journal

    victim = tmp_path / "victim"
    victim.write_text("precious")
    journal = Journal(tmp_path / "out.csv", "predict-journal")
    (journal.folder / "rows.jsonl").symlink_to(victim)
    with pytest.raises(OSError), journal.writer() as add:
        add({"key": "k"})
    assert victim.read_text() == "precious"
    safety.release_folder(journal.folder)


def test_nothing_is_removed_from_a_folder_another_command_holds_nor_through_a_link(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (folder / "results.json").write_text("{}")
        with pytest.raises(OutputError, match="in use by process"):
            remove_ours(folder, ["results.json"])
        assert (folder / "results.json").exists() and (folder / LOCK).exists()
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / "link").symlink_to(folder)
    remove_ours(tmp_path / "link", ["results.json"])
    assert (folder / "results.json").exists()


def test_a_folder_holding_only_our_lock_is_empty_and_shards_alone_are_a_pending_folder(tmp_path):
    from dancegenre.data.store import PENDING_EXTRA

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / LOCK).write_text("")
    with holding(crashed, "playlists"):
        pass
    pending = tmp_path / "pending"  # an interrupted prepare of a version before its marker
    pending.mkdir()
    for name in ("0123456789abcdef.f16", "0123456789abcdef.json", ".0123456789abcdef.f16.part"):
        (pending / name).write_text("")
    with holding(pending, "store-pending", legacy_others=PENDING_EXTRA):
        pass
    (pending / "config.json").write_text("mine")
    with pytest.raises(OutputError):
        claim_folder(pending, "journal", legacy_others=PENDING_EXTRA)


def test_numbers_as_text_are_not_formulas():
    table = pd.DataFrame({"loudness": ["-5.5", "-12", "+3e-2", "-x"]})
    assert csv_text(table).splitlines()[1:] == ["-5.5", "-12", "+3e-2", "'-x"]


def test_an_empty_output_is_replaced(tmp_path):
    empty = tmp_path / "t.csv"
    empty.write_text("\n")  # what a table with no row and no column writes
    assert check_output_file(empty, columns=("path", "start")) == empty


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_a_rewritten_file_keeps_its_owner_and_group(tmp_path):
    target = tmp_path / "shared.txt"
    target.write_text("old")
    os.chown(target, 65534, 65534)
    atomic_write(target, "new")
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534) and target.read_text() == "new"


def test_standard_output_never_carries_what_drives_a_terminal():
    from dancegenre.cli.parser import PrintableOut

    buf = io.StringIO()
    PrintableOut(buf).write("name\x1b[2J\udcff\tok\n")
    assert buf.getvalue() == "name\\x1b[2J\\udcff\tok\n"
