"""Genre tags (mutagen) with an undo journal, M3U8 and rekordbox playlists, top-k verdicts."""

from __future__ import annotations

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlparse

import mutagen
import numpy as np
import pandas as pd
import pytest
from mutagen.aiff import AIFF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, TCON, TDAT, TIT2, TPE1, TSOP, TYER
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from dancegenre.audio.decode import load
from dancegenre.cli.parser import main
from dancegenre.errors import OutputError
from dancegenre.inference.classifier import Prediction
from dancegenre.inference.library import (
    FIELD,
    check_playlists_folder,
    untag,
    write_playlists,
    write_tags,
)
from dancegenre.safety import LOCK, MARKER, holding, read_table
from tests.conftest import tone, write, write_m4a

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def tagged_file(folder: Path, fmt: str, name: str = "track") -> Path:
    """A 4-second file of ``fmt`` with an artist, a title, an old genre and a cover."""
    y = tone(4.0, 44100, channels=2, seed=hash(fmt) % 100)
    if fmt == "m4a":
        path = write_m4a(folder / f"{name}.m4a", y, 44100)
        f = MP4(str(path))
        f["\xa9ART"], f["\xa9nam"], f["\xa9gen"] = ["DJ Test"], ["Night Drive"], ["Old Genre"]
        f["covr"] = [MP4Cover(PNG, imageformat=MP4Cover.FORMAT_PNG)]
        f.save()
        return path
    if fmt == "opus":
        import soundfile as sf

        path = folder / f"{name}.opus"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), tone(4.0, 48000, channels=2), 48000, format="OGG", subtype="OPUS")
    else:
        path = write(folder / f"{name}.{fmt}", y, 44100, {"mp3": "MP3", "flac": "FLAC", "ogg": "OGG", "aiff": "AIFF"}[fmt])
    if fmt in ("mp3", "aiff"):
        tags = ID3()
        tags.add(TPE1(encoding=3, text=["DJ Test"]))
        tags.add(TIT2(encoding=3, text=["Night Drive"]))
        tags.add(TCON(encoding=3, text=["Old Genre"]))
        tags.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=PNG))
        if fmt == "aiff":
            f = AIFF(str(path))
            f.add_tags()
            for frame in tags.values():
                f.tags.add(frame)
            f.save()
        else:
            tags.save(str(path))
        return path
    pic = Picture()
    pic.type, pic.mime, pic.data = 3, "image/png", PNG
    f = FLAC(str(path)) if fmt == "flac" else OggVorbis(str(path)) if fmt == "ogg" else OggOpus(str(path))
    f["artist"], f["title"], f["genre"] = ["DJ Test"], ["Night Drive"], ["Old Genre"]
    if fmt == "flac":
        f.add_picture(pic)
    else:
        f["metadata_block_picture"] = [base64.b64encode(pic.write()).decode()]
    f.save()
    return path


def all_tags(path: Path) -> dict[str, object]:
    """Every tag of a file, comparable: key -> value (bytes for pictures)."""
    f = mutagen.File(str(path))
    out = {}
    for key, value in (f.tags or {}).items():
        if hasattr(value, "data"):
            out[key] = bytes(value.data)
        elif isinstance(value, list):
            out[key] = [bytes(v) if isinstance(v, (bytes, MP4Cover)) else str(v) for v in value]
        else:
            out[key] = str(value)
    if isinstance(f, FLAC):
        out["pictures"] = [p.data for p in f.pictures]
    return out


def verdict(path: Path, genre: str = "techno", p: float = 0.8) -> Prediction:
    st = path.stat()
    other = "edm" if genre != "edm" else "techno"
    return Prediction(str(path), genre, {genre: p, other: 1 - p}, pd.DataFrame(), stamp=(st.st_size, st.st_mtime_ns))


def genres_of(path: Path) -> list[str]:
    f = mutagen.File(str(path))
    t = f.tags
    if t is None:
        return []
    if isinstance(t, ID3) or isinstance(f, AIFF):
        return list(t["TCON"].text) if "TCON" in t else []
    if isinstance(f, MP4):
        return list(t.get("\xa9gen", []))
    return list(t.get("GENRE", []))


