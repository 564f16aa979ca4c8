"""Embeddings and tags: a network's feature vectors, for training, for users, for tagging.

- ``store_features`` is what lets a head on a frozen pretrained network train in
  seconds: the backbone runs once per store and weights, and the result is kept in
  ``STORE/embeddings/`` beside a stamp that ties it to the store's manifest and the
  weights' digest (a stale or foreign cache is never used).
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
                     desc: str = "embed") -> np.ndarray:
    """``fn`` on ``segments[rows]`` in batches: (len(rows), D) float32."""
    from tqdm import tqdm

    out = []
    bar = tqdm(total=len(rows), desc=desc, unit="segment", disable=not progress, leave=False)
    for x in batches(segments, rows, batch_size):
        out.append(fn(torch.from_numpy(x).to(device)).float().cpu().numpy())
        bar.update(len(x))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def store_features(store: Any, net: nn.Module, *, device: torch.device | str = "cpu", progress: bool = True,
                   log: Callable[[str], Any] = print) -> np.ndarray:
    """``net.features`` of every segment of ``store``: (len(store), D) float32, cached.

    The cache is ``STORE/embeddings/<model>-<weights digest>.npy`` with a ``.json`` stamp
    (the store manifest's hash, the shape), written after the array; a read-only store
    is embedded in memory instead.
    """
    was_training = net.training
    net.eval()
    # The features depend on the backbone alone where there is one (not on a head).
    name = f"{net.config.name}-{weights_digest(getattr(net, 'backbone', net))}"  # type: ignore[union-attr]
    manifest = hashlib.sha1(json.dumps(store.manifest, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(store.path) / "embeddings"
    path, stamp_path = folder / f"{name}.npy", folder / f"{name}.json"
    try:
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("manifest") == manifest and stamp.get("rows") == len(store):
            cached = np.load(path, mmap_mode="r")
            if cached.shape == (len(store), stamp["dim"]):
                net.train(was_training)
                return np.asarray(cached)
    except (OSError, ValueError, KeyError):
        pass
    log(f"embedding {len(store)} segments with {net.config.name} (once per store; cached in {folder})")  # type: ignore[union-attr]
    feats = compute_features(net.features, store.segments, np.arange(len(store)), device=device,  # type: ignore[operator]
                             progress=progress, desc="embed store")
    net.train(was_training)
    try:
        folder.mkdir(exist_ok=True)
        with atomic_path(path) as part, open(part, "wb") as f:
            np.save(f, feats)
        atomic_write(stamp_path, json.dumps({"manifest": manifest, "rows": len(store), "dim": int(feats.shape[1]),
                                             "model": net.config.name}))  # type: ignore[union-attr]
    except OSError as exc:
        log(f"could not cache the embeddings in {folder} ({exc.strerror}); they stay in memory")
    return feats




# ---------------------------------------------------------------------------------------
# Embedding files: `dancegenre embed` and `dancegenre tag`

