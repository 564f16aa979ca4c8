"""Metrics, evaluate, predict, sort-into, and the demo."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dancegenre.cli.parser import main
from dancegenre.errors import StoreError
from dancegenre.inference.classifier import Classifier, Prediction, sections_of
from dancegenre.inference.evaluate import evaluate, expected_calibration_error
from dancegenre.inference.sort import sort_into
from dancegenre.training.scoring import classification_metrics, item_probabilities
from tests.conftest import tone, write


def test_metrics_against_hand_computed_values():
    y = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(y, probs, ["a", "b"])
    # predictions 0,1,1,1,0: right 3 of 5
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # class a: P=1/2 R=1/2 F=1/2; class b: P=2/3 R=2/3 F=2/3
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["confusion"] == [[1, 1], [1, 2]]
    # ROC-AUC: positives (0.8,0.7,0.4) vs negatives (0.1,0.6): 5 of 6 pairs ordered
    assert m["roc_auc"] == pytest.approx(5 / 6)
    three = classification_metrics(np.array([0, 1, 2]), np.eye(3), ["x", "y", "z"])
    assert three["accuracy"] == 1.0 and three["roc_auc"] == 1.0


def test_item_verdict_is_mean_of_segments():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    table = item_probabilities(probs, ["t1", "t1", "t1", "t2"])
    assert table.loc["t1"].to_numpy() == pytest.approx([1.4 / 3, 1.6 / 3])
    assert expected_calibration_error(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]])) == 0


def test_evaluate_run_test_split(trained_run):
    ev = evaluate(trained_run)
    for name in ("metrics.json", "report.md", "confusion.png", "reliability.png", "items.csv"):
        assert (ev.out / name).exists()
    split = pd.read_csv(trained_run / "split.csv")
    assert set(ev.items["item"]) == set(split.query("side == 'test'")["item"])
    assert "test split" in (ev.out / "report.md").read_text()
    assert np.sum(ev.item["confusion"]) == len(ev.items)


def test_evaluate_other_store_and_mismatch(trained_run, corpus, tmp_path, corpus_store):
    ev = evaluate(trained_run, corpus_store, out=tmp_path / "ev")
    assert ev.item["n"] == 16
    from dancegenre.config import FeatureConfig
    from dancegenre.data.store import prepare

    prepare(corpus, tmp_path / "s64", config=FeatureConfig(n_mels=64), workers=2, progress=False)
    with pytest.raises(StoreError, match="another feature config"):
        evaluate(trained_run, tmp_path / "s64")


def test_predict_folder_with_bad_files(trained_run, tmp_path, capsys):
    folder = tmp_path / "in"
    write(folder / "good.wav", tone(7.0, 44100, seed=1), 44100)
    write(folder / "sub" / "good2.flac", tone(6.5, 48000, seed=2), 48000)
    (folder / "bad.mp3").write_bytes(b"\x00" * 500)
    write(folder / "short.wav", tone(0.5, 22050), 22050)
    code = main(["predict", "-q", str(trained_run), str(folder), "--out", str(tmp_path / "r.csv"),
                 "--timeline", str(tmp_path / "t.csv")])
    assert code == 0
    table = pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    assert len(table) == 4
    errors = table.set_index(table["path"].map(lambda p: p.split("/")[-1]))["error"]
    assert errors["bad.mp3"] and "too short" in errors["short.wav"] and errors["good.wav"] == ""
    timeline = pd.read_csv(tmp_path / "t.csv")
    assert set(timeline["path"].map(lambda p: p.split("/")[-1])) == {"good.wav", "good2.flac"}
    # Printed: the verdicts as a table; on stderr, one line per failed file with its reason.
    capsys.readouterr()
    assert main(["predict", str(trained_run), str(folder), "--workers", "1"]) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    failed = [line for line in printed.err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and any(line.startswith(f"failed: {folder / 'bad.mp3'}: not a readable audio file") for line in failed)
    assert all(line.count("bad.mp3") == 1 for line in failed if "bad.mp3" in line)
    assert any("short.wav: " in line and "too short" in line for line in failed)
    verdicts = lines[1:-1]
    assert len(verdicts) == 2 and all(("good.wav" in v or "good2.flac" in v) and "0.0000" not in v for v in verdicts)
    assert lines[-1] == "2 predicted, 2 failed"


def test_api_and_cli_agree(trained_run, corpus, tmp_path):
    files = sorted((corpus / "techno").glob("*.flac"))[:3]
    clf = Classifier.load(trained_run)
    api = [clf.predict(f) for f in files]
    many = list(clf.predict_many(files, workers=2))
    assert main(["predict", "-q", str(trained_run), *map(str, files), "--out", str(tmp_path / "r.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    for a, m, r in zip(api, many, rows):
        assert a.genre == m.genre == r["genre"]
        for lab in clf.labels:
            assert a.probabilities[lab] == pytest.approx(m.probabilities[lab], abs=1e-4)
            assert a.probabilities[lab] == pytest.approx(r["probabilities"][lab], abs=1e-3)
        assert len(r["timeline"]) == 10
    import soundfile as sf

    y, sr = sf.read(str(files[0]), dtype="float32")
    from_wave = clf.predict(y, sr=sr)
    assert from_wave.genre == api[0].genre
    assert from_wave.probabilities[clf.labels[0]] == pytest.approx(api[0].probabilities[clf.labels[0]], abs=1e-3)


def test_long_file_timeline(trained_run, tmp_path):
    path = write(tmp_path / "long.flac", tone(660.0, 22050, seed=4), 22050)  # 11 minutes
    pred = Classifier.load(trained_run).predict(path)
    frames = 1 + 660 * 22050 // 512
    assert len(pred.timeline) == 1 + (frames - 128) // 128
    assert pred.timeline["start"].is_monotonic_increasing
    assert pred.sections and pred.sections[0]["start"] == 0.0


def test_predict_many_batches_files_through_the_network_in_order(trained_run, corpus, tmp_path):
    """Files share forward passes (batch_size 16: a flush every two 10-segment files);
    a bad file between them keeps its place, and every verdict equals predict's."""
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"junk" * 100)
    files = sorted((corpus / "techno").glob("*.flac"))[:3] + [bad] + sorted((corpus / "edm").glob("*.flac"))[:2]
    clf = Classifier.load(trained_run, batch_size=16)
    many = list(clf.predict_many(files, workers=2))
    assert [m.source for m in many] == [str(f) for f in files]
    assert many[3].error and all(m.error is None for i, m in enumerate(many) if i != 3)
    for f, m in zip(files, many):
        if f != bad:
            one = clf.predict(f)
            assert one.genre == m.genre and len(one.timeline) == len(m.timeline)
            for lab in clf.labels:
                assert one.probabilities[lab] == pytest.approx(m.probabilities[lab], abs=1e-4)


