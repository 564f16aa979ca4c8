"""Networks and the ``MODELS`` registry.

Every network takes log-mel segments ``(batch, n_mels, frames)`` in dB and returns
logits ``(batch, n_classes)``.  Input normalisation (per mel band, statistics of the
training split) is a pair of registered buffers, so it travels with ``state_dict`` and
``.to(device)``.  Variants (pooling, activation, dropout, RNN type) are parameters of
the config, never copies of a class.
"""

from __future__ import annotations

import torch
from torch import nn

from dancegenre.config import ModelConfig
from dancegenre.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "selu": nn.SELU,
    "leaky_relu": nn.LeakyReLU, "mish": nn.Mish, "tanh": nn.Tanh, "softplus": nn.Softplus,
}
POOLINGS = ("max", "avg", "meanmaxl2")


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class BandNorm(nn.Module):
    """(B, n_mels, T) -> (B, n_mels, T): subtract each band's mean, divide by its std."""

    MIN_STD = 1e-3  # dB: a constant band is not blown up

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(self.MIN_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None]) / self.std[:, None]


def temporal_pool(h: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, C, T) -> (B, C) for max/avg, (B, 3C) for meanmaxl2 (Dieleman 2014)."""
    if mode == "max":
        return h.amax(dim=-1)
    if mode == "avg":
        return h.mean(dim=-1)
    if mode == "meanmaxl2":
        return torch.cat([h.mean(-1), h.amax(-1), h.pow(2).mean(-1).clamp_min(1e-12).sqrt()], dim=1)
    raise ConfigError(f"unknown pooling {mode!r}; choose from {', '.join(POOLINGS)}")


class Network(nn.Module):
    """Shared parts: input normalisation and the dense head.

    ``forward(x) = from_features(features(x))``.  A network whose ``features`` are
    frozen (a pretrained backbone) says so with ``trains_on_features``: training then
    computes ``features`` once per store and fits ``from_features`` alone.
    """

    DEFAULTS: dict = {}
    FRONTEND: str | None = None  # a FeatureConfig preset the network needs; None: any

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = BandNorm(config.n_mels)

    def _head(self, width: int) -> nn.Sequential:
        c = self.config
        if c.head == "linear":
            return nn.Sequential(nn.Dropout(c.dropout), nn.Linear(width, c.n_classes))
        return nn.Sequential(
            nn.Dropout(c.dropout), nn.Linear(width, c.dense), _activation(c.activation),
            nn.Dropout(c.dropout), nn.Linear(c.dense, c.n_classes),
        )

    @property
    def trains_on_features(self) -> bool:
        return False

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, D) pooled features before the dense head."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, D): what ``from_features`` takes."""
        return self.embed(x)

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, n_classes) logits."""
        return self.head(f)

    def explain_blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, module) whose outputs are the feature maps ``explain`` shows, in order;
        the last one's gets Grad-CAM.  Here: the activation after each convolution of
        ``self.convs`` (conv -> batch norm -> activation)."""
        blocks, seen = [], 0
        layers = list(self.convs)
        for i, layer in enumerate(layers):
            if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
                seen += 1
                act = next(m for m in layers[i + 1:] if not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)))
                blocks.append((f"conv{seen}", act))
        return blocks

    def first_conv(self) -> nn.Module | None:
        """The first convolution, whose filters ``explain --store`` analyses (None: not meaningful)."""
        return next(m for m in self.convs if isinstance(m, (nn.Conv1d, nn.Conv2d)))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, D'): the input of the last linear layer (an embedding)."""
        return self.head[:-1](self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) log-mel -> (B, n_classes) logits."""
        return self.from_features(self.features(x))


def _conv1d_blocks(c: ModelConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = c.n_mels
    for filters, pool in zip(c.filters, c.pool_sizes):
        # Symmetric integer padding: an even kernel loses one frame instead of forcing
        # the padded copy that padding="same" makes.
        layers += [nn.Conv1d(channels, filters, c.kernel_size, padding=(c.kernel_size - 1) // 2),
                   nn.BatchNorm1d(filters), _activation(c.activation)]
        if pool > 1:
            layers.append(nn.MaxPool1d(pool, ceil_mode=True))
        channels = filters
    return nn.Sequential(*layers)


class CNN1D(Network):
    """The study's network: 1-D convolutions along time with mel bands as channels,
    batch norm, activation and max pooling per block, then global temporal pooling and
    dense layers with dropout."""

    DEFAULTS = {"filters": (64, 128, 128), "kernel_size": 4, "pool_sizes": (4, 2, 2)}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.convs = _conv1d_blocks(config)
        width = config.filters[-1] * (3 if config.pooling == "meanmaxl2" else 1)
        temporal_pool(torch.zeros(1, 1, 1), config.pooling)  # reject an unknown mode now
        self.head = self._head(width)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.norm(x))  # (B, filters[-1], T / prod(pool_sizes))
        return temporal_pool(h, self.config.pooling)


class CRNN(Network):
    """The same convolutions, then a bidirectional GRU or LSTM over time in place of
    global pooling (the study's future work)."""

    DEFAULTS = {"filters": (64, 128, 128), "kernel_size": 4, "pool_sizes": (4, 2, 2)}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.convs = _conv1d_blocks(config)
        rnn = nn.GRU if config.rnn == "gru" else nn.LSTM
        self.rnn = rnn(config.filters[-1], config.rnn_hidden, batch_first=True, bidirectional=True)
        self.head = self._head(2 * config.rnn_hidden)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.norm(x)).transpose(1, 2)  # (B, T', C)
        out, _ = self.rnn(h)  # (B, T', 2H)
        hidden = self.config.rnn_hidden
        # last step of the forward direction, first step of the backward one
        return torch.cat([out[:, -1, :hidden], out[:, 0, hidden:]], dim=1)


