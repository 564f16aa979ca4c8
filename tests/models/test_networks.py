"""Network shapes, registry, checkpoint round trip."""

import pytest
import torch

from dancegenre.config import FeatureConfig, TrainConfig
from dancegenre.errors import CheckpointError, ConfigError
from dancegenre.models.base import ACTIVATIONS, POOLINGS
from dancegenre.models.registry import MODELS, build_model, model_config
from dancegenre.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("n_classes", [2, 5])
def test_forward_shapes(name, n_classes):
    n_mels = 96 if name.startswith("musicnn") else 128  # musicnn's own front end
    net = build_model(model_config(name, n_classes=n_classes, n_mels=n_mels))
    net.eval()
    assert net(torch.randn(3, n_mels, 128)).shape == (3, n_classes)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_variants(pooling):
    net = build_model(model_config("cnn1d", n_classes=2, n_mels=64, pooling=pooling, activation="gelu"))
    net.eval()
    assert net(torch.randn(2, 64, 128)).shape == (2, 2)


def test_every_activation_builds():
    for act in ACTIVATIONS:
        build_model(model_config("cnn1d", n_classes=2, n_mels=32, activation=act))


def test_batch_equals_items():
    net = build_model(model_config("cnn1d", n_classes=3, n_mels=128)).eval()
    x = torch.randn(4, 128, 128)
    together = net(x)
    alone = torch.cat([net(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_bad_model_configs():
    with pytest.raises(ConfigError):
        model_config("resnet", n_classes=2, n_mels=128)
    with pytest.raises(ConfigError):
        build_model(model_config("cnn1d", n_classes=2, n_mels=128, activation="nope"))
    with pytest.raises(ConfigError):
        model_config("cnn1d", n_classes=1, n_mels=128)
    with pytest.raises(ConfigError):
        model_config("cnn1d", n_classes=2, n_mels=128, filters=(8, 8), pool_sizes=(2,))


def test_checkpoint_round_trip(tmp_path):
    net = build_model(model_config("crnn", n_classes=3, n_mels=128, rnn="lstm"))
    net.norm.set_stats(torch.randn(128), torch.rand(128) + 0.5)
    path = save_checkpoint(tmp_path / "m.pt", net, feature_config=FeatureConfig(), train_config=TrainConfig(),
                           labels=["a", "b", "c"], split={"column": "item", "sides": {"train": ["x"], "val": [], "test": []}})
    ckpt = load_checkpoint(path)
    x = torch.randn(2, 128, 128)
    net.eval()
    assert torch.equal(ckpt.model(x), net(x))
    assert ckpt.labels == ["a", "b", "c"] and ckpt.feature_config == FeatureConfig()
    assert ckpt.model_config == net.config


def test_checkpoint_refuses_bad_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "dancegenre-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):  # weights_only refuses to unpickle code
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "missing.pt")


def test_the_command_lines_names_are_the_registrys():
    """config holds the names `--help` shows without importing torch; they must be the networks'."""
    from dancegenre import config
    from dancegenre.inference.embed import LAYERS
    from dancegenre.models.musicnn import PRETRAINED
    from dancegenre.models.registry import MODELS

    assert set(config.MODEL_DEFAULTS) == set(MODELS)
    assert all(MODELS[name].DEFAULTS == values for name, values in config.MODEL_DEFAULTS.items())
    assert tuple(config.ACTIVATIONS) == tuple(ACTIVATIONS)
    assert set(config.PRETRAINED_NAMES) == set(PRETRAINED)
    assert LAYERS == config.EMBED_LAYERS
