"""Transfer learning on musicnn: prepare with its front end, a head on cached features,
fine-tuning, and the embed and tag commands, end to end through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dancegenre.cli.parser import main
from tests.conftest import check_html


@pytest.fixture(scope="session")
def musicnn_store(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dancegenre.config import FeatureConfig
    from dancegenre.data.store import prepare

    out = tmp_path_factory.mktemp("mn-store") / "store"
    prepare(corpus / "catalog.csv", out, config=FeatureConfig.preset("musicnn"), workers=2, progress=False)
    return out


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_head_on_frozen_musicnn_end_to_end(weights_cache, corpus, musicnn_store, tmp_path, capsys):
    run = tmp_path / "run"
    before = _snapshot(corpus)
    assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(run),
                 "--epochs", "8", "--val-fraction", "0.25", "--test-fraction", "0.25"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["name"] == "musicnn-msd" and results["model"]["head"] == "linear"
    assert results["test"]["item"]["accuracy"] >= 0.75  # synthetic techno vs EDM: easy for musicnn
    cache = list((musicnn_store / "embeddings").glob("musicnn-msd-*.npy"))
    assert len(cache) == 1
    mtime = cache[0].stat().st_mtime_ns
    # a second run reuses the cached features (the backbone does not run again)
    assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(tmp_path / "run2"),
                 "--epochs", "2", "--head", "mlp", "--augment"]) == 0
    assert cache[0].stat().st_mtime_ns == mtime
    # the checkpoint loads without code (weights_only) and predicts from audio files
    import torch

    payload = torch.load(run / "best.pt", weights_only=True)
    assert payload["feature_config"]["scale"] == "logC"
    run_labels = list(payload["labels"])
    out = tmp_path / "verdicts.csv"
    files = sorted((corpus / "techno").glob("*.flac"))[:2]
    assert main(["predict", "-q", str(run), *map(str, files), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["error"].isna().all() and set(table["genre"]) <= {"techno", "edm"}
    # JSON lines and the web API carry the pretrained tags beside the verdict
    jsonl = tmp_path / "verdicts.jsonl"
    assert main(["predict", "-q", str(run), str(files[0]), "--out", str(jsonl)]) == 0
    row = json.loads(jsonl.read_text().splitlines()[0])
    assert len(row["tags"]) == 5 and all(0 <= v <= 1 for v in row["tags"].values())
    from dancegenre.web.app import create_app

    client = create_app(run).test_client()
    with open(files[0], "rb") as fh:
        answer = client.post("/api/predict", data={"file": (fh, "a.flac")}, content_type="multipart/form-data")
    assert answer.status_code == 200 and answer.get_json()["tags"] == row["tags"]
    # most likely first, in the API and the JSON lines (Flask once sorted them by name)
    for tags in (answer.get_json()["tags"], row["tags"]):
        assert list(tags.values()) == sorted(tags.values(), reverse=True)
    assert list(answer.get_json()["probabilities"]) == run_labels
    # predict ran the run's ONNX export (train wrote it): the same verdict and tags as torch
    from dancegenre.inference.classifier import Classifier

    fast, slow = Classifier.load(run), Classifier.load(run, engine="torch")
    assert (fast.engine, fast.tag_names) == ("onnx", slow.tag_names)
    a, b = fast.predict(files[0]), slow.predict(files[0])
    np.testing.assert_allclose(a.timeline[fast.labels].to_numpy(), b.timeline[fast.labels].to_numpy(), atol=1e-5)
    assert a.tags.keys() == b.tags.keys() and np.allclose(list(a.tags.values()), list(b.tags.values()), atol=1e-5)
    # evaluate and explain (saliency and Grad-CAM over musicnn's front end) work as on any run
    assert main(["evaluate", "-q", str(run)]) == 0
    assert main(["explain", "-q", str(run), str(files[0]), "--out", str(tmp_path / "explain")]) == 0
    assert (tmp_path / "explain" / "explain.html").exists()
    # any run is an embedding model too: the input of its last layer (a linear head: 1,756 values)
    assert main(["embed", "-q", str(files[0]), "--model", str(run), "--out", str(tmp_path / "run-emb.npy")]) == 0
    assert np.load(tmp_path / "run-emb.npy").shape == (1, 1756)
    assert _snapshot(corpus) == before  # the user's audio is only read


def test_finetune_trains_last_blocks_on_cached_front_end(weights_cache, musicnn_store, tmp_path):
    from dancegenre.data.store import SegmentStore
    from dancegenre.models.pretrained import load_backbone_state
    from dancegenre.training.checkpoint import load_checkpoint

    run = tmp_path / "ft"
    assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-mtt", "--out", str(run),
                 "--epochs", "1", "--finetune", "2", "--batch-size", "16", "--augment"]) == 0
    ckpt = load_checkpoint(run)
    original = load_backbone_state("musicnn-mtt", log=lambda *_: None)
    state = ckpt.model.backbone.state_dict()
    assert not np.allclose(state["dense.weight"], original["dense.weight"])  # the backend trained
    assert not np.allclose(state["mid.2.conv.weight"], original["mid.2.conv.weight"])  # and mid3
    assert np.array_equal(state["mid.1.conv.weight"], original["mid.1.conv.weight"])  # mid2 stayed frozen
    assert np.array_equal(state["mid.1.bn.running_mean"], original["mid.1.bn.running_mean"])
    assert np.array_equal(state["mid.2.bn.running_var"], original["mid.2.bn.running_var"])  # statistics kept
    # the frozen front end ran once per store: its maps are cached as float16
    cache = list((musicnn_store / "embeddings").glob("musicnn-mtt-frontend-*.npy"))
    assert len(cache) == 1
    maps = np.load(cache[0], mmap_mode="r")
    assert maps.dtype == np.float16 and maps.shape == (len(SegmentStore(musicnn_store)), 561, 187)
    mtime = cache[0].stat().st_mtime_ns
    assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-mtt", "--out", str(tmp_path / "ft2"),
                 "--epochs", "1", "--finetune", "4", "--batch-size", "16", "--backbone-lr", "1e-5",
                 "--label-smoothing", "0.1", "--test-fraction", "0"]) == 0  # the README's recipe: no test side
    assert cache[0].stat().st_mtime_ns == mtime  # mid1 trains too: the same front end, reused
    results = json.loads((tmp_path / "ft2" / "results.json").read_text())
    assert results["train_config"]["backbone_lr"] == 1e-5 and results["model"]["finetune"] == 4
    assert results["train_config"]["label_smoothing"] == 0.1
    assert results["test"] == {} and results["validation"]["item"]["accuracy"] >= 0
    # the checkpoint runs through the whole network, as any run
    assert main(["evaluate", "-q", str(run)]) == 0


def test_mixup_of_the_cached_front_end_is_opt_in(weights_cache, musicnn_store, tmp_path, capsys):
    """With --finetune 1-4, --augment stretches the cached maps but mixes none unless
    --mixup is given: --mixup 0 trains exactly as the default, --mixup 0.4 otherwise; and
    the run records what it used."""
    common = ["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--epochs", "2", "--finetune", "1",
              "--batch-size", "16", "--augment"]

    def losses(name, *extra):
        assert main(common + ["--out", str(tmp_path / name), *extra]) == 0
        return pd.read_csv(tmp_path / name / "metrics.csv")["train_loss"].to_numpy()

    default, off, mixed = losses("default"), losses("off", "--mixup", "0"), losses("mixed", "--mixup", "0.4")
    assert np.allclose(default, off, rtol=1e-5)
    assert not np.allclose(default, mixed, rtol=1e-3)
    recorded = json.loads((tmp_path / "mixed" / "results.json").read_text())["train_config"]
    assert recorded["mixup_alpha"] == 0.4
    for bad, message in [(["--mixup", "0.4"], "--mixup is part of --augment: add --augment"),
                         (["--augment", "--mixup", "-1"], "mixup_alpha must be a finite number >= 0 (0: off)")]:
        args = [a for a in common if a != "--augment"] + ["--out", str(tmp_path / "bad"), *bad]
        assert main(args) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"dancegenre train: error: {message}"]
        assert not (tmp_path / "bad").exists()


def test_train_refuses_another_front_end(weights_cache, corpus_store, tmp_path, capsys):
    assert main(["train", "-q", str(corpus_store), "--model", "musicnn-msd", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--frontend musicnn" in err[0]
    assert not (tmp_path / "r").exists()  # nothing made for a refused run


def test_embed_files_catalog_store_and_resume(weights_cache, corpus, musicnn_store, tmp_path, capsys):
    files = sorted((corpus / "edm").glob("*.flac"))[:2]
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio" * 100)
    out = tmp_path / "emb.npy"
    assert main(["embed", "-q", *map(str, files), str(bad), "--out", str(out)]) == 0
    vectors, table = np.load(out), pd.read_csv(tmp_path / "emb.csv")
    assert vectors.shape == (2, 1756) and len(table) == 2 and np.isfinite(vectors).all()
    failures = pd.read_csv(tmp_path / "emb.failures.csv")
    assert list(failures["path"]) == [str(bad)]
    assert not (tmp_path / "emb.npy.pending").exists()
    # per segment, from the store's own segments (same front end): ten 3-s patches a 30-s clip
    seg = tmp_path / "seg.npy"
    assert main(["embed", "-q", str(musicnn_store), "--out", str(seg), "--per-segment", "--layer", "taggram"]) == 0
    seg_table = pd.read_csv(tmp_path / "seg.csv")
    assert np.load(seg).shape == (len(seg_table), 50) and seg_table["segment"].max() == 9
    # a catalog: its labels travel into the table; the same vectors as from the files
    catalog = tmp_path / "cat.csv"
    pd.DataFrame({"path": [str(f) for f in files], "label": ["edm", "edm"]}).to_csv(catalog, index=False)
    again = tmp_path / "again.npy"
    assert main(["embed", "-q", str(catalog), "--out", str(again)]) == 0
    assert list(pd.read_csv(tmp_path / "again.csv")["label"]) == ["edm", "edm"]
    assert np.allclose(np.load(again), vectors, atol=1e-5)
    # the same network through torch (--engine torch) and onnxruntime (auto, the default)
    plain = tmp_path / "plain.npy"
    assert main(["embed", "-q", *map(str, files), "--out", str(plain), "--engine", "torch"]) == 0
    assert np.abs(np.load(plain) - vectors).max() / np.abs(vectors).max() < 1e-5
    tags = {}
    for engine in ("onnx", "torch"):
        assert main(["tag", "-q", str(files[0]), "--out", str(tmp_path / f"{engine}.csv"), "--engine", engine]) == 0
        tags[engine] = pd.read_csv(tmp_path / f"{engine}.csv")
    assert tags["onnx"]["tag1"].tolist() == tags["torch"]["tag1"].tolist()
    assert np.allclose(tags["onnx"]["p1"], tags["torch"]["p1"], atol=1e-3)


def test_embed_resumes_from_journal(weights_cache, corpus, tmp_path, monkeypatch):
    from dancegenre.inference import embed as embedding

    files = [str(p) for p in sorted((corpus / "techno").glob("*.flac"))[:3]]
    out = tmp_path / "e.npy"
    calls = []
    real = embedding.Embedder.__call__

    def counting(self, segments):
        calls.append(len(segments))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while embedding the second file
        return real(self, segments)

    monkeypatch.setattr(embedding.Embedder, "__call__", counting)
    with pytest.raises(KeyboardInterrupt):
        embedding.embed_files(files, out, progress=False, log=lambda *_: None)
    assert (tmp_path / "e.npy.pending" / "rows.jsonl").exists() and not out.exists()
    calls.clear()
    monkeypatch.setattr(embedding.Embedder, "__call__", real)
    seen = []
    monkeypatch.setattr(embedding.Embedder, "__call__", lambda self, s: (seen.append(1), real(self, s))[1])
    table = embedding.embed_files(files, out, progress=False, log=lambda *_: None)
    assert len(seen) == 2 and len(table) == 3  # the first file came from the journal
    assert not (tmp_path / "e.npy.pending").exists()


def test_embed_and_tag_refuse_hostile_outputs(weights_cache, corpus, trained_run, tmp_path, capsys):
    victim = tmp_path / "keep.npy"
    victim.write_bytes(b"user data")
    audio = sorted((corpus / "edm").glob("*.flac"))[0]
    csv_victim = audio.with_suffix(".csv")
    assert main(["embed", "-q", str(audio), "--out", str(audio)]) == 2
    assert "must end in .npy or .parquet" in capsys.readouterr().err
    for args in (["embed", "-q", str(victim.with_suffix(".npy")), "--out", str(victim)],
                 ["tag", "-q", str(audio), "--out", str(audio)]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error:" in err[0]
    assert victim.read_bytes() == b"user data" and not csv_victim.exists()
    assert main(["embed", "-q", str(audio), "--out", str(tmp_path / "x.npy"), "--model", "nope"]) == 2
    assert "neither a pretrained model" in capsys.readouterr().err
    assert main(["embed", "-q", str(audio), "--out", str(tmp_path / "x.npy"), "--model", str(trained_run),
                 "--engine", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a run's penultimate layer runs with torch" in err[0]
    assert not (tmp_path / "x.npy").exists()


def test_tag_bad_file_and_bad_options_are_one_line(weights_cache, corpus, musicnn_store, tmp_path, capsys):
    audio = sorted((corpus / "techno").glob("*.flac"))[0]
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio" * 100)
    before = bad.read_bytes()
    assert main(["tag", "-q", str(audio), str(bad), "--out", str(tmp_path / "t.csv")]) == 0  # the batch goes on
    table = pd.read_csv(tmp_path / "t.csv", dtype={"error": str}, keep_default_na=False)
    assert table["error"].iloc[0] == "" and "not a readable audio file" in table["error"].iloc[1]
    assert main(["tag", "-q", str(bad)]) == 1 and bad.read_bytes() == before
    for args in (["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(tmp_path / "r"),
                  "--finetune", "9"],
                 ["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(tmp_path / "r"),
                  "--finetune", "2", "--backbone-lr", "0"],
                 ["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(tmp_path / "r"),
                  "--label-smoothing", "1.5"],
                 ["prepare", "-q", str(corpus), str(tmp_path / "s"), "--frontend", "nope"]):
        with pytest.raises(SystemExit) if "nope" in args else _no_raise():
            code = main(args)
            assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_tag_files_and_timeline(weights_cache, corpus, tmp_path, capsys):
    files = sorted((corpus / "techno").glob("*.flac"))[:2]
    timeline = tmp_path / "tags.jsonl"
    out = tmp_path / "tags.csv"
    assert main(["tag", "-q", *map(str, files), "--model", "musicnn-mtt", "--top", "3",
                 "--timeline", str(timeline), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:7]) == ["path", "tag1", "p1", "tag2", "p2", "tag3", "p3"]
    assert (table["p1"] >= table["p2"]).all()
    lines = [json.loads(line) for line in timeline.read_text().splitlines()]
    assert len(lines) == 2 and len(lines[0]["timeline"]) == 10 and len(lines[0]["tags"]) == 50
    printed = capsys.readouterr().out
    assert str(files[0]) in printed


def test_an_interrupted_tag_resumes_and_writes_what_one_run_writes(weights_cache, corpus, tmp_path, capsys,
                                                                   monkeypatch):
    """Ctrl-C at the third file: the rerun runs the network on the other two only and
    writes the bytes of a run never interrupted; the journal is gone after."""
    from dancegenre.inference.embed import Embedder

    files = [str(f) for f in sorted((corpus / "edm").glob("*.flac"))[:4]]
    args = ["tag", "-q", *files, "--model", "musicnn-msd", "--top", "3"]
    assert main([*args, "--out", str(tmp_path / "clean.csv"), "--timeline", str(tmp_path / "clean.jsonl")]) == 0
    outputs = ["--out", str(tmp_path / "t.csv"), "--timeline", str(tmp_path / "t.jsonl")]
    calls = []
    real = Embedder.__call__

    def stop_at_the_third(self, segments):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, segments)

    monkeypatch.setattr(Embedder, "__call__", stop_at_the_third)
    assert main([*args, *outputs]) == 130 and not (tmp_path / "t.csv").exists()
    calls.clear()
    monkeypatch.setattr(Embedder, "__call__", lambda self, segments: calls.append(1) or real(self, segments))
    capsys.readouterr()
    assert main([*args, *outputs]) == 0
    assert "resuming: 2 of 4 files tagged before" in capsys.readouterr().out and len(calls) == 2
    assert (tmp_path / "t.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert (tmp_path / "t.jsonl").read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
    assert not (tmp_path / "t.csv.pending").exists()


def test_folds_ensemble(weights_cache, musicnn_store, tmp_path, capsys):
    from dancegenre.inference.classifier import Classifier
    from dancegenre.training.checkpoint import load_checkpoint

    out = tmp_path / "cv"
    assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(out), "--folds", "2",
                 "--epochs", "3", "--ensemble"]) == 0
    ens = load_checkpoint(out / "ensemble.pt")
    assert ens.model_config.members == 2 and len(ens.model.members) == 2
    folds = [Classifier.load(out / f"fold-{k}") for k in range(2)]
    clf = Classifier.load(out / "ensemble.pt")
    assert clf.engine == "onnx" and (out / "ensemble.onnx").is_file()
    store_audio = sorted(Path(p) for p in __import__("pandas").read_csv(musicnn_store / "items.csv")["path"])[:1]
    r = clf.predict(store_audio[0])
    expected = np.mean([[f.predict(store_audio[0]).probabilities[g] for g in clf.labels] for f in folds], axis=0)
    assert np.allclose([r.probabilities[g] for g in clf.labels], expected, atol=1e-5)
    torch_r = Classifier.load(out / "ensemble.pt", engine="torch").predict(store_audio[0])
    assert np.allclose([torch_r.probabilities[g] for g in clf.labels], expected, atol=1e-5)
    # an ensemble needs folds, and a frozen front end
    assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(tmp_path / "x"),
                 "--ensemble"]) == 2
    assert "--folds" in capsys.readouterr().err
    assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(tmp_path / "x5"),
                 "--folds", "2", "--epochs", "1", "--finetune", "5", "--ensemble"]) == 2
    assert "front end" in capsys.readouterr().err


def test_folds_ensemble_of_fine_tuned_members(weights_cache, musicnn_store, tmp_path):
    """--finetune 2 --ensemble: each member keeps its own mid3 and backend on the shared
    front end; the verdict is the members' mean, in torch and in the ONNX export."""
    import torch

    from dancegenre.inference.classifier import Classifier
    from dancegenre.training.checkpoint import load_checkpoint

    out = tmp_path / "cv"
    assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(out), "--folds", "2",
                 "--epochs", "2", "--finetune", "2", "--ensemble"]) == 0
    ens = load_checkpoint(out / "ensemble.pt")
    folds = [load_checkpoint(out / f"fold-{k}") for k in range(2)]
    assert ens.model_config.members == 2 and ens.model_config.finetune == 2
    for member, fold in zip(ens.model.members, folds):
        assert torch.equal(member[2].mid[2].conv.weight, fold.model.backbone.mid[2].conv.weight)
    assert not torch.equal(folds[0].model.backbone.mid[2].conv.weight, folds[1].model.backbone.mid[2].conv.weight)
    audio = sorted(pd.read_csv(musicnn_store / "items.csv")["path"])[0]
    expected = np.mean([[Classifier(f).predict(audio).probabilities[g] for g in ens.labels] for f in folds], axis=0)
    for engine in ("torch", "onnx"):
        r = Classifier.load(out / "ensemble.pt", engine=engine).predict(audio)
        assert np.allclose([r.probabilities[g] for g in ens.labels], expected, atol=1e-5), engine