class CNN2D(Network):
    """2-D convolutions over mel x time, small enough to train in minutes on a CPU:
    16-32-64 channels, 3x3 kernels, a strided first layer (full-resolution feature maps
    are what made the study's 2-D network take over an hour), global pooling over both
    axes."""

    DEFAULTS = {"filters": (16, 32, 64), "kernel_size": 3, "pool_sizes": (2, 2, 2), "first_stride": 2}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        layers: list[nn.Module] = []
        channels = 1
        for i, (filters, pool) in enumerate(zip(config.filters, config.pool_sizes)):
            stride = config.first_stride if i == 0 else 1
            layers += [nn.Conv2d(channels, filters, config.kernel_size, stride=stride,
                                 padding=(config.kernel_size - 1) // 2),
                       nn.BatchNorm2d(filters), _activation(config.activation)]
            if pool > 1:
                layers.append(nn.MaxPool2d(pool, ceil_mode=True))
            channels = filters
        self.convs = nn.Sequential(*layers)
        width = config.filters[-1] * (3 if config.pooling == "meanmaxl2" else 1)
        temporal_pool(torch.zeros(1, 1, 1), config.pooling)
        self.head = self._head(width)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.norm(x).unsqueeze(1))  # (B, C, mels', T')
        return temporal_pool(h.flatten(2), self.config.pooling)


