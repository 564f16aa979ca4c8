"""prepare vs the study's sequential librosa loop vs decoding alone, in one run.

    python -m benchmarks.bench_prepare [--per-genre 100]

(a) the study's way: one process, librosa.load(sr=22050) + melspectrogram + power_to_db
(b) decoding alone (soundfile), one process: the floor every method pays
(c) dancegenre prepare on all cores, into a fresh store
Targets on 2 cores: (c) >= 1.8x (a), and time(c) <= 2 x time(b) / cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from benchmarks.common import BENCH_DIR, audio_files, mp3_corpus
from dancegenre.data.store import prepare


def study_loop(files: list[Path]) -> None:
    for f in files:
        y, sr = librosa.load(str(f), sr=22050)
        S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
        librosa.power_to_db(S, ref=np.max)


def decode_only(files: list[Path]) -> None:
    for f in files:
        sf.read(str(f), dtype="float32")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-genre", type=int, default=100)
    args = ap.parse_args()
    corpus = mp3_corpus(args.per_genre)
    files = audio_files(corpus)
    cores = os.cpu_count() or 1
    study_loop(files[:2])  # warm librosa's numba and caches for a fair (a)
    timings = {}
    t = time.perf_counter(); study_loop(files); timings["a"] = time.perf_counter() - t
    t = time.perf_counter(); decode_only(files); timings["b"] = time.perf_counter() - t
    out = BENCH_DIR / "bench-store"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter(); prepare(corpus, out, progress=False); timings["c"] = time.perf_counter() - t
    n = len(files)
    print(f"{n} mp3 clips of 30 s, {cores} cores")
    print(f"(a) study loop (librosa, 1 core):   {n / timings['a']:7.1f} tracks/s  ({timings['a']:.1f} s)")
    print(f"(b) decode only (1 core):           {n / timings['b']:7.1f} tracks/s  ({timings['b']:.1f} s)")
    print(f"    decode floor on {cores} cores:        {n * cores / timings['b']:7.1f} tracks/s")
    print(f"(c) dancegenre prepare ({cores} workers): {n / timings['c']:7.1f} tracks/s  ({timings['c']:.1f} s)")
    print(f"speed-up (c) vs (a): {timings['a'] / timings['c']:.2f}x   (target >= 1.8x)")
    print(f"(c) vs decode floor: {timings['c'] / (timings['b'] / cores):.2f}x the floor's time   (target <= 2x)")


if __name__ == "__main__":
    main()
