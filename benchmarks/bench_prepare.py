"""``dancegenre prepare`` as a user runs it, against decoding alone and the study's loop.

    python -m benchmarks.bench_prepare [--per-genre 150]

On ``2 * per_genre`` synthetic 30-second 44.1 kHz stereo mp3 clips (300 by default):

(a) the study's way: one process, librosa.load(sr=22050) + melspectrogram + power_to_db;
(b) the decode floor: every file decoded to float32 and nothing else, on all cores
    (a process pool started before the clock), with libsndfile and with PyAV; the
    faster is the floor;
(c) ``dancegenre prepare -q CORPUS STORE`` in a fresh process, into a new store: the
    whole command, start-up and the final merge included.

Targets (issue 18): (c) at most 1.5x the floor's time, and at least 2.5x faster than
(a).  Where the time goes: a per-stage profile of the front end (one core, 40 files
from across the corpus), and (c)'s CPU seconds, its workers' included, as the share of
the cores it kept busy and as CPU a file against the profile's sum.  The figures are
also written to ``bench-out/bench_prepare.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import librosa
import numpy as np

from benchmarks.common import (
    BENCH_DIR,
    DECODERS,
    audio_files,
    dancegenre_command,
    decode_floor,
    mp3_corpus,
    print_profile,
    print_usage,
    run_usage,
    save_result,
    stage_profile,
)
from dancegenre.config import FeatureConfig


def study_loop(files: list[Path]) -> None:
    for f in files:
        y, sr = librosa.load(str(f), sr=22050)
        S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
        librosa.power_to_db(S, ref=np.max)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-genre", type=int, default=150)
    args = ap.parse_args()
    corpus = mp3_corpus(args.per_genre)
    files = audio_files(corpus)
    n, cores = len(files), os.cpu_count() or 1
    study_loop(files[:2])  # librosa's caches warm, for a fair (a)
    t0 = time.perf_counter()
    study_loop(files)
    study = time.perf_counter() - t0
    floors = {name: decode_floor(files, name) for name in DECODERS}
    floor_name = min(floors, key=floors.get)
    floor = floors[floor_name]
    out = BENCH_DIR / "bench-store"
    shutil.rmtree(out, ignore_errors=True)
    command, cpu = run_usage(dancegenre_command("prepare", "-q", str(corpus), str(out)))
    profile = stage_profile(files[:: max(1, n // 40)], FeatureConfig())  # 40 files from the whole corpus

    print(f"{n} mp3 clips of 30 s (44.1 kHz stereo), {cores} cores")
    print(f"(a) study loop (librosa, 1 core):        {study:6.1f} s  {n / study:6.1f} files/s")
    for name, seconds in floors.items():
        print(f"(b) decode only, {name:<14} {cores} cores: {seconds:6.1f} s  {n / seconds:6.1f} files/s")
    print(f"(c) dancegenre prepare (fresh process):  {command:6.1f} s  {n / command:6.1f} files/s")
    print(f"(c) vs the decode floor ({floor_name}): {command / floor:.2f}x its time   (target <= 1.5x)")
    print(f"(c) vs the study's loop: {study / command:.2f}x faster   (target >= 2.5x)")
    print_profile(profile)
    usage = print_usage("(c) prepare", command, cpu, n, cores, profile)
    save_result("bench_prepare", {**usage,
        "files": n, "cores": cores, "study_seconds": round(study, 2),
        "decode_seconds": {k: round(v, 2) for k, v in floors.items()}, "prepare_seconds": round(command, 2),
        "ratio_to_floor": round(command / floor, 2), "speedup_vs_study": round(study / command, 2),
        "profile_ms_per_file": {k: round(v, 1) for k, v in profile.items()},
    })


if __name__ == "__main__":
    main()
