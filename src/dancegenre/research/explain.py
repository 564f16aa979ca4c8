"""What a trained network looks at: per-track explanations and per-store filter analysis.

For one track (:func:`explain_track`) the audio is cut into back-to-back segments by the
same front end as training (``iter_segments``), and for each segment we record

- the feature maps of every convolution block (after its activation), over time;
- saliency: |gradient x (input - band mean)| of the predicted genre's logit, over
  mel band x time (the band mean is what the network's normalisation maps to zero);
- Grad-CAM on the last convolution block (over time for 1-D networks, over mel x time
  for 2-D ones);
- band occlusion: the drop in the predicted genre's probability when a group of mel
  bands is replaced by its training mean; the bands whose loss hurts most are the ones
  that drive the decision.

For a whole store (:func:`explain_store`) we look at the first convolution layer: the
segments that activate each filter most (what it "listens to"), each filter's response
over mel frequency, and how strongly each genre activates it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from dancegenre.audio.frontend import iter_segments
from dancegenre.config import FeatureConfig
from dancegenre.data.store import SegmentStore, batches
from dancegenre.errors import ConfigError, EmptyInputError, StoreError
from dancegenre.training.checkpoint import Checkpoint, load_checkpoint
from dancegenre.training.scoring import predict_proba

BAND_GROUP = 8  # mel bands occluded together: 16 groups for 128 bands


@dataclass
class TrackExplanation:
    """Everything :func:`explain_track` computes for one track.

    Frames are STFT frames (``hop_length / sample_rate`` seconds each) of the analysed
    part: ``n_segments`` back-to-back segments, ``frames = n_segments * segment_frames``.
    """

    source: str
    labels: list[str]
    genre: str  # the genre the maps explain: by default the most likely over the segments
    probabilities: dict[str, float]  # that verdict's probabilities
    spectrogram: np.ndarray  # (n_mels, frames) float32 dB, the network's input
    saliency: np.ndarray  # (n_mels, frames) float32, >= 0
    gradcam: np.ndarray  # (frames,) for 1-D networks, (n_mels, frames) for 2-D; in [0, 1]
    feature_maps: dict[str, np.ndarray]  # block name -> (channels, steps) float32, steps along time
    segment_probs: np.ndarray  # (n_segments, n_classes)
    bands: pd.DataFrame  # one row per band group: fmin/fmax Hz, occlusion drop, saliency share
    seconds_per_frame: float
    files: dict[str, Path] = field(default_factory=dict)
    verdict_seconds: float | None = None  # the audio the verdict covers, where it is not the segments above


def band_edges(config: FeatureConfig) -> np.ndarray:
    """(n_mels + 2,) Hz: the mel filters' edge frequencies (band i spans edges[i]..edges[i+2])."""
    import librosa

    return librosa.mel_frequencies(config.n_mels + 2, fmin=config.fmin, fmax=config.fmax or config.sample_rate / 2)


