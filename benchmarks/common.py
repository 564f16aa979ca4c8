"""Shared set-up of the benchmarks: a cached corpus of 30-second mp3 clips."""

from __future__ import annotations

import os
from pathlib import Path

from dancegenre.data.synth import synthesize

BENCH_DIR = Path(os.environ.get("DANCEGENRE_BENCH_DIR", Path(__file__).resolve().parents[1] / "bench-out"))


def mp3_corpus(per_genre: int = 100, seed: int = 11) -> Path:
    """``2 * per_genre`` synthetic 30-second 44.1 kHz stereo mp3 clips (made once, then reused)."""
    out = BENCH_DIR / f"corpus-mp3-{per_genre}-{seed}"
    if not (out / "catalog.csv").exists():
        synthesize(out, per_genre=per_genre, seed=seed, fmt="mp3")
    return out


def audio_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*.mp3"))
