"""musicnn (Pons & Serra, 2019) in PyTorch, and the registry's pretrained networks.

:class:`MusiCNNBackbone` re-implements the TF1 network of the ``musicnn`` package
layer for layer, so that its MSD and MTT weights (read by ``dancegenre.pretrained``)
give the original's outputs:

- front end: batch norm of the input, then musically motivated filters: two timbral
  convolutions (7 frames x 38 or 67 mel bands, 204 filters each) and three temporal
  ones (128, 64 and 32 frames x 1 band, 51 filters each), each followed by ReLU, batch
  norm and a max over frequency;
- mid end: three 7-frame convolutions of 64 filters with residual connections, densely
  concatenated with the front end: 561 + 3 x 64 = 753 channels a frame;
- back end: max and mean over time (``max_pool``, ``mean_pool``), batch norm, a dense
  layer of 200 (``penultimate``) and the 50 tag logits (``taggram`` after a sigmoid).

TF's batch norm uses epsilon 1e-3, and its "same" padding of an even kernel puts the
extra frame at the end; both are reproduced.  :class:`MusiCNN` wraps the backbone for
the registry: frozen by default (``finetune`` unfreezes the last blocks), its features
standardised and fed to a new ``linear`` or ``mlp`` head for the store's labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dancegenre.config import MODEL_DEFAULTS, ModelConfig
from dancegenre.errors import ConfigError
from dancegenre.models.base import BandNorm, Network

TF_BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default epsilon

MSD_TAGS = ['rock', 'pop', 'alternative', 'indie', 'electronic', 'female vocalists', 'dance', '00s',
            'alternative rock', 'jazz', 'beautiful', 'metal', 'chillout', 'male vocalists', 'classic rock',
            'soul', 'indie rock', 'Mellow', 'electronica', '80s', 'folk', '90s', 'chill', 'instrumental',
            'punk', 'oldies', 'blues', 'hard rock', 'ambient', 'acoustic', 'experimental',
            'female vocalist', 'guitar', 'Hip-Hop', '70s', 'party', 'country', 'easy listening', 'sexy',
            'catchy', 'funk', 'electro', 'heavy metal', 'Progressive rock', '60s', 'rnb', 'indie pop',
            'sad', 'House', 'happy']
MTT_TAGS = ['guitar', 'classical', 'slow', 'techno', 'strings', 'drums', 'electronic', 'rock', 'fast',
            'piano', 'ambient', 'beat', 'violin', 'vocal', 'synth', 'female', 'indian', 'opera', 'male',
            'singing', 'vocals', 'no vocals', 'harpsichord', 'loud', 'quiet', 'flute', 'woman',
            'male vocal', 'no vocal', 'pop', 'soft', 'sitar', 'solo', 'man', 'classic', 'choir', 'voice',
            'new age', 'dance', 'male voice', 'female vocal', 'beats', 'harp', 'cello', 'no voice',
            'weird', 'country', 'metal', 'female voice', 'choral']
# registry name -> (checkpoint folder in the musicnn wheel, tag names)
PRETRAINED = {"musicnn-msd": ("MSD_musicnn", MSD_TAGS), "musicnn-mtt": ("MTT_musicnn", MTT_TAGS)}
N_MELS = 96
FRONT_CHANNELS = 561  # 2 x 204 timbral + 3 x 51 temporal
MID_CHANNELS = 753  # front end + 3 x 64 mid end
FEATURES = 2 * MID_CHANNELS + 200 + 50  # max_pool, mean_pool, penultimate, taggram
# Blocks that --finetune unfreezes, last first.
BLOCKS = ("backend", "mid3", "mid2", "mid1", "frontend")


def _bn(channels: int) -> nn.Module:
    return nn.BatchNorm1d(channels, eps=TF_BN_EPS)


def _conv_relu_bn_freqmax(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """max over frequency of bn(relu(conv(x))): (B, 1, T', F) -> (B, C, T).

    In eval mode batch norm is ``a * v + b`` per channel, so the maximum over frequency
    is taken before it: of the conv output where ``a >= 0``, of its negation (the
    minimum) where ``a < 0``.  The result is the same, without ReLU and batch norm over
    the full (C, T, F) map (most of the block's time besides the convolution).
    """
    if bn.training:
        return bn(F.relu(conv(x))).amax(dim=3)
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
    sign = torch.where(a >= 0, 1.0, -1.0)
    z = F.conv2d(x, conv.weight * sign[:, None, None, None], conv.bias * sign)  # (B, C, T, F)
    v = z.amax(dim=3) * sign[None, :, None]  # max of z, or min where a < 0
    return F.relu(v) * a[None, :, None] + (bn.bias - bn.running_mean * a)[None, :, None]


class _Timbral(nn.Module):
    """(B, 1, T+6, 96) padded -> (B, filters, T): conv over (7 frames x bands), ReLU, BN, max over frequency."""

    def __init__(self, bands: int, filters: int = 204) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, filters, (7, bands))
        self.bn = nn.BatchNorm2d(filters, eps=TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_relu_bn_freqmax(self.conv, self.bn, x)


class _Temporal(nn.Module):
    """(B, 1, T, 96) -> (B, filters, T): conv over (length frames x 1 band) with TF "same" padding."""

    def __init__(self, length: int, filters: int = 51) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, filters, (length, 1))
        self.bn = nn.BatchNorm2d(filters, eps=TF_BN_EPS)
        self.pad = ((length - 1) // 2, length // 2)  # TF puts the odd frame at the end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_relu_bn_freqmax(self.conv, self.bn, F.pad(x, (0, 0, *self.pad)))


class _Mid(nn.Module):
    """(B, C, T) -> (B, 64, T): 7-frame convolution, ReLU, BN."""

    def __init__(self, channels: int, filters: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, filters, 7, padding=3)
        self.bn = _bn(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class MusiCNNBackbone(nn.Module):
    """The pretrained network: (B, 96, T) log-compressed mel -> named outputs.

    ``forward`` returns a dict of ``max_pool`` and ``mean_pool`` (B, 753),
    ``penultimate`` (B, 200), ``logits`` and ``taggram`` (B, 50), as the original's
    ``extractor`` names them.  T is 187 frames (3 s) in training; any T >= 1 works.
    """

    def __init__(self, n_tags: int = 50) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=TF_BN_EPS)
        self.timbral = nn.ModuleList([_Timbral(int(0.4 * N_MELS)), _Timbral(int(0.7 * N_MELS))])
        self.temporal = nn.ModuleList([_Temporal(128), _Temporal(64), _Temporal(32)])
        self.mid = nn.ModuleList([_Mid(FRONT_CHANNELS), _Mid(64), _Mid(64)])
        self.pool_bn = _bn(2 * MID_CHANNELS)
        self.dense = nn.Linear(2 * MID_CHANNELS, 200)
        self.dense_bn = _bn(200)
        self.dropout = nn.Dropout(0.5)
        self.output = nn.Linear(200, n_tags)

    def blocks(self) -> dict[str, list[nn.Module]]:
        """The parts ``--finetune`` unfreezes, by name (see ``BLOCKS``)."""
        return {"frontend": [self.input_bn, self.timbral, self.temporal], "mid1": [self.mid[0]],
                "mid2": [self.mid[1]], "mid3": [self.mid[2]],
                "backend": [self.pool_bn, self.dense, self.dense_bn, self.output]}

    def frontend(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 96, T) -> (B, 561, T): timbral and temporal features."""
        h = self.input_bn(x.transpose(1, 2).unsqueeze(1))  # (B, 1, T, 96): time x frequency
        padded = F.pad(h, (0, 0, 3, 3))
        return torch.cat([b(padded) for b in self.timbral] + [b(h) for b in self.temporal], dim=1)

    # Inference runs two patches at a time: the timbral convolutions' working set then
    # stays in cache (on a 2-core AVX2 CPU: 33 ms a patch at 2, 57 at 16, 90 at 64).
    INFERENCE_CHUNK = 2

    def _chunked(self, x: torch.Tensor) -> bool:
        # (a trace for ONNX runs with a batch of 2: it records the unchunked graph)
        return not torch.is_grad_enabled() and not self.training and x.shape[0] > self.INFERENCE_CHUNK

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._chunked(x):
            parts = [self._forward(c) for c in torch.split(x, self.INFERENCE_CHUNK)]
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return self._forward(x)

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """``frontend`` in inference chunks, as ``forward`` runs it."""
        if self._chunked(x):
            return torch.cat([self.frontend(c) for c in torch.split(x, self.INFERENCE_CHUNK)])
        return self.frontend(x)

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.from_front(self.frontend(x))

    def from_front(self, front: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mid and back ends on the front end's output (B, 561, T): ``forward``'s dict."""
        m1 = self.mid[0](front)
        m2 = self.mid[1](m1) + m1
        m3 = self.mid[2](m2) + m2
        h = torch.cat([front, m1, m2, m3], dim=1)  # (B, 753, T)
        max_pool, mean_pool = h.amax(dim=2), h.mean(dim=2)
        # TF flattens (B, 753, [max, mean]): the two statistics interleave per channel.
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # (B, 1506)
        flat = self.dropout(self.pool_bn(flat))
        penultimate = self.dense_bn(F.relu(self.dense(flat)))
        logits = self.output(self.dropout(penultimate))
        return {"max_pool": max_pool, "mean_pool": mean_pool, "penultimate": penultimate,
                "logits": logits, "taggram": torch.sigmoid(logits)}


class FeatureNorm(BandNorm):
    """(B, D) -> (B, D): standardise each feature with training statistics (buffers)."""

    MIN_STD = 1e-4  # some tag probabilities barely move on dance music

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def backbone_features(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's input from the backbone's outputs: (B, FEATURES)."""
    return torch.cat([out["max_pool"], out["mean_pool"], out["penultimate"], out["taggram"]], dim=1)


__all__ = ["BLOCKS", "FEATURES", "FeatureNorm", "MSD_TAGS", "MTT_TAGS", "MusiCNNBackbone", "PRETRAINED",
           "backbone_features"]


def check_finetune(config: ModelConfig) -> None:
    if not 0 <= config.finetune <= len(BLOCKS):
        raise ConfigError(f"finetune must be in [0, {len(BLOCKS)}] (blocks: {', '.join(BLOCKS)}, last first)")


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

    DEFAULTS = MODEL_DEFAULTS["musicnn-msd"]  # the same for musicnn-mtt
    FRONTEND = "musicnn"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.n_mels != 96:
            raise ConfigError(f"{config.name} takes 96 mel bands (the musicnn front end), not {config.n_mels}")
        check_finetune(config)
        self.backbone = MusiCNNBackbone()
        self.feature_norm = FeatureNorm(FEATURES)
        self.head = self._head(FEATURES)
        # An ensemble (train --folds K --ensemble): the verdict is the mean probability of K
        # members on one frozen front end.  A member is [standardise, head] on the shared
        # frozen backbone (finetune 0), or [standardise, head, its own fine-tuned backbone,
        # of which only the mid and back ends run] (finetune 1-4).
        if config.members > 1 and config.finetune >= len(BLOCKS):
            raise ConfigError("an ensemble shares one frozen front end: --finetune 0 to "
                              f"{len(BLOCKS) - 1}, not {config.finetune}")
        n = config.members if config.members > 1 else 0
        self.members = nn.ModuleList(
            nn.ModuleList([FeatureNorm(FEATURES), self._head(FEATURES), MusiCNNBackbone()]) if config.finetune
            else nn.Sequential(FeatureNorm(FEATURES), self._head(FEATURES)) for _ in range(n))
        self._frozen: list[nn.Module] = []
        self.set_finetune(config.finetune)

    def set_finetune(self, n: int) -> None:
        """Freeze the backbone but for its last ``n`` blocks (they also leave eval mode)."""
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
        for m in self._frozen:
            m.eval()
        # Batch norms keep their pretrained statistics even in unfrozen blocks (their
        # scale and shift train): batches of a few hundred clips would only add noise.
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        if self.config.finetune == 0:
            self.backbone.eval()
        return self

    @classmethod
    def stage_for(cls, config: ModelConfig) -> str | None:
        """``features`` for a frozen backbone; ``frontend`` (its 561 channels a frame) while
        the front end stays frozen, so that fine-tuning the mid and back ends never runs
        the front end's 2.3 GFLOP a patch again; None once the front end trains too."""
        if config.finetune == 0:
            return "features"
        return "frontend" if config.finetune < len(BLOCKS) else None

    def stage(self, x: torch.Tensor) -> torch.Tensor:
        if self.cached_stage == "frontend":
            return self.backbone.front(x)
        return self.features(x)

    def stage_features(self, h: torch.Tensor) -> torch.Tensor:
        return backbone_features(self.backbone.from_front(h)) if self.cached_stage == "frontend" else h

    def stage_module(self) -> nn.Module:
        if self.cached_stage == "frontend":
            return nn.ModuleList(self.backbone.blocks()["frontend"])
        return self.backbone

    def explain_blocks(self) -> list[tuple[str, nn.Module]]:
        b = self.backbone
        front = [("timbral-38", b.timbral[0]), ("timbral-67", b.timbral[1]), ("temporal-128", b.temporal[0]),
                 ("temporal-64", b.temporal[1]), ("temporal-32", b.temporal[2])]
        if self._tuned_members:  # each member has its own mid end: only the shared front end is one
            return front
        return front + [("mid1", b.mid[0]), ("mid2", b.mid[1]), ("mid3", b.mid[2])]

    def first_conv(self) -> nn.Module | None:
        return None  # its filters slide over frequency: no fixed band response to show

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return backbone_features(self.backbone(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_norm(self.features(x))

    @property
    def _tuned_members(self) -> bool:
        """An ensemble of fine-tuned members: each runs its own mid and back ends."""
        return len(self.members) > 0 and self.config.finetune > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_tags(x)[0] if self._tuned_members else super().forward(x)

    def forward_with_tags(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._tuned_members:
            return self._members_from_front(self.backbone.front(x))
        named = self.backbone(x)
        return self.from_features(backbone_features(named)), named["taggram"]

    def from_stage(self, h: torch.Tensor) -> torch.Tensor:
        return self._members_from_front(h)[0] if self._tuned_members else super().from_stage(h)

    def _members_from_front(self, front: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log of the members' mean probability, the first member's taggram) from the
        shared front end's maps (B, 561, T)."""
        probs, taggram = [], None
        for norm, head, backbone in self.members:
            named = backbone.from_front(front)
            taggram = named["taggram"] if taggram is None else taggram
            probs.append(torch.softmax(head(norm(backbone_features(named))), dim=1))
        return torch.log(torch.stack(probs).mean(0).clamp_min(1e-12)), taggram

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        if len(self.members):  # log of the members' mean probability: softmax gives it back
            probs = torch.stack([torch.softmax(m[1](m[0](f)), dim=1) for m in self.members]).mean(0)
            return torch.log(probs.clamp_min(1e-12))
        return self.head(self.feature_norm(f))
