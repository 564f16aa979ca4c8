"""Running an exported network (``training.export``) with onnxruntime, without torch.

``PortableModel.open("RUN/best.onnx")`` reads the file's metadata (labels, feature
config, tag names) and scores segments; ``current_export("RUN")`` opens the ONNX file
of a checkpoint only when it was exported from that very checkpoint (same sha256), so
a retrained run never answers with stale weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from dancegenre.config import FeatureConfig
from dancegenre.errors import CheckpointError, ConfigError, LabelError, first_line
from dancegenre.safety import check_labels
from dancegenre.training.export import (
    FORMAT,
    META_KEY,
    VERSION,
    file_sha256,
    onnx_path_of,
)


class PortableModel:
    """An ONNX file of ``export_onnx``, ready to score segments on the CPU.

    ``labels``, ``feature_config``, ``model`` (the registry name) and ``tags`` come from
    the file's metadata.  ``threads`` is how many threads the next call runs on.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        where = f"ONNX model {path}"
        try:
            self.labels = check_labels(meta["labels"], where)
            self.feature_config = FeatureConfig.from_dict(meta["feature_config"])
            self.model = str(meta["model"])
            self.tags = [str(t) for t in meta.get("tags", [])]
        except (KeyError, TypeError, ValueError, ConfigError, LabelError) as exc:
            raise CheckpointError(f"{where} has unusable metadata ({exc})") from None
        self.path = path
        self.meta = meta
        self.threads = os.cpu_count() or 1
        self._sessions: dict[int, Any] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PortableModel:
        """Raises CheckpointError for a file that is not a dancegenre ONNX model."""
        path = Path(path)
        session = open_session(path, os.cpu_count() or 1)
        model = cls(path, _metadata(session, path))
        outputs = session.get_outputs()
        if outputs[0].shape[-1] != len(model.labels) or len(outputs) != 1 + bool(model.tags):
            raise CheckpointError(f"ONNX model {path} does not give {len(model.labels)} probabilities"
                                  + (f" and {len(model.tags)} tags" if model.tags else "") + "; it cannot be used")
        model._sessions[model.threads] = session
        return model

    def _session(self) -> Any:
        n = max(1, int(self.threads))
        if n not in self._sessions:
            self._sessions[n] = open_session(self.path, n)
        return self._sessions[n]

    def set_threads(self, n: int) -> int:
        """Use ``n`` threads from the next call; returns the previous count."""
        before, self.threads = self.threads, max(1, int(n))
        return before

    def __call__(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(k, n_mels, frames) -> (probabilities (k, n_classes) float32, tags (k, n_tags) or None)."""
        out = self._session().run(None, {"segments": np.ascontiguousarray(segments, dtype=np.float32)})
        return out[0], (out[1] if len(out) > 1 else None)


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


def _metadata(session: Any, path: Path) -> dict[str, Any]:
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


def backbone_onnx_path(name: str, digest: str, *, stage: str = "features") -> Path:
    """Where the ONNX file of a pretrained network's ``stage`` with weights ``digest`` is
    kept (``models.embedding.backbone_session`` writes it): the cache folder, named by
    the network, the stage and the digest."""
    from dancegenre.config import cache_dir

    part = "" if stage == "features" else f"-{stage}"
    return cache_dir() / "onnx" / f"{name}{part}-{digest}.onnx"


def backbone_stamp_path(name: str) -> Path:
    """The stamp that ties the cached weights file of ``name`` (its sha256) to the
    digest, and so to the ONNX file, of those weights."""
    from dancegenre.config import cache_dir

    return cache_dir() / "onnx" / f"{name}.json"


def cached_backbone(name: str, weights: Path) -> tuple[Any, dict[str, Any]] | None:
    """The onnxruntime session (every core) of the pretrained network ``name`` made
    from the weights file ``weights``, and its metadata (``weights``: the digest;
    ``tags``), without importing torch: ``embed`` and ``tag`` on a few files start in
    a second.  None when the stamp, the weights or the ONNX file is missing or does not
    match: the caller then loads the network with torch and writes them."""
    try:
        stamp = json.loads(backbone_stamp_path(name).read_text())
        if stamp.get("weights_sha256") != file_sha256(weights):
            return None
        path = backbone_onnx_path(name, str(stamp["digest"]))
        session = open_session(path, os.cpu_count() or 1)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CheckpointError, ImportError):
        return None
    meta = backbone_meta(session, path, "features", str(stamp["digest"]))
    return None if meta is None else (session, meta)


def backbone_meta(session: Any, path: Path, stage: str, digest: str) -> dict[str, Any] | None:
    """The metadata of a session of ``export_backbone``'s file of ``stage`` with weights
    ``digest``, or None when the file is of another stage, weights or layout (a file of
    an earlier dancegenre: it is then written again)."""
    from dancegenre.training.export import BACKBONE_OUTPUTS, FRONTEND_OUTPUTS

    try:
        meta = _metadata(session, path)
    except CheckpointError:
        return None
    outputs = BACKBONE_OUTPUTS if stage == "features" else FRONTEND_OUTPUTS
    tags = meta.get("tags")
    if (tuple(o.name for o in session.get_outputs()) != outputs or meta.get("kind") != f"backbone {stage}"
            or meta.get("weights") != digest or not isinstance(tags, list)
            or not all(isinstance(t, str) for t in tags)):
        return None
    return meta


def current_export(checkpoint: str | os.PathLike[str]) -> PortableModel | None:
    """The ONNX model beside ``checkpoint`` (a ``.pt`` file or a run folder), opened, if
    it was exported from this very checkpoint; else None (absent, stale, unreadable)."""
    path = Path(checkpoint)
    pt = path / "best.pt" if path.is_dir() else path
    candidate = onnx_path_of(pt)
    if not (pt.is_file() and candidate.is_file()):
        return None
    try:
        model = PortableModel.open(candidate)
    except (CheckpointError, ImportError):  # damaged, or onnxruntime missing: the checkpoint serves
        return None
    return model if model.meta.get("checkpoint_sha256") == file_sha256(pt) else None