def explain_track(checkpoint: str | os.PathLike[str] | Checkpoint, source: str | os.PathLike[str] | np.ndarray, *,
                  sr: int | None = None, genre: str | None = None, max_seconds: float = 600.0,
                  band_group: int = BAND_GROUP, batch_size: int = 64) -> TrackExplanation:
    """Explain a verdict on one audio file or waveform (``sr`` with it; its first ``max_seconds``).

    ``genre`` is the genre whose evidence the maps show: give ``predict``'s verdict to
    explain that one. By default it is the most likely genre over the back-to-back
    segments analysed here.

    Raises
    ------
    ConfigError (a genre the model does not know), CheckpointError, AudioDecodeError (and subclasses)
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if genre is not None and genre not in ckpt.labels:
        raise ConfigError(f"genre {genre!r} is not one of the model's: {', '.join(ckpt.labels)}")
    model = ckpt.model.eval()
    config = dataclasses.replace(ckpt.feature_config, segment_hop=ckpt.feature_config.segment_frames)
    limit = max(1, int(max_seconds / config.segment_seconds))
    tiles = []
    for block in iter_segments(source, config, sr=sr):
        tiles.append(block.segments)
        if sum(len(t) for t in tiles) >= limit:
            break
    segments = np.concatenate(tiles)[:limit]  # (S, n_mels, F)
    blocks = model.explain_blocks()
    captured: dict[str, torch.Tensor] = {}
    hooks = [act.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
             for name, act in blocks]
    fmaps: dict[str, list[np.ndarray]] = {name: [] for name, _ in blocks}
    sal, cams = [], []
    last = blocks[-1][0]
    seg_probs = _probabilities(model, segments, batch_size)
    mean = seg_probs.mean(0)
    genre_i = int(mean.argmax()) if genre is None else ckpt.labels.index(genre)  # every map below explains it
    try:
        for start in range(0, len(segments), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(segments[start:start + batch_size])).requires_grad_(True)
            logits = model(x)
            acts = dict(captured)
            acts[last].retain_grad()
            logits[:, genre_i].sum().backward()
            sal.append((x.grad * (x.detach() - model.band_mean[:, None])).abs().numpy())
            a, g = acts[last].detach(), acts[last].grad
            weights = g.mean(dim=tuple(range(2, g.dim())), keepdim=True)  # (B, C, 1[, 1])
            cam = torch.relu((weights * a).sum(1))  # (B, T') or (B, M', T')
            cams.append(cam.numpy())
            for name, _ in blocks:
                h = acts[name].detach()
                if h.dim() == 4:  # (B, C, M', T'): average over the mel axis
                    h = h.mean(2)
                fmaps[name].append(h.permute(1, 0, 2).reshape(h.shape[1], -1).numpy())
    finally:
        for h in hooks:
            h.remove()
    n_mels, frames = config.n_mels, config.segment_frames
    spectrogram = segments.transpose(1, 0, 2).reshape(n_mels, -1)
    saliency = np.concatenate(sal).transpose(1, 0, 2).reshape(n_mels, -1)
    cam = np.concatenate(cams)
    if cam.ndim == 2:  # (S, T') -> (S * F,)
        cam = np.repeat(cam, int(np.ceil(frames / cam.shape[1])), axis=1)[:, :frames].reshape(-1)
    else:  # (S, M', T') -> (n_mels, S * F)
        reps_m, reps_t = int(np.ceil(n_mels / cam.shape[1])), int(np.ceil(frames / cam.shape[2]))
        cam = np.repeat(np.repeat(cam, reps_m, 1), reps_t, 2)[:, :n_mels, :frames]
        cam = cam.transpose(1, 0, 2).reshape(n_mels, -1)
    cam = cam / cam.max() if cam.max() > 0 else cam
    bands = occlusion(model, segments, genre_i, config, saliency, band_group=band_group, batch_size=batch_size)
    return TrackExplanation(
        source="waveform" if isinstance(source, np.ndarray) else str(source), labels=ckpt.labels,
        genre=ckpt.labels[genre_i],
        probabilities={lab: float(mean[i]) for i, lab in enumerate(ckpt.labels)},
        spectrogram=spectrogram.astype(np.float32), saliency=saliency.astype(np.float32),
        gradcam=cam.astype(np.float32), feature_maps={k: np.concatenate(v, 1) for k, v in fmaps.items()},
        segment_probs=seg_probs, bands=bands, seconds_per_frame=config.hop_length / config.sample_rate)


def _probabilities(model: nn.Module, segments: np.ndarray, batch_size: int) -> np.ndarray:
    """(S, n_mels, F) -> (S, n_classes) softmax probabilities (the one batched path)."""
    return predict_proba(model, (segments[s:s + batch_size] for s in range(0, len(segments), batch_size)))


@torch.no_grad()
def occlusion(model: nn.Module, segments: np.ndarray, target: int, config: FeatureConfig, saliency: np.ndarray,
              *, band_group: int = BAND_GROUP, batch_size: int = 64) -> pd.DataFrame:
    """Drop in the ``target`` probability when each group of ``band_group`` mel bands is
    replaced by its training mean, averaged over ``segments`` (S, n_mels, F)."""
    fill = model.band_mean.numpy()
    edges = band_edges(config)

    def target_prob(x: np.ndarray) -> np.ndarray:
        return _probabilities(model, x, batch_size)[:, target]

    base = target_prob(segments)
    share = saliency.sum(1) / max(float(saliency.sum()), 1e-12)
    rows = []
    for lo in range(0, config.n_mels, band_group):
        hi = min(lo + band_group, config.n_mels)
        x = segments.copy()
        x[:, lo:hi, :] = fill[lo:hi, None]
        rows.append({"bands": f"{lo}-{hi - 1}", "fmin_hz": round(float(edges[lo]), 1),
                     "fmax_hz": round(float(edges[hi + 1]), 1),
                     "occlusion_drop": float((base - target_prob(x)).mean()),
                     "saliency_share": float(share[lo:hi].sum())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- store-level filter analysis

@dataclass
class FilterAnalysis:
    """First-layer filters of a network over the segments of a store."""

    layer: str
    response: np.ndarray  # (filters, n_mels or M'): response over mel frequency, each row max 1
    method: str  # how ``response`` was obtained, in words
    by_genre: pd.DataFrame  # filters x genres: mean peak activation
    top: dict[int, list[tuple[int, int]]]  # filter -> [(store row, frame of the peak)] strongest first
    table: pd.DataFrame  # filter, peak band, peak Hz, top genre, top items


def explain_store(checkpoint: str | os.PathLike[str] | Checkpoint, store: str | os.PathLike[str], *,
                  max_segments: int = 2000, top: int = 6, batch_size: int = 128) -> FilterAnalysis:
    """What each first-layer filter responds to, over (up to) ``max_segments`` evenly
    spaced segments of ``store``.

    Raises
    ------
    CheckpointError, StoreError, EmptyInputError
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    model = ckpt.model.eval()
    st = SegmentStore(store)
    if st.config.to_dict() != ckpt.feature_config.to_dict():
        raise StoreError(f"{store} was prepared with other features than the checkpoint was trained on")
    if len(st) == 0:
        raise EmptyInputError(f"store {store} holds no segments")
    rows = np.unique(np.linspace(0, len(st) - 1, min(max_segments, len(st))).round().astype(int))
    first_conv = model.first_conv()
    if first_conv is None:
        raise ConfigError(f"{ckpt.model_config.name}: first-layer filter analysis (explain --store) is for the "
                          "networks trained here; its filters slide over frequency")
    name, act = model.explain_blocks()[0]
    captured: dict[str, torch.Tensor] = {}
    hook = act.register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    peaks, where, profiles = [], [], []
    try:
        with torch.no_grad():
            for x in batches(st.segments, rows, batch_size):
                model(torch.from_numpy(x))
                h = captured["h"]  # (B, C, T) or (B, C, M', T')
                if h.dim() == 4:
                    profiles.append(h.mean(3).sum(0).numpy())  # (C, M'): activation along mel
                    h = h.amax(2)
                flat = h.amax(2)
                peaks.append(flat.numpy()); where.append(h.argmax(2).numpy())
    finally:
        hook.remove()
    peak = np.concatenate(peaks)  # (N, C)
    at = np.concatenate(where)
    if isinstance(first_conv, nn.Conv1d):
        w = first_conv.weight.detach().numpy()  # (C, n_mels, k)
        response = np.sqrt((w**2).sum(2))
        method = "weight norm per input mel band (1-D convolution: mel bands are its input channels)"
    else:
        response = np.sum(profiles, axis=0)
        method = "mean activation along the mel axis over the sampled segments (2-D convolution)"
    response = response / np.maximum(response.max(1, keepdims=True), 1e-12)
    stride = st.config.segment_frames / h.shape[-1]
    labels = st.index["label"].to_numpy()[rows]
    by_genre = pd.DataFrame({lab: peak[labels == lab].mean(0) for lab in st.labels if (labels == lab).any()})
    by_genre.index.name = "filter"
    top_rows: dict[int, list[tuple[int, int]]] = {}
    edges = band_edges(st.config)
    scale = st.config.n_mels / response.shape[1]
    records = []
    items = st.index["item"].to_numpy()
    for c in range(peak.shape[1]):
        order = np.argsort(-peak[:, c])[:top]
        top_rows[c] = [(int(rows[i]), int(at[i, c] * stride)) for i in order]
        band = int(response[c].argmax() * scale)
        records.append({"filter": c, "peak_band": band, "peak_hz": round(float(edges[band + 1]), 1),
                        "top_genre": by_genre.columns[int(by_genre.iloc[c].to_numpy().argmax())],
                        "top_items": " ".join(dict.fromkeys(str(items[i]) for i in order))})
    return FilterAnalysis(layer=name, response=response, method=method, by_genre=by_genre, top=top_rows,
                          table=pd.DataFrame(records))


__all__ = ["FilterAnalysis", "TrackExplanation", "band_edges", "explain_store", "explain_track", "occlusion"]
