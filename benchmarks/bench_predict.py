"""predict end to end vs decoding alone, and peak memory on a 2-hour mix.

    python -m benchmarks.bench_predict

(1) 200 synthetic 30-second mp3 clips: decode alone on all cores (a process pool
    running soundfile.read) vs ``Classifier.predict_many`` (decode + features + cnn1d).
    Targets on 2 cores: >= 20 tracks/s, and within 2x of the decode-only time.
(2) A 2-hour mix (flac, 44.1 kHz stereo) made of the corpus' clips, techno and EDM in
    alternating 10-minute blocks: ``dancegenre predict`` in a child process; its peak
    resident memory (ru_maxrss) must stay under 1 GB, and its sections should follow
    the blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.common import BENCH_DIR, audio_files, mp3_corpus
from dancegenre.config import TrainConfig
from dancegenre.data.store import prepare
from dancegenre.inference.classifier import Classifier
from dancegenre.training.fit import fit


def _decode(path: Path) -> int:
    return len(sf.read(str(path), dtype="float32")[0])


def make_mix(corpus: Path, dest: Path, hours: float = 2.0, block_minutes: float = 10.0) -> list[tuple[float, str]]:
    """Write a mix of alternating genre blocks; return (start seconds, genre) of each block."""
    techno = sorted((corpus / "techno").glob("*.mp3"))
    edm = sorted((corpus / "edm").glob("*.mp3"))
    blocks, t, k = [], 0.0, 0
    with sf.SoundFile(str(dest), "w", samplerate=44100, channels=2, format="FLAC") as out:
        while t < hours * 3600:
            genre = ("techno", "edm")[len(blocks) % 2]
            blocks.append((t, genre))
            pool = techno if genre == "techno" else edm
            end = t + block_minutes * 60
            while t < end and t < hours * 3600:
                y, _ = sf.read(str(pool[k % len(pool)]), dtype="float32")
                out.write(y)
                t += len(y) / 44100
                k += 1
    return blocks


def main() -> None:
    corpus = mp3_corpus()
    files = audio_files(corpus)
    cores = os.cpu_count() or 1
    run = BENCH_DIR / "run-predict"
    if not (run / "best.pt").exists():
        store = BENCH_DIR / "store-cat"
        prepare(corpus / "catalog.csv", store, progress=False)
        fit(store, out=run, config=TrainConfig(epochs=10), progress=False, log=lambda *a: None)
    clf = Classifier.load(run)
    ctx = get_context("fork")
    with ProcessPoolExecutor(cores, mp_context=ctx) as pool:
        list(pool.map(_decode, files[:cores]))  # start the workers before timing
        t0 = time.perf_counter()
        list(pool.map(_decode, files, chunksize=4))
        decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = list(clf.predict_many(files, workers=cores))
    predict = time.perf_counter() - t0
    n = len(files)
    print(f"{n} mp3 clips of 30 s, {cores} cores")
    print(f"decode only ({cores} processes): {n / decode:7.1f} tracks/s ({decode:.1f} s)")
    print(f"predict end to end:          {n / predict:7.1f} tracks/s ({predict:.1f} s)   (target >= 20)")
    print(f"predict / decode time: {predict / decode:.2f}x   (target <= 2x)")
    print(f"errors: {sum(p.error is not None for p in preds)}")

    mix = BENCH_DIR / "mix-2h.flac"
    if not mix.exists():
        blocks = make_mix(corpus, mix)
        (BENCH_DIR / "mix-2h.json").write_text(json.dumps(blocks))
    blocks = json.loads((BENCH_DIR / "mix-2h.json").read_text())
    result = BENCH_DIR / "mix-2h.jsonl"
    # A fresh wrapper process whose only child is the predict command: its
    # RUSAGE_CHILDREN peak is that command's alone (not this process's pool workers).
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
               "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t0 = time.perf_counter()
    measured = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "dancegenre", "predict", "-q",
                               str(run), str(mix), "--out", str(result)], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_mb = int(measured.stdout.split()[-1]) / 1024
    row = json.loads(result.read_text().splitlines()[0])
    sections = [s for s in row["sections"] if s["segments"] >= 5]
    starts = np.array([b[0] for b in blocks])
    hits = sum(any(abs(s["start"] - b) < 30 for s in sections) for b in starts[1:])
    print(f"2-hour mix: {seconds:.1f} s, peak resident memory {peak_mb:.0f} MB (target < 1024), "
          f"{row['segments']} segments, {len(sections)} sections of >= 5 segments; "
          f"{hits} of {len(starts) - 1} genre changes found within 30 s")


if __name__ == "__main__":
    main()
