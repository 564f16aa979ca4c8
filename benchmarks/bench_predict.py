"""``dancegenre predict`` as a user runs it: start-up, a crate of clips, a 2-hour mix.

    python -m benchmarks.bench_predict [--per-genre 150] [--device cuda]

(1) Start-up, each the median of 3 fresh processes: ``dancegenre --help`` (target
    under 0.3 s), ``python -c "import torch"`` (what a command that runs torch pays),
    and ``dancegenre predict RUN one.mp3`` (target under 1.5 s), both with the run's
    ONNX export (the default on the CPU: no torch import) and with ``--engine torch``.
(2) ``2 * per_genre`` synthetic 30-second mp3 clips (300 by default):
    ``dancegenre predict -q RUN CORPUS --out preds.csv`` in a fresh process (each engine)
    against the decode floor (every file decoded to float32 on all cores, libsndfile and PyAV, the
    faster counts).  Target: at most 1.7x the floor's time.  Where the time goes: the
    front end's per-stage profile and the network's time a file (one core), and the
    ONNX command's CPU seconds, its workers' included, as CPU a file against them.
    With ``--device cuda`` (a GPU machine), also ``predict --device cuda`` with the
    features on the GPU (its default there) and with ``--features workers``, against
    the same floor.  Also ``predict --workers 1``: one process, its CPU seconds against
    its wall seconds (threads spinning beside the work would push the ratio over 1).
(3) A 2-hour mix (flac, 44.1 kHz stereo) made of the corpus' clips, techno and EDM in
    alternating 10-minute blocks: ``dancegenre predict`` in a child process; its peak
    resident memory (ru_maxrss) must stay under 1 GB, and its sections should follow
    the blocks.

The figures are also written to ``bench-out/bench_predict.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

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
    timed_run,
)
from dancegenre.config import TrainConfig
from dancegenre.data.store import prepare
from dancegenre.inference.portable import current_export
from dancegenre.training.export import export_onnx
from dancegenre.training.fit import fit


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


def network_ms_per_file(run: Path, files: list[Path]) -> float:
    """Milliseconds a file of the run's ONNX network on one thread (segments made first)."""
    from dancegenre.audio.frontend import iter_segments

    model = current_export(run)  # main() made it
    model.set_threads(1)
    segments = [np.concatenate([b.segments for b in iter_segments(str(f), model.feature_config)]) for f in files]
    model(segments[0])
    t0 = time.perf_counter()
    for s in segments:
        model(s)
    return 1000 * (time.perf_counter() - t0) / len(files)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-genre", type=int, default=150)
    ap.add_argument("--device", default=None, help="also time predict with the network there (cuda, cuda:1...)")
    args = ap.parse_args()
    corpus = mp3_corpus(args.per_genre)
    files = audio_files(corpus)
    n, cores = len(files), os.cpu_count() or 1
    run = BENCH_DIR / f"run-predict-{args.per_genre}"
    if not (run / "best.pt").exists():
        store = BENCH_DIR / f"store-cat-{args.per_genre}"
        prepare(corpus / "catalog.csv", store, progress=False)
        fit(store, out=run, config=TrainConfig(epochs=10), progress=False, log=lambda *a: None)
    if current_export(run) is None:  # a run trained before train wrote best.onnx
        export_onnx(run)

    helps = timed_run(dancegenre_command("--help"), repeat=3)
    torch_import = timed_run([sys.executable, "-c", "import torch"], repeat=3)
    one = {engine: timed_run(dancegenre_command("predict", "-q", str(run), str(files[0]), "--engine", engine),
                             repeat=3) for engine in ("onnx", "torch")}
    print(f"start-up: dancegenre --help {helps:.2f} s (target < 0.3 s); predict on one file {one['onnx']:.2f} s "
          f"with the ONNX export (target < 1.5 s), {one['torch']:.2f} s with --engine torch "
          f"({one['torch'] / one['onnx']:.1f}x); importing torch alone takes {torch_import:.2f} s")

    floors = {name: decode_floor(files, name) for name in DECODERS}
    floor_name = min(floors, key=floors.get)
    out = BENCH_DIR / "bench-predictions.csv"
    out.unlink(missing_ok=True)
    usages = {engine: run_usage(dancegenre_command("predict", "-q", str(run), str(corpus), "--out", str(out),
                                                   "--engine", engine)) for engine in ("torch", "onnx")}
    crates = {engine: wall for engine, (wall, _) in usages.items()}
    # one process, no pool: every file through the front end and the network in turn.  Its
    # CPU seconds over its wall seconds show threads that spin beside the work (2.0 before
    # session 13, when onnxruntime's and numpy's BLAS threads spin-waited between calls)
    single_wall, single_cpu = run_usage(dancegenre_command("predict", "-q", str(run), str(corpus), "--out", str(out),
                                                            "--workers", "1"))
    on_device = {}
    for features in ("device", "workers") if args.device else ():
        on_device[features], _ = run_usage(dancegenre_command("predict", "-q", str(run), str(corpus), "--out", str(out),
                                                              "--device", args.device, "--features", features))
    crate = crates["onnx"]
    # the front end's stages on one core, and the network's share: where predict's CPU goes
    profile = stage_profile(files[:: max(1, n // 40)], current_export(run).feature_config)
    profile["network (ONNX, 1 thread)"] = network_ms_per_file(run, files[:8])
    errors = sum(1 for line in out.read_text().splitlines()[1:] if not line.split(",")[1])
    print(f"{n} mp3 clips of 30 s (44.1 kHz stereo), {cores} cores")
    for name, seconds in floors.items():
        print(f"decode only, {name:<14} {cores} cores: {seconds:6.1f} s  {n / seconds:6.1f} files/s")
    for engine, seconds in crates.items():
        print(f"dancegenre predict --engine {engine:<5} (fresh process): {seconds:6.1f} s  {n / seconds:6.1f} files/s"
              f"  {seconds / floors[floor_name]:.2f}x the decode floor ({floor_name})")
    for features, seconds in on_device.items():
        print(f"dancegenre predict --device {args.device} --features {features:<7}: {seconds:6.1f} s  "
              f"{n / seconds:6.1f} files/s  {seconds / floors[floor_name]:.2f}x the decode floor ({floor_name})")
    print(f"predict (ONNX, the default) vs the decode floor: {crate / floors[floor_name]:.2f}x its time "
          f"(target <= 1.7x); {errors} errors")
    print(f"predict --workers 1 (one process): {single_wall:.1f} s, {single_cpu:.1f} CPU-s, "
          f"{single_cpu / single_wall:.2f} CPU-s a second (1.0: nothing spins beside the work)")
    print_profile(profile)
    usage = print_usage("predict (ONNX)", crate, usages["onnx"][1], n, cores, profile)

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
    save_result("bench_predict", {**usage, "profile_ms_per_file": {k: round(v, 1) for k, v in profile.items()},
        "help_seconds": round(helps, 3), "torch_import_seconds": round(torch_import, 3),
        "predict_one_file_seconds": round(one["onnx"], 3), "predict_one_file_torch_seconds": round(one["torch"], 3),
        "files": n, "cores": cores,
        "decode_seconds": {k: round(v, 2) for k, v in floors.items()}, "predict_seconds": round(crate, 2),
        "predict_torch_seconds": round(crates["torch"], 2),
        "ratio_to_floor_torch": round(crates["torch"] / floors[floor_name], 2),
        "ratio_to_floor": round(crate / floors[floor_name], 2),
        "predict_workers_1": {"seconds": round(single_wall, 2), "cpu_seconds": round(single_cpu, 2)},
        **({"device": args.device, "predict_device_seconds": {k: round(v, 2) for k, v in on_device.items()}}
           if args.device else {}),
        "mix_seconds": round(seconds, 1), "mix_peak_mb": round(peak_mb), "mix_changes_found": [hits, len(starts) - 1],
    })


if __name__ == "__main__":
    main()
