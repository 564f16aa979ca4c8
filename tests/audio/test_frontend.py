"""The log-mel front end against librosa, streaming, segmenting."""

import io

import librosa
import numpy as np
import pytest

from dancegenre.audio.frontend import (
    LogMelStream,
    device_segments,
    iter_segments,
    log_mel,
    segment_count,
    segments_of,
    whole_mono,
)
from dancegenre.config import FeatureConfig
from dancegenre.errors import AudioTooShortError, ConfigError, SilentAudioError
from tests.conftest import tone, write

TOLERANCE_DB = 1e-3  # float32 arithmetic; librosa computes in float32 too


@pytest.mark.parametrize("config", [FeatureConfig(), FeatureConfig(n_fft=1024, hop_length=256, n_mels=64, fmin=30.0, fmax=8000.0)])
def test_log_mel_matches_librosa(config):
    y = tone(4.0, config.sample_rate, seed=7)
    ours = log_mel(y, config)
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=config.sample_rate, n_fft=config.n_fft,
                                       hop_length=config.hop_length, n_mels=config.n_mels,
                                       fmin=config.fmin, fmax=config.fmax),
        ref=1.0, amin=config.amin, top_db=None)
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) < TOLERANCE_DB


def test_streaming_equals_whole_signal():
    config = FeatureConfig()
    y = tone(5.0, config.sample_rate, seed=3)
    whole = log_mel(y, config)
    rng = np.random.default_rng(0)
    stream, parts, i = LogMelStream(config), [], 0
    while i < len(y):
        step = int(rng.integers(1, 9000))
        parts.append(stream.push(y[i : i + step]))
        i += step
    parts.append(stream.finish())
    streamed = np.concatenate(parts).T
    assert streamed.shape == whole.shape
    # Equal up to BLAS rounding, which depends on how many frames one call holds.
    assert np.max(np.abs(streamed - whole)) < 1e-4


def expected_segments(seconds: float, config: FeatureConfig) -> int:
    frames = 1 + int(seconds * config.sample_rate) // config.hop_length
    return 0 if frames < config.segment_frames else 1 + (frames - config.segment_frames) // config.segment_hop


@pytest.mark.parametrize("seconds,sr,channels", [
    (3.0, 22050, 1), (8.0, 44100, 1), (8.0, 48000, 2), (30.0, 44100, 2), (12.5, 16000, 1),
])
def test_segment_count_and_shape(tmp_path, seconds, sr, channels):
    config = FeatureConfig()
    path = write(tmp_path / "x.wav", tone(seconds, sr, channels=channels), sr)
    segs = segments_of(path, config)
    n = expected_segments(seconds, config)
    # Resampling may move the last sample by one; allow the boundary case.
    assert abs(len(segs) - n) <= 1 and len(segs) >= 1
    assert segs.shape[1:] == (128, 128) and segs.dtype == np.float32
    if seconds == 30.0:
        assert len(segs) == 10  # the study's ten segments per 30-second clip


def test_overlapping_segments_and_block_invariance(tmp_path):
    config = FeatureConfig(segment_hop=64)
    path = write(tmp_path / "x.wav", tone(20.0, 44100, seed=2), 44100)
    small = np.concatenate([b.segments for b in iter_segments(path, config, block_seconds=0.7)])
    big = np.concatenate([b.segments for b in iter_segments(path, config, block_seconds=60)])
    assert small.shape == big.shape
    # soxr's stream state differs with block size only by float rounding
    assert np.max(np.abs(small - big)) < 0.05
    assert len(small) == expected_segments(20.0, config) == 12


def test_waveform_and_file_give_same_segments(tmp_path):
    config = FeatureConfig()
    y = tone(7.0, 44100, channels=2, seed=9)
    path = tmp_path / "x.wav"
    import soundfile as sf

    sf.write(str(path), y, 44100, subtype="FLOAT")  # no 16-bit rounding
    from_file = segments_of(path, config)
    from_array = segments_of(y, config, sr=44100)
    assert np.allclose(from_file, from_array, atol=1e-3)


def test_too_short_and_silent(tmp_path):
    config = FeatureConfig()
    with pytest.raises(AudioTooShortError):
        segments_of(write(tmp_path / "s.wav", tone(2.0, 22050), 22050), config)
    with pytest.raises(SilentAudioError):
        segments_of(write(tmp_path / "z.wav", np.zeros(22050 * 4, np.float32), 22050), config)


def test_bad_configs_rejected():
    for kwargs in [{"hop_length": 0}, {"n_mels": 5000}, {"fmax": 30000.0}, {"segment_hop": 0},
                   {"resample_quality": "best"}]:
        with pytest.raises(ConfigError):
            FeatureConfig(**kwargs)


def test_config_round_trip_and_digest():
    c = FeatureConfig(n_mels=64)
    assert FeatureConfig.from_dict(c.to_dict()) == c
    assert c.digest() != FeatureConfig().digest()
    with pytest.raises(ConfigError):
        FeatureConfig.from_dict({"n_melz": 3})


def test_the_window_is_librosas():
    import scipy.signal

    from dancegenre.audio.frontend import _window

    for n in (512, 2048):
        np.testing.assert_allclose(_window(n), scipy.signal.get_window("hann", n, fftbins=True), atol=1e-7)


