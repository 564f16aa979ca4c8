"""Fixtures: seeded synthetic audio, broken files, and a tiny synthetic corpus."""

from __future__ import annotations

import base64
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def pytest_configure(config: pytest.Config) -> None:
    """Keep what the code caches (mel filters, converted weights) out of the user's home:
    one private cache folder for the session, unless the runner chose one."""
    if not os.environ.get("DANCEGENRE_CACHE"):
        import tempfile

        os.environ["DANCEGENRE_CACHE"] = tempfile.mkdtemp(prefix="dancegenre-test-cache-")

def texts_outside(fig) -> list[str]:
    """What of ``fig`` is drawn past the canvas (a title cut off, a legend or tick label
    past the edge), as Agg draws it: empty when everything fits.  The drawn extent is
    matplotlib's own (``get_tightbbox``: every visible artist that takes part in the
    layout, ticks outside the view excluded); the texts that reach outside it are named."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    drawn = fig.get_tightbbox(renderer)  # inches
    width, height = fig.get_size_inches()
    tolerance = 1 / fig.dpi
    if (drawn.x0 >= -tolerance and drawn.y0 >= -tolerance and drawn.x1 <= width + tolerance
            and drawn.y1 <= height + tolerance):
        return []
    named = []
    for text in fig.findobj(Text):
        if text.get_visible() and text.get_text().strip():
            box = text.get_window_extent(renderer).transformed(fig.dpi_scale_trans.inverted())
            if box.x0 < drawn.x0 + tolerance or box.y0 < drawn.y0 + tolerance or box.x1 > drawn.x1 - tolerance \
                    or box.y1 > drawn.y1 - tolerance:
                named.append(repr(text.get_text()))
    return [f"drawn over ({drawn.x0:.2f}, {drawn.y0:.2f})-({drawn.x1:.2f}, {drawn.y1:.2f}) inches of a "
            f"{width:.2f} x {height:.2f} canvas; at the edge: {', '.join(named[:6]) or 'no text'}"]


@pytest.fixture(autouse=True)
def figures_fit(monkeypatch):
    """Every figure any test saves, through any command, keeps its text inside the canvas."""
    from matplotlib.figure import Figure

    save = Figure.savefig

    def checked(self, *args, **kwargs):
        outside = texts_outside(self)
        assert not outside, "text outside the figure: " + "; ".join(outside)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", checked)


REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hardtechno"


def tone(seconds: float, sr: int, *, channels: int = 1, seed: int = 0, freq: float = 440.0) -> np.ndarray:
    """A seeded test signal: a sine plus a little noise, shape (n,) or (n, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    y = y.astype(np.float32)
    return y if channels == 1 else np.stack([y * (1 - 0.2 * c) for c in range(channels)], axis=1)


def write(path: Path, y: np.ndarray, sr: int, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, format=fmt)
    return path


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    """A <label>/<file> folder: good files in several formats and rates, and bad ones."""
    root = tmp_path / "music"
    write(root / "techno" / "a.wav", tone(7.0, 44100, channels=2, seed=1), 44100)
    write(root / "techno" / "b.flac", tone(6.5, 48000, seed=2, freq=220), 48000)
    write(root / "techno" / "sub" / "c.mp3", tone(6.5, 44100, channels=2, seed=3), 44100, "MP3")
    write(root / "edm" / "d.ogg", tone(6.2, 22050, seed=4, freq=880), 22050, "OGG")
    write(root / "edm" / "e.wav", tone(9.0, 16000, seed=5, freq=660), 16000)
    # bad ones
    (root / "edm" / "notes.txt").write_text("not audio at all\n" * 50)
    (root / "edm" / "empty.mp3").write_bytes(b"")
    (root / "edm" / "garbage.mp3").write_bytes(os.urandom(4000))
    write(root / "edm" / "short.wav", tone(1.0, 22050), 22050)
    write(root / "edm" / "silent.wav", np.zeros(22050 * 5, np.float32), 22050)
    good = root / "techno" / "sub" / "c.mp3"
    (root / "techno" / "truncated.mp3").write_bytes(good.read_bytes()[:300])
    return root


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic techno/EDM corpus (flac: fast to write), 8 clips per genre."""
    from dancegenre.data.synth import synthesize

    out = tmp_path_factory.mktemp("corpus")
    synthesize(out, per_genre=8, seed=3, fmt="flac", workers=2, progress=False, artists_per_genre=4)
    return out


@pytest.fixture(scope="session")
def corpus_store(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dancegenre.data.store import prepare

    out = tmp_path_factory.mktemp("store") / "store"
    prepare(corpus / "catalog.csv", out, workers=2, progress=False)
    return out


def needs_real_data() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not (REAL_DATA / "catalog.csv").exists(),
        reason=f"real data not found at {REAL_DATA} (see ../shared/data/README.md)",
    )


@pytest.fixture(scope="session")
def trained_run(corpus_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cnn1d run on the synthetic store (a few epochs, split by artist)."""
    from dancegenre.config import TrainConfig
    from dancegenre.training.fit import fit

    out = tmp_path_factory.mktemp("run") / "run"
    fit(corpus_store, out=out, config=TrainConfig(epochs=4, batch_size=32, val_fraction=0.25, test_fraction=0.25),
        progress=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def three_genre_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cnn1d run on three genres: the synthetic corpus with the clips of two of
    its four techno artists labelled acid (a catalog of its own; the corpus is unchanged)."""
    import pandas as pd

    from dancegenre.config import TrainConfig
    from dancegenre.data.store import prepare
    from dancegenre.training.fit import fit

    root = tmp_path_factory.mktemp("three")
    catalog = pd.read_csv(corpus / "catalog.csv")
    catalog["path"] = [str(corpus / p) for p in catalog["path"]]
    acid = (catalog["label"] == "techno") & catalog["artist"].str.endswith(("_01", "_03"))
    catalog.loc[acid, "label"] = "acid"
    catalog.to_csv(root / "catalog.csv", index=False)
    prepare(root / "catalog.csv", root / "store", workers=2, progress=False)
    out = root / "run"
    fit(root / "store", out=out, config=TrainConfig(epochs=3, batch_size=32, val_fraction=0.25, test_fraction=0.3,
                                                    split_by="track_id"), progress=False, log=lambda *a: None)
    return out


# ---- the pretrained musicnn weights (tests/test_pretrained.py, the musicnn transfer tests)

MUSICNN_WHEEL = os.environ.get("DANCEGENRE_MUSICNN_WHEEL")


def need_wheel() -> Path:
    if not MUSICNN_WHEEL or not Path(MUSICNN_WHEEL).is_file():
        if os.environ.get("CI"):
            pytest.fail("DANCEGENRE_MUSICNN_WHEEL is not set in CI: .ci/run must download the musicnn wheel")
        pytest.skip("set DANCEGENRE_MUSICNN_WHEEL=/path/to/musicnn-0.1.0-py3-none-any.whl "
                    "(python -m pip download musicnn==0.1.0 --no-deps --only-binary=:all:)")
    return Path(MUSICNN_WHEEL)


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Convert both checkpoints once into a private cache folder."""
    wheel = need_wheel()
    from dancegenre.models import pretrained

    cache = tmp_path_factory.mktemp("dg-cache")
    old = os.environ.get(pretrained.CACHE_ENV)
    os.environ[pretrained.CACHE_ENV] = str(cache)
    os.environ[pretrained.WHEEL_ENV] = str(wheel)
    pretrained.fetch(log=lambda *_: None)
    yield cache
    if old is None:
        os.environ.pop(pretrained.CACHE_ENV, None)
    else:
        os.environ[pretrained.CACHE_ENV] = old


def write_m4a(path: Path, y: np.ndarray, sr: int, codec: str = "aac") -> Path:
    """Encode ``y`` ((n,) or (n, channels) float32) into an MP4 container with PyAV's
    ``aac`` or ``alac`` encoder: the files iTunes, Apple Music and Beatport give DJs."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    data = y[:, None] if y.ndim == 1 else y
    layout = "mono" if data.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        fmt = "fltp" if codec == "aac" else "s16p"
        planar = np.ascontiguousarray(data.T)
        if fmt == "s16p":
            planar = (np.clip(planar, -1, 1) * 32767).astype(np.int16)
        step = 1024 if codec == "aac" else 4096
        for start in range(0, planar.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start:start + step]), format=fmt,
                                               layout=layout)
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# ---- HTML pages (reports, explain, experiment summaries)

class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.stack: list[str] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in ("meta", "br", "hr", "input", "link"):
            self.stack.append(tag)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)


def check_html(path: Path, min_images: int = 1) -> _Page:
    """Parse the page: tags balance, every image is an embedded, decodable PNG, and a
    phone shows it at its own width (the tables scroll on their own there)."""
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    parser = _Page()
    parser.feed(text)
    parser.close()
    assert not parser.stack, f"unclosed: {parser.stack}"
    assert len(parser.images) >= min_images
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return parser