def test_centred_mean_is_pandas_rolling():
    from dancegenre.inference.classifier import centred_mean

    rng = np.random.default_rng(0)
    for window in range(1, 8):
        for n in (1, 4, 23):
            p = rng.random((n, 3))
            ref = pd.DataFrame(p).rolling(window, center=True, min_periods=1).mean().to_numpy()
            np.testing.assert_allclose(centred_mean(p, window), ref)


def test_sections_find_a_change():
    t = pd.DataFrame({"start": np.arange(20) * 3.0, "end": np.arange(20) * 3.0 + 3})
    t["a"] = [0.9] * 10 + [0.1] * 10
    t["b"] = 1 - t["a"]
    secs = sections_of(t[["a", "b"]].to_numpy(), t["start"].to_numpy(), t["end"].to_numpy(), ["a", "b"], smooth=3)
    assert [s["genre"] for s in secs] == ["a", "b"] and secs[1]["start"] == 30.0


def _pred(path, genre, conf):
    return Prediction(str(path), genre, {genre: conf, "other": 1 - conf}, pd.DataFrame())


def test_sort_into_never_overwrites_or_loses(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mp3").write_bytes(b"one")
    (src / "b").mkdir()
    (src / "b" / "a.mp3").write_bytes(b"two")
    (src / "c.mp3").write_bytes(b"three")
    target = tmp_path / "sorted"
    (target / "techno").mkdir(parents=True)
    (target / "techno" / "a.mp3").write_bytes(b"already there")
    preds = [_pred(src / "a.mp3", "techno", 0.9), _pred(src / "b" / "a.mp3", "techno", 0.95),
             _pred(src / "c.mp3", "edm", 0.55), Prediction(str(src / "x.mp3"), None, {}, pd.DataFrame(), error="bad")]
    plan = sort_into(preds, target, dry_run=True, min_confidence=0.6)
    assert not (target / "techno" / "a-1.mp3").exists() and not (target / "_unsure").exists()
    assert [a.destination for a in plan[:3]] == [str(target / "techno" / "a-1.mp3"), str(target / "techno" / "a-2.mp3"),
                                                 str(target / "_unsure" / "c.mp3")]
    assert plan[3].action == "skip"
    sort_into(preds, target, move=True, min_confidence=0.6)
    assert (target / "techno" / "a.mp3").read_bytes() == b"already there"
    assert (target / "techno" / "a-1.mp3").read_bytes() == b"one"
    assert (target / "techno" / "a-2.mp3").read_bytes() == b"two"
    assert (target / "_unsure" / "c.mp3").read_bytes() == b"three"
    assert not (src / "a.mp3").exists() and not (src / "c.mp3").exists()


def test_cli_sort_into_dry_run_changes_nothing(trained_run, corpus, tmp_path, capsys):
    files = sorted((corpus / "edm").glob("*.flac"))[:2]
    before = sorted(p.name for p in (corpus / "edm").iterdir())
    assert main(["predict", "-q", str(trained_run), *map(str, files), "--sort-into", str(tmp_path / "s"), "--dry-run"]) == 0
    assert "would copy" in capsys.readouterr().out
    assert not (tmp_path / "s").exists() and sorted(p.name for p in (corpus / "edm").iterdir()) == before


def test_cli_errors_one_line(tmp_path, trained_run):
    r = subprocess.run([sys.executable, "-m", "dancegenre", "predict", "-q", str(trained_run), str(tmp_path / "nothing")],
                       capture_output=True, text=True)
    # a missing file gets its own error row; nothing predicted -> exit 2
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such file" in r.stderr
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "dancegenre", "predict", "-q", str(trained_run), str(tmp_path / "empty")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"dancegenre predict: error: no audio files in {tmp_path / 'empty'}"]
    (tmp_path / "x.pt").write_bytes(b"junk")
    r = subprocess.run([sys.executable, "-m", "dancegenre", "evaluate", str(tmp_path / "x.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "not a loadable dancegenre checkpoint" in r.stderr


def test_demo_end_to_end(tmp_path):
    from dancegenre.demo import run_demo

    report = run_demo(tmp_path / "demo", per_genre=8, epochs=2, heldout_per_genre=1, fmt="flac", progress=False,
                      log=lambda *a: None)
    text = report.read_text()
    from html.parser import HTMLParser

    class Images(HTMLParser):
        count = 0

        def handle_starttag(self, tag, attrs):
            if tag == "img" and dict(attrs)["src"].startswith("data:image/png;base64,"):
                Images.count += 1

    Images().feed(text)
    assert Images.count == 5  # spectrograms, curves, confusion, reliability, timeline
    assert "Predictions on held-back clips" in text
    assert len(pd.read_csv(tmp_path / "demo" / "predictions.csv")) == 2
    shutil.rmtree(tmp_path / "demo" / "corpus")


def test_features_on_the_device_give_the_workers_verdicts(trained_run, corpus, tmp_path):
    """``features="device"`` (torch's STFT next to the network, here on the CPU as a
    stand-in for a GPU): the workers only decode, and every verdict, timeline and error
    is the CPU front end's, in order, through the pool and for one file."""
    bad, short = tmp_path / "bad.mp3", write(tmp_path / "short.wav", tone(0.5, 22050), 22050)
    bad.write_bytes(b"junk" * 100)
    silent = write(tmp_path / "silent.wav", np.zeros(22050 * 4, np.float32), 22050)
    files = sorted((corpus / "techno").glob("*.flac"))[:2] + [bad, short, silent] + sorted((corpus / "edm").glob("*.flac"))[:2]
    cpu = Classifier.load(trained_run, engine="torch", batch_size=16, features="workers")
    dev = Classifier.load(trained_run, batch_size=16, features="device")
    assert cpu.feature_device is None and dev.feature_device == "cpu" and dev.engine == "torch"
    for many in (list(dev.predict_many(files, workers=2)), [dev._safe(str(f)) for f in files]):
        ref = list(cpu.predict_many(files, workers=2))
        assert [m.source for m in many] == [str(f) for f in files]
        for r, m in zip(ref, many):
            assert (r.error is None) == (m.error is None) and r.genre == m.genre
            if r.error is not None:
                assert m.error == r.error  # the same one line: too short, silent, undecodable
                continue
            assert len(r.timeline) == len(m.timeline)
            for lab in cpu.labels:
                assert m.probabilities[lab] == pytest.approx(r.probabilities[lab], abs=1e-3)
                np.testing.assert_allclose(m.timeline[lab], r.timeline[lab], atol=2e-3)
    import soundfile as sf

    y, sr = sf.read(str(files[0]), dtype="float32")
    assert dev.predict(y, sr=sr).genre == cpu.predict(files[0]).genre


def test_features_option_is_checked_in_one_line(trained_run, corpus, tmp_path):
    one = str(sorted((corpus / "techno").glob("*.flac"))[0])
    before = (Path(one).read_bytes(), sorted(p.name for p in trained_run.iterdir()))
    r = subprocess.run([sys.executable, "-m", "dancegenre", "predict", "-q", str(trained_run), one,
                        "--features", "device", "--engine", "onnx"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--engine torch" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "dancegenre", "predict", "-q", str(trained_run), one,
                        "--features", "gpu"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "invalid choice" in r.stderr
    out = tmp_path / "r.csv"
    assert main(["predict", "-q", str(trained_run), one, "--features", "device", "--out", str(out)]) == 0
    assert main(["predict", "-q", str(trained_run), one, "--out", str(tmp_path / "w.csv")]) == 0
    a, b = pd.read_csv(out), pd.read_csv(tmp_path / "w.csv")
    assert a["genre"].tolist() == b["genre"].tolist() and a["error"].isna().all()
    assert a["confidence"].iloc[0] == pytest.approx(b["confidence"].iloc[0], abs=2e-3)
    assert (Path(one).read_bytes(), sorted(p.name for p in trained_run.iterdir())) == before  # inputs untouched


class _ThreeGenres:
    """A stand-in for an ONNX export: the same probabilities (a, b, c) for every segment,
    except that the first segment of a file leans to ``a``."""

    def __init__(self, config):
        self.path, self.model, self.labels, self.feature_config, self.tags = Path("three.onnx"), "stub", \
            ["a", "b", "c"], config, []

    def __call__(self, segments):
        p = np.tile(np.array([[0.2, 0.5, 0.3]], np.float32), (len(segments), 1))
        p[0] = [0.7, 0.2, 0.1]
        return p, None


def test_restrict_gives_verdicts_among_some_genres(trained_run):
    """Classifier.restrict: the item's mean probabilities over the kept genres, scaled to
    sum to 1 (not the mean of each segment's), the timeline's rows the same per segment,
    and the verdict the most likely of them; the same as restricted_verdicts on a table."""
    from dancegenre.training.runs import restricted_verdicts

    clf = Classifier.from_portable(_ThreeGenres(Classifier.load(trained_run).config))
    y = tone(12.0, 22050, seed=4)
    full = clf.predict(y, sr=22050)
    assert full.genre == "b"
    clf.restrict(["c", "a"])
    assert clf.labels == ["a", "c"]  # the model's order
    part = clf.predict(y, sr=22050)
    n = len(full.timeline)
    mean_a, mean_c = (0.7 + 0.2 * (n - 1)) / n, (0.1 + 0.3 * (n - 1)) / n
    assert part.probabilities == pytest.approx({"a": mean_a / (mean_a + mean_c), "c": mean_c / (mean_a + mean_c)},
                                               abs=1e-6)
    assert part.genre == ("a" if mean_a > mean_c else "c")
    assert list(part.timeline.columns[3:]) == ["a", "c", "genre"]
    assert part.timeline.loc[0, "a"] == pytest.approx(0.875) and part.timeline.loc[1, "c"] == pytest.approx(0.6)
    assert part.timeline["genre"].tolist() == ["a"] + ["c"] * (n - 1)
    table = pd.DataFrame({"item": ["x"], "label": ["c"], **{f"p_{g}": [full.probabilities[g]] for g in "abc"}})
    among = restricted_verdicts(table, ["a", "c"])
    assert among.loc[0, "predicted"] == part.genre
    assert among.loc[0, "p_a"] == pytest.approx(part.probabilities["a"], abs=1e-5)
    clf.restrict(["a", "b", "c"])  # a new choice starts again from every genre
    assert clf.labels == ["a", "b", "c"] and clf.predict(y, sr=22050).genre == "b"


def test_restricted_verdicts_keep_their_genres_items():
    from dancegenre.errors import ConfigError
    from dancegenre.training.runs import among, genre_subset, restricted_verdicts

    table = pd.DataFrame({"item": ["i0", "i1", "i2", "i3"], "label": ["a", "b", "c", "a"],
                          "p_a": [0.1, 0.3, 0.0, 0.0], "p_b": [0.5, 0.3, 0.0, 0.0], "p_c": [0.4, 0.4, 1.0, 1.0]})
    cut = restricted_verdicts(table, ["a", "b"])
    assert cut["item"].tolist() == ["i0", "i1", "i3"]  # items of the kept genres only
    assert list(cut.columns) == ["item", "label", "predicted", "p_a", "p_b"]
    assert cut["p_a"].tolist() == pytest.approx([1 / 6, 0.5, 0.5], abs=1e-6)  # i3: no mass left, uniform
    assert cut["predicted"].tolist()[:1] == ["b"]
    assert np.allclose(among(np.array([[0.2, 0.2, 0.6]]), [0, 2]), [[0.25, 0.75]])
    assert genre_subset(["c", "a"], ["a", "b", "c"]) == [0, 2]
    for wanted, words in [(["a", "z"], "not a genre of this model: z"), (["a"], "at least two"), ([], "at least two")]:
        with pytest.raises(ConfigError, match=words):
            genre_subset(wanted, ["a", "b", "c"])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_interrupted_predict_resumes_and_writes_what_one_run_writes(trained_run, corpus, tmp_path, capsys,
                                                                       monkeypatch, suffix):
    """Ctrl-C after three files: the rerun predicts only the other files (and the one
    whose audio changed since) and writes the same bytes as a run never interrupted;
    another model starts over; the journal is gone once the outputs are whole."""
    crate = tmp_path / "crate"
    for f in sorted(corpus.rglob("*.flac"))[:6]:
        (crate / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, crate / f.parent.name / f.name)
    other_run = shutil.copytree(trained_run, tmp_path / "same-weights-elsewhere")
    outputs = ["--workers", "1", "--out", str(tmp_path / f"r{suffix}"), "--timeline", str(tmp_path / "r-t.csv")]
    assert main(["predict", "-q", str(trained_run), str(crate), "--workers", "1", "--out",
                 str(tmp_path / f"clean{suffix}"), "--timeline", str(tmp_path / "clean-t.csv")]) == 0
    scored: list[str] = []
    real = Classifier.predict_many

    def interrupted_after(n):
        def predict_many(self, paths, **kwargs):
            for k, p in enumerate(real(self, paths, **kwargs)):
                if k == n:
                    raise KeyboardInterrupt
                scored.append(p.source)
                yield p
        return predict_many

    monkeypatch.setattr(Classifier, "predict_many", interrupted_after(3))
    assert main(["predict", "-q", str(trained_run), str(crate), *outputs]) == 130
    assert not (tmp_path / f"r{suffix}").exists() and (tmp_path / f"r{suffix}.pending" / "rows.jsonl").exists()
    first = scored[:3]
    capsys.readouterr()
    assert main(["predict", "-q", str(other_run), str(crate), *outputs]) == 130  # another model: from the start
    assert "resuming" not in capsys.readouterr().out and scored[3:] == first
    Path(first[0]).write_bytes(Path(first[0]).read_bytes())  # the same audio, a new mtime: predicted again
    scored.clear()
    monkeypatch.setattr(Classifier, "predict_many", interrupted_after(99))
    assert main(["predict", "-q", str(trained_run), str(crate), *outputs]) == 0
    assert "resuming: 2 of 6 files predicted before" in capsys.readouterr().out
    assert sorted(scored) == sorted(set(map(str, crate.rglob("*.flac"))) - set(first[1:]))
    assert (tmp_path / f"r{suffix}").read_bytes() == (tmp_path / f"clean{suffix}").read_bytes()
    assert (tmp_path / "r-t.csv").read_bytes() == (tmp_path / "clean-t.csv").read_bytes()
    assert not (tmp_path / f"r{suffix}.pending").exists()


def test_a_journal_row_that_cannot_be_read_is_predicted_again(trained_run, corpus, tmp_path):
    from dancegenre.data.jobs import Journal
    from dancegenre.inference.classifier import predict_files

    files = [str(f) for f in sorted((corpus / "techno").glob("*.flac"))[:2]]
    clf = Classifier.load(trained_run)
    first = predict_files(clf, files, journal=tmp_path / "r.csv", workers=1, progress=False)
    rows = (tmp_path / "r.csv.pending" / "rows.jsonl").read_text().splitlines()
    broken = json.loads(rows[0])
    del broken["prediction"]["timeline"]
    (tmp_path / "r.csv.pending" / "rows.jsonl").write_text(json.dumps(broken) + "\n" + rows[1] + "\n{\"key\": 3")
    said = []
    again = predict_files(clf, files, journal=tmp_path / "r.csv", workers=1, progress=False, log=said.append)
    assert said == ["resuming: 1 of 2 files predicted before"]
    assert [p.probabilities for p in again] == [p.probabilities for p in first]
    Journal(tmp_path / "r.csv", "predict-journal").remove()
    assert not (tmp_path / "r.csv.pending").exists()