@pytest.mark.parametrize("fmt", ["mp3", "aiff", "flac", "ogg", "opus", "m4a"])
def test_tags_round_trip_keep_audio_and_other_tags_and_untag(tmp_path, fmt):
    path = tagged_file(tmp_path, fmt)
    before_tags, before_audio = all_tags(path), load(path, sr=22050)
    journal = tmp_path / "journal.csv"
    actions = write_tags([verdict(path)], journal=journal, top_k=2, model_id="cnn1d:test")
    assert [a.action for a in actions] == ["write"], actions
    assert genres_of(path) == ["techno"]
    after = all_tags(path)
    field = next(v for k, v in after.items() if FIELD.lower() in str(k).lower())
    field = json.loads(field[0] if isinstance(field, list) else field)
    assert field["genre"] == "techno" and field["top"][0] == ["techno", 0.8] and field["model"] == "cnn1d:test"
    kept = {k: v for k, v in before_tags.items() if "gen" not in str(k).lower() and k != "TCON"}
    assert all(after[k] == v for k, v in kept.items()), "another tag or the cover changed"
    assert np.array_equal(load(path, sr=22050), before_audio)  # the audio is untouched
    assert not list(tmp_path.glob(".*.part"))  # no temporary copy left
    # undo: every tag as it was
    assert [a.action for a in untag(journal)] == ["restore"]
    assert all_tags(path) == before_tags
    assert np.array_equal(load(path, sr=22050), before_audio)


def test_tag_modes_confidence_top_k_and_dry_run(tmp_path):
    a, b, c = (tagged_file(tmp_path, "flac", name) for name in ("a", "b", "c"))
    FLAC(str(c)).delete()  # no tags at all
    journal = tmp_path / "j.csv"
    plan = write_tags([verdict(a)], journal=None, dry_run=True)
    assert plan[0].action == "write" and genres_of(a) == ["Old Genre"] and not journal.exists()
    acts = write_tags([verdict(a, p=0.55), verdict(b, p=0.4), verdict(c)], journal=journal, mode="append",
                      min_confidence=0.3, top_k=2)
    assert [x.action for x in acts] == ["write", "write", "write"]
    assert genres_of(a) == ["Old Genre", "techno", "edm"]  # both above 0.3, appended
    assert genres_of(b) == ["Old Genre", "edm", "techno"]  # edm 0.6 first
    assert genres_of(c) == ["techno"]  # edm 0.2 is below 0.3
    low = write_tags([verdict(a, p=0.5)], journal=journal, min_confidence=0.9)
    assert low[0].action == "skip" and "below --min-confidence" in low[0].reason
    only = write_tags([verdict(a)], journal=journal, mode="only-empty")
    assert only[0].action == "skip" and "already has a genre" in only[0].reason
    # undo restores the first values, last write first
    untag(journal)
    assert genres_of(a) == ["Old Genre"] and genres_of(b) == ["Old Genre"] and genres_of(c) == []


def test_files_that_changed_are_gone_or_cannot_hold_a_genre_are_skipped(tmp_path):
    a = tagged_file(tmp_path, "mp3", "a")
    wav = write(tmp_path / "w.wav", tone(4.0, 22050), 22050)
    p = verdict(a)
    os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched after scoring
    gone = verdict(tagged_file(tmp_path, "flac", "gone"))
    Path(gone.source).unlink()
    acts = write_tags([p, verdict(wav), gone], journal=tmp_path / "j.csv")
    reasons = [x.reason for x in acts]
    assert [x.action for x in acts] == ["skip"] * 3
    assert "changed since it was scored" in reasons[0] and "no genre tag in this container" in reasons[1]
    assert "gone" in reasons[2]
    assert genres_of(a) == ["Old Genre"] and not (tmp_path / "j.csv").exists()


