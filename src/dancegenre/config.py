"""Frozen configuration dataclasses: the one source of truth for every parameter.

``FeatureConfig`` is written next to every prepared store and inside every
checkpoint; later stages read it back and never ask the user to repeat it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from dancegenre.errors import ConfigError

T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from a dict, refusing unknown keys (a typo must not pass)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"bad {cls.__name__}: {exc}") from None


CACHE_ENV = "DANCEGENRE_CACHE"


def given(config: T | None, cls: type[T]) -> T:
    """``config``, or ``cls()`` for None; anything else (a dict of options, say) is a
    ConfigError that says how to build one, not an AttributeError deep inside."""
    if config is None:
        return cls()
    if not isinstance(config, cls):
        raise ConfigError(f"config: give a dancegenre.config.{cls.__name__} (e.g. {cls.__name__}(**options), "
                          f"or {cls.__name__}.from_dict(options)), not {type(config).__name__}")
    return config


def check_probability(value: object, name: str) -> float:
    """``value`` if it is a number from 0 to 1 (a confidence threshold), else ConfigError;
    NaN is refused, as every comparison with it is False."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability from 0 to 1, not {value!r}")
    return float(value)


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` if it is a whole number of segments >= 1 (an inference batch), else ConfigError."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
    return batch_size


def cache_dir() -> Path:
    """The user's cache folder for what dancegenre derives once and keeps (converted
    pretrained weights, mel filters): ``$DANCEGENRE_CACHE``, else
    ``$XDG_CACHE_HOME/dancegenre``, else ``~/.cache/dancegenre``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dancegenre"


def weights_path(name: str) -> Path:
    """The converted weights of the pretrained network ``name`` in the cache folder
    (``models.pretrained`` writes them)."""
    return cache_dir() / f"{name}.pt"


@dataclass(frozen=True)
class FeatureConfig:
    """Signal parameters from decoded audio to network input.

    The defaults are the study's: 22,050 Hz mono, 128 log-mel bands from a
    2,048-point STFT with hop 512, cut into 3-second segments of 128 frames
    (ten per 30-second clip).
    """

    sample_rate: int = 22050  # Hz; the study's librosa default
    n_fft: int = 2048  # samples per STFT frame (93 ms at 22,050 Hz)
    hop_length: int = 512  # samples between frames (23 ms)
    n_mels: int = 128  # mel bands: the network's channels
    fmin: float = 0.0  # Hz, lowest mel band edge
    fmax: float | None = None  # Hz, highest edge; None means sample_rate / 2
    segment_frames: int = 128  # frames per segment: 128 * 512 / 22050 = 2.97 s
    segment_hop: int = 128  # frames between segment starts; < segment_frames overlaps
    amin: float = 1e-10  # power floor before log10, as librosa.power_to_db
    resample_quality: str = "HQ"  # soxr quality recipe: VHQ, HQ, MQ, LQ, QQ
    # How mel power becomes the network's input: "db" is 10*log10(max(power, amin)) (the
    # study's); "logC" is log10(1 + 10000*power), musicnn's compression.
    scale: str = "db"

    def __post_init__(self) -> None:
        checks = [
            # the upper bounds keep a typo (an extra digit or three) from asking for gigabytes
            (4000 <= self.sample_rate <= 192000, "sample_rate must be between 4000 and 192000 Hz"),
            (64 <= self.n_fft <= 65536 and self.n_fft % 2 == 0, "n_fft must be even, between 64 and 65536"),
            (0 < self.hop_length <= self.n_fft, "hop_length must be in (0, n_fft]"),
            (0 < self.n_mels <= self.n_fft // 2 + 1, "n_mels must be in (0, n_fft/2+1]"),
            (8 <= self.segment_frames <= 65536, "segment_frames must be between 8 and 65536"),
            (0 < self.segment_hop, "segment_hop must be positive"),
            (self.fmin >= 0, "fmin must be >= 0"),
            (self.fmax is None or self.fmin < self.fmax <= self.sample_rate / 2,
             "fmax must lie in (fmin, sample_rate/2]"),
            (self.amin > 0, "amin must be positive"),
            (self.resample_quality in ("VHQ", "HQ", "MQ", "LQ", "QQ"),
             "resample_quality must be one of VHQ, HQ, MQ, LQ, QQ"),
            (self.scale in SCALES, f"scale must be one of {', '.join(SCALES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def display_range(self) -> tuple[float, float]:
        """(vmin, vmax) for an image of this front end's values: one range for every image
        of a front end, so that images compare.  On the hard-techno clips 98% of the
        study's values lie in -34..+29 dB (the synthetic corpus: -47..+28), so 80 dB (as
        librosa's ``top_db``) from -50 to +30; musicnn's compression runs from 0 to 5.9."""
        return (0.0, 6.0) if self.scale == "logC" else (-50.0, 30.0)

    @property
    def scale_unit(self) -> str:
        """The unit of this front end's values, for a title."""
        return "log10(1 + 10000 power)" if self.scale == "logC" else "dB"

    @property
    def segment_seconds(self) -> float:
        """Seconds of audio one segment covers (frames times hop)."""
        return self.segment_frames * self.hop_length / self.sample_rate

    @property
    def segment_hop_seconds(self) -> float:
        """Seconds between the starts of two consecutive segments."""
        return self.segment_hop * self.hop_length / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["scale"] == "db":
            # Stores and checkpoints written before `scale` existed are dB: leaving the
            # default out keeps their config, digest and cache keys what they were.
            del data["scale"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        return _from_dict(cls, data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> FeatureConfig:
        """A named front end (``FRONTENDS``) with optional field overrides."""
        if name not in FRONTENDS:
            raise ConfigError(f"unknown front end {name!r}; choose from {', '.join(FRONTENDS)}")
        return dataclasses.replace(FRONTENDS[name], **overrides)

    def same_frontend(self, other: FeatureConfig) -> bool:
        """True when both compute the same frames (segment hop aside)."""
        return dataclasses.replace(self, segment_hop=other.segment_hop) == other

    @property
    def frontend(self) -> str | None:
        """The name of the preset this config computes, if any (segment hop aside)."""
        return next((name for name, cfg in FRONTENDS.items() if self.same_frontend(cfg)), None)

    def digest(self) -> str:
        """Short stable hash of every field: part of every cache key."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


SCALES = ("db", "logC")

FRONTENDS: dict[str, FeatureConfig] = {
    # The study's front end: 22,050 Hz, 128 bands, 2.97-s segments of 128 frames.
    "study": FeatureConfig(),
    # musicnn's (Pons & Serra 2019): 16 kHz, n_fft 512, hop 256, 96 bands, log10(1 +
    # 10000 mel), 3-s patches of 187 frames.  The original casts mel power to float16
    # before the log, which overflows to inf on loud masters; here it stays float32.
    "musicnn": FeatureConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96,
                             segment_frames=187, segment_hop=187, scale="logC"),
}


# The names the command line offers, written here (no torch) so that `--help` starts fast;
# the networks (dancegenre.models) are checked against them by the tests.
# Per-network ModelConfig defaults, besides ModelConfig's own:
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn1d": {},  # ModelConfig's own defaults are the study's network
    "crnn": {},
    "cnn2d": {"filters": (16, 32, 64), "kernel_size": 3, "pool_sizes": (2, 2, 2), "first_stride": 2},
    "musicnn-msd": {"head": "linear", "dense": 256},
    "musicnn-mtt": {"head": "linear", "dense": 256},
}
PRETRAINED_NAMES = ("musicnn-msd", "musicnn-mtt")  # networks whose weights come from the musicnn wheel
ACTIVATIONS = ("relu", "elu", "gelu", "silu", "selu", "leaky_relu", "mish", "tanh", "softplus")
POOLINGS = ("max", "avg", "meanmaxl2")
EMBED_LAYERS = ("all", "max_pool", "mean_pool", "penultimate", "taggram")  # `embed --layer`
ENGINES = ("auto", "onnx", "torch")  # `--engine` of predict, embed and tag: onnxruntime or torch
MAX_SEED = 2**32 - 1  # numpy's seeds run from 0 to this
UPLOAD_MB = (0.01, 1e6)  # serve's upload limit, MB: from a 10-kB clip to a terabyte
PORTS = (0, 65535)  # a TCP port; 0 asks for any free one
# The longest audio serve and tag accept, in seconds (3 hours: a long DJ mix or live set).
# It is read from the file's header before any decoding: a 1-MB FLAC of 12 hours of
# silence would otherwise cost serve 24 s of CPU an upload, and tag gigabytes.
MAX_AUDIO_SECONDS = 3 * 3600.0
AUDIO_SECONDS = (1.0, 7 * 24 * 3600.0)  # the range of that cap (--max-duration): a second to a week
# `synth --per-genre` at most: 200,000 clips are 100 GB of mp3; the clip list is made
# only after this check, so a typo (10^8) is refused before it takes gigabytes.
MAX_SYNTH_PER_GENRE = 100_000
# An experiment spec at most gives this many configurations (a grid's product of value
# counts, counted before it is expanded) and this many training runs (configurations x
# seeds x folds): beyond them a typo would take gigabytes to list them, and years to run.
MAX_CONFIGURATIONS = 10_000
MAX_EXPERIMENT_RUNS = 100_000
MAX_BLOCKS, MAX_WIDTH, MAX_KERNEL = 16, 4096, 1024  # ModelConfig's bounds (a 4096 x 4096 layer: 268 MB)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one network from the ``MODELS`` registry."""

    name: str = "cnn1d"  # key in dancegenre.models.MODELS
    n_classes: int = 2
    n_mels: int = 128  # input channels; must match FeatureConfig.n_mels
    filters: tuple[int, ...] = (64, 128, 128)  # channels of the three conv blocks
    kernel_size: int = 4  # along time for cnn1d/crnn; square for cnn2d
    first_stride: int = 1  # stride of the first convolution (cnn2d uses 2)
    pool_sizes: tuple[int, ...] = (4, 2, 2)  # max pooling after each conv block
    pooling: str = "max"  # temporal pooling: max (study), avg, meanmaxl2 (Dieleman)
    activation: str = "relu"  # any name in ACTIVATIONS
    dense: int = 128  # width of the hidden dense layer
    dropout: float = 0.5  # in the dense layers; the study found it needed there
    rnn: str = "gru"  # crnn only: gru or lstm
    rnn_hidden: int = 64  # crnn only: hidden units per direction
    head: str = "mlp"  # mlp: dense + activation + dropout (the study's); linear: one layer
    finetune: int = 0  # pretrained models: how many of the last blocks train (0: frozen)
    members: int = 1  # pretrained models on one frozen front end, averaged (train --folds K --ensemble)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        object.__setattr__(self, "pool_sizes", tuple(int(p) for p in self.pool_sizes))
        if self.n_classes < 2:
            raise ConfigError("a classifier needs at least 2 classes")
        if not self.filters or any(f <= 0 for f in self.filters):
            raise ConfigError("filters must be positive channel counts")
        # beyond these a typo (an extra digit or three) asks for gigabytes of weights
        widths = (*self.filters, self.dense, self.rnn_hidden)
        if len(self.filters) > MAX_BLOCKS or not all(1 <= w <= MAX_WIDTH for w in widths):
            raise ConfigError(f"at most {MAX_BLOCKS} conv blocks, and filters, dense and rnn_hidden between 1 and "
                              f"{MAX_WIDTH} each")
        if any(not 1 <= p <= MAX_KERNEL for p in self.pool_sizes):
            raise ConfigError(f"pool_sizes must be between 1 and {MAX_KERNEL}")
        if len(self.pool_sizes) != len(self.filters):
            raise ConfigError("pool_sizes needs one entry per conv block (filters)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout must be in [0, 1)")
        if not (1 <= self.kernel_size <= MAX_KERNEL and 1 <= self.first_stride <= MAX_KERNEL):
            raise ConfigError(f"kernel_size and first_stride must be between 1 and {MAX_KERNEL}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {self.pooling!r}; choose from {', '.join(POOLINGS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}")
        if self.rnn not in ("gru", "lstm"):
            raise ConfigError("rnn must be gru or lstm")
        if self.head not in ("linear", "mlp"):
            raise ConfigError("head must be linear or mlp")
        if self.finetune < 0:
            raise ConfigError("finetune must be >= 0")
        if self.members < 1:
            raise ConfigError("members must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["filters"] = list(self.filters)
        data["pool_sizes"] = list(self.pool_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, split and augmentation settings of one training run."""

    epochs: int = 30  # upper bound; early stopping usually ends sooner
    batch_size: int = 64  # segments per step
    lr: float = 1e-3  # AdamW learning rate
    backbone_lr: float | None = None  # pretrained blocks unfrozen by finetune; None: lr / 3
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    patience: int = 6  # epochs without validation-loss improvement before stopping
    val_fraction: float = 0.15  # of groups, stratified by label
    test_fraction: float = 0.15  # of groups, stratified by label
    split_by: str | None = None  # grouping column; None picks track_id, then item
    seed: int = 0
    class_weights: bool = False  # weight the loss by inverse class frequency
    label_smoothing: float = 0.0  # of the training targets, in [0, 1)
    augment: bool = False  # time shift + SpecAugment masks + mixup on training batches
    # Beta(alpha, alpha) mixing of examples when augment is on; None: 0.2 on segments and
    # on frozen features, off on a cached front end (finetune 1-4), where it is opt-in
    mixup_alpha: float | None = None
    time_masks: int = 2  # SpecAugment masks per example when augment is on
    freq_masks: int = 2
    mask_width: int = 12  # maximum width of one mask in frames / bands
    device: str = "auto"  # auto picks cuda when available
    # how a pretrained network's frozen part is computed for the store's cache on the CPU:
    # auto: onnxruntime where it can (training.backbone), else torch; torch: always torch
    engine: str = "auto"
    folds: int = 0  # >1: grouped k-fold cross-validation instead of one split
    fold: int | None = None  # with folds: which test fold this run holds out
    labels: tuple[str, ...] | None = None  # train on these genres only; None: all in the store
    # > 0: validate, keep and test an exponential moving average of the weights, updated
    # after every step with this decay (0.999: about the last thousand steps); 0: the weights
    ema: float = 0.0

    def mixup_for(self, cached_maps: bool) -> float:
        """The mixup strength that applies: ``mixup_alpha``, or its default for the input
        (0.2; 0 on a cached front end's maps)."""
        if self.mixup_alpha is not None:
            return self.mixup_alpha
        return 0.0 if cached_maps else 0.2

    def __post_init__(self) -> None:
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(v) for v in self.labels))
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if not (0 < self.val_fraction < 0.5 and 0 <= self.test_fraction < 0.5):
            raise ConfigError("val_fraction must be in (0, 0.5), test_fraction in [0, 0.5)")
        rates = [self.lr, self.weight_decay] + ([self.backbone_lr] if self.backbone_lr is not None else [])
        if (not all(math.isfinite(r) for r in rates) or self.lr <= 0 or self.weight_decay < 0
                or (self.backbone_lr is not None and self.backbone_lr <= 0)):
            raise ConfigError("lr and backbone_lr must be positive and weight_decay non-negative (finite numbers)")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be between 0 and {MAX_SEED}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("label_smoothing must be in [0, 1)")
        if self.engine not in ("auto", "torch"):
            raise ConfigError(f"engine must be auto or torch, not {self.engine!r}")
        if self.mixup_alpha is not None and not 0 <= self.mixup_alpha < math.inf:
            raise ConfigError("mixup_alpha must be a finite number >= 0 (0: off)")
        if not 0 <= self.ema < 1:
            raise ConfigError("ema must be in [0, 1) (0: off)")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError("folds must be 0 (one split) or at least 2")
        if self.fold is not None and not (0 <= self.fold < max(self.folds, 1)):
            raise ConfigError("fold must be in [0, folds)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)


__all__ = ["FeatureConfig", "ModelConfig", "TrainConfig"]
