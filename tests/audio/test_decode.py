"""What libsndfile cannot read (m4a/AAC, ALAC) is decoded by PyAV, through the same path
and the same checks, in prepare and predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr

from dancegenre.audio.decode import load, probe
from dancegenre.audio.frontend import segments_of
from dancegenre.cli.parser import main
from dancegenre.config import FeatureConfig
from dancegenre.errors import AudioDecodeError, AudioTooShortError, SilentAudioError
from tests.conftest import tone, write_m4a


def test_alac_is_lossless_and_aac_close(tmp_path):
    y = tone(5.0, 48000, seed=3)
    alac = write_m4a(tmp_path / "a.m4a", y, 48000, codec="alac")
    info = probe(alac)
    assert (info.sample_rate, info.channels, info.format) == (48000, 1, "MOV/alac")
    expected = soxr.resample(np.round(y * 32767) / 32767, 48000, 22050)
    got = load(alac, sr=22050)
    assert abs(len(got) - len(expected)) <= 1
    n = min(len(got), len(expected))
    assert np.abs(got[:n] - expected[:n]).max() < 1e-4
    stereo = write_m4a(tmp_path / "b.m4a", tone(6.0, 44100, channels=2, seed=4), 44100)
    assert probe(stereo).channels == 2 and probe(stereo).format == "MOV/aac"
    # the m4a's segments equal those of a wav of the same decoded audio
    seg = segments_of(stereo, FeatureConfig())
    assert seg.shape[1:] == (128, 128) and np.isfinite(seg).all()


def test_bad_m4a_files_get_one_reason(tmp_path):
    good = write_m4a(tmp_path / "good.m4a", tone(6.0, 44100), 44100)
    (tmp_path / "cut.m4a").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "noise.m4a").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioDecodeError, match="not a readable audio file") as info:
        load(tmp_path / "noise.m4a", sr=22050)
    assert str(tmp_path / "noise.m4a") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AudioDecodeError):
        load(tmp_path / "cut.m4a", sr=22050)
    short = write_m4a(tmp_path / "short.m4a", tone(1.0, 44100), 44100)
    with pytest.raises(AudioTooShortError):
        segments_of(short, FeatureConfig())
    silent = write_m4a(tmp_path / "silent.m4a", np.zeros(44100 * 5, np.float32), 44100, codec="alac")
    with pytest.raises(SilentAudioError):
        segments_of(silent, FeatureConfig())


def test_non_finite_samples_are_refused(tmp_path):
    y = tone(5.0, 22050)
    y[1000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), y, 22050, subtype="FLOAT")  # a float wav keeps the NaN
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        load(path, sr=22050)


def test_a_crate_of_m4a_through_prepare_and_predict(tmp_path, corpus_store, capsys):
    from dancegenre.config import TrainConfig
    from dancegenre.training.fit import fit

    crate = tmp_path / "crate"
    write_m4a(crate / "techno" / "a.m4a", tone(7.0, 44100, channels=2, seed=1), 44100)
    write_m4a(crate / "edm" / "b.m4a", tone(6.5, 48000, seed=2, freq=660), 48000, codec="alac")
    good = write_m4a(crate / "edm" / "c.m4a", tone(6.5, 44100, seed=5), 44100)
    (crate / "edm" / "corrupt.m4a").write_bytes(good.read_bytes()[:1500])
    before = {p: p.read_bytes() for p in crate.rglob("*.m4a")}
    store = tmp_path / "store"
    assert main(["prepare", "-q", str(crate), str(store)]) == 0
    items = pd.read_csv(store / "items.csv")
    assert sorted(Path(p).name for p in items["path"]) == ["a.m4a", "b.m4a", "c.m4a"]
    failures = pd.read_csv(store / "failures.csv")
    assert [Path(p).name for p in failures["path"]] == ["corrupt.m4a"]
    run = tmp_path / "run"
    fit(corpus_store, out=run, config=TrainConfig(epochs=1, batch_size=32), progress=False, log=lambda *a: None)
    out = tmp_path / "verdicts.csv"
    assert main(["predict", "-q", str(run), str(crate), "--out", str(out)]) == 0
    table = pd.read_csv(out, dtype={"error": str}, keep_default_na=False)
    assert len(table) == 4
    bad = table[table["path"].str.endswith("corrupt.m4a")]
    assert len(bad) == 1 and bad["error"].iloc[0] and (table["error"] == "").sum() == 3
    assert {p: p.read_bytes() for p in crate.rglob("*.m4a")} == before  # only read