def test_a_kill_during_a_batch_leaves_every_file_old_or_new(tmp_path):
    files = [tagged_file(tmp_path, "flac", f"t{k:02d}") for k in range(30)]
    before = load(files[0], sr=22050)
    script = f"""
import sys, pandas as pd, os
from pathlib import Path
from dancegenre.inference.classifier import Prediction
from dancegenre.inference.library import write_tags
paths = sorted(Path({str(tmp_path)!r}).glob("t*.flac"))
for round in range(1000):
    g = "techno" if round % 2 == 0 else "edm"
    preds = [Prediction(str(p), g, {{g: 0.9, "x": 0.1}}, pd.DataFrame()) for p in paths]
    write_tags(preds, journal={str(tmp_path / 'j.csv')!r})
    print("round", round, flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # a whole round done: now kill it in the middle of the next ones
    time.sleep(0.35)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for f in files:
        assert genres_of(f) in (["Old Genre"], ["techno"], ["edm"]), f
        assert np.array_equal(load(f, sr=22050), before)  # decodes, the same samples
    rows = read_table(tmp_path / "j.csv", dtype=object).to_dict("records")
    assert rows and all(r["path"] for r in rows)


def test_playlists_m3u8_and_rekordbox_xml(tmp_path):
    music = tmp_path / "My Music #1" / "Ünïcode crate"
    music.mkdir(parents=True)
    a = tagged_file(music, "mp3", "first track")
    b = tagged_file(music, "flac", "zweite#spur")
    c = tagged_file(music, "ogg", "unsure one")
    preds = [verdict(a, "techno", 0.9), verdict(b, "edm", 0.8), verdict(c, "edm", 0.55),
             Prediction(str(music / "bad.mp3"), None, {}, pd.DataFrame(), error="not audio")]
    out = tmp_path / "lists"
    files = write_playlists(preds, out, min_confidence=0.6)
    assert sorted(f.name for f in files) == ["_unsure.m3u8", "edm.m3u8", "rekordbox.xml", "techno.m3u8"]
    text = (out / "techno.m3u8").read_text(encoding="utf-8")
    assert text.startswith("#EXTM3U\n#EXTINF:4,DJ Test - Night Drive\n")
    for name, expected in (("techno", [a]), ("edm", [b]), ("_unsure", [c])):
        lines = (out / f"{name}.m3u8").read_text(encoding="utf-8").splitlines()
        paths = [(out / line).resolve() for line in lines if not line.startswith("#")]
        assert paths == [p.resolve() for p in expected]
    root = ET.parse(out / "rekordbox.xml").getroot()
    assert root.tag == "DJ_PLAYLISTS"
    tracks = root.find("COLLECTION").findall("TRACK")
    assert root.find("COLLECTION").get("Entries") == "3" and len(tracks) == 3
    by_id = {t.get("TrackID"): t for t in tracks}
    for t in tracks:
        url = urlparse(t.get("Location"))
        assert (url.scheme, url.netloc) == ("file", "localhost")
        assert " " not in t.get("Location") and "#" not in t.get("Location")[len("file://localhost"):]
        assert Path(unquote(url.path)).exists()
    folder = root.find("PLAYLISTS").find("NODE").find("NODE")
    assert folder.get("Name") == "dancegenre" and folder.get("Type") == "0"
    playlists = {n.get("Name"): [by_id[k.get("Key")] for k in n.findall("TRACK")] for n in folder.findall("NODE")}
    assert set(playlists) == {"techno", "edm", "_unsure"}
    assert playlists["techno"][0].get("Genre") == "techno" and "0.90" in playlists["techno"][0].get("Comments")
    assert Path(unquote(urlparse(playlists["edm"][0].get("Location")).path)) == b.resolve()


def test_predict_write_tags_playlists_top_k_and_untag_from_the_cli(trained_run, tmp_path, capsys):
    crate = tmp_path / "crate"
    files = [tagged_file(crate, fmt) for fmt in ("mp3", "flac")]
    before = {f: all_tags(f) for f in files}
    journal = tmp_path / "tags.csv"
    code = main(["predict", "-q", str(trained_run), str(crate), "--write-tags", "--tag-journal", str(journal),
                 "--top-k", "2", "--playlists", str(tmp_path / "lists"), "--out", str(tmp_path / "r.csv")])
    out = capsys.readouterr().out
    assert code == 0 and "tagged 2 of 2 file(s)" in out and f"dancegenre untag {journal}" in out
    table = pd.read_csv(tmp_path / "r.csv")
    assert {"genre_2", "p_2"} <= set(table.columns)
    assert (table["confidence"] >= table["p_2"]).all()
    assert all(genres_of(f)[0] in ("edm", "techno") for f in files)
    assert (tmp_path / "lists" / "rekordbox.xml").exists()
    assert main(["untag", str(journal)]) == 0
    assert "restored 2 of 2" in capsys.readouterr().out
    assert {f: all_tags(f) for f in files} == before
    # one line for a journal that is not one
    assert main(["untag", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a dancegenre tag journal" in err[0]


# ---------------------------------------------------------------- links, temporaries, versions, journal

def raw_id3(path: Path) -> tuple[tuple[int, ...], dict[str, str]]:
    """(version, frame key -> repr) of a file's ID3 tag as it is in the file, not converted."""
    f = type(mutagen.File(str(path)))(str(path), translate=False)
    return tuple(f.tags.version), {key: repr(frame) for key, frame in f.tags.items()}


