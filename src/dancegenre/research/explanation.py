"""Files for explanations: PNG figures, CSV/NPZ arrays and one HTML page (see dancegenre.explain)."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from markupsafe import Markup

from dancegenre.data.store import SegmentStore
from dancegenre.present.figures import pyplot, set_title, subplots, timeline_plot
from dancegenre.present.html import fragment, image_tag, page, table_html
from dancegenre.research.explain import FilterAnalysis, TrackExplanation
from dancegenre.safety import atomic_path, atomic_write, one_line_text, releasing, save_figure, write_table

if TYPE_CHECKING:
    from dancegenre.inference.classifier import Classifier


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "track"


def explain_verdict(clf: Classifier, path: str | os.PathLike[str], *,
                    max_seconds: float) -> tuple[TrackExplanation, pd.DataFrame]:
    """``predict``'s verdict on the first ``max_seconds`` of ``path``, the maps that explain
    that genre, and the verdict's timeline (its overlapping segments): the page's headline,
    timeline and maps all tell the one verdict that ``predict`` gives on that stretch.

    Raises
    ------
    AudioDecodeError (and subclasses)
    """
    from dancegenre.audio.decode import load
    from dancegenre.research.explain import explain_track

    ckpt = clf.checkpoint  # the torch network: the maps need its gradients
    sr = ckpt.feature_config.sample_rate
    head = load(path, sr=sr, max_seconds=max_seconds)  # decoded once, for both
    verdict = clf.predict(head, sr=sr)
    expl = explain_track(ckpt, head, sr=sr, genre=verdict.genre, max_seconds=max_seconds)
    expl = dataclasses.replace(expl, source=str(path), probabilities=verdict.probabilities,
                               verdict_seconds=verdict.duration)
    return expl, verdict.timeline


def write_track(expl: TrackExplanation, out: str | os.PathLike[str], timeline: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write one track's figures and arrays into ``out`` (created); return {what: path}.

    ``timeline`` is the per-segment probability table of ``Classifier.predict`` (the
    overlapping segments the verdict is made from); without it the back-to-back
    segments of the explanation are plotted.
    """
    plt = pyplot()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    seconds = expl.spectrogram.shape[1] * expl.seconds_per_frame
    extent = (0, seconds, 0, expl.spectrogram.shape[0])

    # spectrogram, saliency overlay, Grad-CAM
    fig, axes = subplots(3, 1, figsize=(11, 8), sharex=True)
    axes[0].imshow(expl.spectrogram, origin="lower", aspect="auto", extent=extent, cmap="magma")
    set_title(axes[0], "log-mel spectrogram (network input)")
    axes[1].imshow(expl.spectrogram, origin="lower", aspect="auto", extent=extent, cmap="gray")
    sal = expl.saliency / max(float(np.percentile(expl.saliency, 99.5)), 1e-12)
    axes[1].imshow(np.clip(sal, 0, 1), origin="lower", aspect="auto", extent=extent, cmap="hot", alpha=0.6)
    set_title(axes[1], f"saliency for '{expl.genre}': |gradient x (input - band mean)| over the spectrogram")
    if expl.gradcam.ndim == 1:
        t = np.arange(len(expl.gradcam)) * expl.seconds_per_frame
        axes[2].imshow(expl.spectrogram, origin="lower", aspect="auto", extent=extent, cmap="gray")
        axes[2].plot(t, expl.gradcam * expl.spectrogram.shape[0], color="tab:red", linewidth=1)
        set_title(axes[2], f"Grad-CAM of the last convolution block over time (red, 0..1) for '{expl.genre}'")
    else:
        axes[2].imshow(expl.spectrogram, origin="lower", aspect="auto", extent=extent, cmap="gray")
        axes[2].imshow(expl.gradcam, origin="lower", aspect="auto", extent=extent, cmap="jet", alpha=0.45)
        set_title(axes[2], f"Grad-CAM of the last convolution block for '{expl.genre}'")
    for ax in axes:
        ax.set_ylabel("mel band")
    axes[2].set_xlabel("time (s)")
    files["saliency"] = out / "saliency.png"
    save_figure(fig, files["saliency"], dpi=90)
    plt.close(fig)

    # feature maps of every convolution block
    maps = expl.feature_maps
    fig, axes = subplots(len(maps), 1, figsize=(11, 2.2 * len(maps)), squeeze=False)
    for ax, (name, fm) in zip(axes[:, 0], maps.items()):
        ax.imshow(fm, origin="lower", aspect="auto", cmap="viridis", extent=(0, seconds, 0, fm.shape[0]))
        ax.set_ylabel("channel")
        set_title(ax, f"{name}: {fm.shape[0]} channels x {fm.shape[1]} steps", fontsize=9)
    axes[-1, 0].set_xlabel("time (s)")
    files["feature_maps"] = out / "feature-maps.png"
    save_figure(fig, files["feature_maps"], dpi=90)
    plt.close(fig)

    # mel bands that drive the decision
    b = expl.bands
    fig, ax = subplots(figsize=(10, 3.2))
    x = np.arange(len(b))
    ax.bar(x - 0.2, b["occlusion_drop"], width=0.4, label=f"drop in p({expl.genre}) when occluded")
    ax.bar(x + 0.2, b["saliency_share"], width=0.4, label="share of saliency")
    ax.set_xticks(x, [f"{lo:.0f}-{hi:.0f}" for lo, hi in zip(b["fmin_hz"], b["fmax_hz"])], rotation=45, fontsize=7)
    ax.set_xlabel("mel band group (Hz)")
    ax.axhline(0, color="k", linewidth=0.5)
    ax.legend(fontsize=8)
    set_title(ax, "which mel bands drive the decision")
    files["bands"] = out / "bands.png"
    save_figure(fig, files["bands"], dpi=90)
    plt.close(fig)
    write_table(out / "bands.csv", b)
    files["bands_csv"] = out / "bands.csv"

    if timeline is None:
        timeline = pd.DataFrame(expl.segment_probs, columns=expl.labels)
        timeline.insert(0, "start", np.arange(len(timeline)) * expl.spectrogram.shape[1] / len(timeline)
                        * expl.seconds_per_frame)
    write_table(out / "timeline.csv", timeline)
    files["timeline_csv"] = out / "timeline.csv"
    files["timeline"] = out / "timeline.png"
    timeline_plot(timeline, expl.labels, files["timeline"], "per-segment probabilities")
    with atomic_path(out / "explanation.npz") as part, open(part, "wb") as fh:  # a file object: no .npz added
        np.savez_compressed(fh, spectrogram=expl.spectrogram, saliency=expl.saliency, gradcam=expl.gradcam,
                            segment_probs=expl.segment_probs, **{f"fmap_{k}": v for k, v in maps.items()})
    files["arrays"] = out / "explanation.npz"
    expl.files.update(files)
    return files


