"""The log-mel front end: the only mel code in dancegenre.

A streaming STFT that gives exactly what ``librosa.feature.melspectrogram`` (center=True,
zero padding, periodic Hann window, power 2, Slaney mel scale and norm) followed by
``librosa.power_to_db(ref=1.0, amin=config.amin, top_db=None)`` gives on the whole
signal, however the signal is cut into blocks (``config.scale = "logC"`` gives musicnn's
``log10(1 + 10000 mel)`` instead of dB).  The dB floor is absolute (no per-file
``ref=np.max`` or ``top_db``) so that a segment's values do not depend on the rest of
its file.

:func:`device_segments` computes the same segments with torch on a GPU (``predict
--device cuda``): one whole-file STFT and the same filters, within the tolerance of the
test against librosa.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft

from dancegenre.audio.decode import DEFAULT_BLOCK_SECONDS, join_blocks, stream_source
from dancegenre.config import FeatureConfig, cache_dir
from dancegenre.errors import AudioTooShortError, ConfigError, SilentAudioError
from dancegenre.safety import atomic_path

if TYPE_CHECKING:
    import torch

SILENCE_PEAK = 1e-6  # a file whose samples never exceed this is digital silence
FRAMES_PER_CHUNK = 64  # STFT frames computed together (64 x 2048 float32: 0.5 MB)


@lru_cache(maxsize=8)
def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """Slaney-normalised mel filters from librosa: shape (n_mels, n_fft // 2 + 1), float32.

    Kept in the user's cache folder (:func:`dancegenre.config.cache_dir`) once made:
    librosa's filters import most of librosa, which costs a second, which would double
    the start of ``predict`` on one file.  The cached file carries its key and the
    sha256 of its values, as a cached ONNX file carries its weights' digest: one that
    fails the check (foreign, damaged, of another key) is made again and replaced,
    never used.  A cache that cannot be read or written is simply not used.

    Raises ConfigError when a band would be empty (too many bands for the FFT's bins).
    """
    import librosa  # librosa's version is part of the key: its filters are the reference

    key = (f"{librosa.__version__} {config.sample_rate} {config.n_fft} {config.n_mels} "
           f"{config.fmin} {config.fmax}")
    path = cache_dir() / "mel" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    fb = _cached_filters(path, key, (config.n_mels, config.n_fft // 2 + 1))
    if fb is not None:
        return fb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # librosa's note on empty filters: refused below
        fb = librosa.filters.mel(
            sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
            fmin=config.fmin, fmax=config.fmax, htk=False, norm="slaney", dtype=np.float32,
        )
    empty = int((~fb.any(axis=1)).sum())
    if empty:
        raise ConfigError(f"{empty} of the {config.n_mels} mel bands would hold no FFT bin (n_fft "
                          f"{config.n_fft} at {config.sample_rate} Hz, {config.fmin:g}-"
                          f"{config.fmax or config.sample_rate / 2:g} Hz): fewer --n-mels or a larger --n-fft")
    _keep_filters(path, key, fb)
    return fb


def _filters_digest(fb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(fb).tobytes()).hexdigest()


def _cached_filters(path: Path, key: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The filters cached at ``path`` when the file holds ``key``'s filters, of ``shape``,
    float32, whose sha256 is the one written with them; else None (made again)."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a bare array: no digest to check it by
            return None
        with data:
            fb, meta = data["filters"], json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if (not isinstance(meta, dict) or meta.get("key") != key or fb.shape != shape or fb.dtype != np.float32
            or meta.get("sha256") != _filters_digest(fb)):
        return None
    return fb


def _keep_filters(path: Path, key: str, fb: np.ndarray) -> None:
    """Cache ``fb`` at ``path`` with ``key`` and its sha256, whole or not at all."""
    meta = np.array(json.dumps({"key": key, "sha256": _filters_digest(fb)}))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as part, open(part, "wb") as fh:
            np.savez(fh, filters=fb, meta=meta)
    except OSError:
        pass  # a read-only home: the filters are made again next time


@lru_cache(maxsize=8)
def mel_blocks(config: FeatureConfig, bands: int = 16) -> list[tuple[slice, slice, np.ndarray]]:
    """The mel projection in blocks of ``bands`` neighbouring bands: (bands, bins they
    cover, that part of the transposed filters).  A mel filter is zero outside a narrow
    range of bins, so the blocks hold about an eighth of the full matrix and the
    projection costs that much less; the sums are the same but for float rounding."""
    fb = mel_filterbank(config)
    used = np.nonzero(fb.any(axis=0))[0]
    blocks = []
    for first in range(0, config.n_mels, bands):
        part = fb[first : first + bands]
        cols = np.nonzero(part.any(axis=0))[0]
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (int(used[0]), int(used[0]) + 1)
        blocks.append((slice(first, first + len(part)), slice(lo, hi), np.ascontiguousarray(part[:, lo:hi].T)))
    return blocks


@lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    """The periodic Hann window (scipy's ``get_window("hann", n_fft)``, librosa's STFT window)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


class LogMelStream:
    """Incremental log-mel spectrogram.

    Feed mono samples with :meth:`push`; each call returns the frames completed so far,
    shape (frames, n_mels), float32 dB.  :meth:`finish` pads the end as librosa's
    ``center=True`` does and returns the last frames.  Concatenated, the outputs equal
    the whole-signal spectrogram (transposed): ``1 + n_samples // hop_length`` frames.
    """

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._blocks = mel_blocks(config)  # the filters, (bins, bands) block by block
        self._win = _window(config.n_fft)
        # Centre padding: the first frame is centred on sample 0.
        self._buf = np.zeros(config.n_fft // 2, dtype=np.float32)
        self._next = 0  # index into _buf of the next frame's first sample
        self._emitted = 0  # frames returned so far
        self.n_samples = 0
        self.peak = 0.0

    def push(self, y: np.ndarray) -> np.ndarray:
        """Append samples (n,) float32; return the newly completed frames (k, n_mels)."""
        if len(y):
            self.n_samples += len(y)
            self.peak = max(self.peak, float(np.max(np.abs(y))))
            self._buf = np.concatenate([self._buf[self._next :], y.astype(np.float32, copy=False)])
            self._next = 0
        return self._frames()

    def finish(self) -> np.ndarray:
        """Pad the end with n_fft // 2 zeros and return the remaining frames."""
        c = self.config
        total = 1 + self.n_samples // c.hop_length
        done_before = self._emitted
        self._buf = np.concatenate(
            [self._buf[self._next :], np.zeros(c.n_fft // 2, dtype=np.float32)]
        )
        self._next = 0
        out = self._frames()
        return out[: max(0, total - done_before)]

    def _frames(self) -> np.ndarray:
        c = self.config
        available = len(self._buf) - self._next
        k = 0 if available < c.n_fft else 1 + (available - c.n_fft) // c.hop_length
        if k == 0:
            return np.zeros((0, c.n_mels), dtype=np.float32)
        view = np.lib.stride_tricks.sliding_window_view(self._buf[self._next :], c.n_fft)
        frames = view[: (k - 1) * c.hop_length + 1 : c.hop_length]  # (k, n_fft), a view
        mel = np.empty((k, c.n_mels), dtype=np.float32)
        # In chunks of frames that stay in the CPU's cache: window, FFT, power and mel
        # over the whole block at once would stream ~10 MB through memory four times.
        for a in range(0, k, FRAMES_PER_CHUNK):
            chunk = frames[a : a + FRAMES_PER_CHUNK] * self._win
            spec = scipy.fft.rfft(chunk, axis=1, workers=1, overwrite_x=True)  # (n, bins) complex64
            parts = spec.view(np.float32)  # (n, 2 * bins): interleaved real, imaginary
            np.multiply(parts, parts, out=parts)
            power = parts[:, 0::2] + parts[:, 1::2]  # |X|^2, (n, bins)
            for bands, bins, weights in self._blocks:  # power @ filters.T, skipping the zeros
                np.matmul(power[:, bins], weights, out=mel[a : a + len(chunk), bands])
        if c.scale == "logC":  # musicnn: log10(1 + 10000 * power), in float32
            mel *= 10000.0
            out = np.log10(mel + 1.0, out=mel)
        else:
            np.maximum(mel, c.amin, out=mel)
            out = np.log10(mel, out=mel)
            out *= 10.0
        self._next += k * c.hop_length
        self._emitted += k
        return out.astype(np.float32, copy=False)


def mel_power(values: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The mel power that ``config``'s log-mel ``values`` come from (the inverse of its scale)."""
    if config.scale == "logC":
        return (10.0 ** values - 1.0) / 10000.0
    return 10.0 ** (values / 10.0)


def log_mel(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-mel spectrogram of a mono signal at ``config.sample_rate``.

    Parameters
    ----------
    y : np.ndarray, shape (n,), float32 samples.

    Returns
    -------
    np.ndarray, shape (n_mels, 1 + n // hop_length), float32 in ``config``'s scale
    (dB, or musicnn's ``log10(1 + 10000 power)``).
    """
    stream = LogMelStream(config)
    parts = [stream.push(np.asarray(y, dtype=np.float32)), stream.finish()]
    return np.concatenate(parts, axis=0).T


@dataclass
class SegmentBlock:
    """Segments completed from one decoded block of audio.

    ``segments`` has shape (k, n_mels, segment_frames), float32 dB; ``index`` holds
    each segment's number within its item (segment i starts at
    ``i * segment_hop_seconds``).
    """

    segments: np.ndarray
    index: np.ndarray  # (k,) int


class Segmenter:
    """Cuts a stream of log-mel frames into fixed-length, possibly overlapping segments."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._frames = np.zeros((0, config.n_mels), dtype=np.float32)
        self._offset = 0  # absolute frame number of _frames[0]
        self._next_segment = 0

    def push(self, frames: np.ndarray) -> SegmentBlock:
        c = self.config
        self._frames = np.concatenate([self._frames, frames], axis=0)
        out, idx = [], []
        while True:
            start = self._next_segment * c.segment_hop - self._offset
            if start + c.segment_frames > len(self._frames):
                break
            out.append(self._frames[start : start + c.segment_frames].T)
            idx.append(self._next_segment)
            self._next_segment += 1
        keep_from = self._next_segment * c.segment_hop - self._offset
        if keep_from > 0:
            self._frames = self._frames[keep_from:]
            self._offset += keep_from
        segments = np.stack(out) if out else np.zeros((0, c.n_mels, c.segment_frames), np.float32)
        return SegmentBlock(segments, np.asarray(idx, dtype=np.int64))


def iter_segments(
    source: str | os.PathLike[str] | np.ndarray,
    config: FeatureConfig,
    *,
    sr: int | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    max_duration: float | None = None,
) -> Iterator[SegmentBlock]:
    """Audio file or waveform -> blocks of log-mel segments, in bounded memory.

    The single path from audio to network input, shared by prepare, predict and the
    demo.  A waveform needs ``sr``; a file is decoded at its own rate.  A source longer
    than ``max_duration`` seconds is refused (None: no cap), a file by its header before
    any decoding (:func:`~dancegenre.audio.decode.stream_mono`).

    Raises
    ------
    AudioDecodeError
        The file cannot be decoded, or is longer than ``max_duration``.
    AudioTooShortError
        Fewer frames than one segment (raised at the end of the stream).
    SilentAudioError
        Every sample is (digital) silence.
    """
    mel = LogMelStream(config)
    seg = Segmenter(config)
    produced = 0
    for y in _mono_blocks(source, config, sr=sr, block_seconds=block_seconds, max_duration=max_duration):
        block = seg.push(mel.push(y))
        produced += len(block.index)
        if len(block.index):
            yield block
    block = seg.push(mel.finish())
    produced += len(block.index)
    # A file is silent only if all of it is (a quiet intro is fine), so this is known
    # only at the end: consumers must drop what they got from a file that raises here.
    check_signal(mel.n_samples, mel.peak, produced, config)
    if len(block.index):
        yield block


def _mono_blocks(source: str | os.PathLike[str] | np.ndarray, config: FeatureConfig, *, sr: int | None,
                 block_seconds: float = DEFAULT_BLOCK_SECONDS, max_duration: float | None = None,
                 ) -> Iterator[np.ndarray]:
    """A file or waveform as blocks of mono float32 samples at ``config.sample_rate``."""
    return stream_source(source, sr=config.sample_rate, sr_in=sr, block_seconds=block_seconds,
                         quality=config.resample_quality, max_duration=max_duration)


def segment_count(n_samples: int, config: FeatureConfig) -> int:
    """How many segments ``n_samples`` mono samples give (``1 + n // hop`` frames)."""
    frames = 1 + n_samples // config.hop_length
    return 0 if frames < config.segment_frames else 1 + (frames - config.segment_frames) // config.segment_hop


def check_signal(n_samples: int, peak: float, produced: int, config: FeatureConfig) -> None:
    """Refuse a signal that gave no segment, or whose every sample is digital silence."""
    seconds = n_samples / config.sample_rate
    if produced == 0:
        raise AudioTooShortError(
            f"too short: {seconds:.2f} s of audio, one segment needs "
            f"{config.segment_seconds:.2f} s"
        )
    if peak <= SILENCE_PEAK:
        raise SilentAudioError(f"digital silence: no sample above {SILENCE_PEAK:g} in {seconds:.1f} s")


def whole_mono(source: str | os.PathLike[str] | np.ndarray, config: FeatureConfig,
               *, sr: int | None = None, max_duration: float | None = None) -> np.ndarray:
    """A short file or waveform, decoded, downmixed and resampled whole: (n,) float32,
    refused as :func:`iter_segments` refuses it (too short, silent, longer than
    ``max_duration`` seconds).  The input of :func:`device_segments`.

    The samples are held once (:func:`~dancegenre.audio.decode.join_blocks`), and the
    peak is taken block by block: no copy of the whole signal beside them."""
    peak = 0.0

    def measured(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal peak
        for y in blocks:
            peak = max(peak, float(np.max(np.abs(y))) if len(y) else 0.0)
            yield y

    y = join_blocks(measured(_mono_blocks(source, config, sr=sr, max_duration=max_duration)),
                    np.zeros(0, np.float32))
    check_signal(len(y), peak, segment_count(len(y), config), config)
    return y


def device_segments(y: np.ndarray, config: FeatureConfig, device: str) -> torch.Tensor:
    """The segments of :func:`segments_of` for a whole mono signal (n,) at
    ``config.sample_rate``, computed by torch on ``device``: (k, n_mels, segment_frames)
    float32, on that device.

    The same definition as :class:`LogMelStream` (centred frames with zero padding, the
    periodic Hann window, power, the same mel filters, the same log) in one STFT of the
    whole signal, for a GPU, where the features then cost next to nothing beside the
    decoding.  Equal to the CPU front end within float32 rounding
    (tests/audio/test_frontend.py).
    """
    import torch

    c = config
    x = torch.as_tensor(np.ascontiguousarray(y, dtype=np.float32)).to(device)
    window = torch.hann_window(c.n_fft, periodic=True, dtype=torch.float32, device=x.device)
    spec = torch.stft(x, c.n_fft, c.hop_length, window=window, center=True, pad_mode="constant",
                      return_complex=True)  # (bins, 1 + n // hop)
    power = spec.real.square() + spec.imag.square()
    mel = torch.from_numpy(mel_filterbank(c)).to(x.device) @ power  # (n_mels, frames)
    if c.scale == "logC":
        mel = torch.log10(mel * 10000.0 + 1.0)
    else:
        mel = 10.0 * torch.log10(mel.clamp_min(c.amin))
    if mel.shape[1] < c.segment_frames:
        return mel.new_zeros((0, c.n_mels, c.segment_frames))
    return mel.unfold(1, c.segment_frames, c.segment_hop).permute(1, 0, 2).contiguous()


def segments_of(source: str | os.PathLike[str] | np.ndarray, config: FeatureConfig,
                *, sr: int | None = None, max_duration: float | None = None,
                dtype: np.dtype | type = np.float32) -> np.ndarray:
    """All segments of a source at once: shape (k, n_mels, segment_frames), ``dtype``
    (float16 halves them; dB values need no more).

    Held once, converted block by block (:func:`~dancegenre.audio.decode.join_blocks`):
    not a list of blocks plus their concatenation.  Raises as :func:`iter_segments`."""
    blocks = (b.segments for b in iter_segments(source, config, sr=sr, max_duration=max_duration))
    return join_blocks(blocks, np.zeros((0, config.n_mels, config.segment_frames), dtype))
