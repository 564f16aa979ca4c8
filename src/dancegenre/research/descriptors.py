"""Audio descriptors computed from the audio itself (Spotify no longer serves its
audio features to new apps): tempo, loudness, timbre, rhythm, MFCCs, a vocal estimate.

Every descriptor is a number per track.  The mel spectrograms come from
``features.log_mel`` (the project's only mel code).

tempo_bpm, beat_strength
    Onset-strength envelope (spectral flux of a 64-band log-mel at 172 frames/s), then
    a comb search over 85-185 BPM (0.5 BPM steps, peaks refined to 0.05) for the tempo
    and phase whose beat grid collects the most onset strength.  Of the peaks related
    to the best by x1/2, x2/3, x3/2 or x2, the fastest whose comb score is at least 90%
    of the best wins.  beat_strength: mean onset strength on the
    beat grid divided by the mean overall (1 = no pulse).
rms_db
    Loudness as RMS level in dBFS over the whole track (not LUFS: no K-weighting, no
    gating).
onset_rate
    Onset-envelope peaks per second.
spectral_centroid, spectral_bandwidth, spectral_rolloff (85%), spectral_flatness, zcr
    librosa's, averaged over STFT frames (n_fft 2048, hop 512 at 22,050 Hz, no
    centring); Hz, except flatness (0 tonal .. 1 noise) and zero-crossing rate
    (crossings per sample).
percussive_ratio
    librosa's median-filter harmonic/percussive separation (soft masks, kernel 17):
    the percussive share of the energy.
low_energy, mid_energy, high_energy
    Share of the energy below 250 Hz, 250-4,000 Hz, above 4,000 Hz.
mfcc_k_mean, mfcc_k_std (k = 1..13)
    librosa's MFCCs (DCT-II) of the training front end's log-mel frames, mean and
    spread over time.
vocal_presence
    A rough estimate, 0..1: the share of frames where the *harmonic* part of the sound
    carries more than 40% of its energy in the voice band (300-3,400 Hz) and that band
    is tonal (flatness < 0.2).  It cannot tell a voice from a lead synth in the same
    register; use it for group trends, not for single tracks.
"""

from __future__ import annotations

import os
from typing import Any

import librosa
import numpy as np
import scipy.signal

from dancegenre.audio.decode import load
from dancegenre.audio.frontend import log_mel
from dancegenre.config import FeatureConfig
from dancegenre.errors import AudioTooShortError, SilentAudioError
from dancegenre.safety import read_table, releasing, write_table

SR = 22050
ONSET_CONFIG = FeatureConfig(sample_rate=SR, n_fft=1024, hop_length=128, n_mels=64)  # 172 frames/s
SPEC_N_FFT, SPEC_HOP = 2048, 512
TEMPO_RANGE = (85.0, 185.0)  # BPM window for the octave choice: dance music lives here
MAX_SECONDS = 600.0  # analyse at most the first 10 minutes of a track
VERSION = 3  # part of every cache key: bump when a descriptor's definition changes
N_MFCC = 13

DESCRIPTORS = (
    ["tempo_bpm", "beat_strength", "rms_db", "onset_rate", "spectral_centroid", "spectral_bandwidth",
     "spectral_rolloff", "spectral_flatness", "zcr", "percussive_ratio", "low_energy", "mid_energy",
     "high_energy", "vocal_presence"]
    + [f"mfcc_{k}_{s}" for k in range(1, N_MFCC + 1) for s in ("mean", "std")]
)


def onset_envelope(y: np.ndarray) -> np.ndarray:
    """Spectral flux of the log-mel: (frames,) at ONSET_CONFIG's frame rate."""
    mel = log_mel(y, ONSET_CONFIG)  # (64, T) dB
    flux = np.maximum(0.0, np.diff(mel, axis=1)).mean(axis=0)
    return np.concatenate([[0.0], flux]).astype(np.float64)


def _comb_score(env: np.ndarray, bpm: float, fps: float) -> tuple[float, float]:
    """(best mean onset strength on a beat grid of ``bpm`` over all phases, that phase)."""
    period = 60.0 * fps / bpm
    beats = np.arange(0, len(env) - 1, period)
    if len(beats) < 4:
        return 0.0, 0.0
    phases = np.arange(0, period, 1.0)
    idx = np.rint(beats[None, :] + phases[:, None]).astype(int)
    idx = np.clip(idx, 0, len(env) - 1)
    scores = env[idx].mean(axis=1)
    best = int(np.argmax(scores))
    return float(scores[best]), float(phases[best])


