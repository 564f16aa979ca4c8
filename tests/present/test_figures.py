"""Every figure fits its canvas: titles, labels and legends stay inside, long titles wrap,
and a genre keeps one colour.  (tests/conftest.py also checks every figure any test saves.)"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dancegenre.config import FeatureConfig
from dancegenre.present.figures import (
    PALETTE,
    genre_colors,
    minutes_seconds,
    spectrogram_grid,
    timeline_plot,
)
from tests.conftest import texts_outside, tone, write

GENRES = ["hard techno", "industrial techno", "non-techno-drop", "schranz", "hardgroove", "acid techno",
          "a genre with a rather long name"]
LONG = ("what the model heard in a two-hour mix recorded live at a warehouse party, segment by segment, "
        "with every genre's probability")


def test_the_checker_sees_text_outside_the_canvas():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.set_title(LONG)  # not wrapped: runs off both sides
    assert texts_outside(fig)
    fig = Figure(figsize=(3, 2), layout="constrained")
    fig.add_subplot().set_title("short")
    assert texts_outside(fig) == []


def test_genre_colors_are_stable_and_shared():
    colors = genre_colors(GENRES)
    assert list(colors) == GENRES and colors["hard techno"] == PALETTE[0]
    assert genre_colors(GENRES[:2]) == {g: colors[g] for g in GENRES[:2]}
    assert minutes_seconds(75) == "1:15" and minutes_seconds(3725) == "1:02:05"


def test_report_figures_keep_their_text_inside(tmp_path, monkeypatch):
    """Each figure a report or page draws, with seven long genre names and a long title.
    The savefig check of tests/conftest.py fails the test if any text leaves a canvas."""
    from dancegenre.inference.evaluate import plot_confusion, plot_reliability
    from dancegenre.research.eda import histogram_grid
    from dancegenre.research.figures import clip_figure
    from dancegenre.training.fit import _plot_curves

    rng = np.random.default_rng(0)
    n = len(GENRES)
    starts = np.arange(200) * 3.0
    probs = rng.dirichlet(np.ones(n), size=len(starts))
    timeline = pd.DataFrame({"start": starts, "end": starts + 3, **{g: probs[:, k] for k, g in enumerate(GENRES)}})
    timeline_plot(timeline, GENRES, tmp_path / "timeline.png", LONG)

    plot_confusion(rng.integers(0, 40, size=(n, n)), GENRES, tmp_path / "confusion.png",
                   title="items (one verdict per file), held-out folds of a five-fold grouped cross-validation")
    y = rng.integers(0, n, size=300)
    plot_reliability(y, rng.dirichlet(np.ones(n), size=300), tmp_path / "reliability.png")

    segments = rng.normal(-40, 10, size=(n * 2, 128, 128)).astype(np.float16)
    index = pd.DataFrame({"row": np.arange(n * 2), "label": np.repeat(GENRES, 2), "segment": 0})
    spectrogram_grid(segments, index, GENRES, FeatureConfig(), tmp_path / "grid.png", per_label=2)

    history = pd.DataFrame({"epoch": range(1, 31), "train_loss": np.linspace(2, 0.2, 30),
                            "val_loss": np.linspace(2, 0.5, 30), "train_acc": np.linspace(0.2, 0.95, 30),
                            "val_acc": np.linspace(0.2, 0.8, 30), "val_item_acc": np.linspace(0.2, 0.85, 30)})
    _plot_curves(history, tmp_path / "curves.png")

    table = pd.DataFrame({"label": rng.choice(GENRES, 200),
                          **{f"spectral_{name}_mean_over_the_whole_clip": rng.normal(size=200)
                             for name in ("centroid", "bandwidth", "rolloff", "flatness", "contrast")}})
    histogram_grid(table, [c for c in table.columns if c != "label"], "label", tmp_path / "hist.png")

    name = ("a clip with a long file name " * 4).strip().replace(" ", "_") + ".wav"
    clip = write(tmp_path / name, tone(6.0, 22050), 22050)
    clip_figure(clip, tmp_path / "clip.png")
    for name in ("timeline", "confusion", "reliability", "grid", "curves", "hist", "clip"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000


def test_the_web_spectrogram_fits(trained_run, tmp_path):
    from dancegenre.inference.classifier import Classifier
    from dancegenre.web.app import confusion_png, spectrogram_png

    clf = Classifier.load(trained_run)
    uri = spectrogram_png(str(write(tmp_path / "x.wav", tone(8.0, 22050), 22050)), clf)
    assert uri.startswith("data:image/png;base64,")
    # a musicnn model's page: its colour bar names the longer unit, inside the canvas
    musicnn = SimpleNamespace(config=FeatureConfig.preset("musicnn"))
    assert spectrogram_png(str(write(tmp_path / "y.wav", tone(8.0, 16000), 16000)), musicnn).startswith("data:")
    assert confusion_png([[3, 1], [0, 4]], ["edm", "techno"], "test items").startswith("data:image/png")


@pytest.mark.parametrize("width", [3.0, 6.0, 11.0])
def test_long_titles_wrap_to_the_axes(width):
    from matplotlib.figure import Figure

    from dancegenre.present.figures import set_title

    fig = Figure(figsize=(width, 2.5), layout="constrained")
    ax = fig.add_subplot()
    set_title(ax, LONG)
    assert "\n" in ax.get_title() and texts_outside(fig) == []


@pytest.mark.parametrize("preset", ["study", "musicnn"])
def test_spectrogram_colours_span_the_front_ends_values(corpus, preset):
    """Every spectrogram image (the report's grid, figure clip, serve's page) takes its
    colour range from the front end: musicnn's log10(1 + 10000 power), 0 to about 6,
    once filled 6% of the study's -80..20 dB range, a flat orange grid."""
    from dancegenre.audio.decode import load
    from dancegenre.audio.frontend import log_mel, mel_power

    config = FeatureConfig.preset(preset)
    clip = sorted((corpus / "techno").glob("*.flac"))[0]
    values = log_mel(load(clip, sr=config.sample_rate), config)
    lo, hi = config.display_range
    p5, p95 = np.percentile(values, [5, 95])
    assert lo <= p5 and p95 <= hi and (p95 - p5) / (hi - lo) > 0.15
    assert config.scale_unit == ("dB" if preset == "study" else "log10(1 + 10000 power)")
    power = mel_power(values, config)
    again = 10 * np.log10(np.maximum(power, config.amin)) if preset == "study" else np.log10(1 + 10000 * power)
    assert np.allclose(again, values, atol=1e-3)