def test_a_link_planted_at_a_temporary_name_is_never_written_through(tmp_path):
    crate = tmp_path / "crate"
    a = tagged_file(crate, "mp3", "a")
    victim = tmp_path / "victim"
    victim.write_bytes(b"my own file")
    planted = crate / ".a.mp3.dancegenre-tags"  # the name the tagger used to write its copy under
    planted.symlink_to(victim)
    acts = write_tags([verdict(a)], journal=tmp_path / "j.csv")
    assert [x.action for x in acts] == ["write"]
    assert victim.read_bytes() == b"my own file" and planted.is_symlink()
    assert not a.is_symlink() and genres_of(a) == ["techno"]
    assert sorted(p.name for p in crate.iterdir()) == [".a.mp3.dancegenre-tags", "a.mp3"]


def test_a_symlinked_file_is_tagged_where_it_is_and_the_link_stays(tmp_path):
    store = tmp_path / "store"
    a = tagged_file(store, "flac", "a")
    before = all_tags(a)
    crate = tmp_path / "crate"
    crate.mkdir()
    link = crate / "a.flac"
    link.symlink_to(a)
    journal = tmp_path / "j.csv"
    acts = write_tags([verdict(link), verdict(a)], journal=journal)
    assert [x.action for x in acts] == ["write", "skip"] and acts[0].path == str(link)
    assert "the same file as" in acts[1].reason  # one file under two names: tagged once
    assert link.is_symlink() and os.readlink(link) == str(a)
    assert genres_of(a) == ["techno"]
    assert list(read_table(journal, dtype=object)["path"]) == [str(a.resolve())]  # the journal names the file
    assert [x.action for x in untag(journal)] == ["restore"]
    assert link.is_symlink() and os.readlink(link) == str(a) and all_tags(a) == before


def test_a_hard_linked_file_is_skipped_whole(tmp_path):
    a = tagged_file(tmp_path, "mp3", "a")
    b = tmp_path / "b.mp3"
    os.link(a, b)
    data, inode = a.read_bytes(), a.stat().st_ino
    journal = tmp_path / "j.csv"
    acts = write_tags([verdict(a)], journal=journal)
    assert acts[0].action == "skip" and "2 hard links" in acts[0].reason
    assert a.read_bytes() == data and a.stat().st_ino == b.stat().st_ino == inode and a.stat().st_nlink == 2
    assert not journal.exists()
    # linked after tagging: untag leaves it as it is too
    c = tagged_file(tmp_path, "flac", "c")
    assert write_tags([verdict(c)], journal=journal)[0].action == "write"
    os.link(c, tmp_path / "d.flac")
    data = c.read_bytes()
    acts = untag(journal)
    assert acts[0].action == "skip" and "hard links" in acts[0].reason
    assert c.read_bytes() == data and c.stat().st_nlink == 2


