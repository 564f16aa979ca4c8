"""The checkpoint: one file that rebuilds everything a later stage needs.

It holds the weights (normalisation buffers included), the model, feature and training
configs, the label names, the split, and the package and torch versions.  It holds only
tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``:
opening a checkpoint someone sent you runs no code of theirs.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dancegenre import __version__
from dancegenre.audio.decode import is_audio_path
from dancegenre.config import FeatureConfig, ModelConfig, TrainConfig
from dancegenre.device import resolve_device
from dancegenre.errors import CheckpointError, DanceGenreError, LabelError, first_line
from dancegenre.models.base import Network
from dancegenre.models.registry import build_model
from dancegenre.safety import atomic_path, check_labels
from dancegenre.training.runs import CV

FORMAT = "dancegenre-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode and everything it was made with."""

    model: Network
    feature_config: FeatureConfig
    model_config: ModelConfig
    train_config: TrainConfig
    labels: list[str]
    split: dict[str, Any]  # column, sides {train, val, test: [item ids]}, seed
    path: Path
    store: str | None = None  # the store it was trained on (absolute path when saved)
    epoch: int | None = None  # the epoch these weights come from
    validation: dict[str, Any] | None = None  # that epoch's validation metrics
    ensemble_of: list[str] = field(default_factory=list)  # an ensemble: its members' checkpoints
    cv: dict[str, Any] = field(default_factory=dict)  # an ensemble: the folds' held-out means and stds
    resume: dict[str, Any] | None = None  # last.pt: optimizer, history, early-stopping state


def save_checkpoint(path: str | os.PathLike[str], model: Network, *, feature_config: FeatureConfig,
                    train_config: TrainConfig, labels: list[str], split: dict[str, Any],
                    extra: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> Path:
    """Write atomically (temporary file, then rename).  ``state`` adds resume state
    (optimizer, epoch, history) for ``last.pt``."""
    path = Path(path)
    payload = {
        "format": FORMAT, "version": VERSION,
        "dancegenre_version": __version__, "torch_version": str(torch.__version__),
        "model_config": model.config.to_dict(), "feature_config": feature_config.to_dict(),
        "train_config": train_config.to_dict(), "labels": list(labels), "split": split,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {}, "resume": state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_payload(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict, loaded without unpickling arbitrary objects."""
    path = Path(path)
    if path.is_dir():  # a run folder: take its best checkpoint
        if not (path / "best.pt").is_file():
            raise CheckpointError(_not_a_run(path))
        path = path / "best.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if is_audio_path(path):  # `predict a.mp3 b.mp3`: the model was left out
        raise CheckpointError(f"{path} is an audio file, not a model: give the run folder (or its .pt or .onnx) "
                              "first, then the audio")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(onnx_is_no_checkpoint(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a file that is not a checkpoint
        raise CheckpointError(f"not a loadable dancegenre checkpoint ({_why_unreadable(path, exc)}): {path}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"not a dancegenre checkpoint: {path}")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint version {payload.get('version')} is not {VERSION}: {path}")
    payload["path"] = str(path)
    return payload


def _why_unreadable(path: Path, exc: Exception) -> str:
    """Why torch could not load ``path``, in words, from the file's first bytes: torch's
    own messages say "(101)" for a text file, or stop mid-sentence for a cut one."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):  # a zip archive: what torch.save writes
        return ("it holds code or objects that are not weights, which are never run"
                if isinstance(exc, pickle.UnpicklingError) else "the file is cut short or damaged")
    if head[:1] == b"\x80":  # a pickle: torch's legacy format
        return ("the file is cut short" if isinstance(exc, EOFError)
                else "it holds code or objects that are not weights, which are never run")
    return "not a PyTorch file" + (": it holds text" if _is_text(head) else "")


def _is_text(head: bytes) -> bool:
    return all(32 <= b < 127 or b in b"\t\r\n" for b in head)


def onnx_is_no_checkpoint(path: str | os.PathLike[str]) -> str:
    """Why an ONNX export (what ``export`` and ``train`` write) does not do where a
    checkpoint is needed, and what to give instead."""
    return (f"{path} is an ONNX export: it holds the network for predict, not the checkpoint (training record, "
            "weights for torch) this needs; give the run folder (or its best.pt)")


def _not_a_run(path: Path) -> str:
    """Why the folder ``path`` (without a best.pt) is not a model, and what to give instead."""
    if (path / "store.json").exists():
        return f"{path} is a prepared store, not a model: give the run folder that train wrote (it holds best.pt)"
    if (path / CV).exists():
        ensemble = path / "ensemble.pt"
        instead = (f"{ensemble} (its folds averaged)" if ensemble.is_file()
                   else f"one of its fold-N runs, or `dancegenre ensemble {path} --out DIR` (pretrained models)")
        return f"{path} is a cross-validation, not one model: give {instead}"
    return f"no checkpoint at {path / 'best.pt'}: give a run folder that train wrote, or a .pt or .onnx file"


def load_checkpoint(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model and configs from ``path`` (a ``.pt`` file or a run folder), on
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Raises CheckpointError; ConfigError for a device this machine lacks.
    """
    device = resolve_device(device)
    payload = read_payload(path)
    where = f"checkpoint {payload['path']}"
    missing = [k for k in ("model_config", "feature_config", "train_config", "labels", "state_dict")
               if not isinstance(payload.get(k), dict if k != "labels" else list)]
    if missing:
        raise CheckpointError(f"{where} lacks {', '.join(missing)} (or holds the wrong type); it cannot be used")
    try:
        model_config = ModelConfig.from_dict(payload["model_config"])
        feature_config = FeatureConfig.from_dict(payload["feature_config"])
        train_config = TrainConfig.from_dict(payload["train_config"])
        labels = check_labels(payload["labels"], where)
        if len(labels) != model_config.n_classes or len(set(labels)) != len(labels):
            raise CheckpointError(f"{where} names {len(labels)} label(s) ({len(set(labels))} distinct) for a "
                                  f"head of {model_config.n_classes} classes; it cannot be used")
        model = build_model(model_config)
        model.load_state_dict(payload["state_dict"])
    except CheckpointError:
        raise
    except LabelError as exc:
        raise CheckpointError(str(exc)) from None
    except (DanceGenreError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{where} does not rebuild: {first_line(exc, 200)}") from None
    split = payload.get("split") if isinstance(payload.get("split"), dict) else {}
    extra = payload.get("extra") if isinstance(payload.get("extra"), dict) else {}
    model.to(device).eval()
    return Checkpoint(model=model, model_config=model_config, feature_config=feature_config,
                      train_config=train_config, labels=labels, split=split, path=Path(payload["path"]),
                      store=extra.get("store"), epoch=extra.get("epoch"), validation=extra.get("val"),
                      ensemble_of=list(extra.get("ensemble_of", [])), cv=dict(extra.get("cv", {})),
                      resume=payload.get("resume") if isinstance(payload.get("resume"), dict) else None)
