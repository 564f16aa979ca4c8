"""Every figure dancegenre draws, with one matplotlib set-up (Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dancegenre.config import FeatureConfig
from dancegenre.safety import save_figure

# One colour per genre, by the genre's place in the model's (sorted) labels: the same
# genre has the same colour in a timeline, a bar chart and a confusion matrix, on a
# report and on the web page (which gets these from /api/model).  matplotlib's tab10.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def genre_colors(labels: list[str]) -> dict[str, str]:
    """{genre: colour}, one per genre of ``labels`` in order (the palette repeats after 10)."""
    return {lab: PALETTE[k % len(PALETTE)] for k, lab in enumerate(labels)}


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``pyplot.subplots`` with the constrained layout, which keeps titles, labels and
    legends inside the canvas however long they are."""
    return pyplot().subplots(*args, layout="constrained", **kwargs)


def wrapped(text: str, width_inches: float, fontsize: float = 12.0) -> str:
    """``text`` broken into lines that fit ``width_inches`` at ``fontsize`` points
    (an average character is about 0.6 of the font size wide)."""
    import textwrap

    chars = max(12, int(width_inches * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars)) or text


def set_title(target: Any, text: str, *, fontsize: float = 12.0) -> None:
    """A title wrapped to the width of ``target``: an Axes (its title) or a Figure (its
    suptitle)."""
    fig = target if hasattr(target, "suptitle") else target.figure
    width = fig.get_figwidth() * (1.0 if target is fig else target.get_position().width)
    if target is fig:
        fig.suptitle(wrapped(text, width, fontsize), fontsize=fontsize)
    else:
        target.set_title(wrapped(text, width, fontsize), fontsize=fontsize)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg back end (files only, no display, safe in any
    process): the one matplotlib set-up.  Request threads (``serve``) draw on
    ``matplotlib.figure.Figure`` directly instead."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectrogram_grid(segments: np.ndarray, index: pd.DataFrame, labels: list[str], config: FeatureConfig,
                     path: Path, *, per_label: int = 6) -> None:
    """The first segment of the first ``per_label`` items of each genre, one row a genre
    (the study's grid of mel-spectrograms), in the colour range of their front end
    ``config``."""
    plt = pyplot()

    fig, axes = subplots(len(labels), per_label, figsize=(1.8 * per_label, 1.9 * len(labels)), squeeze=False)
    colors = genre_colors(labels)
    for r, lab in enumerate(labels):
        firsts = index[(index["label"] == lab) & (index["segment"] == 0)]["row"].to_numpy()[:per_label]
        for c in range(per_label):
            ax = axes[r][c]
            ax.set_xticks([]); ax.set_yticks([])
            if c < len(firsts):
                ax.imshow(np.asarray(segments[firsts[c]], dtype=np.float32), origin="lower", aspect="auto",
                          cmap="magma", vmin=config.display_range[0], vmax=config.display_range[1])
            if c == 0:
                ax.set_ylabel(wrapped(lab, 1.3, 10), fontsize=10, color=colors[lab], rotation=0,
                              ha="right", va="center")  # across, wrapped: a long name fits its row
    set_title(fig, f"log-mel segments ({config.scale_unit}; mel band up, time right), the first segment of each clip")
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def minutes_seconds(seconds: float, _: Any = None) -> str:
    """``m:ss`` (``h:mm:ss`` past an hour): the time axis of every timeline."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def timeline_plot(timeline: pd.DataFrame, labels: list[str], path: Path, title: str) -> None:
    """Each genre's probability over time (m:ss), its legend beside the plot."""
    from matplotlib.ticker import FuncFormatter

    plt = pyplot()
    colors = genre_colors(labels)
    fig, ax = subplots(figsize=(9, 2.6))
    for lab in labels:
        ax.plot(timeline["start"], timeline[lab], label=lab, marker=".", color=colors[lab])
    ax.set_ylim(0, 1); ax.set_xlabel("time (m:ss)"); ax.set_ylabel("probability")
    ax.xaxis.set_major_formatter(FuncFormatter(minutes_seconds))
    set_title(ax, title, fontsize=11)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    save_figure(fig, path, dpi=90); plt.close(fig)
