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
from urllib.parse import unquote, urlparse

import mutagen
import numpy as np
import pandas as pd
import pytest
from mutagen.aiff import AIFF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, TCON, TIT2, TPE1
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from dancegenre.audio.decode import load
from dancegenre.cli.parser import main
from dancegenre.inference.classifier import Prediction
from dancegenre.inference.library import FIELD, untag, write_playlists, write_tags
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
    assert not list(tmp_path.glob(".*dancegenre*"))  # no temporary copy left
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
    rows = list(csv.DictReader(open(tmp_path / "j.csv", encoding="utf-8")))
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
