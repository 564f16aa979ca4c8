"""Hostile and careless input, class by class (the README's "Safety" section).

For every bad input: the exit code, a message of one line, no traceback (in process an
exception would fail the test; a few cases also run as a fresh process), every input
file unchanged by checksum, and nothing written outside the named outputs.  The hostile
files are made here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from dancegenre.cli.parser import main
from dancegenre.errors import AudioDecodeError, CheckpointError, LabelError, OutputError
from tests.conftest import tone, write

GOOD_SECONDS = 7.0


# ---------------------------------------------------------------- helpers

def snapshot(*roots: Path) -> dict[str, str]:
    """{path: sha256} of every file under ``roots``: what must not change."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def cli(capsys, *args: str) -> tuple[int, str, list[str]]:
    """Run the CLI in this process: (exit code, stdout, stderr lines)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def refused(capsys, tmp_path: Path, *args: str, needle: str, code: int = 2) -> str:
    """The command fails with ``code`` and one line holding ``needle``, and changes no file
    under ``tmp_path``: it writes nothing, anywhere there."""
    before = snapshot(tmp_path)
    got, _, err = cli(capsys, *args)
    assert got == code, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert needle in err[0], err[0]
    assert snapshot(tmp_path) == before
    return err[0]


def nan_wav(path: Path) -> Path:
    y = tone(GOOD_SECONDS, 22050, seed=9)
    y[1000], y[5000], y[9000] = np.nan, np.inf, -np.inf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, 22050, subtype="FLOAT")
    return path


def good_wav(path: Path, seed: int = 0) -> Path:
    return write(path, tone(GOOD_SECONDS, 22050, seed=seed), 22050)


def crafted_checkpoint(trained_run: Path, out: Path, **changes) -> Path:
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    torch.save(payload, out)
    return out


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as browsers do."""
    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def music(tmp_path: Path) -> Path:
    """<label>/<file> with good files and one holding NaN and inf samples."""
    root = tmp_path / "music"
    for k in range(3):
        good_wav(root / "techno" / f"t{k}.wav", seed=k)
        good_wav(root / "edm" / f"e{k}.wav", seed=10 + k)
    nan_wav(root / "edm" / "nan.wav")
    return root


# ---------------------------------------------------------------- 1. non-finite audio

def test_non_finite_audio_is_refused_on_every_path(trained_run, music, tmp_path, capsys):
    from dancegenre.data.store import SegmentStore, prepare
    from dancegenre.inference.classifier import Classifier

    nan = music / "edm" / "nan.wav"
    before = snapshot(music)
    # predict: an error row, never "confidence NaN"
    code, out, _ = cli(capsys, "predict", "-q", trained_run, nan, "--out", tmp_path / "p.csv")
    assert code == 2 and "0 predicted, 1 failed" in out
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["genre"].isna().all() and "NaN or infinite" in table["error"][0]
    # Python API
    clf = Classifier.load(trained_run)
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        clf.predict(nan)
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        clf.predict(sf.read(str(nan))[0], sr=22050)
    # prepare: recorded as a failure; the store holds finite numbers only, and train runs
    summary = prepare(music, tmp_path / "store", workers=2, progress=False)
    assert summary.skipped == 1
    store = SegmentStore(tmp_path / "store")
    assert np.isfinite(np.asarray(store.segments, dtype=np.float32)).all()
    assert "NaN or infinite" in store.failures["reason"][0]
    # features: the batch goes on, the file is listed with its reason
    code, _, err = cli(capsys, "features", "-q", music, "--out", tmp_path / "f.csv", "--workers", "2")
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "f.csv")) == 6
    assert "NaN or infinite" in pd.read_csv(tmp_path / "f.failures.csv")["reason"][0]
    assert snapshot(music) == before


def test_serve_answers_valid_json_for_non_finite_audio(trained_run, music):
    from dancegenre.web.app import create_app

    client = create_app(trained_run).test_client()
    r = client.post("/api/predict", data={"file": (io.BytesIO((music / "edm" / "nan.wav").read_bytes()), "x.wav")},
                    content_type="multipart/form-data")
    assert r.status_code == 422
    assert "NaN or infinite" in strict_json(r.get_data(as_text=True))["error"]
    ok = client.post("/api/predict", data={"file": (io.BytesIO((music / "edm" / "e0.wav").read_bytes()), "e.wav")},
                     content_type="multipart/form-data")
    assert ok.status_code == 200 and strict_json(ok.get_data(as_text=True))["genre"]


def test_serve_json_never_holds_nan(trained_run, tmp_path):
    from dancegenre.web.app import create_app

    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    payload["extra"]["val"] = {"accuracy": float("nan"), "loss": float("inf")}
    torch.save(payload, tmp_path / "nan-metrics.pt")
    body = strict_json(create_app(tmp_path / "nan-metrics.pt").test_client().get("/api/model").get_data(as_text=True))
    assert body["validation"] == {"summary": {"accuracy": None, "loss": None}}  # no results.json beside it


def test_a_model_that_gives_nan_is_an_error_not_a_verdict(trained_run, music, tmp_path, capsys):
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    payload["state_dict"] = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() and "weight" in k else v)
                             for k, v in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "nan.pt")
    code, _, err = cli(capsys, "predict", "-q", tmp_path / "nan.pt", music / "techno" / "t0.wav")
    assert code == 2 and "non-finite probabilities" in err[0] and "none of the 1 file(s)" in err[-1]


# ---------------------------------------------------------------- 2. outputs that land on inputs

def test_predict_outputs_never_replace_inputs(trained_run, music, tmp_path, capsys):
    a = music / "techno" / "t0.wav"
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--timeline", a, needle="--timeline")
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--out", a, needle="must end in .csv or .jsonl")
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--out", tmp_path / "x.csv",
            "--timeline", tmp_path / "x.csv", needle="are the same file")
    link = tmp_path / "link.csv"
    link.symlink_to(a)  # a name that looks like an output, pointing at an input
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--out", link, needle="is one of the inputs")
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--out", tmp_path / "music", needle="must end in")
    (tmp_path / "dir.csv").mkdir()
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--out", tmp_path / "dir.csv", needle="is a folder")


def test_features_out_never_replaces_a_catalog_or_a_user_file(music, tmp_path, capsys):
    catalog = tmp_path / "cat.csv"
    catalog.write_text("path,label\n" + "".join(f"music/techno/t{k}.wav,techno\nmusic/edm/e{k}.wav,edm\n"
                                                for k in range(3)))
    refused(capsys, tmp_path, "features", "-q", catalog, "--out", catalog, needle="is one of the inputs")
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\nnotes,here\n")
    refused(capsys, tmp_path, "features", "-q", catalog, "--out", notes, needle="not a features table")
    refused(capsys, tmp_path, "features", "-q", catalog, "--out", tmp_path / "f.txt", needle="must end in .csv")
    # its own earlier table is resumed, not refused
    assert cli(capsys, "features", "-q", catalog, "--out", tmp_path / "f.csv", "--workers", "1")[0] == 0
    assert cli(capsys, "features", "-q", catalog, "--out", tmp_path / "f.csv", "--workers", "1")[0] == 0
    assert not (tmp_path / "f.csv.pending").exists()


