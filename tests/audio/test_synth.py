"""The synthetic corpus: determinism, layout, and no trivial giveaway."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from dancegenre.data.synth import (
    CLIP_SECONDS,
    SR,
    ClipSpec,
    clip_specs,
    clip_tempo_and_root,
    render_clip,
    synthesize,
)
from dancegenre.errors import ConfigError


def test_render_is_deterministic_and_well_formed():
    a, meta_a = render_clip(ClipSpec("edm", 3, 1, seed=5))
    b, meta_b = render_clip(ClipSpec("edm", 3, 1, seed=5))
    c, _ = render_clip(ClipSpec("edm", 3, 1, seed=6))
    assert np.array_equal(a, b) and meta_a == meta_b
    assert not np.array_equal(a, c)
    assert a.shape == (int(CLIP_SECONDS * SR), 2) and a.dtype == np.float32
    assert np.max(np.abs(a)) <= 1.0 and np.std(a) > 0.01


def test_tempo_alone_does_not_separate_the_genres():
    specs = clip_specs(200, seed=0)
    tempo = np.array([[clip_tempo_and_root(s)[0]] for s in specs])
    label = np.array([s.genre == "edm" for s in specs])
    acc = cross_val_score(LogisticRegression(), tempo, label, cv=5).mean()
    assert acc < 0.75
    assert 120 <= tempo.min() and tempo.max() <= 135


def test_edm_is_brighter_and_more_vocal_on_average():
    techno = [render_clip(ClipSpec("techno", i, i % 3, 0)) for i in range(6)]
    edm = [render_clip(ClipSpec("edm", i, i % 3, 0)) for i in range(6)]

    def centroid(y):
        spec = np.abs(np.fft.rfft(y[: SR * 10, 0]))
        freqs = np.fft.rfftfreq(SR * 10, 1 / SR)
        return float(np.sum(spec * freqs) / np.sum(spec))

    assert np.mean([centroid(a) for a, _ in edm]) > np.mean([centroid(a) for a, _ in techno])
    assert sum(m["vocal"] for _, m in edm) > sum(m["vocal"] for _, m in techno)


def test_synthesize_writes_corpus_and_catalog(tmp_path, corpus):
    catalog = pd.read_csv(corpus / "catalog.csv")
    assert list(catalog.columns[:4]) == ["path", "label", "track_id", "artist"]
    assert len(catalog) == 16 and set(catalog["label"]) == {"techno", "edm"}
    assert all((corpus / p).exists() for p in catalog["path"])
    assert catalog.groupby("label")["artist"].nunique().min() >= 2
    with pytest.raises(ConfigError):
        synthesize(tmp_path / "x", per_genre=0, progress=False)
    with pytest.raises(ConfigError):
        synthesize(tmp_path / "x", per_genre=1, fmt="aac", progress=False)


def test_mp3_output_decodes(tmp_path):
    import soundfile as sf

    synthesize(tmp_path / "c", per_genre=1, seed=1, fmt="mp3", workers=1, progress=False)
    info = sf.info(str(tmp_path / "c" / "techno" / "techno_0000.mp3"))
    assert info.samplerate == SR and info.channels == 2 and abs(info.duration - CLIP_SECONDS) < 0.1


@pytest.mark.parametrize("per_genre", [100_001, 100_000_000])
def test_a_huge_corpus_is_refused_in_one_line_before_any_clip_is_listed(tmp_path, monkeypatch, capsys, per_genre):
    """--per-genre 100000000 took gigabytes (the list of clips) before anything was checked."""
    from dancegenre.cli.parser import main
    from dancegenre.data import synth

    monkeypatch.setattr(synth, "ClipSpec", lambda *a: pytest.fail("a clip was listed"))  # old code: fails here
    out = tmp_path / "corpus"
    with pytest.raises(ConfigError, match=r"--per-genre must be a whole number from 1 to 100,000, not"):
        synthesize(out, per_genre=per_genre, progress=False)
    assert main(["synth", str(out), "--per-genre", str(per_genre)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "100,000" in err[0] and "Traceback" not in err[0]
    assert not out.exists()  # refused before the folder was made
    with pytest.raises(ConfigError):
        clip_specs(per_genre, seed=0)
