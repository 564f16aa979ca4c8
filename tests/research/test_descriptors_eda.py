"""Descriptors on signals with known answers; EDA and the baseline; bad input."""

import numpy as np
import pandas as pd
import pytest

from dancegenre.cli.parser import main
from dancegenre.data.synth import click_track
from dancegenre.errors import CatalogError, EmptyInputError, SilentAudioError
from dancegenre.research.descriptors import (
    DESCRIPTORS,
    SR,
    describe,
    describe_files,
    describe_signal,
    estimate_tempo,
    onset_envelope,
)
from dancegenre.research.eda import column_statistics, run_baseline, run_eda


def test_tempo_within_one_bpm_on_known_clicks():
    rng = np.random.default_rng(1)
    bpms = rng.uniform(90, 175, 24)
    results = []
    for k, bpm in enumerate(bpms):
        swing = 0.33 if k % 2 else 0.0
        est, strength = estimate_tempo(onset_envelope(click_track(bpm, swing=swing, seed=k)), SR / 128)
        results.append((bpm, est, strength))
    within = [abs(e - b) <= 1.0 for b, e, _ in results]
    octave = [min(abs(e - 2 * b), abs(e - b / 2)) <= 1.0 for b, e, _ in results]
    assert np.mean(within) >= 0.9, results
    assert not any(o and not w for o, w in zip(octave, within)) or np.mean(within) >= 0.9
    assert all(s > 1.5 for _, _, s in results)


def test_simple_signals():
    t = np.arange(5 * SR) / SR
    sine = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    d = describe_signal(sine)
    assert abs(d["spectral_centroid"] - 1000) < 30
    assert d["spectral_flatness"] < 0.01
    assert d["mid_energy"] > 0.99
    assert d["rms_db"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)
    noise = np.random.default_rng(0).standard_normal(5 * SR).astype(np.float32) * 0.1
    dn = describe_signal(noise)
    assert dn["spectral_flatness"] > 0.5 and dn["high_energy"] > 0.5
    assert dn["zcr"] == pytest.approx(0.5, abs=0.05)
    with pytest.raises(SilentAudioError):
        describe_signal(np.zeros(3 * SR, np.float32))
    assert set(DESCRIPTORS) <= set(d)


def test_features_command_and_resume(corpus, tmp_path):
    out = tmp_path / "f.csv"
    (corpus / "edm" / "broken.flac").write_bytes(b"junk" * 100)
    try:
        assert main(["features", "-q", str(corpus), "--out", str(out), "--workers", "2"]) == 0
    finally:
        (corpus / "edm" / "broken.flac").unlink()
    table = pd.read_csv(out)
    assert len(table) == 16 and set(DESCRIPTORS) <= set(table.columns)
    assert len(pd.read_csv(tmp_path / "f.failures.csv")) == 1
    # tempo estimates agree with the generator's ground truth
    truth = pd.read_csv(corpus / "catalog.csv").set_index("path")["tempo"]
    est = table.set_index("item")["tempo_bpm"]
    assert (np.abs(est - truth.loc[est.index]) <= 1.0).mean() >= 0.9
    again, _ = describe_files(corpus, out, workers=1, progress=False)
    assert again["tempo_bpm"].tolist() == table["tempo_bpm"].tolist()


def test_eda_ranks_the_separating_column(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    table = pd.DataFrame({"label": ["a"] * n + ["b"] * n, "noise": rng.normal(0, 1, 2 * n),
                          "separates": np.r_[rng.normal(0, 1, n), rng.normal(3, 1, n)],
                          "text": ["x"] * (2 * n)})
    table.loc[3, "noise"] = np.nan  # missing values are dropped per column
    stats = column_statistics(table)
    assert stats["column"].tolist()[0] == "separates" and stats["missing"].tolist()[1] == 1
    table.to_csv(tmp_path / "t.csv", index=False)
    run_eda([tmp_path / "t.csv"], tmp_path / "r")
    for name in ("statistics.csv", "histograms.png", "index.html"):
        assert (tmp_path / "r" / name).exists()


def test_eda_bad_input(tmp_path):
    pd.DataFrame({"label": ["a", "b"], "name": ["x", "y"]}).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(EmptyInputError, match="no numeric column"):
        run_eda([tmp_path / "none.csv"], tmp_path / "o")
    pd.DataFrame({"label": ["a", "a"], "v": [1.0, 2.0]}).to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(EmptyInputError, match="one genre only"):
        run_eda([tmp_path / "one.csv"], tmp_path / "o")
    assert main(["eda", str(tmp_path / "one.csv"), "--out", str(tmp_path / "o")]) == 2
    # the study's layout: techno.csv and edm.csv, no label column
    pd.DataFrame({"tempo": [124, 125, 123], "danceability": [0.7, 0.8, 0.75]}).to_csv(tmp_path / "techno.csv", index=False)
    pd.DataFrame({"tempo": [127, 128, 126], "danceability": [0.6, 0.7, 0.65]}).to_csv(tmp_path / "edm.csv", index=False)
    stats = run_eda([tmp_path / "techno.csv", tmp_path / "edm.csv"], tmp_path / "o2")
    assert set(stats["column"]) == {"tempo", "danceability"}
    with pytest.raises(CatalogError):
        run_eda([tmp_path / "missing.csv"], tmp_path / "o3")
    # inf in a CSV counts as missing (it once broke the histograms with a traceback)
    pd.DataFrame({"label": ["a", "a", "a", "b", "b", "b"], "v": ["1", "inf", "2", "5", "-inf", "6"]}).to_csv(
        tmp_path / "inf.csv", index=False)
    stats = run_eda([tmp_path / "inf.csv"], tmp_path / "o4")
    assert stats.set_index("column").loc["v", "missing"] == 2 and (tmp_path / "o4" / "histograms.png").exists()


def test_baseline_grouped_cv(tmp_path):
    rng = np.random.default_rng(0)
    n = 80
    table = pd.DataFrame({"label": ["a"] * n + ["b"] * n, "track_id": [f"t{i // 4}" for i in range(2 * n)],
                          "f1": np.r_[rng.normal(0, 1, n), rng.normal(2.5, 1, n)], "f2": rng.normal(0, 1, 2 * n)})
    table.to_csv(tmp_path / "f.csv", index=False)
    res = run_baseline(tmp_path / "f.csv", split_by="track_id", folds=4, out=tmp_path / "b.json")
    assert res["logistic_regression"]["accuracy_mean"] > 0.8
    assert "grouped by 'track_id'" in res["split"] and (tmp_path / "b.json").exists()
    with pytest.raises(CatalogError):
        run_baseline(tmp_path / "f.csv", split_by="artist")


def test_figures(tmp_path, corpus, corpus_store):
    clip = next((corpus / "techno").glob("*.flac"))
    assert main(["figure", "-q", "clip", str(clip), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["figure", "-q", "grid", str(corpus_store), "--out", str(tmp_path / "g.png"), "--per-genre", "4"]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "g.png").stat().st_size > 1000
    assert describe(clip)["analysed_seconds"] == pytest.approx(30.0, abs=0.1)
