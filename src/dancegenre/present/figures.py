"""Every figure dancegenre draws, with one matplotlib set-up (Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg back end (files only, no display, safe in any
    process): the one matplotlib set-up.  Request threads (``serve``) draw on
    ``matplotlib.figure.Figure`` directly instead."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectrogram_grid(segments: np.ndarray, index: pd.DataFrame, labels: list[str], path: Path, *,
                     per_label: int = 6) -> None:
    """The first segment of the first ``per_label`` items of each genre, one row a genre
    (the study's grid of mel-spectrograms)."""
    plt = pyplot()

    fig, axes = plt.subplots(len(labels), per_label, figsize=(1.8 * per_label, 1.9 * len(labels)), squeeze=False)
    for r, lab in enumerate(labels):
        firsts = index[(index["label"] == lab) & (index["segment"] == 0)]["row"].to_numpy()[:per_label]
        for c in range(per_label):
            ax = axes[r][c]
            ax.set_xticks([]); ax.set_yticks([])
            if c < len(firsts):
                ax.imshow(np.asarray(segments[firsts[c]], dtype=np.float32), origin="lower", aspect="auto",
                          cmap="magma", vmin=-80, vmax=20)
            if c == 0:
                ax.set_ylabel(lab, fontsize=11)
    fig.suptitle("log-mel segments (mel band up, time right), first 3 s of each clip")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def timeline_plot(timeline: pd.DataFrame, labels: list[str], path: Path, title: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 2.4))
    for lab in labels:
        ax.plot(timeline["start"], timeline[lab], label=lab, marker=".")
    ax.set_ylim(0, 1); ax.set_xlabel("time (s)"); ax.set_ylabel("probability"); ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=90); plt.close(fig)
