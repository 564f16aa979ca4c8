"""prepare on Dask: 1 vs 2 workers, Dask vs local processes, and a large catalog in bounded memory.

    python -m benchmarks.bench_scale [--per-genre 100] [--clips 20000]

(a) the 200-clip mp3 corpus prepared by local processes and by a Dask cluster, with 1
    and with 2 single-threaded workers, in one run: throughput and the 2/1 speed-up.
(b) ``--clips`` short synthetic clips (3.2 s, one segment each) prepared through a
    Dask cluster of 2 workers on 127.0.0.1, addressed as tcp:// like a real cluster;
    every worker's resident memory is sampled during the job, to show that it does
    not grow with the catalog.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from benchmarks.common import BENCH_DIR, mp3_corpus
from dancegenre.data.store import prepare


def timed_prepare(catalog: Path, out: Path, **kwargs) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = prepare(catalog, out, progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    assert summary.skipped == 0
    return seconds


def warm_up() -> None:
    """What a worker imports on its first task (numpy, scipy, librosa, soxr), done before timing."""
    from dancegenre.audio.frontend import LogMelStream
    from dancegenre.config import FeatureConfig

    LogMelStream(FeatureConfig())


def short_catalog(n: int, seconds: float = 3.2, sr: int = 22050) -> Path:
    """``n`` short clips (noise bursts and tones, two labels) as wav, made once."""
    root = BENCH_DIR / f"short-{n}"
    catalog = root / "catalog.csv"
    if catalog.exists():
        return catalog
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    for i in range(n):
        label = "a" if i % 2 else "b"
        path = root / label / f"{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        f = rng.uniform(60, 4000)
        y = 0.3 * np.sin(2 * np.pi * f * t) * (1 + np.sign(np.sin(2 * np.pi * rng.uniform(1, 4) * t))) / 2
        y += (0.05 if label == "a" else 0.2) * rng.standard_normal(len(t))
        sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
        rows.append({"path": str(path.relative_to(root)), "label": label, "track_id": f"t{i // 4}"})
    pd.DataFrame(rows).to_csv(catalog, index=False)
    return catalog


class MemorySampler(threading.Thread):
    """Every worker's RSS (MB) every ``period`` s, with how many shards were done then."""

    def __init__(self, address: str, pending: Path, period: float = 2.0) -> None:
        super().__init__(daemon=True)
        from distributed import Client

        self.client = Client(address)
        self.pending, self.period = pending, period
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                rss = self.client.run(lambda: psutil.Process().memory_info().rss / 1e6)
                done = len(list(self.pending.glob("*.json"))) if self.pending.exists() else 0
                self.samples.append({"t": time.time(), "shards_done": done, **{f"w{i}": v for i, v in enumerate(rss.values())}})
            except Exception:  # noqa: BLE001 - a sample missed at the very end is fine
                pass
            self.stop.wait(self.period)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-genre", type=int, default=100)
    ap.add_argument("--clips", type=int, default=20000)
    args = ap.parse_args()
    catalog = mp3_corpus(args.per_genre) / "catalog.csv"
    out = BENCH_DIR / "scale-store"
    report: dict = {"corpus_clips": 2 * args.per_genre}
    print(f"(a) {2 * args.per_genre} x 30-s mp3 clips")
    from distributed import Client, LocalCluster

    for workers in (1, 2):
        s = timed_prepare(catalog, out, scheduler="processes", workers=workers)
        report[f"processes_{workers}"] = rate = round(2 * args.per_genre / s, 2)
        print(f"  processes  {workers} worker(s): {s:6.1f} s  {rate:6.1f} files/s")
        # a running cluster, as on real machines: its start-up is timed apart
        t0 = time.perf_counter()
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          host="127.0.0.1") as cluster, Client(cluster) as client:
            client.run(warm_up)
            report[f"dask_startup_{workers}"] = round(time.perf_counter() - t0, 1)
            s = timed_prepare(catalog, out, scheduler=cluster.scheduler_address)
        report[f"dask_{workers}"] = rate = round(2 * args.per_genre / s, 2)
        print(f"  dask       {workers} worker(s): {s:6.1f} s  {rate:6.1f} files/s  "
              f"(cluster start-up {report[f'dask_startup_{workers}']} s, not counted)")
    for scheduler in ("processes", "dask"):
        ratio = report[f"{scheduler}_2"] / report[f"{scheduler}_1"]
        report[f"{scheduler}_speedup"] = round(ratio, 2)
        print(f"  {scheduler}: 2 workers are {ratio:.2f}x 1 worker")
    print(f"  Dask / local processes, 2 workers: {report['dask_2'] / report['processes_2']:.2f}x")

    print(f"(b) {args.clips} x 3.2-s clips through a Dask cluster of 2 workers (tcp://127.0.0.1)")
    t0 = time.perf_counter()
    big = short_catalog(args.clips)
    print(f"  catalog ready in {time.perf_counter() - t0:.0f} s")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        store = BENCH_DIR / "scale-big-store"
        shutil.rmtree(store, ignore_errors=True)
        with Client(cluster) as client:
            client.run(warm_up)
        sampler = MemorySampler(cluster.scheduler_address, store / "pending")
        sampler.start()
        s = timed_prepare(big, store, scheduler=cluster.scheduler_address)
        sampler.stop.set(); sampler.join()
        sampler.client.close()
    samples = pd.DataFrame(sampler.samples)
    samples.to_csv(BENCH_DIR / "scale-memory.csv", index=False)
    workers = [c for c in samples.columns if c.startswith("w")]
    n = len(samples)
    early = samples.iloc[: max(1, n // 5)][workers].max()
    late = samples.iloc[-max(1, n // 5):][workers].max()
    report.update(big_clips=args.clips, big_seconds=round(s, 1), big_rate=round(args.clips / s, 1),
                  worker_rss_first_fifth_mb=early.round(0).tolist(), worker_rss_last_fifth_mb=late.round(0).tolist(),
                  worker_rss_peak_mb=samples[workers].max().round(0).tolist())
    print(f"  {s:.0f} s, {args.clips / s:.0f} files/s; worker RSS peak in the first fifth of the job "
          f"{early.round(0).tolist()} MB, in the last fifth {late.round(0).tolist()} MB")
    (BENCH_DIR / "bench_scale.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
