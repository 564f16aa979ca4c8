"""explain: saliency, Grad-CAM, feature maps, band occlusion and filters, from Python and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dancegenre.cli.parser import main
from tests.conftest import check_html


@pytest.mark.parametrize("model", ["cnn1d", "cnn2d"])
def test_explain_track_shapes(corpus, corpus_store, tmp_path, model):
    from dancegenre.config import TrainConfig
    from dancegenre.research.explain import explain_track
    from dancegenre.research.explanation import write_track
    from dancegenre.training.fit import fit

    run = tmp_path / "run"
    fit(corpus_store, out=run, model=model, config=TrainConfig(epochs=1, batch_size=32), progress=False,
        log=lambda *a: None)
    clip = sorted((corpus / "techno").rglob("*.flac"))[0]
    expl = explain_track(run, clip, max_seconds=9.0)
    from dancegenre.training.checkpoint import load_checkpoint

    ck = load_checkpoint(run)
    c, m = ck.feature_config, ck.model_config
    n_seg = 3  # 9 s / 2.97 s back-to-back segments
    frames = n_seg * c.segment_frames
    assert expl.spectrogram.shape == (c.n_mels, frames)
    assert expl.saliency.shape == (c.n_mels, frames) and (expl.saliency >= 0).all() and expl.saliency.sum() > 0
    assert expl.segment_probs.shape == (n_seg, len(ck.labels))
    np.testing.assert_allclose(expl.segment_probs.sum(1), 1, atol=1e-5)
    assert list(expl.feature_maps) == ["conv1", "conv2", "conv3"]
    for fmap, channels in zip(expl.feature_maps.values(), m.filters):
        assert fmap.shape[0] == channels and fmap.shape[1] % n_seg == 0
    steps = [f.shape[1] for f in expl.feature_maps.values()]
    assert steps == sorted(steps, reverse=True)  # pooling shortens time block by block
    if model == "cnn1d":
        assert expl.gradcam.shape == (frames,)
        assert expl.feature_maps["conv1"].shape[1] == n_seg * (c.segment_frames + 2 * ((m.kernel_size - 1) // 2)
                                                               - m.kernel_size + 1)
    else:
        assert expl.gradcam.shape == (c.n_mels, frames)
    assert 0 <= expl.gradcam.min() and expl.gradcam.max() <= 1
    assert len(expl.bands) == c.n_mels // 8 and expl.bands["fmin_hz"].is_monotonic_increasing
    assert abs(expl.bands["saliency_share"].sum() - 1) < 1e-5
    files = write_track(expl, tmp_path / "out")
    for key in ("saliency", "feature_maps", "bands", "timeline", "arrays"):
        assert files[key].stat().st_size > 0
    with np.load(files["arrays"]) as arrays:
        assert arrays["saliency"].shape == (c.n_mels, frames)


def test_explain_cli_tracks_and_store(trained_run, corpus, corpus_store, tmp_path, capsys):
    clip = sorted((corpus / "edm").rglob("*.flac"))[0]
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"not audio at all" * 50)
    out = tmp_path / "explain"
    assert main(["explain", "-q", str(trained_run), str(clip), str(broken), "--store", str(corpus_store),
                 "--max-segments", "100", "--out", str(out)]) == 0
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["path"]) == [str(broken)]
    filters = pd.read_csv(out / "filters" / "filters.csv")
    assert len(filters) == 64 and set(filters["top_genre"]) <= {"edm", "techno"}
    for name in ("filters-frequency-response.png", "filters-by-genre.png", "filters-top-segments.png"):
        assert (out / "filters" / name).stat().st_size > 1000
    check_html(out / "explain.html", min_images=7)
    assert main(["explain", str(trained_run), "--out", str(tmp_path / "x")]) == 2
    assert "nothing to explain" in capsys.readouterr().err
    # no track explained: an error after failures.csv, not a page of failures and exit 0
    assert main(["explain", "-q", str(trained_run), str(broken), "--out", str(tmp_path / "none")]) == 2
    assert "none of the 1 file(s) could be explained" in capsys.readouterr().err
    assert list(pd.read_csv(tmp_path / "none" / "failures.csv")["path"]) == [str(broken)]
    # a store that is none is refused before the folder exists
    assert main(["explain", "-q", str(trained_run), str(clip), "--store", str(corpus),
                 "--out", str(tmp_path / "y")]) == 2
    assert "not a prepared store" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_explain_store_filters(trained_run, corpus_store):
    from dancegenre.research.explain import explain_store

    a = explain_store(trained_run, corpus_store, max_segments=50, top=4)
    assert a.response.shape == (64, 128) and np.allclose(a.response.max(1), 1)
    assert a.by_genre.shape == (64, 2)
    assert all(len(v) == 4 for v in a.top.values())
    peaks = [row for row, _ in a.top[0]]
    assert len(set(peaks)) == 4


def test_the_page_explains_the_verdict_predict_gives(trained_run, corpus, tmp_path):
    """The headline, the timeline and the maps tell predict's verdict on the stretch shown,
    not a second verdict from the explanation's own back-to-back segments."""
    from dancegenre.audio.decode import load
    from dancegenre.errors import ConfigError
    from dancegenre.inference.classifier import Classifier
    from dancegenre.research.explain import explain_track
    from dancegenre.research.explanation import explain_verdict
    from dancegenre.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(trained_run)
    clf = Classifier(ckpt)
    clip = sorted((corpus / "edm").rglob("*.flac"))[0]
    sr = ckpt.feature_config.sample_rate
    verdict = clf.predict(load(clip, sr=sr, max_seconds=9.0), sr=sr)
    expl, timeline = explain_verdict(clf, clip, max_seconds=9.0)
    assert expl.source == str(clip) and expl.genre == verdict.genre
    assert expl.probabilities == verdict.probabilities and expl.verdict_seconds == verdict.duration
    pd.testing.assert_frame_equal(timeline, verdict.timeline)
    # the maps explain the genre asked for
    other = next(g for g in ckpt.labels if g != verdict.genre)
    asked = explain_track(ckpt, clip, genre=other, max_seconds=9.0)
    assert asked.genre == other and not np.allclose(asked.saliency, expl.saliency)
    with pytest.raises(ConfigError, match="not one of the model's"):
        explain_track(ckpt, clip, genre="polka", max_seconds=9.0)
    # the CLI's page states that verdict
    out = tmp_path / "page"
    assert main(["explain", "-q", str(trained_run), str(clip), "--max-seconds", "9", "--out", str(out)]) == 0
    probs = ", ".join(f"{g} {p:.2f}" for g, p in verdict.top(len(ckpt.labels)))
    assert f"<b>{verdict.genre}</b> ({probs}) over the first {verdict.duration:.1f} s" in \
        (out / "explain.html").read_text()


# ------------------------------------------------------------------ report