def estimate_tempo(env: np.ndarray, fps: float) -> tuple[float, float]:
    """(tempo in BPM, beat strength) from an onset envelope sampled at ``fps``.

    A comb search over the whole dance range (0.5 BPM steps), each local maximum
    refined to 0.05 BPM; then the octave choice: of the peaks related to the best one by
    1/2, 2/3, 3/2 or 2, the fastest whose score is at least 90% of the best.
    """
    if not np.any(env - env.mean()):
        return float("nan"), 1.0
    coarse = np.arange(TEMPO_RANGE[0], TEMPO_RANGE[1] + 0.01, 0.5)
    scores = np.array([_comb_score(env, b, fps)[0] for b in coarse])
    peaks = [i for i in range(len(coarse)) if scores[i] >= scores[max(i - 1, 0)] and scores[i] >= scores[min(i + 1, len(coarse) - 1)]]
    peaks = sorted(peaks, key=lambda i: -scores[i])[:6]
    refined = []
    for i in peaks:
        grid = np.arange(coarse[i] - 0.5, coarse[i] + 0.5, 0.05)
        fine = [_comb_score(env, b, fps)[0] for b in grid]
        k = int(np.argmax(fine))
        refined.append((float(grid[k]), float(fine[k])))
    top_bpm, top = max(refined, key=lambda r: r[1])
    related = [(b, sc) for b, sc in refined
               if any(abs(b / top_bpm - r) < 0.02 for r in (0.5, 2 / 3, 1.0, 1.5, 2.0)) and sc >= 0.9 * top]
    bpm = max(b for b, _ in related)
    mean = env.mean()
    return bpm, float(_comb_score(env, bpm, fps)[0] / mean) if mean > 0 else 1.0


def describe_signal(y: np.ndarray) -> dict[str, float]:
    """Every descriptor of a mono float32 signal at 22,050 Hz."""
    if len(y) < SR:
        raise AudioTooShortError(f"too short for descriptors: {len(y) / SR:.2f} s (needs 1 s)")
    if np.max(np.abs(y)) <= 1e-6:
        raise SilentAudioError("digital silence")
    out: dict[str, float] = {}
    fps = SR / ONSET_CONFIG.hop_length
    env = onset_envelope(y)
    out["tempo_bpm"], out["beat_strength"] = estimate_tempo(env, fps)
    out["rms_db"] = float(20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)) + 1e-12))
    peaks, _ = scipy.signal.find_peaks(env, height=env.mean() + 0.5 * env.std(), distance=max(1, int(0.05 * fps)))
    out["onset_rate"] = float(len(peaks) / (len(y) / SR))

    mag = np.abs(librosa.stft(y, n_fft=SPEC_N_FFT, hop_length=SPEC_HOP, center=False))  # (bins, frames)
    power = mag.astype(np.float64) ** 2
    out["spectral_centroid"] = float(librosa.feature.spectral_centroid(S=mag, sr=SR).mean())
    out["spectral_bandwidth"] = float(librosa.feature.spectral_bandwidth(S=mag, sr=SR).mean())
    out["spectral_rolloff"] = float(librosa.feature.spectral_rolloff(S=mag, sr=SR, roll_percent=0.85).mean())
    out["spectral_flatness"] = float(librosa.feature.spectral_flatness(S=mag).mean())
    out["zcr"] = float(librosa.feature.zero_crossing_rate(y, frame_length=SPEC_N_FFT, hop_length=SPEC_HOP,
                                                          center=False).mean())

    h_mask, p_mask = librosa.decompose.hpss(mag, kernel_size=17, mask=True)
    h_pow, p_pow = power * h_mask, power * p_mask
    out["percussive_ratio"] = float(p_pow.sum() / (h_pow.sum() + p_pow.sum() + 1e-12))
    f = librosa.fft_frequencies(sr=SR, n_fft=SPEC_N_FFT)
    all_energy = power.sum() + 1e-12
    out["low_energy"] = float(power[f < 250].sum() / all_energy)
    out["mid_energy"] = float(power[(f >= 250) & (f < 4000)].sum() / all_energy)
    out["high_energy"] = float(power[f >= 4000].sum() / all_energy)
    band = (f >= 300) & (f <= 3400)
    voice_share = h_pow[band].sum(axis=0) / (power.sum(axis=0) + 1e-12)
    band_flat = np.exp(np.mean(np.log(h_pow[band] + 1e-12), axis=0)) / (h_pow[band].mean(axis=0) + 1e-12)
    out["vocal_presence"] = float(np.mean((voice_share > 0.4) & (band_flat < 0.2)))

    mel = log_mel(y, FeatureConfig(sample_rate=SR))  # (128, T) dB: the training front end
    mfcc = librosa.feature.mfcc(S=mel, n_mfcc=N_MFCC)  # DCT-II (orthonormal) of the dB frames
    for k in range(N_MFCC):
        out[f"mfcc_{k + 1}_mean"] = float(mfcc[k].mean())
        out[f"mfcc_{k + 1}_std"] = float(mfcc[k].std())
    return out