def track_section(expl: TrackExplanation, base: Path) -> Markup:
    """HTML for one track (images embedded)."""
    f = expl.files
    probs = ", ".join(f"{lab} {p:.2f}" for lab, p in sorted(expl.probabilities.items(), key=lambda kv: -kv[1]))
    top = expl.bands.sort_values("occlusion_drop", ascending=False).head(3)
    bands = "; ".join(f"{r.fmin_hz:.0f}-{r.fmax_hz:.0f} Hz (-{r.occlusion_drop:.3f})" for r in top.itertuples())
    seconds = expl.verdict_seconds or expl.spectrogram.shape[1] * expl.seconds_per_frame
    return fragment(
        "<p><b>{{ genre }}</b> ({{ probs }}) over the first {{ seconds }} s; the bands whose occlusion hurts the "
        "verdict most: {{ bands }}. Arrays in <code>{{ arrays }}</code>.</p>{{ saliency }}"
        "<h3>Per-segment probabilities</h3>{{ timeline }}<h3>Mel bands</h3>{{ band_image }}{{ band_table }}"
        "<h3>Feature maps</h3>{{ maps }}",
        genre=expl.genre, probs=probs, seconds=f"{seconds:.1f}", bands=bands,
        arrays=str(f["arrays"].relative_to(base)),
        saliency=image_tag(f["saliency"], "spectrogram, saliency and Grad-CAM"),
        timeline=image_tag(f["timeline"], "timeline"), band_image=image_tag(f["bands"], "band importance"),
        band_table=table_html(expl.bands), maps=image_tag(f["feature_maps"], "feature maps"))


