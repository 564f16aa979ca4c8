"""Where a network runs: the one reader of ``--device`` (train, evaluate, predict).

A user writes ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a name torch would reject, or a
CUDA device this machine does not have, is one line (:class:`ConfigError`) before any
work starts, not torch's traceback halfway through loading a model.  Only a CUDA name
or ``auto`` imports torch: ``predict`` on the CPU runs an ONNX export without it.
"""

from __future__ import annotations

import re
from typing import Any

from dancegenre.errors import ConfigError

DEVICES = "auto, cpu, cuda or cuda:N"
_NAME = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


def resolve_device(name: Any) -> str:
    """The device to run a network on, from what a user wrote.

    ``name``: a string (any case, surrounding blanks ignored) or a ``torch.device``.
    Returns ``"cpu"`` (also for ``"cpu:N"``: torch has one CPU device), ``"cuda"`` or
    ``"cuda:N"``; ``"auto"`` gives ``"cuda"`` when torch sees a CUDA device, else ``"cpu"``.

    Raises
    ------
    ConfigError for any other name; for ``cuda``/``cuda:N`` when torch sees no CUDA
    device (a CPU-only build of torch says so) or fewer than N + 1 of them.
    """
    text = str(name).strip().lower() if name is not None else ""
    match = _NAME.fullmatch(text)
    if match is None or (match[1] == "auto" and match[2] is not None):
        raise ConfigError(f"unknown device {str(name)!r}: choose {DEVICES}")
    kind, index = match[1], match[2]
    if kind == "cpu":
        return "cpu"
    import torch

    if kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        why = ("this torch is built for the CPU only" if torch.version.cuda is None
               else "torch sees no CUDA device")
        raise ConfigError(f"device {text} asked for, but {why} (torch {torch.__version__}); use cpu")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise ConfigError(f"device {text} asked for, but torch sees {count} CUDA device"
                          f"{'s' if count > 1 else ''}: cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}")
    return kind if index is None else f"cuda:{int(index)}"


__all__ = ["DEVICES", "resolve_device"]
