"""A checkpoint as one portable ONNX file: the network, softmax included, and what it needs.

``export_onnx("RUN/best.pt")`` writes ``RUN/best.onnx``.  It holds the whole network,
normalisation buffers and softmax included, and, in its metadata, the labels, the
feature config, the pretrained tag names of a musicnn run, and the sha256 of the
checkpoint it came from.  ``predict`` runs it with onnxruntime when it matches the
checkpoint, so a one-file prediction does not pay for importing torch (about 2 s).
The same file runs in onnxruntime-web, in a browser, and in any program with an ONNX
runtime; the mel front end (``FeatureConfig``) is what such a program must compute.

``train`` writes it beside every ``best.pt`` and ``ensemble.pt``; ``dancegenre export``
writes it for older runs.  Only this module imports ``onnx`` (through
``torch.onnx.export``); only ``inference.portable`` reads the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from dancegenre import __version__
from dancegenre.errors import CheckpointError, OutputError, first_line
from dancegenre.safety import atomic_path

FORMAT = "dancegenre-onnx"
VERSION = 1
META_KEY = "dancegenre"  # the one metadata_props entry: JSON of FORMAT, VERSION and the rest
OPSET = 17  # onnxruntime 1.16+ and onnxruntime-web run it


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_path_of(checkpoint: str | os.PathLike[str]) -> Path:
    """Where the portable file of a checkpoint lives: ``X.pt`` -> ``X.onnx`` beside it;
    a run folder -> its ``best.onnx``."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "best.pt"
    return path.with_suffix(".onnx")


def export_onnx(checkpoint: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None) -> Path:
    """Write the network of ``checkpoint`` (a ``.pt`` file or a run folder) as ONNX.

    Input ``segments``: (batch, n_mels, segment_frames) float32 log-mel, the output of
    the checkpoint's own front end.  Outputs ``probabilities`` (batch, n_classes) and,
    for a pretrained musicnn network, ``tags`` (batch, n_tags).  ``dest`` defaults to
    ``onnx_path_of(checkpoint)``; it is written whole or not at all and never replaces
    the checkpoint.

    Raises
    ------
    CheckpointError for a checkpoint that does not load; OutputError for a ``dest``
    that is the checkpoint itself or not a ``.onnx`` file.
    """
    import torch

    from dancegenre.models.musicnn import PRETRAINED
    from dancegenre.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    dest = Path(dest) if dest is not None else onnx_path_of(ckpt.path)
    if dest.suffix.lower() != ".onnx":
        raise OutputError(f"an ONNX file must end in .onnx: {dest}")
    if dest.exists() and os.path.samefile(dest, ckpt.path):
        raise OutputError(f"the ONNX file would replace the checkpoint {ckpt.path}")
    net = ckpt.model.eval()
    tag_names = PRETRAINED[ckpt.model_config.name][1] if ckpt.model_config.name in PRETRAINED else []

    class Portable(torch.nn.Module):
        """(B, n_mels, T) -> softmax probabilities (B, n_classes) [, tags (B, n_tags)]."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            logits, tags = self.net.forward_with_tags(x)
            return (torch.softmax(logits, dim=1),) + ((tags,) if tags is not None else ())

    fc = ckpt.feature_config
    example = torch.zeros(2, fc.n_mels, fc.segment_frames)
    outputs = ["probabilities", "tags"] if tag_names else ["probabilities"]
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "dancegenre_version": __version__,
        "model": ckpt.model_config.name, "labels": ckpt.labels, "feature_config": fc.to_dict(),
        "tags": list(tag_names), "checkpoint": Path(ckpt.path).name,
        "checkpoint_sha256": file_sha256(ckpt.path),
    }
    return _write(Portable().eval(), example, dest, outputs, meta)


BACKBONE_OUTPUTS = ("features", "max_pool", "mean_pool", "penultimate", "taggram")
FRONTEND_OUTPUTS = ("frontend",)


def export_backbone(net: Any, dest: str | os.PathLike[str], *, name: str, weights: str,
                    stage: str = "features") -> Path:
    """Write a pretrained musicnn backbone (``MusiCNNBackbone``, weights ``weights``, a
    digest) as ONNX, which ``embed``, ``tag`` and ``train`` (the cached features of a
    frozen backbone, or its front end's maps) run with onnxruntime, a third faster than
    torch on this CPU.  Input ``segments`` (batch, 96, frames).  ``stage`` ``features``:
    outputs :data:`BACKBONE_OUTPUTS`, ``features`` (the 1,756 values of ``--layer all``,
    as ``backbone_features`` concatenates them) then each layer; ``frontend``: the front
    end's maps (batch, 561, frames).  Written whole or not at all."""
    import torch

    from dancegenre.models.musicnn import N_MELS, PRETRAINED, backbone_features

    if stage not in ("features", "frontend"):
        raise ValueError(f"unknown stage {stage!r}")

    class Layers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if stage == "frontend":
                return (self.net.frontend(x),)
            out = self.net(x)
            return (backbone_features(out), *(out[k] for k in BACKBONE_OUTPUTS[1:]))

    outputs = BACKBONE_OUTPUTS if stage == "features" else FRONTEND_OUTPUTS
    meta = {"format": FORMAT, "version": VERSION, "dancegenre_version": __version__, "kind": f"backbone {stage}",
            "model": name, "weights": weights, "tags": list(PRETRAINED[name][1]) if name in PRETRAINED else []}
    axes = {"segments": {0: "batch", 2: "frames"}, **{o: {0: "batch"} for o in outputs}}
    if stage == "frontend":
        axes["frontend"] = {0: "batch", 2: "frames"}
    return _write(Layers().eval(), torch.zeros(2, N_MELS, 187), Path(dest), list(outputs), meta, axes=axes)


def _write(module: Any, example: Any, dest: Path, outputs: list[str], meta: dict[str, Any], *,
           axes: dict[str, dict[int, str]] | None = None) -> Path:
    """Trace ``module`` on ``example`` into ``dest`` (input ``segments``; ``axes``, the
    free axes of each input and output, default the batch axis), with ``meta`` as its
    ``dancegenre`` metadata; atomically."""
    import torch

    axes = axes or {name: {0: "batch"} for name in ["segments", *outputs]}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        with torch.no_grad():
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["segments"], output_names=outputs, dynamic_axes=axes)
        import onnx

        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(meta)
        model.producer_name, model.producer_version = "dancegenre", __version__
        onnx.save(model, str(tmp))
    return dest


def try_export(checkpoint: str | os.PathLike[str], log: Any = print) -> Path | None:
    """``export_onnx`` for ``train``: a network the exporter cannot handle costs a line
    (``predict`` then runs the checkpoint with torch), never the run."""
    try:
        return export_onnx(checkpoint)
    except (CheckpointError, OutputError, ImportError, RuntimeError, ValueError) as exc:
        log(f"no portable model beside {checkpoint} ({first_line(exc)}); predict will use torch")
        return None
