"""prepare: stores, bad input, resume, real data."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dancegenre.config import FeatureConfig
from dancegenre.data import store as dataset
from dancegenre.data.store import SegmentStore, prepare
from dancegenre.errors import CatalogError, EmptyInputError, Interrupted, StoreError
from tests.conftest import REAL_DATA, needs_real_data, tone, write


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_folder_with_bad_files(audio_dir, tmp_path):
    before = digest_tree(audio_dir)
    summary = prepare(audio_dir, tmp_path / "store", workers=2, progress=False)
    store = SegmentStore(tmp_path / "store")
    assert sorted(store.items["item"]) == ["edm/d.ogg", "edm/e.wav", "techno/a.wav", "techno/b.flac", "techno/sub/c.mp3"]
    failures = store.failures.set_index("item")
    assert set(failures.index) == {"edm/notes.txt", "edm/empty.mp3", "edm/garbage.mp3", "edm/short.wav",
                                   "edm/silent.wav", "techno/truncated.mp3"}
    assert failures.loc["edm/short.wav", "error"] == "AudioTooShortError"
    assert failures.loc["edm/silent.wav", "error"] == "SilentAudioError"
    assert "empty" in failures.loc["edm/empty.mp3", "reason"]
    assert summary.skipped == 6 and summary.segments == len(store) == store.items["n_segments"].sum()
    assert store.segments.dtype == np.float16 and store.segments.shape[1:] == (128, 128)
    assert isinstance(store.segments, np.memmap)
    # index rows point at their item's segments, in order
    for item in store.items.itertuples():
        rows = store.index[store.index["item"] == item.item]
        assert rows["row"].tolist() == list(range(item.offset, item.offset + item.n_segments))
    assert digest_tree(audio_dir) == before  # the source is only read


def test_store_matches_direct_features(audio_dir, tmp_path):
    from dancegenre.audio.frontend import segments_of

    prepare(audio_dir, tmp_path / "s", workers=1, progress=False)
    store = SegmentStore(tmp_path / "s")
    item = store.items.set_index("item").loc["techno/b.flac"]
    direct = segments_of(audio_dir / "techno/b.flac", store.config)
    stored = np.asarray(store.segments[item.offset : item.offset + item.n_segments], dtype=np.float32)
    assert np.allclose(stored, direct, atol=0.06)  # float16 storage of dB values


def test_catalog_with_groups_and_extra_columns(corpus_store, corpus):
    store = SegmentStore(corpus_store)
    assert store.group_columns == ["track_id", "artist"]
    assert {"tempo", "vocal", "key", "cache_key"} <= set(store.items.columns)
    assert store.labels == ["edm", "techno"]
    assert len(store) == 16 * 10
    assert (store.index.groupby("item")["segment"].apply(list).map(lambda s: s == list(range(10)))).all()


def test_rerun_does_only_what_changed(audio_dir, tmp_path):
    out = tmp_path / "store"
    prepare(audio_dir, out, workers=1, progress=False)
    first = np.array(SegmentStore(out).segments)
    again = prepare(audio_dir, out, workers=1, progress=False)
    assert again.prepared == 0 and again.reused == 5
    assert np.array_equal(np.array(SegmentStore(out).segments), first)
    # a changed file and a new file are prepared; the rest is reused
    write(audio_dir / "techno" / "a.wav", tone(7.0, 44100, seed=99), 44100)
    write(audio_dir / "edm" / "new.wav", tone(6.0, 44100, seed=98), 44100)
    third = prepare(audio_dir, out, workers=1, progress=False)
    assert third.prepared == 2 and third.reused == 4
    store = SegmentStore(out)
    assert "edm/new.wav" in set(store.items["item"])


def test_interrupted_run_resumes(audio_dir, tmp_path, monkeypatch):
    out = tmp_path / "store"
    calls = {"n": 0}
    real = dataset.decode_item

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(dataset, "decode_item", flaky)
    with pytest.raises(Interrupted):
        prepare(audio_dir, out, workers=1, progress=False)
    with pytest.raises(StoreError):
        SegmentStore(out)  # nothing half-written is taken for a store
    monkeypatch.setattr(dataset, "decode_item", real)
    summary = prepare(audio_dir, out, workers=1, progress=False)
    assert summary.reused >= 1 and len(SegmentStore(out).items) == 5


def test_killed_process_resumes(corpus, tmp_path):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "dancegenre", "prepare", "-q", "--workers", "1", str(corpus), str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "pending").glob("*.json"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "store.json").exists()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    store = SegmentStore(out)
    assert len(store.items) == 16 and "reused" in result.stdout
    reused = int(result.stdout.split(" reused")[0].split()[-1])
    assert reused >= 2


def test_catalog_errors(tmp_path, audio_dir):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,genre\na.wav,techno\n")
    with pytest.raises(CatalogError, match="path,label"):
        prepare(bad, tmp_path / "o1", progress=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(EmptyInputError):
        prepare(empty, tmp_path / "o2", progress=False)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(EmptyInputError):
        prepare(tmp_path / "nothing", tmp_path / "o3", progress=False)
    cat = tmp_path / "cat.csv"
    cat.write_text(f"path,label\n{audio_dir}/techno/a.wav,techno\nmissing.wav,edm\n")
    summary = prepare(cat, tmp_path / "o4", workers=1, progress=False)
    assert summary.skipped == 1 and "cannot read" in SegmentStore(tmp_path / "o4").failures["reason"][0]


def test_all_bad_and_config_mismatch(tmp_path, audio_dir):
    only_bad = tmp_path / "bad"
    (only_bad / "x").mkdir(parents=True)
    (only_bad / "x" / "a.mp3").write_bytes(b"junk" * 100)
    with pytest.raises(EmptyInputError, match="none of the 1"):
        prepare(only_bad, tmp_path / "o", workers=1, progress=False)
    prepare(audio_dir, tmp_path / "s", workers=1, progress=False)
    with pytest.raises(StoreError, match="another feature config"):
        prepare(audio_dir, tmp_path / "s", config=FeatureConfig(n_mels=64), progress=False)


def test_long_file_in_blocks(tmp_path):
    y = tone(600.0, 22050, seed=5)  # a 10-minute track
    path = write(tmp_path / "long" / "techno" / "mix.flac", y, 22050)
    del y
    prepare(tmp_path / "long", tmp_path / "s", workers=1, progress=False)
    item = SegmentStore(tmp_path / "s").items.iloc[0]
    assert item["n_segments"] == 1 + (1 + 600 * 22050 // 512 - 128) // 128
    assert path.exists()


@needs_real_data()
def test_real_hardtechno_catalog(tmp_path):
    summary = prepare(REAL_DATA / "catalog.csv", tmp_path / "ht", workers=2, progress=False)
    store = SegmentStore(tmp_path / "ht")
    catalog = pd.read_csv(REAL_DATA / "catalog.csv")
    assert summary.items == len(catalog) == 1240
    assert len(store.items) + summary.skipped == 1240 and summary.skipped <= 5
    assert store.group_columns == ["track_id"] and len(store.labels) == 7
    # 8-second clips at 44.1/48 kHz give two whole 2.97-second segments each
    assert (store.items["n_segments"] == 2).all()
    assert set(store.items["sample_rate"]) <= {44100, 48000}
    assert np.isfinite(np.asarray(store.segments[:100], dtype=np.float32)).all()
