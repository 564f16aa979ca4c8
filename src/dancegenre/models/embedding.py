"""Embeddings and tags: a network's feature vectors, for training, for users, for tagging.

- ``store_features`` is what lets a head on a frozen pretrained network train in
  seconds, and its mid and back ends fine-tune in minutes on a CPU: the frozen part
  runs once per store and weights, and its output is kept in ``STORE/embeddings/``
  beside a stamp that ties it to the store's manifest and the weights' digest (a stale
  or foreign cache is never used).
- ``embed_files`` (``dancegenre embed``) writes one vector per file or per segment from
  the pretrained musicnn or any trained run, resumably; ``tag_files`` (``dancegenre
  tag``) gives the pretrained network's own tags and a tag timeline.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from dancegenre.data.store import batches
from dancegenre.safety import atomic_path, atomic_write


def weights_digest(module: nn.Module) -> str:
    """Short hash of a module's parameters and buffers: part of every cache key."""
    h = hashlib.sha1()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


@torch.no_grad()
def compute_features(fn: Callable[[torch.Tensor], torch.Tensor], segments: np.ndarray, rows: np.ndarray, *,
                     device: torch.device | str = "cpu", batch_size: int = 64, progress: bool = False,
                     desc: str = "embed", out: np.ndarray | None = None) -> np.ndarray:
    """``fn`` on ``segments[rows]`` in batches: (len(rows), ...) float32, or written into
    ``out`` (any dtype, a memmap too) and returned."""
    from tqdm import tqdm

    parts = []
    bar = tqdm(total=len(rows), desc=desc, unit="segment", disable=not progress, leave=False)
    done = 0
    for x in batches(segments, rows, batch_size):
        y = fn(torch.from_numpy(x).to(device)).float().cpu().numpy()
        if out is None:
            parts.append(y)
        else:
            out[done : done + len(y)] = y
        done += len(y)
        bar.update(len(x))
    bar.close()
    if out is not None:
        return out
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def store_features(store: Any, net: nn.Module, *, device: torch.device | str = "cpu", progress: bool = True,
                   log: Callable[[str], Any] = print,
                   stage_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """``net.stage`` of every segment of ``store`` (``net.cached_stage``: the features of
    a frozen backbone, or the front end's maps while only later blocks train), cached.

    The cache is ``STORE/embeddings/<model>[-<stage>]-<digest of the frozen part>.npy``
    with a ``.json`` stamp (the store manifest's hash, the shape), written after the
    array: features as float32 (N, D), other stages as float16 (N, C, T), written a
    batch at a time.  A read-only store is embedded in memory instead.  ``stage_fn``
    computes the stage instead of ``net`` (the same values: onnxruntime,
    :func:`dancegenre.training.backbone.onnx_stage`).
    """
    was_training = net.training
    net.eval()
    stage = net.cached_stage or "features"  # type: ignore[union-attr]
    model = net.config.name  # type: ignore[union-attr]
    name = f"{model}-{weights_digest(net.stage_module())}" if stage == "features" else \
        f"{model}-{stage}-{weights_digest(net.stage_module())}"  # type: ignore[operator]
    manifest = hashlib.sha1(json.dumps(store.manifest, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(store.path) / "embeddings"
    path, stamp_path = folder / f"{name}.npy", folder / f"{name}.json"
    try:
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("manifest") == manifest and stamp.get("rows") == len(store):
            cached = np.load(path, mmap_mode="r")
            if cached.shape == (len(store), *stamp.get("shape", [stamp.get("dim")])):
                net.train(was_training)
                return cached if stage != "features" else np.asarray(cached)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    fn = stage_fn or (net.stage if stage != "features" else net.features)  # type: ignore[union-attr]
    with torch.no_grad():
        probe = fn(torch.from_numpy(next(batches(store.segments, np.arange(1), 1))).to(device))
    shape = tuple(probe.shape[1:])
    dtype = np.float32 if stage == "features" else np.float16
    size = len(store) * int(np.prod(shape)) * np.dtype(dtype).itemsize
    log(f"computing the {stage} of {len(store)} segments with {model} ({size / 2**20:,.0f} MB; once per "
        f"store and weights, cached in {folder})")
    rows = np.arange(len(store))
    try:
        folder.mkdir(exist_ok=True)
        with atomic_path(path) as part:
            arr = np.lib.format.open_memmap(part, mode="w+", dtype=dtype, shape=(len(store), *shape))
            compute_features(fn, store.segments, rows, device=device, progress=progress, desc=f"{stage} of store",
                             out=arr)
            arr.flush()
            del arr
        atomic_write(stamp_path, json.dumps({"manifest": manifest, "rows": len(store), "shape": list(shape),
                                             "model": model, "stage": stage}))
        result = np.load(path, mmap_mode="r")
        result = np.asarray(result) if stage == "features" else result
    except OSError as exc:
        log(f"could not cache the {stage} in {folder} ({exc.strerror}); it stays in memory")
        result = compute_features(fn, store.segments, rows, device=device, progress=progress,
                                  desc=f"{stage} of store", out=np.empty((len(store), *shape), dtype))
    net.train(was_training)
    return result


# ---------------------------------------------------------------------------------------
# Embedding files: `dancegenre embed` and `dancegenre tag`

