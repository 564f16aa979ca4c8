"""The networks trained from scratch: CNN1D (the study's), CRNN and CNN2D."""

from __future__ import annotations

import torch
from torch import nn

from dancegenre.config import MODEL_DEFAULTS, ModelConfig
from dancegenre.models.base import Network, _activation, temporal_pool


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

    DEFAULTS = MODEL_DEFAULTS["cnn1d"]

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

    DEFAULTS = MODEL_DEFAULTS["crnn"]

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

    DEFAULTS = MODEL_DEFAULTS["cnn2d"]

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


