"""Training throughput per model and the time of the study's job size.

    python -m benchmarks.bench_train [--models cnn1d,crnn,cnn2d] [--full-job cnn1d]

Throughput: segments/s of forward+backward+step on batches of the store, per model.
Study job: the study's 1,800 tracks x 10 segments = 18,000 segments.  We prepare the
200-clip synthetic mp3 corpus with a segment hop of 14 frames (84 overlapping segments
per clip, 16,800 in all), then time ``fit`` for 20 epochs (or until early stopping) on
it.  The study's laptop took 5-11 minutes for this job with its 1D CNN; targets here:
cnn1d < 3 min, cnn2d < 15 min.
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np
import torch

from benchmarks.common import BENCH_DIR, mp3_corpus
from dancegenre.config import FeatureConfig, TrainConfig
from dancegenre.data.store import SegmentStore, prepare
from dancegenre.models.registry import build_model, count_parameters, model_config
from dancegenre.training.fit import fit


def throughput(name: str, segments: np.ndarray, batch_size: int = 128, steps: int = 12) -> float:
    net = build_model(model_config(name, n_classes=2, n_mels=segments.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    net.train()
    for step in range(steps + 2):
        if step == 2:
            t0 = time.perf_counter()
        rows = np.sort(rng.choice(len(segments), batch_size, replace=False))
        x = torch.from_numpy(np.asarray(segments[rows], dtype=np.float32))
        y = torch.from_numpy(rng.integers(0, 2, batch_size))
        loss = loss_fn(net(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cnn1d,crnn,cnn2d")
    ap.add_argument("--full-job", default="cnn1d,cnn2d", help="models to run the whole study-size job for")
    args = ap.parse_args()
    corpus = mp3_corpus()
    store_dir = BENCH_DIR / "store-hop14"
    prepare(corpus / "catalog.csv", store_dir, config=FeatureConfig(segment_hop=14), progress=False)
    store = SegmentStore(store_dir)
    print(f"store: {len(store.items)} clips, {len(store)} segments; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for name in args.models.split(","):
        params = count_parameters(build_model(model_config(name, n_classes=2, n_mels=128)))
        print(f"{name:6s} {params:8,d} parameters  {throughput(name, store.segments):7.0f} segments/s (forward+backward)")
    for name in filter(None, args.full_job.split(",")):
        out = BENCH_DIR / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        r = fit(store_dir, out=out, model=name, config=TrainConfig(epochs=20, batch_size=128),
                progress=False, log=lambda *a: None)
        minutes = (time.perf_counter() - t0) / 60
        print(f"{name}: study-size job ({len(store)} segments, {r.epochs_run} epochs, early stop "
              f"{r.stopped_early}) took {minutes:.2f} min; test item accuracy {r.test['item']['accuracy']:.3f}")


if __name__ == "__main__":
    main()