def test_files_beside_an_output_never_replace_a_user_file(trained_run, music, tmp_path, capsys):
    catalog = music / "catalog.csv"
    catalog.write_text("path,label\ntechno/t0.wav,techno\nedm/e0.wav,edm\n")
    # embed --out X.npy writes X.csv beside it: here, the folder's own catalog (it once did)
    refused(capsys, tmp_path, "embed", "-q", music, "--model", trained_run, "--out", music / "catalog.npy",
            needle="the table beside --out")
    notes = tmp_path / "v.failures.csv"
    notes.write_text("my,notes\n")
    refused(capsys, tmp_path, "embed", "-q", music, "--model", trained_run, "--out", tmp_path / "v.npy",
            needle="the failures file")
    refused(capsys, tmp_path, "features", "-q", music, "--out", tmp_path / "v.csv", needle="the failures file")
    notes.unlink()  # its own tables are replaced on a rerun
    for _ in range(2):
        assert cli(capsys, "embed", "-q", music, "--model", trained_run, "--out", tmp_path / "v.npy")[0] == 0


def test_export_beside_a_checkpoint_never_replaces_a_user_onnx(trained_run, tmp_path, capsys):
    model = tmp_path / "model.pt"
    shutil.copy(trained_run / "best.pt", model)
    (tmp_path / "model.onnx").write_bytes(b"my own network")  # where export writes by default
    refused(capsys, tmp_path, "export", "-q", model, needle="exists and was not written by dancegenre")
    from dancegenre.training.export import export_onnx

    with pytest.raises(OutputError, match="not written by dancegenre"):  # nor where the Python API is told to
        export_onnx(model, tmp_path / "model.onnx")
    (tmp_path / "model.onnx").unlink()
    for _ in range(2):  # its own export is replaced on a rerun
        assert cli(capsys, "export", "-q", model)[0] == 0


def test_store_folder_is_new_empty_or_ours(music, tmp_path, capsys):
    from dancegenre.data.store import prepare

    catalog = music / "catalog.csv"
    catalog.write_text("path,label\n" + "".join(f"techno/t{k}.wav,techno\nedm/e{k}.wav,edm\n" for k in range(3)))
    # the corpus folder itself
    refused(capsys, tmp_path, "prepare", "-q", catalog, music, needle="did not make")
    # a folder with the user's files, including a pending/ folder and an index.csv
    user = tmp_path / "mine"
    (user / "pending").mkdir(parents=True)
    (user / "pending" / "draft.txt").write_text("my draft")
    (user / "index.csv").write_text("a,b\n1,2\n")
    refused(capsys, tmp_path, "prepare", "-q", catalog, user, needle="did not make")
    # a store inside the folder it reads: read as a genre on the next run
    refused(capsys, tmp_path, "prepare", "-q", music, music / "store", needle="inside the input")
    # a file where the folder should be, and under a file
    refused(capsys, tmp_path, "prepare", "-q", catalog, catalog, needle="is a file")
    refused(capsys, tmp_path, "prepare", "-q", catalog, catalog / "sub", needle="is a file, not a folder")
    # Python API: the same refusal
    with pytest.raises(OutputError):
        prepare(catalog, user, progress=False)
    # a store of ours is reused; a store is not a run
    assert cli(capsys, "prepare", "-q", catalog, tmp_path / "s")[0] == 0
    code, out, _ = cli(capsys, "prepare", "-q", catalog, tmp_path / "s")
    assert code == 0 and "6 reused" in out
    refused(capsys, tmp_path, "train", "-q", tmp_path / "s", "--out", tmp_path / "s", "--epochs", "1",
            needle="holds a dancegenre store, not a run")