class MusiCNN(Network):
    """The pretrained musicnn (MSD or MTT weights) with a new head for the store's labels.

    The backbone is frozen unless ``finetune`` names how many of its last blocks train
    (``musicnn.BLOCKS``: backend, mid3, mid2, mid1, frontend).  Its features (max and
    mean pool, penultimate layer, taggram: 1,756 values a segment) are standardised
    with training statistics and fed to a ``linear`` or ``mlp`` head.  The input is the
    ``musicnn`` front end (``FeatureConfig.preset("musicnn")``), not dB.  The backbone's
    own input batch norm normalises it: ``norm`` holds the training bands' statistics
    (for augmentation masks and ``explain``'s band occlusion) but is not applied.
    """

    DEFAULTS = {"head": "linear", "dropout": 0.5, "dense": 256}
    FRONTEND = "musicnn"

    def __init__(self, config: ModelConfig) -> None:
        from dancegenre.musicnn import FEATURES, FeatureNorm, MusiCNNBackbone, check_finetune

        super().__init__(config)
        if config.n_mels != 96:
            raise ConfigError(f"{config.name} takes 96 mel bands (the musicnn front end), not {config.n_mels}")
        check_finetune(config)
        self.backbone = MusiCNNBackbone()
        self.feature_norm = FeatureNorm(FEATURES)
        self.head = self._head(FEATURES)
        # An ensemble (train --folds K --ensemble): K more standardise-and-head pairs on the
        # one frozen backbone; the verdict is their mean probability.
        self.members = nn.ModuleList(nn.Sequential(FeatureNorm(FEATURES), self._head(FEATURES))
                                     for _ in range(config.members if config.members > 1 else 0))
        self._frozen: list[nn.Module] = []
        self.set_finetune(config.finetune)

    def set_finetune(self, n: int) -> None:
        """Freeze the backbone but for its last ``n`` blocks (they also leave eval mode)."""
        from dancegenre.musicnn import BLOCKS

        blocks = self.backbone.blocks()
        self._frozen = [m for name in BLOCKS[n:] for m in blocks[name]]
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for name in BLOCKS[:n]:
            for m in blocks[name]:
                for p in m.parameters():
                    p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> MusiCNN:
        super().train(mode)
        for m in self._frozen:  # frozen batch norms keep their pretrained statistics
            m.eval()
        if self.config.finetune == 0:
            self.backbone.eval()
        return self

    @property
    def trains_on_features(self) -> bool:
        return self.config.finetune == 0

    def explain_blocks(self) -> list[tuple[str, nn.Module]]:
        b = self.backbone
        return [("timbral-38", b.timbral[0]), ("timbral-67", b.timbral[1]), ("temporal-128", b.temporal[0]),
                ("temporal-64", b.temporal[1]), ("temporal-32", b.temporal[2]), ("mid1", b.mid[0]),
                ("mid2", b.mid[1]), ("mid3", b.mid[2])]

    def first_conv(self) -> nn.Module | None:
        return None  # its filters slide over frequency: no fixed band response to show

    def features(self, x: torch.Tensor) -> torch.Tensor:
        from dancegenre.musicnn import backbone_features

        return backbone_features(self.backbone(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_norm(self.features(x))

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        if len(self.members):  # log of the members' mean probability: softmax gives it back
            probs = torch.stack([torch.softmax(m(f), dim=1) for m in self.members]).mean(0)
            return torch.log(probs.clamp_min(1e-12))
        return self.head(self.feature_norm(f))


def ensemble_of(models: list[Network]) -> Network:
    """One network averaging frozen-backbone runs of the same model and labels (fold models)."""
    first = models[0]
    if not all(getattr(m, "trains_on_features", False) and m.config == first.config for m in models):
        raise ConfigError("--ensemble averages runs of one frozen pretrained model (finetune 0) with the same settings")
    import dataclasses

    net = build_model(dataclasses.replace(first.config, members=len(models)))
    net.backbone.load_state_dict(first.backbone.state_dict())
    net.norm.load_state_dict(first.norm.state_dict())
    for member, m in zip(net.members, models):
        member[0].load_state_dict(m.feature_norm.state_dict())
        member[1].load_state_dict(m.head.state_dict())
    net.feature_norm.load_state_dict(first.feature_norm.state_dict())
    net.head.load_state_dict(first.head.state_dict())
    return net


MODELS: dict[str, type[Network]] = {"cnn1d": CNN1D, "crnn": CRNN, "cnn2d": CNN2D,
                                    "musicnn-msd": MusiCNN, "musicnn-mtt": MusiCNN}


def model_config(name: str, *, n_classes: int, n_mels: int, **overrides: object) -> ModelConfig:
    """A ModelConfig with the registry's defaults for ``name``; ``None`` overrides are ignored."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    values = {**MODELS[name].DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    return ModelConfig(name=name, n_classes=n_classes, n_mels=n_mels, **values)  # type: ignore[arg-type]


def build_model(config: ModelConfig) -> Network:
    """Instantiate the registry's class for ``config.name``."""
    if config.name not in MODELS:
        raise ConfigError(f"unknown model {config.name!r}; choose from {', '.join(MODELS)}")
    _activation(config.activation)
    return MODELS[config.name](config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
