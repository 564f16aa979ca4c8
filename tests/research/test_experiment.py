"""experiment, explain and report: end to end on the small synthetic store."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dancegenre.research import experiment as experiment_module
from dancegenre.cli.parser import main
from dancegenre.errors import Interrupted
from dancegenre.research.experiment import load_spec, run_experiment

SPEC = """
name = "tiny"
folds = 2
seeds = [0]
mode = "grid"
[base]
epochs = 1
batch_size = 32
filters = [8, 8, 8]
dense = 16
split_by = "track_id"
[factors]
pooling = ["max", "avg"]
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def finished(spec, corpus_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "exp"
    assert main(["experiment", "-q", str(spec), "--store", str(corpus_store), "--out", str(out), "--jobs", "2"]) == 0
    return out


def test_two_configurations_two_folds_end_to_end(finished):
    summary = pd.read_csv(finished / "summary.csv")
    assert len(summary) == 2 and set(summary["pooling"]) == {"max", "avg"}
    assert (summary["runs"] == 2).all() and summary["complete"].all()
    assert summary["best"].sum() == 1
    # best first, by validation
    assert summary["val_item_accuracy_mean"].is_monotonic_decreasing
    for col in ("item_accuracy_mean", "item_accuracy_std", "segment_accuracy_mean", "item_macro_f1_mean",
                "segment_macro_f1_std", "seconds_mean", "parameters"):
        assert summary[col].notna().all(), col
    results = pd.read_csv(finished / "results.csv")
    assert len(results) == 4 and set(results["fold"]) == {0, 1}
    assert ((results["item_accuracy"] >= 0) & (results["item_accuracy"] <= 1)).all()
    md = (finished / "summary.md").read_text()
    assert "★" in md and "| avg |" in md.replace("|  avg", "| avg")
    assert (finished / "factor-pooling.png").stat().st_size > 1000
    assert (finished / "configurations.png").exists()
    _check_html(finished / "summary.html")


def test_folds_never_share_a_track(finished, corpus_store):
    from dancegenre.data.store import SegmentStore

    store = SegmentStore(corpus_store)
    track_of = dict(zip(store.items["item"], store.items["track_id"]))
    for config in (finished / "runs").iterdir():
        tests = []
        for k in range(2):
            split = pd.read_csv(config / "seed-0" / f"fold-{k}" / "split.csv")
            sides = split.groupby("side")["item"].apply(lambda s: {track_of[i] for i in s})
            assert not sides["train"] & sides["test"] and not sides["val"] & sides["test"]
            assert not sides["train"] & sides["val"]
            tests.append(sides["test"])
        assert not tests[0] & tests[1]
        assert tests[0] | tests[1] == set(store.items["track_id"])


def test_interrupted_experiment_resumes_and_skips_finished_runs(spec, corpus_store, tmp_path, monkeypatch):
    real = experiment_module.train_one
    calls: list[str] = []

    def stop_after_one(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(experiment_module, "train_one", stop_after_one)
    out = tmp_path / "exp"
    with pytest.raises(Interrupted, match="resume"):
        run_experiment(spec, store=corpus_store, out=out, progress=False, log=lambda *a: None)
    finished = sorted(p.parent for p in (out / "runs").glob("*/seed-*/fold-*/results.json"))
    assert [str(p) for p in finished] == calls
    stamp = (finished[0] / "results.json").stat().st_mtime_ns

    trained: list[str] = []
    monkeypatch.setattr(experiment_module, "train_one", lambda *a: trained.append(a[1]) or real(*a))
    lines: list[str] = []
    summary = run_experiment(spec, store=corpus_store, out=out, progress=False, log=lines.append)
    assert "1 done before" in lines[0]
    assert len(trained) == 3 and calls[0] not in trained
    assert (finished[0] / "results.json").stat().st_mtime_ns == stamp
    assert (summary["runs"] == 2).all()


def test_spec_errors_are_one_line(tmp_path, corpus_store, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[factors]\npoolin = ["max"]\n')
    assert main(["experiment", str(bad), "--store", str(corpus_store), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown setting(s) poolin" in err and "Traceback" not in err
    bad.write_text("folds = 1\n")
    with pytest.raises(Exception, match="folds"):
        load_spec(bad)
    bad.write_text("not toml [")
    assert main(["experiment", str(bad), "--store", str(corpus_store), "--out", str(tmp_path / "o")]) == 2
    bad.write_text('[factors]\npooling = ["sideways"]\n')
    assert main(["experiment", str(bad), "--store", str(corpus_store), "--out", str(tmp_path / "o")]) == 2
    assert "sideways" in capsys.readouterr().err


def test_one_at_a_time_dedupes_equal_configurations(tmp_path, corpus_store):
    path = tmp_path / "s.toml"
    path.write_text('mode = "one-at-a-time"\nfolds = 2\n[base]\npooling = "max"\n'
                    '[factors]\npooling = ["max", "avg"]\ndropout = [0.5]\n')
    configs = run_experiment(path, store=corpus_store, out=tmp_path / "o", dry_run=True, log=lambda *a: None)
    # pooling=max and dropout=0.5 are the base itself
    assert list(configs["name"]) == ["base", "pooling=avg"]


# ------------------------------------------------------------------ explain

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
    _check_html(out / "explain.html", min_images=7)
    assert main(["explain", str(trained_run), "--out", str(tmp_path / "x")]) == 2
    assert "nothing to explain" in capsys.readouterr().err


def test_explain_store_filters(trained_run, corpus_store):
    from dancegenre.research.explain import explain_store

    a = explain_store(trained_run, corpus_store, max_segments=50, top=4)
    assert a.response.shape == (64, 128) and np.allclose(a.response.max(1), 1)
    assert a.by_genre.shape == (64, 2)
    assert all(len(v) == 4 for v in a.top.values())
    peaks = [row for row, _ in a.top[0]]
    assert len(set(peaks)) == 4


# ------------------------------------------------------------------ report

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


def _check_html(path: Path, min_images: int = 1) -> _Page:
    """Parse the page: tags balance, every image is an embedded, decodable PNG."""
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    parser = _Page()
    parser.feed(text)
    parser.close()
    assert not parser.stack, f"unclosed: {parser.stack}"
    assert len(parser.images) >= min_images
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return parser


def test_report_of_a_run_with_eda_and_explanation(trained_run, corpus, tmp_path):
    from dancegenre.research.descriptors import describe_files

    catalog = pd.read_csv(corpus / "catalog.csv").groupby("label").head(3)
    catalog["path"] = [str(corpus / p) for p in catalog["path"]]
    catalog.to_csv(tmp_path / "few.csv", index=False)
    feats = tmp_path / "features.csv"
    describe_files(tmp_path / "few.csv", feats, workers=1, progress=False)
    clips = sorted(corpus.rglob("*.flac"))
    before = sorted(p.name for p in trained_run.iterdir())
    out = tmp_path / "report.html"
    assert main(["report", "-q", str(trained_run), "--out", str(out), "--features", str(feats),
                 "--explain", str(clips[0])]) == 0
    page = _check_html(out, min_images=7)
    for section in ("Data", "Training", "Metrics on the test split", "Exploratory analysis of the descriptors"):
        assert section in page.h2
    assert any(h.startswith("Explanation:") for h in page.h2)
    assert sorted(p.name for p in trained_run.iterdir()) == before  # the run is not changed


def test_report_of_an_experiment_and_a_cross_validation(finished, corpus_store, tmp_path):
    out = tmp_path / "exp.html"
    assert main(["report", "-q", str(finished), "--out", str(out)]) == 0
    page = _check_html(out, min_images=4)
    assert "Configurations" in page.h2 and any("Best configuration" in h for h in page.h2)
    best = json.loads(pd.read_csv(finished / "summary.csv").query("best").to_json(orient="records"))[0]
    assert best["name"] in out.read_text()

    from dancegenre.config import TrainConfig
    from dancegenre.training.fit import cross_validate

    cross_validate(corpus_store, out=tmp_path / "cv", folds=2, config=TrainConfig(epochs=1, batch_size=32),
                   progress=False, log=lambda *a: None)
    assert main(["report", "-q", str(tmp_path / "cv"), "--out", str(tmp_path / "cv.html")]) == 0
    page = _check_html(tmp_path / "cv.html", min_images=3)
    assert "Held-out folds" in page.h2


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a finished run" in capsys.readouterr().err
