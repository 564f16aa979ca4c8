"""Running an exported network (``training.export``) with onnxruntime, without torch.

``PortableModel.open("RUN/best.onnx")`` reads the file's metadata (labels, feature
config, tag names) and scores segments; ``current_export("RUN")`` opens the ONNX file
of a checkpoint only when it was exported from that very checkpoint (same sha256), so
a retrained run never answers with stale weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dancegenre.config import FeatureConfig
from dancegenre.errors import CheckpointError, ConfigError, LabelError
from dancegenre.safety import check_labels
from dancegenre.training.export import (
    file_sha256,
    onnx_path_of,
    open_session,
    read_metadata,
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
        model = cls(path, read_metadata(session, path))
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
