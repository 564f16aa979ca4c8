"""The pretrained musicnn as ONNX: written once into the cache folder, run by onnxruntime.

onnxruntime's CPU convolutions run musicnn's 2.7 GFLOP a patch about a third faster than
the torch port here (``bench_embed``).  So ``embed`` and ``tag`` run the pretrained
network from an ONNX file of it, and ``train`` computes what it caches per store (a
frozen backbone's features, or the front end's maps while the later blocks fine-tune)
the same way on the CPU.

- :func:`export_backbone` writes a stage of a ``MusiCNNBackbone`` as ONNX;
- :func:`backbone_session` writes it once into ``<cache>/onnx/`` (named by the network,
  the stage and the weights' digest) and opens it on every core; torch serves where
  onnxruntime is missing or the cache cannot be written;
- :func:`cached_backbone` finds the pretrained network's file through a stamp of its
  weights file without importing torch (``embed``/``tag`` on one file start in a second);
- :func:`onnx_stage` is a network's cached stage through it (``fit``).

Importing this module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from dancegenre.config import weights_path
from dancegenre.errors import CheckpointError, first_line
from dancegenre.training.export import (
    FORMAT,
    VERSION,
    file_sha256,
    open_session,
    read_metadata,
    write_onnx,
)

BACKBONE_OUTPUTS = ("features", "max_pool", "mean_pool", "penultimate", "taggram")
FRONTEND_OUTPUTS = ("frontend",)
STAGES = {"features": BACKBONE_OUTPUTS, "frontend": FRONTEND_OUTPUTS}


def export_backbone(net: Any, dest: str | os.PathLike[str], *, name: str, weights: str,
                    stage: str = "features") -> Path:
    """Write a pretrained musicnn backbone (``MusiCNNBackbone``, weights ``weights``, a
    digest) as ONNX.  Input ``segments`` (batch, 96, frames).  ``stage`` ``features``:
    outputs :data:`BACKBONE_OUTPUTS`, ``features`` (the 1,756 values of ``--layer all``,
    as ``backbone_features`` concatenates them) then each layer; ``frontend``: the front
    end's maps (batch, 561, frames).  The metadata holds the digest and the tag names.
    Written whole or not at all."""
    import torch

    from dancegenre import __version__
    from dancegenre.models.musicnn import N_MELS, PRETRAINED, backbone_features

    if stage not in STAGES:
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

    outputs = STAGES[stage]
    meta = {"format": FORMAT, "version": VERSION, "dancegenre_version": __version__, "kind": f"backbone {stage}",
            "model": name, "weights": weights, "tags": list(PRETRAINED[name][1]) if name in PRETRAINED else []}
    axes = {"segments": {0: "batch", 2: "frames"}, **{o: {0: "batch"} for o in outputs}}
    if stage == "frontend":
        axes["frontend"] = {0: "batch", 2: "frames"}
    return write_onnx(Layers().eval(), torch.zeros(2, N_MELS, 187), Path(dest), list(outputs), meta, axes=axes)


def onnx_folder() -> Path:
    """The folder of the ONNX files and stamps: ``<cache>/onnx`` (safe to delete: the
    files are made again on first use)."""
    from dancegenre.config import cache_dir

    return cache_dir() / "onnx"


def backbone_onnx_path(name: str, digest: str, *, stage: str = "features") -> Path:
    """Where the ONNX file of a pretrained network's ``stage`` with weights ``digest`` is
    kept: named by the network, the stage and the digest."""
    part = "" if stage == "features" else f"-{stage}"
    return onnx_folder() / f"{name}{part}-{digest}.onnx"


def backbone_stamp_path(name: str) -> Path:
    """The stamp that ties the cached weights file of ``name`` (its sha256) to the
    digest, and so to the ONNX file, of those weights."""
    return onnx_folder() / f"{name}.json"


def backbone_meta(session: Any, path: Path, stage: str, digest: str) -> dict[str, Any] | None:
    """The metadata of a session of :func:`export_backbone`'s file of ``stage`` with
    weights ``digest``, or None when the file is of another stage, weights or layout (a
    file of an earlier dancegenre: it is then written again)."""
    try:
        meta = read_metadata(session, path)
    except CheckpointError:
        return None
    tags = meta.get("tags")
    if (tuple(o.name for o in session.get_outputs()) != STAGES.get(stage) or meta.get("kind") != f"backbone {stage}"
            or meta.get("weights") != digest or not isinstance(tags, list)
            or not all(isinstance(t, str) for t in tags)):
        return None
    return meta


def backbone_session(name: str, net: Any, *, stage: str = "features", digest: str | None = None,
                     log: Callable[[str], Any] = print) -> Any | None:
    """An onnxruntime session, on every core, of ``stage`` of the pretrained network
    ``name`` (``net``, a ``MusiCNNBackbone`` in eval mode, weights ``digest``, by
    default its own).  The file is written once (:func:`backbone_onnx_path`); a damaged
    one is written again.  None where onnxruntime is not installed or the file cannot
    be written (a read-only cache), with a line: torch serves then."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    if digest is None:
        from dancegenre.models.embedding import weights_digest

        digest = weights_digest(net)
    path = backbone_onnx_path(name, digest, stage=stage)
    for attempt in range(2):
        if not path.is_file():
            try:
                export_backbone(net, path, name=name, weights=digest, stage=stage)
            except (OSError, RuntimeError, ValueError, ImportError) as exc:
                log(f"{name} runs with torch: its ONNX file could not be written ({first_line(exc)})")
                return None
        try:
            session = open_session(path, os.cpu_count() or 1)
            if backbone_meta(session, path, stage, digest) is not None:
                return session
        except CheckpointError:
            pass
        if attempt == 0:
            path.unlink(missing_ok=True)  # our own cache file, damaged or of another layout: made again
    return None