def _reference_filters(config):
    return librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin,
                               fmax=config.fmax, norm="slaney", dtype=np.float32)


def test_mel_filters_are_cached_and_a_bad_cache_is_made_again(tmp_path, monkeypatch):
    from dancegenre.audio import frontend

    monkeypatch.setenv("DANCEGENRE_CACHE", str(tmp_path))
    config = FeatureConfig(n_mels=40, n_fft=1024)
    reference = _reference_filters(config)
    frontend.mel_filterbank.cache_clear()
    np.testing.assert_array_equal(frontend.mel_filterbank(config), reference)
    (cached,) = (tmp_path / "mel").iterdir()
    with np.load(cached) as kept:
        np.testing.assert_array_equal(kept["filters"], reference)
    good = cached.read_bytes()
    cached.write_bytes(b"not an array")  # a cut or foreign file
    frontend.mel_filterbank.cache_clear()
    np.testing.assert_array_equal(frontend.mel_filterbank(config), reference)
    assert cached.read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "mel").iterdir()) == [cached.name]  # no temporary left
    frontend.mel_filterbank.cache_clear()


@pytest.mark.parametrize("planted", ["random", "nan", "random with the digest kept", "another key"])
def test_mel_filters_of_the_right_shape_but_other_values_are_never_used(tmp_path, monkeypatch, planted):
    """A cached file whose values are not the ones written with its digest (random
    filters of the right shape changed every verdict; NaNs were blamed on the
    checkpoint) is made again, and the cache replaced."""
    from dancegenre.audio import frontend

    monkeypatch.setenv("DANCEGENRE_CACHE", str(tmp_path))
    config = FeatureConfig(n_mels=40, n_fft=1024)
    reference = _reference_filters(config)
    frontend.mel_filterbank.cache_clear()
    frontend.mel_filterbank(config)
    (cached,) = (tmp_path / "mel").iterdir()
    good = cached.read_bytes()
    rng = np.random.default_rng(0)
    fake = rng.random(reference.shape, dtype=np.float32) * reference.max()
    if planted == "nan":
        fake = reference.copy()
        fake[3, 10] = np.nan
    with open(cached, "wb") as fh:
        if planted in ("random", "nan"):  # a bare array of the right shape and dtype, as the cache once held
            np.save(fh, fake)
        else:
            with np.load(io.BytesIO(good)) as kept:
                meta = str(kept["meta"])  # the key and the digest of the filters written
            if planted == "another key":
                meta = meta.replace(str(config.n_mels), "39", 1)
                fake = reference
            np.savez(fh, filters=fake, meta=np.array(meta))
    frontend.mel_filterbank.cache_clear()
    np.testing.assert_array_equal(frontend.mel_filterbank(config), reference)
    assert cached.read_bytes() == good  # made again, written over the bad one
    frontend.mel_filterbank.cache_clear()


@pytest.mark.parametrize("config", [
    FeatureConfig(),
    FeatureConfig(n_fft=1024, hop_length=256, n_mels=64, fmin=30.0, fmax=8000.0, segment_hop=50),
    FeatureConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, segment_frames=187, segment_hop=62,
                  scale="logC"),  # musicnn's preset
])
def test_device_segments_match_the_cpu_front_end_and_librosa(tmp_path, config):
    """The torch front end (predict's on a GPU; run here on the CPU) gives the CPU front
    end's segments, and, in dB, librosa's, within the same tolerance."""
    path = write(tmp_path / "x.wav", tone(9.0, 44100, channels=2, seed=5), 44100)
    cpu = segments_of(path, config)
    y = whole_mono(path, config)
    dev = device_segments(y, config, "cpu").numpy()
    assert dev.shape == cpu.shape and len(dev) == segment_count(len(y), config) >= 2
    assert np.max(np.abs(dev - cpu)) < TOLERANCE_DB
    if config.scale == "db":
        ref = librosa.power_to_db(
            librosa.feature.melspectrogram(y=y, sr=config.sample_rate, n_fft=config.n_fft,
                                           hop_length=config.hop_length, n_mels=config.n_mels,
                                           fmin=config.fmin, fmax=config.fmax),
            ref=1.0, amin=config.amin, top_db=None)
        for i, s in enumerate(dev):
            start = i * config.segment_hop
            assert np.max(np.abs(s - ref[:, start : start + config.segment_frames])) < TOLERANCE_DB


def test_whole_mono_refuses_what_iter_segments_refuses(tmp_path):
    config = FeatureConfig()
    short = write(tmp_path / "short.wav", tone(1.0, 22050), 22050)
    silent = write(tmp_path / "silent.wav", np.zeros(22050 * 5, np.float32), 22050)
    for path, error in ((short, AudioTooShortError), (silent, SilentAudioError)):
        with pytest.raises(error) as streamed:
            segments_of(path, config)
        with pytest.raises(error) as whole:
            whole_mono(path, config)
        assert str(whole.value) == str(streamed.value)
    assert len(device_segments(np.zeros(100, np.float32), config, "cpu")) == 0
