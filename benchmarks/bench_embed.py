"""`dancegenre embed` on 30-second mp3 clips, and a head trained on cached embeddings.

    DANCEGENRE_MUSICNN_WHEEL=... python -m benchmarks.bench_embed [N_CLIPS]

(1) ``dancegenre embed CLIPS --model musicnn-msd --out X.npy`` in a fresh process, timed
    as a user runs it (start-up, weights from the cache, decoding, musicnn on 10
    non-overlapping 3-s patches a clip, through onnxruntime), against the same command
    with ``--engine torch`` (the network in torch), decoding alone and, where
    ``DANCEGENRE_MUSICNN_TF_PYTHON`` names a Python with TensorFlow and musicnn, the
    original TF1 graph (built once, the network alone) in the same run.  Target:
    >= 10 tracks/s on 2 cores.
(1a) Start-up: ``dancegenre tag ONE_CLIP`` (median of 3 fresh processes) with the default
    engine (onnxruntime, torch never imported) and with ``--engine torch``.
(1b) A per-stage profile of the front end, and its share of embed's time.
(2) The network alone, in this process: ms per 3-s patch at batch sizes 1 and 16 on all
    cores, and at batch 1 on one thread, in torch and in onnxruntime (the original is
    timed both ways too).
(3) ``dancegenre train STORE --model musicnn-msd`` on a store whose embeddings are
    cached (the hard-techno clips with the musicnn front end, if ../shared/data is
    there): seconds for the whole command.  Target: under a minute.
(3b) The same store copied without its cache: ``train --epochs 1`` with ``--finetune 0``
    (the frozen features) and ``--finetune 4`` (the front end's maps), each with the
    default engine (onnxruntime) and ``--engine torch``, fresh processes, the ratios.
Prints a JSON summary; writes it to bench-out/embed.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf
import torch

from benchmarks.common import (
    BENCH_DIR,
    audio_files,
    mp3_corpus,
    print_profile,
    stage_profile,
    timed_run,
)
from dancegenre.config import FeatureConfig

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "hardtechno" / "catalog.csv"
EXE = str(Path(sys.executable).with_name("dancegenre"))


TF_TIMING = """
import json, os, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
tf.compat.v1.disable_eager_execution()
from musicnn import models
x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96]); training = tf.compat.v1.placeholder(tf.bool)
y = models.define_model(x, training, "MSD_musicnn", 50)[0]
out = {}
b = np.random.default_rng(0).random((64, 187, 96), dtype=np.float32)
one = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
for threads, config, runs in (("", None, ((1, 32), (64, 1))), ("_1thread", one, ((1, 16),))):
    with tf.compat.v1.Session(config=config) as s:
        tf.compat.v1.train.Saver().restore(s, os.path.dirname(models.__file__) + "/MSD_musicnn/")
        for batch, reps in runs:
            s.run(y, {x: b[:batch], training: False})
            t = time.perf_counter()
            for _ in range(reps):
                s.run(y, {x: b[:batch], training: False})
            out["batch" + str(batch) + threads] = round((time.perf_counter() - t) / (reps * batch) * 1000, 1)