def describe(source: str | os.PathLike[str] | np.ndarray, *, sr: int | None = None,
             max_seconds: float = MAX_SECONDS) -> dict[str, Any]:
    """Descriptors of a file (or of a waveform at ``sr``): the first ``max_seconds``."""
    y = load(source, sr=SR, sr_in=sr, max_seconds=max_seconds)
    return {"analysed_seconds": round(len(y) / SR, 2), **describe_signal(y)}


def describe_item(path: str, key: str) -> dict[str, Any]:
    """Worker task: the descriptors of one file as a row; a failure as a row with ``error``.

    The worker writes nothing: rows are small and go back to the client, which keeps
    them for a resume, so a cluster's workers need no shared storage for this."""
    from dancegenre.errors import DanceGenreError

    try:
        return {"cache_key": key, **describe(path)}
    except DanceGenreError as exc:
        return {"cache_key": key, "error": type(exc).__name__, "reason": str(exc)}


@releasing
def describe_files(source: str | os.PathLike[str], out: str | os.PathLike[str], *, workers: int | None = None,
                   progress: bool = True, scheduler: str = "processes") -> tuple[Any, Any]:
    """Descriptors of every file of a folder, catalog or prepared store into the CSV ``out``.

    One row a file: item, path, label, the catalog's other columns, then
    :data:`DESCRIPTORS`.  Bad files go to ``<out>.failures.csv``.  Resumable: rows of
    unchanged files in an existing ``out`` are kept, and files finished by an
    interrupted run (kept in ``<out>.pending/rows.jsonl``) are not analysed again.
    ``scheduler``: where the files are analysed (see :mod:`dancegenre.scheduler`).

    Returns (table, failures) as DataFrames.
    """
    from pathlib import Path

    import pandas as pd

    from dancegenre.data.catalog import item_key, list_items
    from dancegenre.data.jobs import Journal, cache_keys, sort_results
    from dancegenre.data.scheduler import parallel_map
    from dancegenre.data.store import SegmentStore
    from dancegenre.errors import EmptyInputError

    src = Path(source)
    if src.is_dir() and (src / "store.json").exists():  # a prepared store: its sources
        store = SegmentStore(src)
        items = store.items.drop(columns=[c for c in ("cache_key", "duration", "sample_rate", "channels",
                                                      "n_segments", "offset") if c in store.items.columns])
    else:
        items, _ = list_items(src)
    from dancegenre.safety import (
        FAILURE_COLUMNS,
        Inputs,
        check_output_file,
    )

    out = Path(out)
    failures_path = out.with_name(out.stem + ".failures.csv")
    inputs = Inputs([src, *(src.glob("*.csv") if src.is_dir() else []), *items["path"]])
    # resumed, and never a user's file
    check_output_file(out, inputs=inputs, suffixes=(".csv",), columns=("cache_key",), kind="features table")
    check_output_file(failures_path, inputs=inputs, columns=FAILURE_COLUMNS, kind="failures list",
                      what="the failures file")
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(out, "features-journal")
    config = FeatureConfig(sample_rate=SR)  # keys change when the file does
    keys, failures = cache_keys(items["path"], lambda path: f"{item_key(path, config)}v{VERSION}")
    items = items.assign(cache_key=keys)
    done: dict[str, dict[str, Any]] = {}
    if out.exists():
        old = read_table(out, dtype={"cache_key": str})
        if "cache_key" in old.columns:
            for row in old.to_dict(orient="records"):
                done[row["cache_key"]] = {k: row[k] for k in ["cache_key", "analysed_seconds", *DESCRIPTORS] if k in row}
    done.update((row["cache_key"], row) for row in journal.rows(needs=("cache_key",)))
    tasks = {i: (items.at[i, "path"], k) for i, k in enumerate(keys) if k is not None and k not in done}
    with journal.writer() as add:
        def keep(_: int, row: dict[str, Any]) -> None:
            if "error" not in row:  # a failure is tried again on the next run
                add(row)

        results = parallel_map(describe_item, tasks, workers=workers, progress=progress, desc="features",
                               scheduler=scheduler, on_result=keep)
    sort_results(results, "cache_key", done, failures)
    rows = []
    for i, rec in enumerate(items.to_dict(orient="records")):
        if i not in failures and rec["cache_key"] in done:
            rows.append({**rec, **done[rec["cache_key"]]})
    table = pd.DataFrame(rows)
    fail = pd.DataFrame([{"item": items.at[i, "item"], "path": items.at[i, "path"], **f} for i, f in sorted(failures.items())],
                        columns=["item", "path", "error", "reason"])
    write_table(out, table)
    write_table(failures_path, fail)
    journal.remove()  # only what this job wrote
    if table.empty:
        raise EmptyInputError(f"no file of {source} could be described; reasons in {out.stem}.failures.csv")
    return table, fail
