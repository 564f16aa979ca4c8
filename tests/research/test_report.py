"""report: one self-contained page for a run, a cross-validation, an ensemble or an experiment."""

from __future__ import annotations

import json

import pandas as pd

from dancegenre.cli.parser import main
from tests.conftest import check_html


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
    page = check_html(out, min_images=7)
    for section in ("Data", "Training", "Metrics on the test split", "Exploratory analysis of the descriptors"):
        assert section in page.h2
    assert any(h.startswith("Explanation:") for h in page.h2)
    assert sorted(p.name for p in trained_run.iterdir()) == before  # the run is not changed


def test_report_of_an_experiment_and_a_cross_validation(finished, corpus_store, tmp_path):
    out = tmp_path / "exp.html"
    assert main(["report", "-q", str(finished), "--out", str(out)]) == 0
    page = check_html(out, min_images=4)
    assert "Configurations" in page.h2 and any("Best configuration" in h for h in page.h2)
    best = json.loads(pd.read_csv(finished / "summary.csv").query("best").to_json(orient="records"))[0]
    assert best["name"] in out.read_text()

    from dancegenre.config import TrainConfig
    from dancegenre.training.fit import cross_validate

    cross_validate(corpus_store, out=tmp_path / "cv", folds=2, config=TrainConfig(epochs=1, batch_size=32),
                   progress=False, log=lambda *a: None)
    assert main(["report", "-q", str(tmp_path / "cv"), "--out", str(tmp_path / "cv.html")]) == 0
    page = check_html(tmp_path / "cv.html", min_images=3)
    assert "Held-out folds" in page.h2



def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a finished run" in capsys.readouterr().err
