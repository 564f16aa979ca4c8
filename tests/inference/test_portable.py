"""The ONNX export of a run: the same numbers as torch, never stale, and predict without torch."""

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from dancegenre.cli.parser import main
from dancegenre.config import FeatureConfig, TrainConfig
from dancegenre.errors import CheckpointError, ConfigError
from dancegenre.inference.classifier import Classifier
from dancegenre.inference.portable import PortableModel, current_export
from dancegenre.models.registry import build_model, model_config
from dancegenre.training.checkpoint import load_checkpoint, save_checkpoint
from dancegenre.training.export import export_onnx
from tests.conftest import tone, write


def test_train_writes_an_export_that_predicts_as_torch_does(trained_run, corpus):
    assert (trained_run / "best.onnx").is_file()
    files = sorted((corpus / "techno").glob("*.flac"))[:2] + sorted((corpus / "edm").glob("*.flac"))[:2]
    fast = Classifier.load(trained_run)
    slow = Classifier.load(trained_run, engine="torch")
    assert (fast.engine, slow.engine) == ("onnx", "torch")
    assert fast.labels == slow.labels and fast.config == slow.config and fast.path == slow.path
    for f in files:
        a, b = fast.predict(f), slow.predict(f)
        assert a.genre == b.genre
        np.testing.assert_allclose(a.timeline[fast.labels].to_numpy(), b.timeline[slow.labels].to_numpy(), atol=1e-5)
    many = list(fast.predict_many(files, workers=2))  # the pool path sets the session's threads
    assert [m.genre for m in many] == [fast.predict(f).genre for f in files]
    assert fast.checkpoint.split == slow.checkpoint.split  # the training record, loaded on demand


@pytest.mark.parametrize("name", ["cnn1d", "crnn", "cnn2d"])
def test_every_architecture_exports_with_any_batch(name, tmp_path):
    fc = FeatureConfig()
    torch.manual_seed(0)
    net = build_model(model_config(name, n_classes=3, n_mels=fc.n_mels)).eval()
    with torch.no_grad():  # small weights: probabilities well inside (0, 1), so a wrong graph shows
        for p in net.parameters():
            p.mul_(0.2)
    pt = save_checkpoint(tmp_path / "best.pt", net, feature_config=fc, train_config=TrainConfig(),
                         labels=["a", "b", "c"], split={})
    model = PortableModel.open(export_onnx(pt))
    assert (model.labels, model.model, model.feature_config, model.tags) == (["a", "b", "c"], name, fc, [])
    rng = np.random.default_rng(1)
    for batch in (1, 7):
        x = rng.normal(size=(batch, fc.n_mels, fc.segment_frames)).astype(np.float32)
        with torch.no_grad():
            want = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
        got, tags = model(x)
        assert tags is None and got.shape == (batch, 3)
        assert 0.01 < want.min() and want.max() < 0.99
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_stale_export_is_never_used(trained_run, corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpt = load_checkpoint(run)
    with torch.no_grad():
        for p in ckpt.model.parameters():
            p.add_(0.5)
    save_checkpoint(run / "best.pt", ckpt.model, feature_config=ckpt.feature_config, train_config=ckpt.train_config,
                    labels=ckpt.labels, split=ckpt.split)
    assert current_export(run) is None
    assert Classifier.load(run).engine == "torch"
    with pytest.raises(CheckpointError, match="dancegenre export"):
        Classifier.load(run, engine="onnx")
    before = (run / "best.pt").read_bytes()
    assert main(["export", str(run)]) == 0  # writes best.onnx anew, never touches best.pt
    assert (run / "best.pt").read_bytes() == before
    clf = Classifier.load(run)
    assert clf.engine == "onnx"
    f = sorted((corpus / "edm").glob("*.flac"))[0]
    np.testing.assert_allclose(clf.predict(f).timeline[clf.labels].to_numpy(),
                               Classifier.load(run, engine="torch").predict(f).timeline[clf.labels].to_numpy(),
                               atol=1e-5)


def test_predict_with_the_export_never_imports_torch(trained_run, tmp_path):
    clip = write(tmp_path / "clip.wav", tone(7.0, 22050, seed=5), 22050)
    code = ("import sys\nfrom dancegenre.cli.parser import main\n"
            f"code = main(['predict', '-q', {str(trained_run)!r}, {str(clip)!r}, '--out', {str(tmp_path / 'p.csv')!r}])\n"
            "print(code, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.splitlines()[-1].split() == ["0", "False"], r.stderr
    r = subprocess.run([sys.executable, "-c", code.replace("'-q'", "'-q', '--engine', 'torch'")],
                       capture_output=True, text=True)
    assert r.stdout.splitlines()[-1].split() == ["0", "True"], r.stderr


def test_a_bare_onnx_file_predicts_and_knows_what_it_lacks(trained_run, corpus, tmp_path, capsys):
    dest = tmp_path / "shared" / "model.onnx"
    assert main(["export", str(trained_run), "--out", str(dest)]) == 0
    f = sorted((corpus / "techno").glob("*.flac"))[0]
    clf = Classifier.load(dest)
    assert clf.engine == "onnx" and clf.path == dest and clf.model_files == [dest]
    assert clf.predict(f).genre == Classifier.load(trained_run, engine="torch").predict(f).genre
    with pytest.raises(CheckpointError, match="not the checkpoint"):
        clf.checkpoint
    with pytest.raises(ConfigError, match="CPU only"):
        Classifier.load(dest, engine="torch")
    assert main(["predict", "-q", str(dest), str(f), "--out", str(tmp_path / "p.csv")]) == 0
    assert "techno" in (tmp_path / "p.csv").read_text() or "edm" in (tmp_path / "p.csv").read_text()


def test_export_and_load_refuse_bad_files_in_one_line(trained_run, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    plain = tmp_path / "plain.onnx"  # a valid ONNX graph that dancegenre did not write
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(plain), dynamo=False)
    for path, why in ((junk, "not a loadable ONNX model"), (plain, "not a dancegenre ONNX model")):
        r = subprocess.run([sys.executable, "-m", "dancegenre", "predict", "-q", str(path), str(path)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr and why in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "dir.onnx").mkdir()
    for out, why in (("x.txt", "must end in .onnx"), ("dir.onnx", "is a folder")):
        r = subprocess.run([sys.executable, "-m", "dancegenre", "export", str(trained_run), "--out", out],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "dancegenre", "export", str(junk)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert junk.read_bytes() == b"not a model at all"  # inputs are only read


def test_an_export_whose_labels_are_paths_or_markup_is_refused(trained_run, tmp_path):
    """Labels are data: a crafted ONNX file naming a genre '../../etc' or '<script>' is
    refused in one line before anything is predicted or sorted."""
    import json

    import onnx

    from dancegenre.training.export import META_KEY

    for evil in ("../../etc", "<script>x</script>"):
        model = onnx.load(str(trained_run / "best.onnx"))
        entry = next(p for p in model.metadata_props if p.key == META_KEY)
        meta = json.loads(entry.value)
        meta["labels"] = [evil, *meta["labels"][1:]]
        entry.value = json.dumps(meta)
        path = tmp_path / "evil.onnx"
        onnx.save(model, str(path))
        with pytest.raises(CheckpointError, match="unusable metadata"):
            PortableModel.open(path)
        clip = write(tmp_path / "clip.wav", tone(4.0, 22050, seed=6), 22050)
        r = subprocess.run([sys.executable, "-m", "dancegenre", "predict", "-q", str(path), str(clip),
                            "--sort-into", str(tmp_path / "sorted")], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not (tmp_path / "sorted").exists()