def id3v23_file(folder: Path, fmt: str) -> Path:
    """A file of ``fmt`` (mp3 or aiff) with an ID3v2.3 tag: v2.3-only frames (TYER, TDAT),
    an iTunes sort frame v2.3 lacks (TSOP), Latin-1 and UTF-16 text, two titles, a cover."""
    path = write(folder / f"old23.{fmt}", tone(4.0, 44100, channels=2), 44100, fmt.upper())
    tags = ID3()
    tags.add(TYER(encoding=0, text=["2001"]))
    tags.add(TDAT(encoding=0, text=["0304"]))
    tags.add(TSOP(encoding=1, text=["Test, DJ"]))
    tags.add(TCON(encoding=0, text=["Old Genre"]))
    tags.add(TIT2(encoding=1, text=["Night Drive", "Nachtfahrt"]))
    tags.add(APIC(encoding=0, mime="image/png", type=3, desc="cover", data=PNG))
    if fmt == "aiff":
        f = AIFF(str(path))
        f.add_tags()
        for frame in tags.values():
            f.tags.add(frame)
        f.save(v2_version=3, v23_sep=None)
    else:
        tags.save(str(path), v2_version=3, v23_sep=None)
    return path


@pytest.mark.parametrize("fmt", ["mp3", "aiff"])
def test_an_id3v23_tag_stays_v23_frame_for_frame(tmp_path, fmt):
    path = id3v23_file(tmp_path, fmt)
    version, before = raw_id3(path)
    assert version == (2, 3, 0) and "TYER" in before and "TSOP" in before
    journal = tmp_path / "j.csv"
    assert [x.action for x in write_tags([verdict(path)], journal=journal)] == ["write"]
    version, after = raw_id3(path)
    assert version == (2, 3, 0) and "TDRC" not in after
    assert after["TCON"] == repr(TCON(encoding=0, text=["techno"]))  # Latin-1 as it was
    ours = {"TCON", f"TXXX:{FIELD}"}
    assert {k: v for k, v in after.items() if k not in ours} == {k: v for k, v in before.items() if k not in ours}
    assert [x.action for x in untag(journal)] == ["restore"]
    assert raw_id3(path) == ((2, 3, 0), before)


@pytest.mark.parametrize("fmt", ["mp3", "flac"])
def test_untag_removes_the_tag_from_a_file_that_had_none(tmp_path, fmt):
    path = write(tmp_path / f"bare.{fmt}", tone(4.0, 44100), 44100, fmt.upper())
    if fmt == "flac":
        FLAC(str(path)).delete()
    assert mutagen.File(str(path)).tags is None
    data = path.read_bytes()
    journal = tmp_path / "j.csv"
    assert [x.action for x in write_tags([verdict(path)], journal=journal)] == ["write"]
    assert genres_of(path) == ["techno"]
    assert [x.action for x in untag(journal)] == ["restore"]
    assert mutagen.File(str(path)).tags is None
    if fmt == "mp3":
        assert path.read_bytes() == data  # the very bytes it had


