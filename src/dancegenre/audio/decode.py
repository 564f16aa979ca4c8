"""Decoding, downmixing and resampling, in bounded-memory blocks.

Every stage reads audio through :func:`stream_mono`: ``prepare``, ``predict``,
``features``, ``serve``, ``explain``, ``embed``, ``tag``, the demo and the tests.
libsndfile (through soundfile) decodes mp3, ogg/vorbis, opus, flac, wav and aiff; what
it cannot read (m4a/AAC and ALAC, mp4, wma, webm, ...) is decoded by FFmpeg through
PyAV.  soxr resamples.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from dancegenre.config import AUDIO_SECONDS
from dancegenre.errors import EMPTY_PATH, AudioDecodeError, ConfigError

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff",
                    # through PyAV (FFmpeg): what DJs' and listeners' libraries hold besides
                    ".m4a", ".mp4", ".aac", ".alac", ".m4b", ".wma", ".webm", ".mka")
DEFAULT_BLOCK_SECONDS = 10.0  # decode this much at a time: 3.5 MB of 44.1 kHz float32 stereo, which
# keeps the downmix, resampling and STFT of a block in the CPU cache (30-s blocks were ~15% slower)
# Whatever the rate and channel count, a block holds at most this many samples, before
# and after resampling (16 MB of float32): a header claiming 1 Hz or 10,000 channels
# cannot make a block of gigabytes.
MAX_BLOCK_SAMPLES = 1 << 22
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 768_000  # Hz: below, no music; above, no format
# A header frame count this large means "length unknown" (libsndfile says SF_COUNT_MAX
# for a FLAC whose header leaves it out): no length to check before decoding.
UNKNOWN_FRAMES = 2**62
GROWTH = 1.25  # join_blocks grows its array by this factor: at most a quarter more than the signal
_STDERR_QUIET = False  # True in pool workers, whose fd 2 is already /dev/null
_FD2_LOCK = threading.Lock()


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says about a file."""

    path: str
    sample_rate: int  # Hz, as stored
    channels: int
    frames: int  # samples per channel; an estimate for mp3
    duration: float  # seconds
    format: str  # libsndfile format name, e.g. "MP3"