def test_ensemble_of_seeds(weights_cache, musicnn_store, tmp_path, capsys):
    """`ensemble` averages two seeds' cross-validations into one model: 4 fold models,
    the verdict their mean (torch and ONNX), and a held-out figure from the seeds'
    out-of-fold verdicts averaged per item.  Overlapping or mismatched sources, and an
    --out that is not ours, are refused in one line."""
    from dancegenre.inference.classifier import Classifier
    from dancegenre.training.checkpoint import load_checkpoint
    from dancegenre.training.runs import averaged_verdicts
    from dancegenre.training.scoring import verdict_metrics

    cvs = [tmp_path / f"cv-s{seed}" for seed in (0, 1)]
    for seed, cv in enumerate(cvs):
        assert main(["train", "-q", str(musicnn_store), "--model", "musicnn-msd", "--out", str(cv), "--folds", "2",
                     "--epochs", "2", "--finetune", "1", "--seed", str(seed)] + ["--ensemble"] * (seed == 0)) == 0
    ens = tmp_path / "ens"
    capsys.readouterr()
    before = {cv: _snapshot(cv) for cv in cvs}  # ensemble only reads its sources
    # the first seed as its ensemble.pt (its members are its folds), the second as its folder
    assert main(["ensemble", str(cvs[0] / "ensemble.pt"), str(cvs[1]), "--out", str(ens)]) == 0
    said = capsys.readouterr().out
    assert "the average of 4 models" in said and "held out" in said and "N=1" in said and "N=2" in said
    ckpt = load_checkpoint(ens)
    assert ckpt.model_config.members == 4 and (ens / "best.onnx").exists()
    folds = [load_checkpoint(cv / f"fold-{k}") for cv in cvs for k in range(2)]
    audio = sorted(pd.read_csv(musicnn_store / "items.csv")["path"])[0]
    expected = np.mean([[Classifier(f).predict(audio).probabilities[g] for g in ckpt.labels] for f in folds], axis=0)
    for engine in ("torch", "onnx"):
        r = Classifier.load(ens, engine=engine).predict(audio)
        assert np.allclose([r.probabilities[g] for g in ckpt.labels], expected, atol=1e-5), engine
    # the held-out figure: each item's out-of-fold probabilities, averaged over the two seeds
    mean = averaged_verdicts([pd.read_csv(cv / "cv-items.csv", keep_default_na=False) for cv in cvs])
    summary = json.loads((ens / "ensemble.json").read_text())
    assert summary["held_out"]["items"] == len(mean) == len(pd.read_csv(musicnn_store / "items.csv"))
    assert summary["held_out"]["item_accuracy"] == pytest.approx(float((mean["label"] == mean["predicted"]).mean()))
    assert len(pd.read_csv(ens / "cv-items.csv")) == len(mean)
    assert ckpt.cv["item_accuracy"] == pytest.approx(summary["held_out"]["item_accuracy"])
    # what a second seed buys: one seed's figure (the mean, min and max of the two), then both
    sizes = pd.read_csv(ens / "ensemble-size.csv")
    singles = [verdict_metrics(pd.read_csv(cv / "cv-items.csv", keep_default_na=False))["accuracy"] for cv in cvs]
    assert sizes["sources"].tolist() == [1, 2] and sizes["choices"].tolist() == [2, 1]
    assert sizes["item_accuracy_mean"][0] == pytest.approx(np.mean(singles), abs=1e-4)
    assert [sizes["item_accuracy_min"][0], sizes["item_accuracy_max"][0]] == pytest.approx(sorted(singles), abs=1e-4)
    assert sizes["item_accuracy_mean"][1] == pytest.approx(summary["held_out"]["item_accuracy"], abs=1e-4)
    assert summary["by_size"][1]["item_macro_f1_mean"] == pytest.approx(summary["held_out"]["item_macro_f1"], abs=1e-4)
    assert main(["evaluate", str(ens)]) == 2 and "no test split of its own" in capsys.readouterr().err
    # --only: the held-out figure among some genres (here all of them: the same figure)
    assert main(["ensemble", str(cvs[0]), str(cvs[1]), "--out", str(tmp_path / "e-only"),
                 "--only", ",".join(reversed(ckpt.labels))]) == 0
    assert "only (" in capsys.readouterr().out
    only = json.loads((tmp_path / "e-only" / "ensemble.json").read_text())["held_out_only"]
    assert only["genres"] == ckpt.labels and only["items"] == summary["held_out"]["items"]
    assert only["item_accuracy"] == pytest.approx(summary["held_out"]["item_accuracy"])
    assert len(pd.read_csv(tmp_path / "e-only" / "cv-items-only.csv")) == only["items"]
    # its report: the members, the held-out verdicts as ensemble.json gives them, the same among --only
    assert main(["report", "-q", str(tmp_path / "e-only"), "--out", str(tmp_path / "ens.html")]) == 0
    page = check_html(tmp_path / "ens.html", min_images=3)  # the store's grid, two confusion matrices
    for section in ("Data", "Ensemble", "Held-out verdicts",
                    f"Held-out verdicts among {len(ckpt.labels)} of the genres", "By the number of sources averaged"):
        assert section in page.h2, section
    text = (tmp_path / "ens.html").read_text()
    held = summary["held_out"]
    assert f"{held['item_accuracy']:.3f}" in text and f"{held['item_macro_f1']:.3f}" in text
    # serve's /model: the same held-out figures, where a run shows its test side
    from dancegenre.web.app import create_app

    client = create_app(ens).test_client()
    shown = client.get("/api/model").get_json()["held_out"]["item"]
    assert shown["accuracy"] == pytest.approx(summary["held_out"]["item_accuracy"])
    model_page = client.get("/model").get_data(as_text=True)
    assert "out-of-fold items" in model_page and "Confusion matrix, held-out items" in model_page
    # a plain run has no out-of-fold verdicts: the model is made, the figure is not claimed
    assert main(["ensemble", str(cvs[1] / "fold-0"), str(cvs[1] / "fold-1"), "--out", str(tmp_path / "e2")]) == 0
    assert "no held-out figure" in capsys.readouterr().out
    assert main(["report", "-q", str(tmp_path / "e2"), "--out", str(tmp_path / "e2.html")]) == 0
    assert "No held-out figure" in (tmp_path / "e2.html").read_text()
    # made again into the first one's folder: its figures, which no longer apply, go with it
    assert main(["ensemble", str(cvs[1] / "fold-0"), str(cvs[1] / "fold-1"), "--out", str(ens)]) == 0
    assert "no held-out figure" in capsys.readouterr().out
    assert not (ens / "cv-items.csv").exists() and not (ens / "ensemble-size.csv").exists()
    assert json.loads((ens / "ensemble.json").read_text())["held_out"] is None
    # refused in one line, nothing written
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 50)
    for args, words in [([str(cvs[0]), str(cvs[0] / "ensemble.pt")], "both hold"),
                        ([str(cvs[1]), str(cvs[1] / "fold-1")], "both hold"),
                        ([str(cvs[1] / "fold-0")], "at least two models"),
                        ([str(cvs[0]), str(musicnn_store)], "not a finished run"),
                        ([str(cvs[0]), str(junk)], "not a loadable dancegenre checkpoint"),
                        ([str(cvs[0]), str(cvs[1]), "--only", f"{ckpt.labels[0]},nope"], "not a genre of this model"),
                        ([str(cvs[0]), str(cvs[1]), "--only", ckpt.labels[0]], "at least two")]:
        target = tmp_path / "refused"
        assert main(["ensemble", *args, "--out", str(target)]) == 2, args
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and not target.exists(), (args, err)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["ensemble", str(cvs[0]), str(cvs[1]), "--out", str(foreign)]) == 2
    assert "did not make" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "mine"
    assert main(["ensemble", str(cvs[0]), str(cvs[1]), "--out", str(cvs[0] / "inside")]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert {cv: _snapshot(cv) for cv in cvs} == before


def test_ensemble_refuses_other_models(weights_cache, musicnn_store, trained_run, tmp_path, capsys):
    """Members must share labels, front end, model and settings: each mismatch is one line."""
    runs = {}
    for name, args in {"msd": ["--model", "musicnn-msd"], "mtt": ["--model", "musicnn-mtt"],
                       "mlp": ["--model", "musicnn-msd", "--head", "mlp"]}.items():
        runs[name] = tmp_path / name
        assert main(["train", "-q", str(musicnn_store), *args, "--out", str(runs[name]), "--epochs", "1"]) == 0
    runs["cnn"] = trained_run
    capsys.readouterr()
    for pair, words in [(("msd", "mtt"), "differs"), (("msd", "mlp"), "head"), (("msd", "cnn"), "front end")]:
        assert main(["ensemble", *(str(runs[p]) for p in pair), "--out", str(tmp_path / "e")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, (pair, err)
    assert not (tmp_path / "e").exists()


def test_embed_parquet(weights_cache, corpus, tmp_path, capsys):
    audio = sorted((corpus / "edm").glob("*.flac"))[0]
    out = tmp_path / "emb.parquet"
    code = main(["embed", "-q", str(audio), "--out", str(out), "--layer", "penultimate"])
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # one clear line, nothing written
        assert code == 2 and "needs pyarrow" in capsys.readouterr().err and not out.exists()
        return
    assert code == 0
    table = pd.read_parquet(out)
    assert list(table.columns[:3]) == ["row", "path", "item"] and table.shape[1] == 5 + 200


@pytest.mark.parametrize("finetune,stage", [(0, "features"), (2, "frontend")])
def test_cached_stage_comes_from_onnxruntime(weights_cache, musicnn_store, tmp_path, monkeypatch, finetune, stage):
    """What training caches (a frozen backbone's features; the front end's maps while the
    later blocks fine-tune) is computed with onnxruntime on the CPU, from an ONNX file of
    that stage in the cache folder: torch's values within float rounding.  ``fit`` hands
    that stage to ``store_features``."""
    from dancegenre.data.store import SegmentStore
    from dancegenre.models.embedding import compute_features, store_features
    from dancegenre.models.registry import build_model, model_config
    from dancegenre.training.backbone import onnx_stage

    store_copy = tmp_path / "store"  # the session's store keeps its own cache
    shutil.copytree(musicnn_store, store_copy, ignore=shutil.ignore_patterns("embeddings"))
    store = SegmentStore(store_copy)
    net = build_model(model_config("musicnn-msd", n_classes=2, n_mels=96, finetune=finetune))
    assert net.cached_stage == stage
    net.eval()
    want = compute_features(net.stage if stage == "frontend" else net.features, store.segments,
                            np.arange(len(store)))

    def no_torch(*_):
        raise AssertionError("the stage ran in torch")

    net.stage = net.features = no_torch
    said: list[str] = []
    assert onnx_stage(net, "cuda") is None  # torch's job on a GPU
    got = np.asarray(store_features(store, net, progress=False, log=said.append,
                                    stage_fn=onnx_stage(net, "cpu", log=said.append)), dtype=np.float32)
    assert not any("runs with torch" in s for s in said)
    suffix = "-frontend-" if stage == "frontend" else "-"
    assert list((weights_cache / "onnx").glob(f"musicnn-msd{suffix}[0-9a-f]*.onnx"))
    assert got.shape == want.shape
    # float16 maps for the front end: a relative rounding of 2**-11
    tolerance = 1e-3 if stage == "frontend" else 1e-5
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()
    if stage == "features":  # train computes its cache the same way
        from dancegenre.training import fit as fitting

        handed = []
        real = fitting.store_features
        monkeypatch.setattr(fitting, "store_features", lambda *a, **k: (handed.append(k.get("stage_fn")),
                                                                         real(*a, **k))[1])
        shutil.rmtree(store_copy / "embeddings")
        assert main(["train", "-q", str(store_copy), "--model", "musicnn-msd", "--out", str(tmp_path / "run"),
                     "--epochs", "1"]) == 0
        assert handed and all(callable(f) for f in handed)
        handed.clear()  # --engine torch: the cache computed by torch
        shutil.rmtree(store_copy / "embeddings")
        assert main(["train", "-q", str(store_copy), "--model", "musicnn-msd", "--out", str(tmp_path / "run-torch"),
                     "--epochs", "1", "--engine", "torch"]) == 0
        assert handed and all(f is None for f in handed)