def test_other_output_folders_refuse_user_files(trained_run, corpus_store, music, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.txt").write_text("do not lose me")
    refused(capsys, tmp_path, "train", "-q", corpus_store, "--out", user, "--epochs", "1", needle="did not make")
    refused(capsys, tmp_path, "evaluate", "-q", trained_run, "--out", user, needle="did not make")
    table = tmp_path / "t.csv"
    table.write_text("label,x\na,1\na,2\nb,3\nb,4\n")
    refused(capsys, tmp_path, "eda", "-q", table, "--out", user, needle="did not make")
    refused(capsys, tmp_path, "synth", "-q", user, "--per-genre", "1", needle="did not make")
    refused(capsys, tmp_path, "explain", "-q", trained_run, music / "techno" / "t0.wav", "--out", user,
            needle="did not make")
    refused(capsys, tmp_path, "report", "-q", trained_run, "--out", trained_run / "results.json",
            needle="must end in .html")


# ---------------------------------------------------------------- 3. labels are data

@pytest.mark.parametrize("label", ["../x", "/abs/dir", "a/b", "..", "<script>alert(1)</script>", "x\ny",
                                   "_unsure", "CON", " techno"])
def test_catalog_labels_that_are_paths_or_markup_are_refused(music, tmp_path, capsys, label):
    catalog = tmp_path / "cat.csv"
    pd.DataFrame({"path": [str(music / "techno" / "t0.wav"), str(music / "edm" / "e0.wav")],
                  "label": [label, "edm"]}).to_csv(catalog, index=False)
    refused(capsys, tmp_path, "prepare", "-q", catalog, tmp_path / "s", needle="label")


def test_label_folders_with_markup_are_refused(tmp_path, capsys):
    good_wav(tmp_path / "in" / "<b>bold" / "a.wav")
    good_wav(tmp_path / "in" / "edm" / "b.wav")
    refused(capsys, tmp_path, "prepare", "-q", tmp_path / "in", tmp_path / "s", needle="may not hold")


def test_crafted_checkpoint_labels_never_become_paths(trained_run, music, tmp_path, capsys):
    from dancegenre.inference.classifier import Prediction
    from dancegenre.inference.sort import sort_into
    from dancegenre.web.app import create_app

    for labels in (["../../evil", "edm"], ["/abs/dir", "edm"], ["<img src=x onerror=alert(1)>", "edm"]):
        bad = crafted_checkpoint(trained_run, tmp_path / "bad.pt", labels=labels)
        refused(capsys, tmp_path, "predict", "-q", bad, music / "techno" / "t0.wav", "--sort-into",
                tmp_path / "sorted", needle="label")
        with pytest.raises(CheckpointError, match="label"):
            create_app(bad)
        bad.unlink()
    # the Python API with a made-up verdict: refused, nothing written
    before = snapshot(tmp_path)
    fake = Prediction(str(music / "techno" / "t0.wav"), "../../escape", {"../../escape": 1.0}, pd.DataFrame())
    with pytest.raises(LabelError):
        sort_into([fake], tmp_path / "sorted")
    assert snapshot(tmp_path) == before and not (tmp_path.parent / "escape").exists()


def test_checkpoints_that_do_not_fit_are_one_line(trained_run, music, tmp_path, capsys):
    a = music / "techno" / "t0.wav"
    three = crafted_checkpoint(trained_run, tmp_path / "three.pt", labels=["edm", "techno", "house"])
    refused(capsys, tmp_path, "predict", "-q", three, a, needle="for a head of 2 classes")
    nofeat = crafted_checkpoint(trained_run, tmp_path / "nofeat.pt", feature_config=None)
    refused(capsys, tmp_path, "predict", "-q", nofeat, a, needle="lacks feature_config")
    badfeat = crafted_checkpoint(trained_run, tmp_path / "badfeat.pt", feature_config={"n_mels": -3})
    refused(capsys, tmp_path, "predict", "-q", badfeat, a, needle="does not rebuild")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint" * 10)
    refused(capsys, tmp_path, "predict", "-q", junk, a, needle="checkpoint (not a PyTorch file: it holds text)")
    (tmp_path / "empty.pt").touch()
    refused(capsys, tmp_path, "predict", "-q", tmp_path / "empty.pt", a, needle="(the file is empty)")
    whole = (trained_run / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    # the reason whole, not torch's message cut off mid-sentence
    text = refused(capsys, tmp_path, "predict", "-q", tmp_path / "cut.pt", a, needle="(the file is cut short or damaged)")
    assert "miniz" not in text


def test_an_argument_of_the_wrong_kind_says_what_to_give(trained_run, corpus_store, music, tmp_path, capsys):
    a, b = music / "techno" / "t0.wav", music / "techno" / "t1.wav"
    refused(capsys, tmp_path, "predict", "-q", a, b, needle="is an audio file, not a model: give the run folder")
    refused(capsys, tmp_path, "evaluate", "-q", corpus_store, needle="is a prepared store, not a model")
    refused(capsys, tmp_path, "embed", "-q", a, "--model", "", "--out", tmp_path / "e.npy",
            needle="--model: '' is neither a pretrained model")
    refused(capsys, tmp_path, "predict", "-q", tmp_path, a, needle="give a run folder that train wrote, or a .pt")
    # the run's ONNX export where a command needs the checkpoint: said as such, not "not loadable"
    onnx = Path(trained_run) / "best.onnx"
    assert onnx.is_file()
    for args in (("explain", "-q", onnx, a, "--out", tmp_path / "x"), ("evaluate", "-q", onnx, corpus_store),
                 ("ensemble", "-q", onnx, onnx, "--out", tmp_path / "e"),
                 ("embed", "-q", a, "--model", onnx, "--out", tmp_path / "e.npy")):
        refused(capsys, tmp_path, *args, needle=f"{onnx} is an ONNX export: it holds the network for predict, not "
                "the checkpoint (training record, weights for torch) this needs; give the run folder (or its best.pt)")
    from dancegenre.web.app import create_app

    with pytest.raises(CheckpointError, match="is an ONNX export: .* give the run folder"):
        create_app(onnx)  # serve's page shows the training record
    # a folder where a table goes
    for args in (("eda", "-q", corpus_store, "--out", tmp_path / "eda"), ("baseline", "-q", corpus_store)):
        refused(capsys, tmp_path, *args, needle=f"{corpus_store} is a folder, not a table: give a CSV")


def test_every_page_escapes_what_it_shows(trained_run, tmp_path):
    """Values that reach HTML (file names, run and column names, crafted checkpoint
    fields) come out escaped on every page."""
    from dancegenre.present.html import fragment, page
    from dancegenre.research.eda import run_eda
    from dancegenre.research.explanation import explain_to
    from dancegenre.research.report import build_report
    from dancegenre.web.app import create_app

    evil = "<script>alert(1)</script>"
    assert evil not in page(evil, [(evil, evil), ("x", fragment("<p>{{ v }}</p>", v=evil))])
    # serve /model: a crafted split column
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    payload["split"]["column"] = evil
    torch.save(payload, tmp_path / "xss.pt")
    html_text = create_app(tmp_path / "xss.pt").test_client().get("/model").get_data(as_text=True)
    assert evil not in html_text and "alert(1)" in html_text
    # eda: a genre and a column holding markup
    table = tmp_path / "t.csv"
    pd.DataFrame({"label": [evil, evil, "edm", "edm"], evil.replace("1", "2"): [1, 2, 3, 4]}).to_csv(table, index=False)
    run_eda([table], tmp_path / "eda")
    assert "<script>" not in (tmp_path / "eda" / "index.html").read_text()
    # explain: a file name holding markup
    name = tmp_path / "in" / "<img src=x onerror=alert(3)>.wav"
    good_wav(name)
    html_path = explain_to(trained_run, tmp_path / "expl", audio=[name], max_seconds=7, log=lambda *a: None)
    assert "<img src=x" not in html_path.read_text()
    # report: a run folder whose name holds markup
    run = tmp_path / "<b>run"
    shutil.copytree(trained_run, run)
    report = build_report(run, tmp_path / "r.html", log=lambda *a: None)
    assert "<b>run" not in report.read_text()


# ---------------------------------------------------------------- 4. one line where a traceback was

def test_sort_into_a_file_or_under_one(trained_run, music, tmp_path, capsys):
    a = music / "techno" / "t0.wav"
    target = tmp_path / "exists.txt"
    target.write_text("a file")
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--sort-into", target, needle="is a file")
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--sort-into", target / "x", needle="is a file")
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--out", target / "x.csv", needle="is a file")


def test_move_that_cannot_remove_the_source_leaves_no_copy(trained_run, music, tmp_path, capsys, monkeypatch):
    import dancegenre.inference.sort as predict_module

    def no_remove(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(predict_module.os, "remove", no_remove)
    before = snapshot(music)
    for _ in range(2):  # a rerun adds no second copy
        code, out, err = cli(capsys, "predict", trained_run, music / "techno", "--sort-into", tmp_path / "sorted",
                             "--move", "--workers", "1")
        assert code == 0 and not any("Traceback" in line or "error" in line for line in err)
        assert "move 0 file(s)" in out and "Permission denied; the source was kept" in out
    assert snapshot(music) == before
    assert not [p for p in (tmp_path / "sorted").rglob("*") if p.is_file()]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_move_from_a_read_only_folder(trained_run, music, tmp_path, capsys):
    folder = music / "techno"
    folder.chmod(0o555)
    try:
        code, out, _ = cli(capsys, "predict", trained_run, folder, "--sort-into", tmp_path / "sorted", "--move")
        assert code == 0 and "read-only" in out and "move 0 file(s)" in out
    finally:
        folder.chmod(0o755)
    assert not (tmp_path / "sorted").exists() or not any((tmp_path / "sorted").rglob("*.wav"))


def test_the_same_file_twice_is_moved_once(trained_run, music, tmp_path, capsys):
    code, out, err = cli(capsys, "predict", "-q", trained_run, music / "techno", music / "techno" / "t0.wav",
                         "--sort-into", tmp_path / "sorted", "--move")
    assert code == 0 and not err and "move 3 file(s)" in out
    assert len(list((tmp_path / "sorted").rglob("*.wav"))) == 3 and not list((music / "techno").glob("*.wav"))


def test_catalog_rows_with_extra_fields_and_paths_with_two_labels(music, tmp_path, capsys):
    bad = tmp_path / "extra.csv"
    bad.write_text(f"path,label\n{music}/techno/t0.wav,techno\n{music}/edm/e0.wav,edm,Artist, with comma\n")
    refused(capsys, tmp_path, "prepare", "-q", bad, tmp_path / "s", needle="line 3 has 4 fields where its header has 2")
    twice = tmp_path / "twice.csv"
    twice.write_text(f"path,label\n{music}/techno/t0.wav,techno\n{music}/edm/e0.wav,edm\n"
                     f"{music}/techno/../techno/t0.wav,edm\n")
    refused(capsys, tmp_path, "prepare", "-q", twice, tmp_path / "s", needle="under 2 labels (edm, techno)")


# ---------------------------------------------------------------- 5. resources

def test_absurd_sample_rates_and_channel_counts(trained_run, tmp_path, capsys):
    from dancegenre.audio.decode import MAX_BLOCK_SAMPLES, block_frames, stream_array

    one_hz = tmp_path / "in" / "1hz.wav"
    one_hz.parent.mkdir()
    sf.write(str(one_hz), np.full(40, 0.1, np.float32), 1)
    code, _, err = cli(capsys, "predict", "-q", trained_run, one_hz)
    assert code == 2 and "4,000-768,000 Hz" in err[0]
    with pytest.raises(AudioDecodeError, match="outside"):
        next(stream_array(np.zeros(100, np.float32), sr_in=1, sr=22050))
    # blocks are bounded in samples, before and after resampling, whatever the header says
    assert block_frames(4000, 22050, 1, 30.0) * 22050 / 4000 <= MAX_BLOCK_SAMPLES * 1.01
    assert block_frames(48000, 22050, 4096, 30.0) * 4096 <= MAX_BLOCK_SAMPLES
    many = tmp_path / "in" / "many.wav"
    sf.write(str(many), np.tile(tone(4.0, 8000)[:, None], (1, 64)) / 2, 8000, subtype="FLOAT")
    code, out, _ = cli(capsys, "predict", "-q", trained_run, many)
    assert code == 0, out


@contextmanager
def _serve(trained_run, **options):
    from dancegenre.web.app import create_app, host_names, make_server, serving

    app = create_app(trained_run, allowed_hosts=host_names("127.0.0.1"), allow_origins=options.pop("origins", ()))
    srv = make_server(app, host="127.0.0.1", port=0, request_timeout=2, **options)
    with serving(srv):
        yield srv.effective_port


def test_a_body_shorter_than_its_length_is_timed_out(trained_run):
    with _serve(trained_run) as port, socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                  b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n")
        t0 = time.monotonic()
        data = s.recv(1000)  # the server closes the silent connection
        waited = time.monotonic() - t0
    assert data == b"" and waited < 10


def test_host_names_and_origins(trained_run):
    import requests

    wav = io.BytesIO()
    sf.write(wav, tone(GOOD_SECONDS, 22050), 22050, format="WAV")
    with _serve(trained_run, origins=("https://ok.example",)) as port:
        url = f"http://127.0.0.1:{port}"
        assert requests.get(url, timeout=10).status_code == 200
        assert requests.get(f"http://localhost:{port}/", timeout=10).status_code == 200
        rebound = requests.get(url, headers={"Host": f"evil.example:{port}"}, timeout=10)
        assert rebound.status_code == 421 and "host name" in strict_json(rebound.text)["error"]
        files = {"file": ("a.wav", wav.getvalue())}
        cross = requests.post(f"{url}/api/predict", files=files, headers={"Origin": "https://evil.example"}, timeout=30)
        assert cross.status_code == 403 and "--allow-origin" in cross.json()["error"]
        same = requests.post(f"{url}/api/predict", files=files, headers={"Origin": url}, timeout=30)
        assert same.status_code == 200
        allowed = requests.post(f"{url}/api/predict", files=files, headers={"Origin": "https://ok.example"}, timeout=30)
        assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == "https://ok.example"
        assert requests.get(url, timeout=10).headers["Server"] == "dancegenre"  # not the server's name and version


def test_serve_refuses_an_address_or_origin_it_cannot_use(trained_run, tmp_path, capsys):
    from dancegenre.errors import ConfigError
    from dancegenre.web.app import create_app, make_server

    refused(capsys, tmp_path, "serve", "-q", trained_run, "--host", "", "--port", "0",
            needle="cannot listen on '': not an address or a name of this machine")
    for origin in ("https://ok.example/page", "ok.example", "null", "javascript:alert(1)", ""):
        # none of these is ever a browser's Origin: it would allow nothing, silently
        refused(capsys, tmp_path, "serve", "-q", trained_run, "--allow-origin", origin, "--port", "0",
                needle=f"--allow-origin {origin!r} is not an origin: give scheme://host[:port]")
    with pytest.raises(ConfigError, match="cannot listen on"):
        make_server(create_app(trained_run), host="", port=0)


# ---------------------------------------------------------------- 6. numbers that are no use

@pytest.mark.parametrize("args, needle", [
    (["--lr", "nan"], "lr and backbone_lr must be positive and weight_decay non-negative (finite numbers)"),
    (["--lr", "inf"], "lr and backbone_lr must be positive"),
    (["--backbone-lr", "inf"], "lr and backbone_lr must be positive"),
    (["--weight-decay", "nan"], "lr and backbone_lr must be positive"),
    (["--augment", "--mixup", "nan"], "mixup_alpha must be a finite number >= 0"),
    (["--dense", "9" * 23], "filters, dense and rnn_hidden between 1 and 4096 each"),  # a memory bomb
    (["--filters", "64,100000,128"], "filters, dense and rnn_hidden between 1 and 4096 each"),
    (["--kernel-size", "9" * 23], "kernel_size and first_stride must be between 1 and 1024"),
    (["--pool-sizes", "64,64,64"], "the network does not fit the store's segments (128 bands x 128 frames)"),
])
def test_training_numbers_out_of_range_are_one_line(corpus_store, tmp_path, capsys, args, needle):
    refused(capsys, tmp_path, "train", "-q", corpus_store, "--out", tmp_path / "run", "--epochs", "1", *args,
            needle=needle)


@pytest.mark.parametrize("args, needle", [
    (["--sample-rate", "99999999"], "sample_rate must be between 4000 and 192000 Hz"),
    (["--n-fft", "99999998"], "n_fft must be even, between 64 and 65536"),  # once a 24 GB filter bank
    (["--segment-frames", "99999999"], "segment_frames must be between 8 and 65536"),
    (["--n-mels", "1000"], "141 of the 1000 mel bands would hold no FFT bin (n_fft 2048 at 22050 Hz"),
])
def test_front_ends_out_of_range_are_one_line(music, tmp_path, capsys, args, needle):
    refused(capsys, tmp_path, "prepare", "-q", music, tmp_path / "store", *args, needle=needle)


@pytest.mark.parametrize("args, needle", [
    (["train", "STORE", "--out", "OUT", "--seed", "-1"], "argument --seed: must be between 0 and 4294967295"),
    (["synth", "OUT", "--seed", "9" * 23], "argument --seed: must be between 0 and 4294967295"),
    (["demo", "OUT", "--seed", "-1"], "argument --seed: must be between 0 and 4294967295"),
    (["baseline", "STORE", "--seed", "-1"], "argument --seed: must be between 0 and 4294967295"),
    (["serve", "RUN", "--port", "70000"], "argument --port: must be between 0 and 65535"),
    (["serve", "RUN", "--max-upload-mb", "nan"], "argument --max-upload-mb: must be between 0.01 and 1e+06"),
    (["serve", "RUN", "--max-upload-mb", "-1"], "argument --max-upload-mb: must be between 0.01 and 1e+06"),
    (["explain", "RUN", "RUN", "--out", "OUT", "--max-seconds", "inf"], "argument --max-seconds: must be between 1"),
    (["collect", "deezer", "1", "--label", "x", "--out", "OUT", "--port", "0"],
     "argument --port: must be between 1 and 65535"),
    (["predict", "RUN", "RUN", "--workers", "99999"], "argument --workers: give 1 to"),  # not a fork bomb
    (["prepare", "STORE", "OUT", "--workers", "99999"], "argument --workers: give 1 to"),
    (["collect", "deezer", "1", "--label", "x", "--out", "OUT", "--workers", "99999"],
     "argument --workers: must be between 1 and 32"),
])
def test_numbers_out_of_range_are_refused_by_the_parser(trained_run, corpus_store, tmp_path, capsys, args, needle):
    names = {"RUN": str(trained_run), "STORE": str(corpus_store), "OUT": str(tmp_path / "out")}
    with pytest.raises(SystemExit) as info:
        main([names.get(a, a) for a in args])
    assert info.value.code == 2 and needle in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args", [
    ["predict", "RUN", ""], ["predict", "RUN", "AUDIO", "--sort-into", "", "--move"], ["prepare", "", "OUT"],
    ["prepare", "MUSIC", ""], ["embed", "", "--model", "RUN", "--out", "OUT.npy"], ["features", "MUSIC", "--out", ""],
    ["explain", "RUN", "", "--out", "OUT"], ["demo", ""],
])
def test_an_empty_path_is_never_the_current_folder(trained_run, music, tmp_path, capsys, monkeypatch, args):
    """"" (an unset shell variable) once meant the current folder: predicted, sorted, prepared."""
    here = tmp_path / "here"
    good_wav(here / "techno" / "mine.wav")
    monkeypatch.chdir(here)
    before = snapshot(tmp_path)
    names = {"RUN": str(trained_run), "AUDIO": str(music / "techno" / "t0.wav"), "MUSIC": str(music),
             "OUT": str(tmp_path / "out"), "OUT.npy": str(tmp_path / "out.npy")}
    try:
        code = main([names.get(a, a) for a in args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "an empty path was given" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_more_runners_up_than_genres_are_the_genres(trained_run, music, tmp_path, capsys):
    code, _, err = cli(capsys, "predict", "-q", trained_run, music / "techno" / "t0.wav", "--top-k", "9" * 23,
                       "--out", tmp_path / "p.csv")  # once a loop of 10**23 columns
    table = pd.read_csv(tmp_path / "p.csv")
    assert code == 0 and not err and "genre_2" in table and "genre_3" not in table


# ---------------------------------------------------------------- 7. smaller points

def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = textwrap.dedent("""
        import os, sys, time
        from dancegenre.data.scheduler import ProcessScheduler
        pool = ProcessScheduler(2)
        pids = [pool.submit(os.getpid).result() for _ in range(6)]
        print(" ".join(map(str, sorted(set(pids)))), flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if _alive(p)]
    assert not alive, f"orphaned workers: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_workers_one_and_two_give_identical_stores(music, tmp_path):
    from dancegenre.data.store import prepare

    (music / "edm" / "nan.wav").unlink()
    prepare(music, tmp_path / "one", workers=1, progress=False)
    prepare(music, tmp_path / "two", workers=2, progress=False, shard_items=1)
    assert (tmp_path / "one" / "segments.npy").read_bytes() == (tmp_path / "two" / "segments.npy").read_bytes()


def test_mpg123_notes_stay_off_stderr(trained_run, tmp_path, capfd):
    good = write(tmp_path / "g.mp3", tone(GOOD_SECONDS, 44100), 44100, "MP3")
    data = bytearray(good.read_bytes())
    for i in range(2000, len(data), 997):
        data[i] ^= 0xFF
    (tmp_path / "corrupt.mp3").write_bytes(bytes(data))
    code = main(["predict", "-q", str(trained_run), str(tmp_path / "corrupt.mp3")])
    err = capfd.readouterr().err
    assert code in (0, 2) and "mpg123" not in err and "Note:" not in err and "dequantization" not in err


def test_a_sort_target_inside_the_input_is_not_sorted_again(trained_run, music, capsys):
    (music / "edm" / "nan.wav").unlink()
    for _ in range(2):
        code, out, _ = cli(capsys, "predict", "-q", trained_run, music, "--sort-into", music / "sorted")
        assert code == 0 and "copy 6 file(s)" in out
    assert len(list((music / "sorted").rglob("*.wav"))) == 12  # 6 copies per run, never copies of copies


def test_errors_are_one_line_in_a_fresh_process(trained_run, tmp_path):
    """The same guarantees when run as a user runs it: exit code 2, one line, no traceback."""
    a = good_wav(tmp_path / "a.wav")
    target = tmp_path / "f.txt"
    target.write_text("x")
    for args in (["predict", str(trained_run), str(a), "--timeline", str(a)],
                 ["predict", str(trained_run), str(a), "--sort-into", str(target)],
                 ["prepare", str(tmp_path), str(tmp_path)]):
        before = snapshot(tmp_path)
        r = subprocess.run([sys.executable, "-m", "dancegenre", *args], capture_output=True, text=True, timeout=120)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- the DJ library options (issue 17)

def test_tag_journal_and_playlists_refuse_other_peoples_files(trained_run, music, tmp_path, capsys):
    (music / "edm" / "nan.wav").unlink()
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\nnotes,here\n")
    refused(capsys, tmp_path, "predict", "-q", trained_run, music, "--write-tags", "--tag-journal", notes,
            needle="is not a dancegenre tag journal")
    refused(capsys, tmp_path, "predict", "-q", trained_run, music, "--write-tags", "--tag-journal",
            music / "techno" / "t0.wav", needle="must end in .csv")
    refused(capsys, tmp_path, "predict", "-q", trained_run, music, "--playlists", notes, needle="is a file")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "set.m3u8").write_text("#EXTM3U\nmy/own.mp3\n")
    refused(capsys, tmp_path, "predict", "-q", trained_run, music, "--playlists", mine, needle="did not make")
    refused(capsys, tmp_path, "predict", "-q", trained_run, music, "--playlists", tmp_path / "new",
            "--sort-into", tmp_path / "sorted", "--move", needle="with --move")
    refused(capsys, tmp_path, "untag", notes, needle="not a dancegenre tag journal")
    bad = crafted_checkpoint(trained_run, tmp_path / "bad.pt", labels=["../x", "edm"])
    refused(capsys, tmp_path, "predict", "-q", bad, music, "--playlists", tmp_path / "lists", needle="label")
    bad.unlink()


def test_figure_outputs_and_store_option(trained_run, music, tmp_path, capsys):
    a = music / "techno" / "t0.wav"
    refused(capsys, tmp_path, "figure", "clip", a, "--out", a, needle="must end in .png")
    refused(capsys, tmp_path, "figure", "clip", a, "--out", music / "techno" / "t0.wav" / "x.png",
            needle="is a file, not a folder")
    refused(capsys, tmp_path, "figure", "clip", a, "--store", music, "--out", tmp_path / "c.png",
            needle="not a prepared store")
    refused(capsys, tmp_path, "figure", "clip", music / "edm" / "nan.wav", "--out", tmp_path / "n.png",
            needle="NaN or infinite")


def test_only_names_genres_of_the_model(trained_run, music, tmp_path, capsys):
    """predict --only and serve --only: a genre the model lacks, one genre, an empty list,
    a path or markup as a genre: one line, nothing written, no server started."""
    a = music / "techno" / "t0.wav"
    out = tmp_path / "p.csv"
    for only, needle in [("techno,house", "not a genre of this model: house"),
                         ("techno", "at least two"), ("techno,techno", "at least two"), (",", "at least two"),
                         ("techno,../../etc", "not a genre of this model"),
                         ("techno,<b>edm</b>", "not a genre of this model")]:
        refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--only", only, "--out", out, needle=needle)
        # serve: refused before it listens
        refused(capsys, tmp_path, "serve", trained_run, "--port", "0", "--only", only, needle=needle)
    # both of a 2-genre model's genres: the verdicts it gives without --only
    code, _, _ = cli(capsys, "predict", "-q", trained_run, a, "--only", " techno , edm ", "--out", out)
    assert code == 0
    plain = tmp_path / "plain.csv"
    assert cli(capsys, "predict", "-q", trained_run, a, "--out", plain)[0] == 0
    assert pd.read_csv(out).equals(pd.read_csv(plain))


# ---------------------------------------------------------------- 8. the Python API

def test_a_single_path_where_a_list_is_expected_is_one_path(trained_run, music, monkeypatch):
    """A str where a list of paths goes once had its characters taken for paths: "/"
    then meant the whole file system, searched from the root."""
    from dancegenre.inference.classifier import Classifier, expand_paths
    from dancegenre.inference.embed import list_sources

    searched = []
    real_walk = os.walk
    monkeypatch.setattr(os, "walk", lambda top, **kw: searched.append(os.fspath(top)) or real_walk(top, **kw))
    folder = str(music / "techno")
    assert expand_paths(folder) == expand_paths([folder]) == sorted((music / "techno").glob("*.wav"))
    assert list(list_sources(folder)["path"]) == [str(p) for p in sorted((music / "techno").glob("*.wav"))]
    one = str(music / "techno" / "t0.wav")
    [p] = Classifier.load(trained_run).predict_many(one)
    assert p.source == one and p.error is None
    assert "/" not in searched and set(searched) == {folder}


@pytest.mark.parametrize("call, needle", [
    (lambda c, w: c.predict(w), "needs its sample rate"),
    (lambda c, w: c.predict((w * 32767).astype(np.int16), sr=22050), "not int16 (divide integer PCM"),
    (lambda c, w: c.predict(w.astype(np.complex64), sr=22050), "not complex64"),
    (lambda c, w: c.predict(np.array(["a", "b"]), sr=22050), "floating-point samples"),
    (lambda c, w: c.predict(list(w), sr=22050), "a file path or a numpy waveform, not list"),
    (lambda c, w: c.predict(""), "an empty path was given"),
    (lambda c, w: list(c.predict_many([b"a.wav"])), "is not a path"),
    (lambda c, w: list(c.predict_many(None)), "give a path or a list of paths"),
    (lambda c, w: list(c.predict_many(["a.wav"], workers=-1)), "--workers -1"),
    (lambda c, w: type(c).load(c.path, batch_size=0), "batch_size must be a whole number >= 1"),
])
def test_python_callers_get_the_errors_users_get(trained_run, call, needle):
    """The API raises a DanceGenreError with one clear line for what the CLI could never
    pass: a waveform without its rate, integer or complex samples, a list for a path,
    bytes or None for paths, a batch of no segments.  Integer PCM once ran at 32,768
    times full scale, complex samples lost their imaginary part with a warning."""
    from dancegenre.errors import DanceGenreError
    from dancegenre.inference.classifier import Classifier

    wave = tone(GOOD_SECONDS, 22050, seed=1).astype(np.float32)
    with pytest.raises(DanceGenreError) as info:
        call(Classifier.load(trained_run), wave)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_describe_and_stores_take_the_same_sources(tmp_path):
    from dancegenre.data.store import SegmentStore
    from dancegenre.errors import ConfigError, StoreError
    from dancegenre.research.descriptors import describe

    with pytest.raises(ConfigError, match="needs its sample rate"):
        describe(np.zeros(22050, np.float32))
    with pytest.raises(ConfigError, match="not list"):
        describe([0.0] * 10)
    with pytest.raises(StoreError, match="an empty path was given"):
        SegmentStore("")


def test_what_cannot_be_read_is_a_row_of_its_own(trained_run, tmp_path, capsys, monkeypatch):
    """A file that cannot be looked at (a link into a folder we may not enter) once ended
    the whole batch with "Permission denied"; a subfolder that cannot be listed vanished
    from the search without a word.  Both are now failure rows, and the rest is predicted."""
    music = tmp_path / "music"
    good_wav(music / "a.wav")
    good_wav(music / "locked" / "b.wav", seed=1)
    hidden = music / "link.wav"
    hidden.symlink_to(good_wav(tmp_path / "elsewhere" / "c.wav", seed=2))
    real_stat, real_scandir = os.stat, os.scandir

    def stat(path, *args, **kwargs):
        if os.fspath(path) == str(hidden):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    def scandir(path="."):
        if os.fspath(path) == str(music / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "p.csv"
    code, _, err = cli(capsys, "predict", "-q", trained_run, music, "--workers", "1", "--out", out)
    table = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert code == 0 and table.loc[str(music / "a.wav"), "genre"]
    assert table.loc[str(hidden), "error"] == f"cannot read (Permission denied): {hidden}"
    assert table.loc[str(music / "locked"), "error"].startswith("cannot list this folder (Permission denied), "
                                                                 "so its files were not searched")
    assert len(table) == 3


@pytest.mark.parametrize("call, needle", [
    (lambda run, store, music, out: __import__("dancegenre.data.store", fromlist=["x"]).prepare(
        music, out, workers=0, progress=False), "--workers 0"),
    (lambda run, store, music, out: __import__("dancegenre.data.store", fromlist=["x"]).prepare(
        music, out, config={"n_mels": 64}, progress=False), "give a dancegenre.config.FeatureConfig"),
    (lambda run, store, music, out: __import__("dancegenre.data.store", fromlist=["x"]).prepare(
        [music], out, progress=False), "one folder of <label>/<file> or one catalog CSV, not list"),
    (lambda run, store, music, out: __import__("dancegenre.training.fit", fromlist=["x"]).fit(
        store, out=out, model_options={"dropuot": 0.5}), "unknown ModelConfig field(s): dropuot"),
    (lambda run, store, music, out: __import__("dancegenre.training.fit", fromlist=["x"]).fit(
        store, out=out, config={"epochs": 1}), "give a dancegenre.config.TrainConfig"),
    (lambda run, store, music, out: __import__("dancegenre.training.fit", fromlist=["x"]).cross_validate(
        store, out=out, folds=0), "at least 2 folds, not 0"),
    (lambda run, store, music, out: __import__("dancegenre.inference.sort", fromlist=["x"]).sort_into(
        [], out, min_confidence=float("nan")), "a probability from 0 to 1, not nan"),
    (lambda run, store, music, out: __import__("dancegenre.inference.sort", fromlist=["x"]).sort_into(
        str(music), out), "takes the Prediction objects"),
    (lambda run, store, music, out: __import__("dancegenre.inference.evaluate", fromlist=["x"]).evaluate(
        run, store, out=store), "holds a dancegenre store, not an evaluation"),
    (lambda run, store, music, out: __import__("dancegenre.inference.library", fromlist=["x"]).write_tags(
        str(music), journal=out / "j.csv"), "write_tags takes the Prediction objects"),
    (lambda run, store, music, out: __import__("dancegenre.inference.library", fromlist=["x"]).write_tags(
        [], journal=out / "j.csv", min_confidence=5), "a probability from 0 to 1, not 5"),
    (lambda run, store, music, out: __import__("dancegenre.inference.library", fromlist=["x"]).write_playlists(
        [], out, min_confidence=float("nan")), "a probability from 0 to 1, not nan"),
    (lambda run, store, music, out: __import__("dancegenre.web.app", fromlist=["x"]).create_app(
        run, max_upload_mb=float("nan")), "max_upload_mb must be from 0.01 to 1e+06"),
    (lambda run, store, music, out: __import__("dancegenre.web.app", fromlist=["x"]).make_server(
        None, port=-1), "port must be a whole number from 0"),
])
def test_python_api_settings_are_checked_before_anything_is_written(trained_run, corpus_store, music, tmp_path,
                                                                    call, needle):
    """Options that only the Python API can get wrong: a dict where a config goes (once
    an AttributeError), a misspelt model option (a TypeError), 0 workers or folds (a
    pandas error after the folder was made), a NaN threshold.  One line, nothing written."""
    from dancegenre.errors import DanceGenreError

    before = snapshot(tmp_path) | snapshot(corpus_store)
    with pytest.raises(DanceGenreError) as info:
        call(trained_run, corpus_store, music, tmp_path / "out")
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert snapshot(tmp_path) | snapshot(corpus_store) == before and not (tmp_path / "out").exists()


def test_a_waveform_with_its_channels_first_is_read_as_such(trained_run):
    """(channels, n) once meant channels only up to 8: nine channels first were taken for
    nine samples of 110,250 channels ("too short")."""
    from dancegenre.inference.classifier import Classifier

    clf = Classifier.load(trained_run)
    wave = np.stack([tone(GOOD_SECONDS, 22050, seed=k) for k in range(9)])  # (9, n)
    first, last = clf.predict(wave, sr=22050), clf.predict(np.ascontiguousarray(wave.T), sr=22050)
    assert first.error is None and first.probabilities == pytest.approx(last.probabilities, abs=1e-6)


def test_the_resume_journal_never_takes_a_users_folder_or_file(trained_run, music, tmp_path, capsys):
    """predict --out X and tag keep their journal in X.pending/: a folder of that name
    holding the user's files, or a file of that name, is refused and left as it is."""
    a = music / "techno" / "t0.wav"
    theirs = tmp_path / "p.csv.pending"
    (theirs / "notes.txt").parent.mkdir()
    (theirs / "notes.txt").write_text("mine")
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--out", tmp_path / "p.csv",
            needle="already holds files that dancegenre did not make")
    (tmp_path / "q.jsonl.pending").write_text("mine too")
    refused(capsys, tmp_path, "predict", "-q", trained_run, a, "--out", tmp_path / "q.jsonl",
            needle="is a file, not a folder")


# ---------------------------------------------------------------- folders, tables and text: the shared rules

def test_one_familiar_file_name_never_makes_a_users_folder_ours(trained_run, corpus_store, music, tmp_path, capsys):
    catalog = music / "catalog.csv"
    catalog.write_text("path,label\n" + "".join(f"techno/t{k}.wav,techno\nedm/e{k}.wav,edm\n" for k in range(3)))
    # prepare took this for a store and emptied the user's pending/
    p = tmp_path / "p"
    (p / "pending").mkdir(parents=True)
    (p / "store.json").write_text("{}")
    (p / "pending" / "config.json").write_text("mine")
    (p / "notes.txt").write_text("notes")
    refused(capsys, tmp_path, "prepare", "-q", catalog, p, needle="did not make")
    table = tmp_path / "features.csv"
    table.write_text("label,x\n" + "".join(f"{g},{k}\n" for g in ("techno", "edm") for k in range(4)))
    # train, eda, evaluate and explain over a user's results.json, statistics.csv, metrics.json, explain.html
    for name, args in (("results.json", ("train", "-q", corpus_store, "--epochs", "1", "--out")),
                       ("statistics.csv", ("eda", "-q", table, "--out")),
                       ("metrics.json", ("evaluate", "-q", trained_run, "--out")),
                       ("explain.html", ("explain", "-q", trained_run, music / "techno" / "t0.wav", "--out"))):
        user = tmp_path / f"user-{name}"
        user.mkdir()
        (user / name).write_text("the user's")
        (user / "notes.txt").write_text("notes")
        refused(capsys, tmp_path, *args, user, needle="did not make")


def test_demo_removes_only_what_its_run_wrote(tmp_path):
    from dancegenre.demo import _remove_run
    from dancegenre.safety import claim_folder, release_folder

    theirs = tmp_path / "theirs"  # no marker: a user's folder with a results.json
    theirs.mkdir()
    (theirs / "results.json").write_text("{}")
    (theirs / "best.pt").write_text("mine")
    _remove_run(theirs)
    assert sorted(p.name for p in theirs.iterdir()) == ["best.pt", "results.json"]
    run = claim_folder(tmp_path / "run", "run")
    release_folder(run)
    for name in ("results.json", "best.pt", "last.pt", "metrics.csv", "curves.png"):
        (run / name).write_text("x")
    (run / "notes.txt").write_text("a note the user left")
    _remove_run(run)
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == ["notes.txt"]


def test_no_output_replaces_an_input_store_or_a_users_table(trained_run, corpus_store, music, tmp_path, capsys):
    store_before = snapshot(corpus_store)
    for args in (("embed", "-q", corpus_store, "--out", corpus_store / "segments.npy", "--per-segment"),
                 ("embed", "-q", corpus_store, "--out", corpus_store / "new.npy")):
        code, _, err = cli(capsys, *args)
        assert code == 2 and "input folder" in err[0], err
    assert snapshot(corpus_store) == store_before
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("path,label\nx.mp3,techno\n")
    wav = music / "techno" / "t0.wav"
    refused(capsys, tmp_path, "predict", "-q", trained_run, wav, "--out", catalog, needle="not a table made by")
    refused(capsys, tmp_path, "predict", "-q", trained_run, wav, "--timeline", catalog, needle="not a table made by")
    refused(capsys, tmp_path, "tag", "-q", wav, "--out", catalog, needle="not a table made by")
    # our own table is replaced on a rerun
    ours = tmp_path / "ours.jsonl"
    assert cli(capsys, "predict", "-q", trained_run, wav, "--out", ours)[0] == 0
    assert cli(capsys, "predict", "-q", trained_run, wav, "--out", ours)[0] == 0


def test_pages_figures_and_vectors_replace_only_files_of_ours(trained_run, corpus_store, music, tmp_path, capsys):
    for name, args in (("page.html", ("report", "-q", trained_run, "--out")),
                       ("fig.png", ("figure", "-q", "clip", music / "techno" / "t0.wav", "--out")),
                       ("vectors.npy", ("embed", "-q", music, "--out"))):
        mine = tmp_path / name
        mine.write_bytes(b"the user's own")
        refused(capsys, tmp_path, *args, mine, needle="not")
        mine.unlink()
    page = tmp_path / "page.html"  # a report of ours is replaced on a rerun
    for _ in range(2):
        assert cli(capsys, "report", "-q", trained_run, "--out", page)[0] == 0


def test_formula_cells_are_inert_and_labels_never_formulas(music, tmp_path, capsys):
    from dancegenre.data.store import SegmentStore

    catalog = music / "catalog.csv"
    catalog.write_text('path,label,artist\ntechno/t0.wav,techno,"=HYPERLINK(""http://x"",""y"")"\n'
                       "edm/e0.wav,edm,@SUM(1)\n")
    assert cli(capsys, "prepare", "-q", catalog, tmp_path / "s")[0] == 0
    cells = (tmp_path / "s" / "items.csv").read_text().splitlines()
    assert all(not cell.startswith(("=", "+", "-", "@")) for line in cells for cell in line.split(","))
    assert sorted(SegmentStore(tmp_path / "s").items["artist"]) == ['=HYPERLINK("http://x","y")', "@SUM(1)"]
    for label in ("=cmd", "+x", "edm."):
        catalog.write_text(f"path,label\ntechno/t0.wav,{label}\n")
        refused(capsys, tmp_path, "prepare", "-q", catalog, tmp_path / "s2", needle="label")


def test_labels_one_folder_apart_by_case_are_refused(tmp_path, capsys):
    good_wav(tmp_path / "in" / "techno" / "a.wav")
    good_wav(tmp_path / "in" / "TECHNO" / "b.wav", seed=1)
    refused(capsys, tmp_path, "prepare", "-q", tmp_path / "in", tmp_path / "s", needle="differ only in case")


def test_escape_sequences_in_names_never_reach_the_terminal(trained_run, tmp_path, capsys):
    odd = good_wav(tmp_path / "in" / "a\x1b[2Jb\x07.wav")
    junk = tmp_path / "in" / "c\x1b]0;owned\x07.wav"
    junk.write_bytes(b"not audio")
    code, out, err = cli(capsys, "predict", trained_run, odd, junk)
    assert code == 0
    assert "\x1b" not in out + "".join(err) and "\x07" not in out + "".join(err)
    assert "\\x1b" in out and "\\x1b" in "".join(err)


def test_a_folder_another_command_writes_is_refused_naming_it(music, tmp_path, capsys):
    store = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from dancegenre.safety import claim_folder
        claim_folder(sys.argv[1], "store")
        print("held", flush=True)
        time.sleep(60)
    """), str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        text = refused(capsys, tmp_path, "prepare", "-q", music, store, needle="is in use by process")
        assert str(holder.pid) in text
    finally:
        holder.kill()
        holder.wait()
    assert cli(capsys, "prepare", "-q", music, store)[0] == 0


def test_messages_say_what_happened(trained_run, music, tmp_path, capsys, monkeypatch):
    from dancegenre import safety

    # every file failed: stdout lists, stderr says so
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"x" * 100)
    code, _, err = cli(capsys, "predict", "-q", trained_run, junk)
    assert code == 2 and err[0].startswith("failed: ") and "none of the 1 file(s)" in err[-1]
    # --sort-into the input folder itself
    refused(capsys, tmp_path, "predict", "-q", trained_run, music, "--sort-into", music, needle="is the input folder")
    # a full disk names the file it could not write
    def full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safety, "_fsync", full)
    code, _, err = cli(capsys, "predict", "-q", trained_run, music / "techno" / "t0.wav", "--out", tmp_path / "o.csv")
    # (the first write is the resume journal's, beside the output)
    assert code == 2 and len(err) == 1 and err[0].startswith(
        f"dancegenre predict: error: No space left on device: {tmp_path / 'o.csv'}"), err


def test_prepare_lists_a_dangling_link_as_a_failure(music, tmp_path, capsys):
    (music / "techno" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    code, _, _ = cli(capsys, "prepare", "-q", music, tmp_path / "s")
    assert code == 0
    failures = pd.read_csv(tmp_path / "s" / "failures.csv")
    assert any("gone.wav" in p for p in failures["path"]) and "missing file" in " ".join(failures["reason"])


def test_reruns_after_every_file_failed_replace_their_own_empty_outputs(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp3").write_bytes(b"not audio")
    for _ in range(2):
        code, _, err = cli(capsys, "predict", "-q", trained_run, bad, "--out", tmp_path / "p.csv",
                           "--timeline", tmp_path / "t.csv")
        assert code == 2 and "none of the 1 file(s)" in err[-1], err
    for _ in range(2):
        code, _, err = cli(capsys, "features", "-q", bad, "--out", tmp_path / "f.csv")
        assert code == 2 and "not a features table" not in err[-1], err


def test_an_inbox_is_sorted_into_the_folder_it_lies_in(trained_run, tmp_path, capsys):
    crate = tmp_path / "crate"
    good_wav(crate / "inbox" / "new.wav")
    code, out, _ = cli(capsys, "predict", "-q", trained_run, crate / "inbox", "--sort-into", crate)
    assert code == 0 and "copy 1 file(s)" in out
    # a target inside the input, as before: the inbox and the genre folder are listed, the target not
    code, out, _ = cli(capsys, "predict", "-q", trained_run, crate, "--sort-into", crate / "sorted")
    assert code == 0 and "copy 2 file(s)" in out


def test_library_calls_let_their_folder_locks_go(tmp_path):
    from dancegenre import safety
    from dancegenre.data.synth import synthesize

    synthesize(tmp_path / "c", per_genre=1, fmt="wav", progress=False, workers=1)
    assert os.path.realpath(tmp_path / "c") not in safety._HELD  # another process may write it now


def test_tag_refuses_hours_of_silence_from_the_header(tmp_path, capsys):
    from dancegenre.config import MAX_AUDIO_SECONDS
    from dancegenre.inference.embed import _refused_by_header

    long = tmp_path / "silence.flac"
    with sf.SoundFile(str(long), "w", samplerate=8000, channels=1, format="FLAC") as f:
        block = np.zeros(8000 * 600, np.float32)
        for _ in range(19):  # 3 h 10 min, a few kB
            f.write(block)
    short = good_wav(tmp_path / "ok.wav")
    refused = _refused_by_header([str(long), str(short)], MAX_AUDIO_SECONDS)
    assert list(refused) == [str(long)] and "too long" in refused[str(long)]
    with pytest.raises(SystemExit) as caught:  # the parser's own refusal
        main(["tag", "-q", str(short), "--max-duration", "0"])
    assert caught.value.code == 2 and "--max-duration: must be between 1 and" in capsys.readouterr().err