print(json.dumps(out))
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    files = audio_files(mp3_corpus())[:n]
    out = BENCH_DIR / "embed"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run([EXE, "pretrained", "fetch", "-q", "--model", "musicnn-msd"], check=True, stdout=subprocess.DEVNULL)
    summary: dict = {"clips": len(files), "cores": os.cpu_count()}

    t = time.perf_counter()
    for f in files:
        sf.read(str(f), dtype="float32")
    summary["decode_alone_s"] = round(time.perf_counter() - t, 2)
    # the ONNX file of the network is made on first use (once per machine): not part of the timing
    subprocess.run([EXE, "embed", "-q", str(files[0]), "--out", str(out / "warm.npy")], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = timed_run([EXE, "embed", "-q", *map(str, files), "--out", str(out / "x.npy")])
    summary["embed_s"] = round(seconds, 2)
    summary["embed_tracks_per_s"] = round(len(files) / seconds, 2)
    # the baseline in the same run: the same command with the network in torch
    torch_seconds = timed_run([EXE, "embed", "-q", *map(str, files), "--out", str(out / "t.npy"),
                               "--engine", "torch"])
    summary["embed_torch_s"] = round(torch_seconds, 2)
    summary["embed_torch_tracks_per_s"] = round(len(files) / torch_seconds, 2)
    summary["onnx_speedup"] = round(torch_seconds / seconds, 2)
    print(f"embed: {seconds:.1f} s with onnxruntime (default), {torch_seconds:.1f} s with --engine torch: "
          f"{torch_seconds / seconds:.2f}x")
    # start-up: `tag` on one clip, the median of 3 fresh processes, each engine
    for engine in ("auto", "torch"):
        summary[f"tag_one_file_{engine}_s"] = round(timed_run([EXE, "tag", "-q", str(files[0]), "--engine", engine],
                                                             repeat=3), 2)
    print(f"tag one file: {summary['tag_one_file_auto_s']} s (onnxruntime, no torch import), "
          f"{summary['tag_one_file_torch_s']} s with --engine torch")
    # Where embed's time goes: the front end (musicnn preset) per file on one core, against
    # the whole command's time on all cores (issue 18: decoding and features under a third).
    profile = stage_profile(files[:20], FeatureConfig.preset("musicnn"))
    print_profile(profile)
    front_end = sum(profile.values()) / 1000 * len(files) / (os.cpu_count() or 1)
    summary["profile_ms_per_file"] = {k: round(v, 1) for k, v in profile.items()}
    summary["front_end_share_of_embed"] = round(front_end / seconds, 3)
    print(f"decoding and features: {100 * front_end / seconds:.0f}% of embed's time (target < 33%); "
          "the rest is musicnn")
    # The baseline, in the same run where a side environment has TensorFlow and musicnn
    # (tools/musicnn_reference.py says how to make one): the original TF1 graph, built
    # once, on 3-s patches at batch 1 and 64, all cores.
    tf_python = os.environ.get("DANCEGENRE_MUSICNN_TF_PYTHON")
    if tf_python:
        done = subprocess.run([tf_python, "-c", TF_TIMING], capture_output=True, text=True, check=True)
        original = json.loads(done.stdout.strip().splitlines()[-1])
        summary.update({f"original_network_ms_per_patch_{k}": v for k, v in original.items()})
        per_track = min(v for k, v in original.items() if "thread" not in k) * 10 / 1000  # 10 patches a clip
        summary["original_network_tracks_per_s"] = round(1 / per_track, 2)
        summary["embed_vs_original_network"] = round(summary["embed_tracks_per_s"] * per_track, 2)

    from dancegenre.inference.embed import Embedder
    from dancegenre.models.musicnn import MusiCNNBackbone
    from dancegenre.models.pretrained import load_backbone_state
    from dancegenre.training.backbone import backbone_onnx_path
    from dancegenre.training.export import open_session

    embedder = Embedder.load("musicnn-msd", log=lambda *_: None)  # its ONNX file made above
    net = MusiCNNBackbone()
    net.load_state_dict(load_backbone_state("musicnn-msd"))
    net.eval()
    threads = torch.get_num_threads()
    sessions = {n: open_session(backbone_onnx_path("musicnn-msd", embedder.digest), n) for n in {threads, 1}} \
        if embedder.session is not None else {}
    with torch.no_grad():
        for batch, n_threads, suffix in ((1, threads, ""), (16, threads, ""), (1, 1, "_1thread")):
            torch.set_num_threads(n_threads)
            x = torch.randn(batch, 96, 187)
            runs = {"": lambda: net(x)}
            if sessions:
                feed = {"segments": x.numpy()}
                runs["_onnx"] = lambda: sessions[n_threads].run(None, feed)
            for engine, run in runs.items():
                run()
                t = time.perf_counter()
                reps = max(1, 32 // batch)
                for _ in range(reps):
                    run()
                summary[f"network{engine}_ms_per_patch_batch{batch}{suffix}"] = round(
                    (time.perf_counter() - t) / (reps * batch) * 1000, 1)
    torch.set_num_threads(threads)

    if REAL.exists():
        store = BENCH_DIR / "ht-musicnn"
        if not (store / "store.json").exists():
            subprocess.run([EXE, "prepare", "-q", str(REAL), str(store), "--frontend", "musicnn", "--segment-hop", "62"],
                           check=True, stdout=subprocess.DEVNULL)
        warm = out / "warm"
        timed_run([EXE, "train", "-q", str(store), "--model", "musicnn-msd", "--out", str(warm), "--epochs", "1"])
        summary["head_train_s_cached"] = round(timed_run([EXE, "train", "-q", str(store), "--model", "musicnn-msd",
                                                        "--out", str(out / "head"), "--epochs", "60",
                                                        "--patience", "60"]), 1)
        summary["head_train_items"] = int(json.loads((store / "store.json").read_text())["n_items"])
        # (3b) the store's cache made from nothing: the frozen features (--finetune 0) and the
        # front end's maps (--finetune 4), one epoch each, onnxruntime (default) against torch
        cold = out / "cold-store"
        for finetune in ("0", "4"):
            for engine in ("auto", "torch"):
                shutil.rmtree(cold, ignore_errors=True)
                shutil.copytree(store, cold, ignore=shutil.ignore_patterns("embeddings"))  # copy2: same stamps
                key = f"cold_train_finetune{finetune}_{engine}_s"
                summary[key] = round(timed_run([EXE, "train", "-q", str(cold), "--model", "musicnn-msd", "--epochs",
                                                "1", "--finetune", finetune, "--engine", engine,
                                                "--out", str(out / f"cold-{finetune}-{engine}")]), 1)
            ratio = summary[f"cold_train_finetune{finetune}_torch_s"] / summary[f"cold_train_finetune{finetune}_auto_s"]
            summary[f"cold_train_finetune{finetune}_speedup"] = round(ratio, 2)
            print(f"train --finetune {finetune} --epochs 1 on a store without its cache: "
                  f"{summary[f'cold_train_finetune{finetune}_auto_s']} s (onnxruntime), "
                  f"{summary[f'cold_train_finetune{finetune}_torch_s']} s (--engine torch): {ratio:.2f}x")
        shutil.rmtree(cold, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    (BENCH_DIR / "embed.json").write_text(json.dumps(summary, indent=2))
    print(f"embed: {summary['embed_tracks_per_s']} tracks/s end to end (target >= 10)"
          + (f"; the original's network alone: {summary['original_network_tracks_per_s']} tracks/s, "
             f"ratio {summary['embed_vs_original_network']}x" if tf_python else
             "; set DANCEGENRE_MUSICNN_TF_PYTHON to time the original in the same run"))


if __name__ == "__main__":
    main()