def stamp_backbone(name: str, digest: str) -> None:
    """Tie the cached weights file of ``name`` to their digest, so that the next
    ``embed`` or ``tag`` finds the ONNX file without torch; a cache that cannot be
    written only costs that."""
    from dancegenre.safety import atomic_write

    try:
        atomic_write(backbone_stamp_path(name),
                     json.dumps({"weights_sha256": file_sha256(weights_path(name)), "digest": digest}))
    except OSError:
        pass


def cached_backbone(name: str) -> tuple[Any, dict[str, Any]] | None:
    """The onnxruntime session (every core) of the pretrained network ``name`` made
    from its cached weights file, and its metadata (``weights``: the digest;
    ``tags``), without importing torch.  None when the stamp, the weights or the ONNX
    file is missing or does not match: the caller then loads the network with torch,
    :func:`backbone_session` and :func:`stamp_backbone`."""
    try:
        stamp = json.loads(backbone_stamp_path(name).read_text())
        if stamp.get("weights_sha256") != file_sha256(weights_path(name)):
            return None
        path = backbone_onnx_path(name, str(stamp["digest"]))
        session = open_session(path, os.cpu_count() or 1)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CheckpointError, ImportError):
        return None
    meta = backbone_meta(session, path, "features", str(stamp["digest"]))
    return None if meta is None else (session, meta)


def onnx_stage(net: Any, device: Any, log: Callable[[str], Any] = print) -> Callable[[Any], Any] | None:
    """``net``'s cached stage (``net.cached_stage``) through onnxruntime, where it can
    run there: a pretrained musicnn on the CPU (``store_features(stage_fn=...)``).
    None otherwise.  The session is opened on the first call (a store whose cache is
    there never needs it); where it cannot be had, torch computes the stage."""
    from dancegenre.config import PRETRAINED_NAMES

    stage = getattr(net, "cached_stage", None)
    name = getattr(getattr(net, "config", None), "name", None)
    if str(device) != "cpu" or name not in PRETRAINED_NAMES or stage not in STAGES:
        return None
    import numpy as np
    import torch

    from dancegenre.models.embedding import weights_digest

    torch_stage = net.stage
    opened: list[Any] = []

    def run(x: torch.Tensor) -> torch.Tensor:
        if not opened:
            opened.append(backbone_session(name, net.backbone, stage=stage, log=log,
                                           digest=weights_digest(net.stage_module())))
        if opened[0] is None:
            return torch_stage(x)
        out = opened[0].run([stage], {"segments": np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)

    return run
