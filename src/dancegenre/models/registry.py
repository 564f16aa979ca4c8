"""The ``MODELS`` registry: a name -> network class, and the functions that build from a config."""

from __future__ import annotations

from torch import nn

from dancegenre.config import ModelConfig
from dancegenre.errors import ConfigError
from dancegenre.models.base import Network, _activation
from dancegenre.models.cnn import CNN1D, CNN2D, CRNN
from dancegenre.models.musicnn import MusiCNN


def ensemble_of(models: list[Network]) -> Network:
    """One network averaging runs of the same pretrained model, settings and labels (fold
    models) whose front end stayed frozen: a frozen backbone (finetune 0) or fine-tuned
    mid and back ends on the pretrained front end (finetune 1-4)."""
    first = models[0]
    if not all(m.cached_stage in ("features", "frontend") and m.config == first.config for m in models):
        raise ConfigError("--ensemble averages runs of one pretrained model whose front end stayed frozen "
                          "(--finetune 0-4) with the same settings")
    import dataclasses

    net = build_model(dataclasses.replace(first.config, members=len(models)))
    net.backbone.load_state_dict(first.backbone.state_dict())
    net.norm.load_state_dict(first.norm.state_dict())
    for member, m in zip(net.members, models):
        member[0].load_state_dict(m.feature_norm.state_dict())
        member[1].load_state_dict(m.head.state_dict())
        if len(member) > 2:  # a fine-tuned member: its own mid and back ends
            member[2].load_state_dict(m.backbone.state_dict())
    net.feature_norm.load_state_dict(first.feature_norm.state_dict())
    net.head.load_state_dict(first.head.state_dict())
    return net


def members_of(net: Network) -> list[Network]:
    """The single networks an ensemble averages (the inverse of :func:`ensemble_of`), or
    ``[net]`` for a network that is not one; each as it was trained, in eval mode."""
    members = getattr(net, "members", None)
    if not members:
        return [net]
    import dataclasses

    out = []
    for member in members:
        m = build_model(dataclasses.replace(net.config, members=1))
        m.norm.load_state_dict(net.norm.state_dict())
        m.backbone.load_state_dict((member[2] if len(member) > 2 else net.backbone).state_dict())
        m.feature_norm.load_state_dict(member[0].state_dict())
        m.head.load_state_dict(member[1].state_dict())
        out.append(m.eval())
    return out


MODELS: dict[str, type[Network]] = {"cnn1d": CNN1D, "crnn": CRNN, "cnn2d": CNN2D,
                                    "musicnn-msd": MusiCNN, "musicnn-mtt": MusiCNN}


def model_config(name: str, *, n_classes: int, n_mels: int, **overrides: object) -> ModelConfig:
    """A ModelConfig with the registry's defaults for ``name``; ``None`` overrides are ignored."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    values = {**MODELS[name].DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    # from_dict: an unknown option (a typo in model_options) is named, not a TypeError
    return ModelConfig.from_dict({"name": name, "n_classes": n_classes, "n_mels": n_mels, **values})


def build_model(config: ModelConfig) -> Network:
    """Instantiate the registry's class for ``config.name``."""
    if config.name not in MODELS:
        raise ConfigError(f"unknown model {config.name!r}; choose from {', '.join(MODELS)}")
    _activation(config.activation)
    return MODELS[config.name](config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
