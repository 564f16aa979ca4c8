"""What every network shares: the ``Network`` base class, ``BandNorm``, pooling, activations.

Every network takes log-mel segments ``(batch, n_mels, frames)`` in dB and returns
logits ``(batch, n_classes)``.  Input normalisation (per mel band, statistics of the
training split) is a pair of registered buffers, so it travels with ``state_dict`` and
``.to(device)``.  Variants (pooling, activation, dropout, RNN type) are parameters of
the config, never copies of a class.
"""

from __future__ import annotations

import torch
from torch import nn

from dancegenre.config import POOLINGS, ModelConfig
from dancegenre.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {  # one for each name in config.ACTIVATIONS
    "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "selu": nn.SELU,
    "leaky_relu": nn.LeakyReLU, "mish": nn.Mish, "tanh": nn.Tanh, "softplus": nn.Softplus,
}


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

    ``forward(x) = from_features(features(x))``.  A network whose first part is frozen
    (a pretrained backbone) names that part's output with ``cached_stage``: training
    computes ``stage(x)`` once per store, caches it, and fits ``from_stage`` alone.  The
    stage is ``"features"`` when all but the head is frozen (``trains_on_features``).
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

    @classmethod
    def stage_for(cls, config: ModelConfig) -> str | None:
        """``cached_stage`` of this network built with ``config``, without building it."""
        return None

    @property
    def cached_stage(self) -> str | None:
        """Name of the frozen part's output that training caches per store and trains
        from; None: nothing is frozen, training runs on the segments."""
        return self.stage_for(self.config)

    @property
    def trains_on_features(self) -> bool:
        """All but the head is frozen: training fits ``from_features`` on cached features."""
        return self.cached_stage == "features"

    def stage(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> the cached stage's output (``cached_stage``)."""
        return self.features(x)

    def stage_features(self, h: torch.Tensor) -> torch.Tensor:
        """The cached stage's output -> (B, D) features."""
        return h

    def from_stage(self, h: torch.Tensor) -> torch.Tensor:
        """The cached stage's output -> (B, n_classes) logits."""
        return self.from_features(self.stage_features(h))

    def stage_module(self) -> nn.Module:
        """The frozen part that computes the stage: its weights key the store's cache."""
        return self

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

    def forward_with_tags(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, pretrained tag probabilities (B, n_tags) or None) in one pass: a
        pretrained backbone gives its own tags beside the verdict."""
        return self(x), None

    @property
    def band_mean(self) -> torch.Tensor:
        """(n_mels,) the training bands' mean: what occlusion and saliency compare against."""
        return self.norm.mean