def write_store(analysis: FilterAnalysis, store: str | os.PathLike[str], out: str | os.PathLike[str], *,
                max_filters: int = 16, window: int = 32) -> dict[str, Path]:
    """Figures of a filter analysis: top segments per filter, frequency responses, genres."""
    plt = pyplot()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    st = SegmentStore(store)
    files: dict[str, Path] = {}
    order = np.argsort(analysis.response.argmax(1), kind="stable")  # low to high frequency

    fig, ax = subplots(figsize=(10, 4))
    ax.imshow(analysis.response[order].T, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xlabel("filter (sorted by the band it responds to most)"); ax.set_ylabel("mel band")
    ax.set_xticks(range(len(order)), [str(i) for i in order], fontsize=5, rotation=90)
    set_title(ax, f"{analysis.layer} frequency response: {analysis.method}", fontsize=9)
    files["response"] = out / "filters-frequency-response.png"
    save_figure(fig, files["response"], dpi=90); plt.close(fig)

    by = analysis.by_genre
    fig, ax = subplots(figsize=(10, 1 + 0.45 * by.shape[1]))
    norm = by.to_numpy() / np.maximum(by.to_numpy().max(1, keepdims=True), 1e-12)
    ax.imshow(norm[order].T, aspect="auto", cmap="magma")
    ax.set_yticks(range(by.shape[1]), list(by.columns)); ax.set_xlabel("filter (same order)")
    ax.set_xticks(range(len(order)), [str(i) for i in order], fontsize=5, rotation=90)
    set_title(ax, "mean peak activation per genre (each filter scaled to its largest)", fontsize=9)
    files["genres"] = out / "filters-by-genre.png"
    save_figure(fig, files["genres"], dpi=90); plt.close(fig)

    shown = order[np.linspace(0, len(order) - 1, min(max_filters, len(order))).round().astype(int)]
    ncol = max(len(v) for v in analysis.top.values())
    fig, axes = subplots(len(shown), ncol, figsize=(1.3 * ncol, 1.15 * len(shown)), squeeze=False)
    labels = st.index["label"].to_numpy()
    for r, c in enumerate(shown):
        for k in range(ncol):
            ax = axes[r][k]
            ax.set_xticks([]); ax.set_yticks([])
            if k < len(analysis.top[c]):
                row, frame = analysis.top[c][k]
                lo = int(np.clip(frame - window // 2, 0, st.config.segment_frames - window))
                patch = np.asarray(st.segments[row][:, lo:lo + window], dtype=np.float32)
                ax.imshow(patch, origin="lower", aspect="auto", cmap="magma")
                set_title(ax, labels[row], fontsize=6)
            if k == 0:
                ax.set_ylabel(f"filter {c}", fontsize=7)
    set_title(fig, f"{analysis.layer}: the {ncol} segments (a {window}-frame window around the peak) "
                 "that activate each filter most", fontsize=9)
    files["top"] = out / "filters-top-segments.png"
    save_figure(fig, files["top"], dpi=90); plt.close(fig)
    write_table(out / "filters.csv", analysis.table)
    files["table"] = out / "filters.csv"
    return files


def store_section(analysis: FilterAnalysis, files: dict[str, Path]) -> Markup:
    counts = analysis.table["top_genre"].value_counts()
    summary = ", ".join(f"{g}: {n}" for g, n in counts.items())
    return (fragment("<p>{{ n }} filters in {{ layer }}. Filters per genre that activates them most: {{ summary }}. "
                     "Table in <code>filters.csv</code>.</p>", n=len(analysis.table), layer=analysis.layer,
                     summary=summary)
            + image_tag(files["response"], "frequency responses") + image_tag(files["genres"], "filters by genre")
            + image_tag(files["top"], "top segments per filter"))


@releasing
def explain_to(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
               audio: list[str | os.PathLike[str]] = (), store: str | os.PathLike[str] | None = None,
               max_seconds: float = 600.0, max_segments: int = 2000, log=print) -> Path:
    """Explain tracks and/or a store's filters into ``out``; return ``out/explain.html``.

    A track that cannot be decoded gets one line in the page and in ``failures.csv``;
    the others go on.

    Raises
    ------
    CheckpointError, StoreError (before ``out`` is made); EmptyInputError (nothing to
    explain, or no track could be: after ``failures.csv`` is written)
    """
    from dancegenre.errors import AudioDecodeError, EmptyInputError
    from dancegenre.inference.classifier import Classifier
    from dancegenre.research.explain import explain_store
    from dancegenre.safety import claim_folder
    from dancegenre.training.checkpoint import load_checkpoint

    if not audio and store is None:
        raise EmptyInputError("nothing to explain: give audio files and/or --store")
    ckpt = load_checkpoint(checkpoint)  # a bad model or store is refused before the folder exists
    if store is not None:
        SegmentStore(store)
    # A folder made before the marker is known by its page, with its failures and filters;
    # one that holds track folders too is refused (their names are the tracks', not ours).
    out = claim_folder(out, "explanation", legacy=("explain.html",), legacy_others=("failures.csv", "filters"),
                       inputs=list(audio), what="explanation folder")
    clf = Classifier(ckpt)
    sections, failures = [], []
    used: set[str] = set()
    for i, path in enumerate(audio, 1):
        log(one_line_text(f"explaining {path} ({i}/{len(audio)})"))
        try:
            expl, timeline = explain_verdict(clf, path, max_seconds=max_seconds)
        except AudioDecodeError as exc:
            failures.append({"path": str(path), "error": str(exc)})
            sections.append((Path(path).name, fragment("<p>not explained: {{ why }}</p>", why=str(exc))))
            continue
        name = _slug(Path(path).stem)
        while name in used:
            name += "_"
        used.add(name)
        write_track(expl, out / name, timeline)
        sections.append((f"{Path(path).name}", track_section(expl, out)))
    if failures:
        write_table(out / "failures.csv", pd.DataFrame(failures))
        if len(failures) == len(audio) and store is None:
            raise EmptyInputError(f"none of the {len(audio)} file(s) could be explained; reasons in "
                                  f"{out / 'failures.csv'}")
    if store is not None:
        log(f"analysing first-layer filters over {store}")
        analysis = explain_store(ckpt, store, max_segments=max_segments)
        files = write_store(analysis, store, out / "filters")
        sections.append(("What the first-layer filters listen to", store_section(analysis, files)))
    about = fragment("<p class=note>Checkpoint {{ path }}: {{ model }}, genres {{ genres }}. Saliency is "
                     "|gradient x (input - band mean)| of the verdict's logit; Grad-CAM weights the last convolution "
                     "block's activations by their mean gradient; occlusion replaces a group of mel bands by its "
                     "training mean.</p>", path=str(ckpt.path), model=ckpt.model_config.name,
                     genres=", ".join(ckpt.labels))
    sections.append(("How to read this page", about))
    target = out / "explain.html"
    atomic_write(target, page("dancegenre explain", sections))
    return target