def test_the_journal_keeps_exact_values_and_is_never_a_formula(tmp_path):
    # a name that is not UTF-8 (Latin-1 é), with a line break: the journal must find it again
    made = tagged_file(tmp_path, "flac", "t")
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"-caf\xe9\nmix.flac")))
    os.rename(made, path)
    f = FLAC(str(path))
    genres = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(1)", "'quoted"]
    f["genre"], f[FIELD] = genres, ["=cmd|' /C calc'!A0"]
    f.save()
    before = all_tags(path)
    journal = tmp_path / "j.csv"
    assert [x.action for x in write_tags([verdict(path)], journal=journal)] == ["write"]
    with open(journal, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        cells = [cell for row in csv.reader(fh) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    row = read_table(journal, dtype=object, keep_default_na=False, encoding_errors="surrogateescape").iloc[0]
    assert row["path"] == str(path) and json.loads(row["old_genre"]) == genres
    assert [x.action for x in untag(journal)] == ["restore"]
    assert all_tags(path) == before


# ---------------------------------------------------------------- playlists of hostile names and tags

def test_an_m3u8_entry_is_always_two_lines(tmp_path):
    music = tmp_path / "music"
    a = tagged_file(music, "mp3", "a")
    tags = ID3(str(a))
    tags.add(TIT2(encoding=3, text=["\n#EXTINF:1,x\n/etc/shadow"]))
    tags.add(TPE1(encoding=3, text=["DJ\u2028Test\r"]))
    tags.save(str(a))
    b = music / "b\nevil.flac"
    os.rename(tagged_file(music, "flac", "b"), b)
    out = tmp_path / "lists"
    files = write_playlists([verdict(a), verdict(b)], out)
    lines = (out / "techno.m3u8").read_text(encoding="utf-8").split("\n")
    assert lines == ["#EXTM3U", "#EXTINF:4,DJ\\u2028Test\\r - \\n#EXTINF:1,x\\n/etc/shadow", "../music/a.mp3", ""]
    assert files.left_out == [(str(b), files.left_out[0][1])] and "control character" in files.left_out[0][1]
    locations = [t.get("Location") for t in ET.parse(out / "rekordbox.xml").getroot().iter("TRACK") if t.get("Location")]
    assert len(locations) == 2  # the one an M3U8 cannot hold is in the collection


def test_rekordbox_xml_is_well_formed_whatever_the_names_and_tags(tmp_path):
    music = tmp_path / "music"
    a = music / "odd\x01\x1b\x0cname.mp3"
    os.rename(tagged_file(music, "mp3", "a"), a)
    tags = ID3(str(a))
    tags.add(TIT2(encoding=3, text=["ti\x01tle\x1b[31m\x0c"]))
    tags.add(TPE1(encoding=3, text=["art\x0bist"]))
    tags.save(str(a))
    latin = Path(os.fsdecode(os.path.join(os.fsencode(music), b"caf\xe9.flac")))
    os.rename(tagged_file(music, "flac", "b"), latin)
    f = FLAC(str(latin))
    del f["title"]  # its title is its file name then
    f.save()
    out = tmp_path / "lists"
    files = write_playlists([verdict(a), verdict(latin, "edm")], out)
    root = ET.parse(out / "rekordbox.xml").getroot()  # well-formed
    tracks = {t.get("TrackID"): t for t in root.find("COLLECTION").findall("TRACK")}
    by_file = {unquote_to_bytes(urlparse(t.get("Location")).path): t for t in tracks.values()}
    assert set(by_file) == {os.fsencode(a.resolve()), os.fsencode(latin.resolve())}
    first = by_file[os.fsencode(a.resolve())]
    assert first.get("Name") == "ti\\x01tle\\x1b[31m\\x0c" and first.get("Artist") == "art\\x0bist"
    assert by_file[os.fsencode(latin.resolve())].get("Name") == "caf\\udce9"
    assert sorted(reason for _, reason in files.left_out) == [
        "its path holds a line break or another control character, which an M3U8 line cannot hold",
        "its path is not valid UTF-8, which an M3U8 file cannot hold"]


def rekordbox_export(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rekordbox.xml"
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<DJ_PLAYLISTS Version="1.0.0">'
                    '<PRODUCT Name="rekordbox" Version="6.8.4" Company="AlphaTheta"/>'
                    '<COLLECTION Entries="0"/></DJ_PLAYLISTS>\n', encoding="utf-8")
    return path


def test_a_users_rekordbox_xml_is_never_taken_but_an_older_playlists_folder_of_ours_is(tmp_path):
    a = tagged_file(tmp_path / "music", "mp3", "a")
    export = tmp_path / "export"
    rekordbox_export(export)

    def snapshot(folder):
        return {p.name: p.read_bytes() for p in folder.iterdir()}

    before = snapshot(export)
    with pytest.raises(OutputError, match="rekordbox.xml that dancegenre did not write"):
        write_playlists([verdict(a)], export)
    assert snapshot(export) == before
    (export / "notes.txt").write_text("my notes")
    before = snapshot(export)
    with pytest.raises(OutputError):
        write_playlists([verdict(a)], export)
    assert snapshot(export) == before
    # a folder an older version made (no marker): rekordbox.xml of ours and M3U8s only
    old = tmp_path / "old"
    with holding(old, "playlists"):
        write_playlists([verdict(a)], old)
    for name in (MARKER, LOCK):
        (old / name).unlink()
    assert sorted(p.name for p in old.iterdir()) == ["rekordbox.xml", "techno.m3u8"]
    check_playlists_folder(old, create=False)
    files = write_playlists([verdict(a)], old)
    assert [f.name for f in files] == ["techno.m3u8", "rekordbox.xml"] and (old / MARKER).exists()
