"""What libsndfile cannot read (m4a/AAC, ALAC) is decoded by PyAV, through the same path
and the same checks, in prepare and predict."""

from __future__ import annotations

import os
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_worker_forked_after_decoding_an_m4a_does_not_hang(tmp_path):
    """PyAV's converter left a thread pool in reference cycles; a worker forked after
    it (prepare's, predict's) that collected them waited for its threads forever."""
    import gc
    import time

    path = write_m4a(tmp_path / "a.m4a", tone(3.0, 48000, seed=1), 48000, codec="alac")  # s16 to convert
    gc.disable()  # the cycles stay until the fork, as they may between two collections
    try:
        load(path, sr=22050)
        pid = os.fork()
        if pid == 0:  # the worker: collect, then leave at once
            gc.collect()
            os._exit(0)
    finally:
        gc.enable()
    for _ in range(200):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked worker hung freeing PyAV's threads")


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


# ------------------------------------------------------------------ duration cap and memory

def long_flac(path: Path, seconds: float, *, sr: int = 4000, value: int = 0) -> Path:
    """``seconds`` of a constant (silence by default) as FLAC: hours in kilobytes."""
    block = np.full(sr * 600, value, np.int16)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, format="FLAC", subtype="PCM_16") as f:
        for start in range(0, int(seconds * sr), len(block)):
            f.write(block[: int(seconds * sr) - start])
    return path


def test_a_file_longer_than_the_cap_is_refused_from_its_header(tmp_path):
    import time

    from dancegenre.audio.decode import check_duration, stream_mono

    path = long_flac(tmp_path / "night.flac", 4 * 3600)  # 4 hours, ~200 kB
    assert path.stat().st_size < 500_000
    t0 = time.process_time()
    with pytest.raises(AudioDecodeError, match=r"^too long: 4.0 h of audio by its header, more than the 3.0 h") as e:
        next(stream_mono(path, sr=22050, max_duration=3 * 3600))
    with pytest.raises(AudioDecodeError, match="too long"):
        check_duration(path, 3600)
    assert time.process_time() - t0 < 0.5  # nothing decoded: decoding it all takes seconds
    with pytest.raises(AudioDecodeError, match="too long"):
        segments_of(path, FeatureConfig(), max_duration=3600)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    check_duration(path, None)  # no cap
    check_duration(path, 5 * 3600)
    assert len(load(path, sr=4000, max_seconds=2.0, max_duration=5 * 3600)) == 8000


def test_a_header_that_understates_the_length_is_caught_while_decoding(tmp_path, monkeypatch):
    from dancegenre.audio import decode

    path = long_flac(tmp_path / "liar.flac", 600, value=100)
    real = decode.open_audio

    def lying(p):
        f = real(p)
        f.frames = 4000  # one second, says the header
        return f

    monkeypatch.setattr(decode, "open_audio", lying)
    got = 0
    with pytest.raises(AudioDecodeError, match=r"too long: more than the 1.0 min allowed, though its header says 1.0 s"):
        for block in decode.stream_mono(path, sr=4000, max_duration=60):
            got += len(block)
    assert got <= 60 * 4000  # stopped at the cap, not at the end of the file


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), True, "60", 10**9])
def test_the_cap_must_be_a_sane_number_of_seconds(bad):
    from dancegenre.audio.decode import check_max_duration
    from dancegenre.errors import ConfigError

    with pytest.raises(ConfigError, match="max_duration must be from 1 to 604800 seconds"):
        check_max_duration(bad)
    assert check_max_duration(None) is None and check_max_duration(60) == 60.0


def test_a_waveform_longer_than_the_cap_is_refused():
    with pytest.raises(AudioDecodeError, match="too long: 2.0 min of audio"):
        load(np.zeros(4000 * 120, np.float32), sr=4000, sr_in=4000, max_duration=60)


def test_blocks_are_joined_in_place_as_concatenate_would():
    from dancegenre.audio.decode import join_blocks

    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((n, 3, 2)).astype(np.float32) for n in (5, 1, 0, 40, 7, 300)]
    empty = np.zeros((0, 3, 2), np.float32)
    np.testing.assert_array_equal(join_blocks(iter(blocks), empty), np.concatenate(blocks))
    np.testing.assert_array_equal(join_blocks(iter(blocks), empty, limit=50), np.concatenate(blocks)[:50])
    half = join_blocks(iter(blocks), np.zeros((0, 3, 2), np.float16))
    assert half.dtype == np.float16 and half.shape == (353, 3, 2)
    assert join_blocks(iter([]), empty) is empty


def test_a_long_file_is_held_once_not_as_blocks_and_their_concatenation(tmp_path):
    """whole_mono (predict's input on a GPU) held the blocks, their concatenation and a
    copy for the peak at once: three times the signal."""
    import tracemalloc

    from dancegenre.audio.frontend import whole_mono

    path = long_flac(tmp_path / "mix.flac", 1200, value=100)  # 20 min: 106 MB at 22,050 Hz
    tracemalloc.start()  # numpy reports its arrays' memory to it
    try:
        y = whole_mono(path, FeatureConfig())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(y) == 1200 * 22050 and np.isfinite(y).all()
    assert peak / y.nbytes < 1.5, f"peak memory {peak / y.nbytes:.2f} times the signal"
