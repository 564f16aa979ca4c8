"""Self-contained HTML reports (images embedded, readable offline) and the figures they show.

All HTML comes from Jinja2 templates with autoescape on: a value (a file name, a label,
an error message) is always escaped, and only :class:`markupsafe.Markup` made by
:func:`fragment`, :func:`image_tag` or :func:`table_html` goes in as markup.  Building
HTML from f-strings is how stored XSS gets in; do not.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Any

from markupsafe import Markup

import numpy as np
import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:.92em}"""


@lru_cache(maxsize=1)
def environment() -> Any:
    """The one Jinja2 environment: package templates, autoescape always on."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("dancegenre", "templates"), autoescape=True,
                       undefined=StrictUndefined, keep_trailing_newline=True)


def fragment(template: str, **values: Any) -> Markup:
    """A piece of HTML from an inline template; every ``{{ value }}`` is escaped.

    >>> fragment("<p>{{ name }}</p>", name="<script>")
    Markup('<p>&lt;script&gt;</p>')
    """
    return Markup(environment().from_string(template).render(**values))


def render(name: str, **values: Any) -> str:
    """The package template ``name`` (``templates/<name>``), values escaped."""
    return environment().get_template(name).render(**values)


def image_tag(path: str | Path, alt: str) -> Markup:
    """An <img> with the PNG embedded as base64, so the page needs no other file."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return fragment('<img alt="{{ alt }}" src="data:image/png;base64,{{ data }}">', alt=alt, data=data)


def table_html(frame: pd.DataFrame, *, floats: str = "{:.3f}") -> Markup:
    """``frame`` as an HTML table; pandas escapes every cell and header."""
    return Markup(frame.to_html(index=False, escape=True, float_format=lambda v: floats.format(v), border=0))


def page(title: str, sections: list[tuple[str, Markup | str]]) -> str:
    """A whole report page: ``sections`` are (heading, content); content that is not
    Markup is shown as text."""
    return render("report.html", title=title, css=Markup(CSS), sections=sections)


def spectrogram_grid(segments: np.ndarray, index: pd.DataFrame, labels: list[str], path: Path, *,
                     per_label: int = 6) -> None:
    """The first segment of the first ``per_label`` items of each genre, one row a genre
    (the study's grid of mel-spectrograms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.4))
    for lab in labels:
        ax.plot(timeline["start"], timeline[lab], label=lab, marker=".")
    ax.set_ylim(0, 1); ax.set_xlabel("time (s)"); ax.set_ylabel("probability"); ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=90); plt.close(fig)


def clip_figure(path: str | Path, out: str | Path, *, seconds: float = 30.0) -> None:
    """The study's three panels for one clip: waveform, mel power, mel dB (same front end as training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dancegenre.audio import load
    from dancegenre.config import FeatureConfig
    from dancegenre.features import log_mel

    config = FeatureConfig()
    y = load(path, sr=config.sample_rate, max_seconds=seconds)
    db = log_mel(y, config)
    t = np.arange(len(y)) / config.sample_rate
    extent = (0, len(y) / config.sample_rate, 0, config.n_mels)
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5))
    axes[0].plot(t, y, linewidth=0.3); axes[0].set_title("waveform"); axes[0].set_xlim(0, t[-1])
    axes[1].imshow(10 ** (db / 10), origin="lower", aspect="auto", extent=extent, cmap="magma")
    axes[1].set_title("mel spectrogram (power)")
    axes[2].imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma")
    axes[2].set_title("mel spectrogram (dB)")
    for ax in axes[1:]:
        ax.set_ylabel("mel band")
    axes[2].set_xlabel("time (s)")
    fig.suptitle(Path(path).name)
    fig.tight_layout(); fig.savefig(out, dpi=90); plt.close(fig)


def store_grid_figure(store_path: str | Path, out: str | Path, *, per_label: int = 30) -> None:
    """The first segment of the first ``per_label`` items per genre of a prepared store."""
    from dancegenre.dataset import SegmentStore

    store = SegmentStore(store_path)
    spectrogram_grid(store.segments, store.index, store.labels, Path(out), per_label=per_label)