def is_audio_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in an extension that ``stream_mono`` reads."""
    return str(path).lower().endswith(AUDIO_EXTENSIONS)


def _check_file(path: str | os.PathLike[str]) -> Path:
    if not str(path).strip():  # Path("") is the current folder
        raise AudioDecodeError(EMPTY_PATH)
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioDecodeError(f"no such file: {p}") from None
    except OSError as exc:  # a link into a folder we may not enter, a name too long...
        raise AudioDecodeError(f"cannot read ({exc.strerror or type(exc).__name__}): {p}") from None
    if stat.S_ISDIR(st.st_mode):
        try:
            os.scandir(p).close()
        except OSError as exc:  # a folder met while searching for files, that we may not list
            raise AudioDecodeError(f"cannot list this folder ({exc.strerror or type(exc).__name__}), "
                                   f"so its files were not searched: {p}") from None
        raise AudioDecodeError(f"is a folder, not an audio file: {p}")
    if not os.access(p, os.R_OK):
        raise AudioDecodeError(f"cannot read (permission denied): {p}")
    if st.st_size == 0:
        raise AudioDecodeError(f"empty file (0 bytes): {p}")
    return p


class _Unreadable(Exception):
    """libsndfile cannot open the file: PyAV gets a try."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def quiet_decoder() -> Iterator[None]:
    """Silence fd 2 while libsndfile runs: its libmpg123 prints notes on every corrupt
    mp3 frame straight to the process's stderr, between our own one-line messages.

    A corrupt frame that still decodes is used (as every player does); one that does
    not ends the file with an AudioDecodeError.  A lock keeps threads from swapping fd 2
    under each other."""
    if _STDERR_QUIET:
        yield
        return
    with _FD2_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no fd 2 at all
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _AudioFile:
    """What ``open_audio`` returns: ``samplerate``, ``channels``, ``frames``, ``format``,
    ``read(n)`` -> float32 (n, channels), ``close()``; a context manager."""

    samplerate: int
    channels: int
    frames: int
    format: str

    def read(self, n: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _AudioFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _SFFile(_AudioFile):
    """A ``soundfile.SoundFile`` whose C calls run with :func:`quiet_decoder`."""

    def __init__(self, path: Path) -> None:
        with quiet_decoder():
            self._f = sf.SoundFile(str(path))
        self.samplerate, self.channels, self.frames = self._f.samplerate, self._f.channels, self._f.frames
        self.format = self._f.format

    def read(self, n: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        with quiet_decoder():
            return self._f.read(n, dtype=dtype, always_2d=always_2d)

    def close(self) -> None:
        self._f.close()



def _open(path: str | os.PathLike[str]) -> _SFFile:
    p = _check_file(path)
    try:
        return _SFFile(p)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise _Unreadable(_short(exc)) from None


class _AVFile(_AudioFile):
    """The part of ``soundfile.SoundFile`` that this module uses, over PyAV (FFmpeg).

    ``read(n)`` returns up to ``n`` frames as float32 (n, channels); decoding errors part
    way raise :class:`AudioDecodeError`."""

    def __init__(self, path: Path, libsndfile_reason: str) -> None:
        import av

        self.path = path
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or _short(exc)  # without the path FFmpeg repeats
            raise AudioDecodeError(f"not a readable audio file ({libsndfile_reason}; FFmpeg: {reason}): "
                                   f"{path}") from None
        stream = next((st for st in self._container.streams if st.type == "audio"), None)
        if stream is None or not stream.rate:
            self._container.close()
            raise AudioDecodeError(f"no audio stream in the file: {path}")
        self._stream = stream
        self.samplerate = int(stream.rate)
        self.channels = int(stream.channels or 1)
        duration = (float(stream.duration * stream.time_base) if stream.duration is not None
                    else (self._container.duration or 0) / 1_000_000)
        self.frames = int(round(duration * self.samplerate))
        self.format = f"{(self._container.format.name or '?').split(',')[0].upper()}/{stream.codec_context.name}"
        self._frames = self._container.decode(stream)
        self._resampler = _resampler(stream.layout.name if stream.layout else None, self.samplerate)
        self._pending: list[np.ndarray] = []
        self._have = 0
        self._done = False

    def read(self, n: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        import av

        while self._have < n and not self._done:
            try:
                frame = next(self._frames)
            except StopIteration:
                self._done = True
                frames = self._resampler.resample(None)
            except (av.FFmpegError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or _short(exc)
                raise AudioDecodeError(f"decoding failed part way ({reason}): {self.path}") from None
            else:
                frames = self._resampler.resample(frame)
            for f in frames:
                data = f.to_ndarray().T.astype(np.float32, copy=False)  # (samples, channels)
                self._pending.append(data)
                self._have += len(data)
        data = (np.concatenate(self._pending) if self._pending
                else np.zeros((0, self.channels), np.float32))
        out, rest = data[:n], data[n:]
        self._pending, self._have = ([rest] if len(rest) else []), len(rest)
        return out

    def close(self) -> None:
        self._container.close()



def _resampler(layout: str | None, rate: int) -> object:
    """PyAV's converter to float32 planar at ``rate``, on one thread.

    Its filter graph would otherwise start a pool of threads, and it is freed only by
    the garbage collector (it holds reference cycles): when that happens in a worker
    forked after the decoding (prepare's, predict's pool), the worker waits forever
    for threads it does not have.  Converting one block gains nothing from threads."""
    import av

    try:
        return av.AudioResampler(format="fltp", layout=layout, rate=rate, threads=1)
    except TypeError:  # an older PyAV takes no thread count
        return av.AudioResampler(format="fltp", layout=layout, rate=rate)


def open_audio(path: str | os.PathLike[str]) -> _AudioFile:
    """The file opened by libsndfile, or by PyAV where libsndfile cannot read it.

    Raises
    ------
    AudioDecodeError
        The file is missing, unreadable, empty, neither decoder reads it, or its header
        gives a sample rate outside 4 kHz-768 kHz or no channels.
    """
    try:
        f: _AudioFile = _open(path)
    except _Unreadable as exc:
        f = _AVFile(Path(path), exc.reason)
    if not MIN_SAMPLE_RATE <= int(f.samplerate) <= MAX_SAMPLE_RATE or int(f.channels) < 1:
        f.close()
        raise AudioDecodeError(f"the header gives {int(f.samplerate)} Hz and {int(f.channels)} channel(s); "
                               f"audio needs {MIN_SAMPLE_RATE:,}-{MAX_SAMPLE_RATE:,} Hz and at least one channel: "
                               f"{path}")
    return f


def block_frames(native: int, sr: int, channels: int, block_seconds: float) -> int:
    """Frames of ``native`` Hz audio per block: ``block_seconds`` of it, but never more
    than :data:`MAX_BLOCK_SAMPLES` samples over all channels, nor after resampling to
    ``sr``."""
    frames = int(block_seconds * native)
    frames = min(frames, MAX_BLOCK_SAMPLES // max(channels, 1), int(MAX_BLOCK_SAMPLES * native / sr))
    return max(1024, frames)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    # libsndfile repeats the path in its message; the caller adds it once.
    text = text.split("': ", 1)[-1] if text.startswith("Error opening") else text
    if text.startswith("File does not exist or is not a regular file"):
        # What libsndfile says of a file whose mp3 frames it cannot find.
        return "no audio frames found: corrupt or not audio"
    return text.rstrip(".")


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read the header of ``path``.

    Raises
    ------
    AudioDecodeError
        The file is missing, unreadable, empty or not audio.
    """
    with open_audio(path) as f:
        return AudioInfo(
            path=str(path),
            sample_rate=int(f.samplerate),
            channels=int(f.channels),
            frames=int(f.frames),
            duration=float(f.frames) / float(f.samplerate),
            format=str(f.format),
        )


def check_max_duration(max_duration: object) -> float | None:
    """``max_duration`` if it is None (no cap) or a number of seconds within
    :data:`~dancegenre.config.AUDIO_SECONDS` (as ``--max-duration``), else ConfigError."""
    if max_duration is None:
        return None
    low, high = AUDIO_SECONDS
    if isinstance(max_duration, bool) or not isinstance(max_duration, (int, float)) \
            or not low <= max_duration <= high:
        raise ConfigError(f"max_duration must be from {low:g} to {high:g} seconds, not {max_duration!r}")
    return float(max_duration)


def duration_words(seconds: float) -> str:
    """``seconds`` as a person reads a length: ``"12.0 h"``, ``"4.5 min"``, ``"30.0 s"``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _frame_limit(f: _AudioFile, max_duration: float | None, path: str | os.PathLike[str]) -> int | None:
    """The most frames of ``f`` that ``max_duration`` seconds allow (None: no cap), after
    refusing a file whose header already says it is longer: before any decoding, so
    that such a file costs no CPU."""
    max_duration = check_max_duration(max_duration)
    if max_duration is None:
        return None
    native, frames = int(f.samplerate), int(f.frames)
    if 0 < frames < UNKNOWN_FRAMES and frames > max_duration * native:
        raise AudioDecodeError(f"too long: {duration_words(frames / native)} of audio by its header, more than the "
                               f"{duration_words(max_duration)} allowed: {path}")
    return int(max_duration * native)


def check_duration(path: str | os.PathLike[str], max_duration: float | None) -> None:
    """Refuse ``path`` when its header says it lasts more than ``max_duration`` seconds
    (None: no cap), reading the header only: what a caller does before handing the file
    on (``serve`` before it predicts).  A header that understates the length is caught
    while decoding, by :func:`stream_mono` with the same ``max_duration``.

    Raises
    ------
    ConfigError
        ``max_duration`` is not None nor a number of seconds in the allowed range.
    AudioDecodeError
        The file is too long, or cannot be opened.
    """
    with open_audio(path) as f:
        _frame_limit(f, max_duration, path)


def stream_mono(
    path: str | os.PathLike[str],
    *,
    sr: int,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    quality: str = "HQ",
    max_duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Decode ``path`` block by block, downmix to mono and resample to ``sr``.

    Parameters
    ----------
    path : path to any file libsndfile reads.
    sr : target sample rate in Hz.
    block_seconds : seconds decoded per block; memory stays bounded by it.
    quality : soxr quality recipe.
    max_duration : seconds; a longer file is refused, by its header before any
        decoding, or as soon as decoding passes it (a header may understate the
        length).  None: no cap.

    Yields
    ------
    np.ndarray, shape (n,), float32
        Consecutive mono samples at ``sr`` in [-1, 1]; concatenated, they are the
        whole file.

    Raises
    ------
    AudioDecodeError
        The file cannot be opened, is longer than ``max_duration``, or decoding fails
        part way through.
    ConfigError
        ``max_duration`` is out of range (:func:`check_max_duration`).
    """
    with open_audio(path) as f:
        native = int(f.samplerate)
        limit = _frame_limit(f, max_duration, path)
        block = block_frames(native, sr, int(f.channels), block_seconds)
        resampler = None if native == sr else soxr.ResampleStream(
            native, sr, 1, dtype="float32", quality=quality
        )
        decoded = 0  # frames at the file's own rate
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioDecodeError(f"decoding failed part way ({_short(exc)}): {path}") from None
            decoded += len(data)
            if limit is not None and decoded > limit:  # a header that understated the length
                said = (f"its header says {duration_words(f.frames / native)}" if 0 < f.frames < UNKNOWN_FRAMES
                        else "its header gives no length")
                raise AudioDecodeError(f"too long: more than the {duration_words(limit / native)} allowed, "
                                       f"though {said}: {path}")
            last = len(data) < block
            if not np.isfinite(data).all():  # a float file can hold NaN or inf; nothing downstream can
                raise AudioDecodeError(f"the file holds NaN or infinite samples: {path}")
            mono = downmix(data)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if len(mono):
                yield mono
            if last:
                return


def stream_array(
    y: np.ndarray,
    *,
    sr_in: int,
    sr: int,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    quality: str = "HQ",
    max_duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Like :func:`stream_mono` for a waveform already in memory.

    ``y`` has shape (n,), (n, channels) (soundfile's layout) or (channels, n) (librosa's
    layout; the shorter axis is the channels); it is downmixed and resampled in blocks.
    A waveform longer than ``max_duration`` seconds is refused, as a file is.
    """
    max_duration = check_max_duration(max_duration)
    if not MIN_SAMPLE_RATE <= int(sr_in) <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(f"sample rate {sr_in} Hz is outside {MIN_SAMPLE_RATE:,}-{MAX_SAMPLE_RATE:,} Hz")
    if not np.issubdtype(y.dtype, np.floating):
        # Integer PCM has a scale of its own (int16: +-32768), complex or text none: as
        # float32 they would give features of a different loudness, or of nothing.
        raise AudioDecodeError(f"a waveform must hold floating-point samples in [-1, 1], not {y.dtype}"
                               + (" (divide integer PCM by its full scale)" if np.issubdtype(y.dtype, np.integer)
                                  else ""))
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2 and y.shape[0] < y.shape[1]:  # (channels, n): a waveform has more samples than channels
        y = y.T
    if y.ndim not in (1, 2) or y.size == 0:
        raise AudioDecodeError(f"a waveform must be 1-D or 2-D and non-empty, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise AudioDecodeError("the waveform holds NaN or infinite samples")
    if max_duration is not None and len(y) > max_duration * sr_in:
        raise AudioDecodeError(f"too long: {duration_words(len(y) / sr_in)} of audio, more than the "
                               f"{duration_words(max_duration)} allowed")
    mono = downmix(y if y.ndim == 2 else y[:, None])
    block = block_frames(sr_in, sr, 1, block_seconds)
    resampler = None if sr_in == sr else soxr.ResampleStream(sr_in, sr, 1, dtype="float32", quality=quality)
    for start in range(0, len(mono), block):
        chunk = mono[start : start + block]
        last = start + block >= len(mono)
        out = chunk if resampler is None else resampler.resample_chunk(chunk, last=last)
        if len(out):
            yield out


def downmix(data: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n,) float32 mean of the channels."""
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0])
    # A matrix-vector product: numpy's mean over a short strided axis is ~10x slower.
    weights = np.full(data.shape[1], 1.0 / data.shape[1], dtype=np.float32)
    return data @ weights


def stream_source(source: str | os.PathLike[str] | np.ndarray, *, sr: int, sr_in: float | None = None,
                  block_seconds: float = DEFAULT_BLOCK_SECONDS, quality: str = "HQ",
                  max_duration: float | None = None) -> Iterator[np.ndarray]:
    """A file (:func:`stream_mono`) or a waveform at ``sr_in`` Hz (:func:`stream_array`):
    what every function that takes either reads them through.  Either is refused when
    longer than ``max_duration`` seconds (None: no cap).

    Raises
    ------
    ConfigError
        ``source`` is neither a path nor a numpy array, or a waveform came without ``sr_in``.
    AudioDecodeError
        The file or waveform cannot be used.
    """
    if isinstance(source, np.ndarray):
        if sr_in is None:
            raise ConfigError("a waveform needs its sample rate: sr=...")
        return stream_array(source, sr_in=sr_in, sr=sr, block_seconds=block_seconds, quality=quality,
                            max_duration=max_duration)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"give a file path or a numpy waveform, not {type(source).__name__}")
    return stream_mono(source, sr=sr, block_seconds=block_seconds, quality=quality, max_duration=max_duration)


def join_blocks(blocks: Iterable[np.ndarray], empty: np.ndarray, *, limit: int | None = None) -> np.ndarray:
    """``blocks`` (n_i, ...) one after another as one array (sum n_i, ...) of ``empty``'s
    dtype, or its first ``limit`` rows; ``empty`` (0, ...) when there are none.

    The array grows in place (``ndarray.resize``, a ``realloc``: the system moves a large
    one by remapping its pages, not by copying them), by a quarter at a time, so the
    whole signal is in memory about once: not as a list of blocks plus their
    concatenation, twice.
    """
    out, n = empty, 0
    for block in blocks:
        if limit is not None:
            block = block[: limit - n]
        if n + len(block) > len(out):
            if out is empty:
                out = np.empty((n + len(block), *empty.shape[1:]), dtype=empty.dtype)
            else:
                out.resize((max(n + len(block), int(len(out) * GROWTH)), *out.shape[1:]), refcheck=False)
        out[n : n + len(block)] = block
        n += len(block)
        if limit is not None and n >= limit:
            break
    if out is not empty:
        out.resize((n, *out.shape[1:]), refcheck=False)  # gives back what the last growth left unused
    return out


def load(source: str | os.PathLike[str] | np.ndarray, *, sr: int, sr_in: float | None = None, quality: str = "HQ",
         max_seconds: float | None = None, max_duration: float | None = None) -> np.ndarray:
    """The file or waveform (:func:`stream_source`; or its first ``max_seconds``) as mono
    float32 at ``sr``: shape (n,).

    Decodes block by block and stops once it has enough, so a long file's head costs
    no more than the head; the whole of a file is held once (:func:`join_blocks`).
    ``max_duration`` (seconds) refuses a longer source, whatever ``max_seconds`` keeps
    of it.

    Raises
    ------
    AudioDecodeError
        The source cannot be decoded, or is longer than ``max_duration``.
    """
    limit = None if max_seconds is None else int(max_seconds * sr)
    blocks = stream_source(source, sr=sr, sr_in=sr_in, quality=quality, max_duration=max_duration)
    return join_blocks(blocks, np.zeros(0, dtype=np.float32), limit=limit)
