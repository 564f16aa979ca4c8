"""Shared set-up of the benchmarks: a cached corpus of 30-second mp3 clips."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

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


def dancegenre_command(*args: str) -> list[str]:
    """The command line a user types, as a fresh Python process of this interpreter."""
    return [sys.executable, "-m", "dancegenre", *args]


def timed_run(cmd: list[str], repeat: int = 1) -> float:
    """Wall seconds of ``cmd`` as a fresh process (the median of ``repeat`` runs); its
    output is discarded, a failure raises."""
    return float(statistics.median(run_usage(cmd)[0] for _ in range(repeat)))


def run_usage(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``cmd`` as a fresh process: the CPU time, user and
    system, of the process and of every worker it started and waited for."""
    import resource

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, cpu() - c0


def print_usage(what: str, wall: float, cpu: float, files: int, cores: int, profile: dict[str, float]) -> dict:
    """Where a command's time went: its CPU seconds, how busy it kept the cores, and its
    CPU a file against the one-core stage profile; returns the figures for the JSON."""
    stages = sum(profile.values())
    print(f"{what}: {cpu:.1f} CPU-s in {wall:.1f} s on {cores} cores ({cpu / (wall * cores):.0%} busy); "
          f"{1000 * cpu / files:.1f} ms of CPU a file, against {stages:.1f} ms for the bare stages on one core "
          f"({1000 * cpu / files - stages:+.1f} ms: start-up, streaming, tables, the pool)")
    return {"cpu_seconds": round(cpu, 2), "cores_busy": round(cpu / (wall * cores), 3),
            "cpu_ms_per_file": round(1000 * cpu / files, 1), "stages_ms_per_file": round(stages, 1)}


def _decode_soundfile(paths: list[str]) -> int:
    import soundfile as sf

    return sum(len(sf.read(p, dtype="float32")[0]) for p in paths)


def _decode_pyav(paths: list[str]) -> int:
    import av

    frames = 0
    for p in paths:
        with av.open(p) as container:
            frames += sum(f.to_ndarray().shape[-1] for f in container.decode(audio=0))
    return frames


DECODERS = {"libsndfile": _decode_soundfile, "PyAV (FFmpeg)": _decode_pyav}


def decode_floor(files: list[Path], decoder: str, workers: int | None = None) -> float:
    """Seconds to decode every file to float32 on all cores, nothing else: a pool of
    processes started before the clock, each given batches of files."""
    fn = DECODERS[decoder]
    workers = workers or os.cpu_count() or 1
    paths = [str(f) for f in files]
    batches = [paths[i : i + 8] for i in range(0, len(paths), 8)]
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        list(pool.map(fn, [paths[:1]] * workers))  # started, and the decoder imported
        t0 = time.perf_counter()
        list(pool.map(fn, batches))
        return time.perf_counter() - t0


def stage_profile(files: list[Path], config: Any) -> dict[str, float]:
    """Milliseconds per file of each stage of the front end, one process, one core:
    decode (libsndfile), downmix + resample (soxr), log-mel (STFT, mel, log), and the
    cut into float16 segments."""
    import numpy as np
    import soundfile as sf
    import soxr

    from dancegenre.audio.decode import downmix
    from dancegenre.audio.frontend import LogMelStream, Segmenter

    LogMelStream(config)  # filters made before the clock
    spent = dict.fromkeys(("decode", "downmix + resample", "log-mel", "segments (float16)"), 0.0)
    for f in files:
        t0 = time.perf_counter()
        data, native = sf.read(str(f), dtype="float32", always_2d=True)
        t1 = time.perf_counter()
        mono = downmix(data)
        if native != config.sample_rate:
            mono = soxr.resample(mono, native, config.sample_rate, quality=config.resample_quality)
        t2 = time.perf_counter()
        stream = LogMelStream(config)
        frames = np.concatenate([stream.push(mono), stream.finish()])
        t3 = time.perf_counter()
        Segmenter(config).push(frames).segments.astype(np.float16)
        t4 = time.perf_counter()
        for stage, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[stage] += dt
    return {stage: 1000 * total / len(files) for stage, total in spent.items()}


def print_profile(profile: dict[str, float]) -> None:
    total = sum(profile.values())
    print("per-stage profile (ms per file, one core):")
    for stage, ms in profile.items():
        print(f"    {stage:<26} {ms:6.1f} ms  {100 * ms / total:4.0f}%")
    decode = profile["decode"]
    print(f"    all stages / decode: {total / decode:.2f}x  (the best a pipeline on all cores can do "
          "without overlapping stages)")


def save_result(name: str, result: dict[str, Any]) -> Path:
    """Write a benchmark's figures to ``bench-out/<name>.json`` (for the README table)."""
    path = BENCH_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path
