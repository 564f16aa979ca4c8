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
``torch.onnx.export``), and :func:`open_session` and :func:`read_metadata` read it
(``inference.portable``, ``training.backbone``).
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
from dancegenre.safety import atomic_path, check_output_file

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
    that is the checkpoint itself, not a ``.onnx`` file, or a file that is not one of
    our ONNX files (:func:`~dancegenre.safety.check_output_file`).
    """
    import torch

    from dancegenre.models.musicnn import PRETRAINED
    from dancegenre.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    # beside the checkpoint, or where asked: never the checkpoint, nor an ONNX file of the user's
    dest = check_output_file(Path(dest) if dest is not None else onnx_path_of(ckpt.path), suffixes=(".onnx",),
                             inputs=[ckpt.path], what="the ONNX file")
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
    return write_onnx(Portable().eval(), example, dest, outputs, meta)


def write_onnx(module: Any, example: Any, dest: Path, outputs: list[str], meta: dict[str, Any], *,
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


def open_session(path: Path, threads: int) -> Any:
    """An onnxruntime session of ``path`` on ``threads`` threads (CPU).  Raises
    CheckpointError for a missing or damaged file; ImportError without onnxruntime."""
    if not path.is_file():
        raise CheckpointError(f"no ONNX model at {path}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Between two calls this process decodes the next files: threads that spin-wait for
    # work would take a core from it (predict --workers 1 used twice the CPU time).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds on a damaged graph
        raise CheckpointError(f"not a loadable ONNX model ({first_line(exc)}): {path}") from None


def read_metadata(session: Any, path: Path) -> dict[str, Any]:
    """The ``dancegenre`` metadata of a session's file, checked for format and version."""
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    try:
        meta = json.loads(raw) if raw else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"not a dancegenre ONNX model (no {META_KEY!r} metadata): {path}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"ONNX model version {meta.get('version')} is not {VERSION}: {path}")
    return meta


def try_export(checkpoint: str | os.PathLike[str], log: Any = print) -> Path | None:
    """``export_onnx`` for ``train``: a network the exporter cannot handle costs a line
    (``predict`` then runs the checkpoint with torch), never the run."""
    try:
        return export_onnx(checkpoint)
    except (CheckpointError, OutputError, ImportError, RuntimeError, ValueError) as exc:
        log(f"no portable model beside {checkpoint} ({first_line(exc)}); predict will use torch")
        return None
