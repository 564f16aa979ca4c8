"""The study's figures: one clip through the front end, and a store's segments per genre."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dancegenre.audio.decode import load
from dancegenre.audio.frontend import log_mel, mel_power
from dancegenre.config import FeatureConfig, given
from dancegenre.data.store import SegmentStore
from dancegenre.present.figures import pyplot, set_title, spectrogram_grid, subplots
from dancegenre.safety import save_figure


def clip_figure(path: str | Path, out: str | Path, *, seconds: float = 30.0,
                config: FeatureConfig | None = None) -> None:
    """The study's three panels for one clip: waveform, mel power, mel dB, through
    ``config`` (a store's or checkpoint's front end; default: the study's)."""
    plt = pyplot()
    config = given(config, FeatureConfig)
    y = load(path, sr=config.sample_rate, max_seconds=seconds)
    db = log_mel(y, config)
    t = np.arange(len(y)) / config.sample_rate
    extent = (0, len(y) / config.sample_rate, 0, config.n_mels)
    fig, axes = subplots(3, 1, figsize=(9, 7.5))
    axes[0].plot(t, y, linewidth=0.3); set_title(axes[0], "waveform"); axes[0].set_xlim(0, t[-1])
    axes[1].imshow(mel_power(db, config), origin="lower", aspect="auto", extent=extent, cmap="magma")
    set_title(axes[1], "mel spectrogram (power)")
    axes[2].imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=config.display_range[0],
                   vmax=config.display_range[1])
    set_title(axes[2], f"mel spectrogram ({config.scale_unit})")
    for ax in axes[1:]:
        ax.set_ylabel("mel band")
    axes[2].set_xlabel("time (s)")
    set_title(fig, Path(path).name)
    save_figure(fig, out, dpi=90); plt.close(fig)


def store_grid_figure(store_path: str | Path, out: str | Path, *, per_label: int = 30) -> None:
    """The first segment of the first ``per_label`` items per genre of a prepared store."""
    store = SegmentStore(store_path)
    spectrogram_grid(store.segments, store.index, store.labels, store.config, Path(out), per_label=per_label)
