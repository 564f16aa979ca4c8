"""The pretrained musicnn weights: fetched, verified, converted and cached, no TensorFlow.

The weights are the TF1 checkpoints inside the ``musicnn`` 0.1.0 wheel on the package
index (ISC licence, (c) Music Technology Group, Universitat Pompeu Fabra 2019; see
``MUSICNN_LICENSE``).  musicnn is never installed: its metadata pins numpy<1.17.  Only
the wheel file is fetched, through the user's own pip set-up (index, proxy,
certificates), or read from ``DANCEGENRE_MUSICNN_WHEEL``; its sha256 is checked, the
checkpoint is read by ``dancegenre.tfbundle`` (every block and tensor checksum
checked) and mapped onto :class:`~dancegenre.musicnn.MusiCNNBackbone`; only then are
the tensors written to the user's cache folder, atomically.  Nothing unverified is
cached.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from dancegenre.config import CACHE_ENV, cache_dir, weights_path
from dancegenre.errors import DanceGenreError
from dancegenre.models.musicnn import PRETRAINED, MusiCNNBackbone
from dancegenre.safety import atomic_path

WHEEL = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
WHEEL_ENV = "DANCEGENRE_MUSICNN_WHEEL"
FORMAT = "dancegenre-pretrained-1"
MUSICNN_LICENSE = """musicnn weights: Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019.
Code developed by Jordi Pons (www.jordipons.me). ISC licence: Permission to use, copy, modify,
and/or distribute this software for any purpose with or without fee is hereby granted, provided
that the above copyright notice and this permission notice appear in all copies. THE SOFTWARE IS
PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH REGARD TO THIS SOFTWARE INCLUDING
ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS."""


class PretrainedError(DanceGenreError):
    """The pretrained weights cannot be had or do not verify."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(folder: Path, log: Callable[[str], Any]) -> Path:
    """``pip download`` the wheel alone into ``folder`` with the user's pip settings."""
    log(f"fetching the musicnn weights ({WHEEL}, 29 MB) through pip ...")
    cmd = [sys.executable, "-m", "pip", "download", "musicnn==0.1.0", "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PretrainedError(f"could not run pip to fetch the musicnn weights ({exc}); "
                              f"download {WHEEL} elsewhere and set {WHEEL_ENV}=/path/to/it") from None
    path = folder / WHEEL
    if done.returncode != 0 or not path.is_file():
        last = (done.stderr or done.stdout).strip().splitlines()
        reason = last[-1][:200] if last else f"pip exited with {done.returncode}"
        raise PretrainedError(f"no package index reachable for the musicnn weights ({reason}); "
                              f"download {WHEEL} elsewhere and set {WHEEL_ENV}=/path/to/it")
    return path


def convert_wheel(wheel: str | os.PathLike[str], name: str) -> dict[str, torch.Tensor]:
    """The backbone state dict of ``name`` (musicnn-msd, musicnn-mtt) read from the wheel.

    Raises
    ------
    PretrainedError
        The wheel's sha256 is not the published one, or the checkpoint in it is missing,
        truncated or corrupt.
    """
    from dancegenre.errors import CheckpointError
    from dancegenre.models.tfbundle import read_bundle

    wheel = Path(wheel)
    if not wheel.is_file():
        raise PretrainedError(f"no musicnn wheel at {wheel}")
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise PretrainedError(f"{wheel} is not the musicnn 0.1.0 wheel: sha256 {digest[:16]}..., "
                              f"expected {WHEEL_SHA256[:16]}...; refusing it")
    folder = PRETRAINED[name][0]
    try:
        with zipfile.ZipFile(wheel) as z:
            index = z.read(f"musicnn/{folder}/.index")
            data = z.read(f"musicnn/{folder}/.data-00000-of-00001")
    except KeyError:
        raise PretrainedError(f"{wheel} holds no {folder} checkpoint") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise PretrainedError(f"{wheel} is not a readable wheel ({exc})") from None
    try:
        tensors = read_bundle(index, data, names=list(tf_names().values()))
    except CheckpointError as exc:
        raise PretrainedError(f"the {folder} checkpoint in {wheel} does not read: {exc}") from None
    return to_state_dict(tensors)


def tf_names() -> dict[str, str]:
    """Backbone state-dict key -> TF variable name, in the order TF1 created them."""
    convs = ["timbral.0.conv", "timbral.1.conv", "temporal.0.conv", "temporal.1.conv",
             "temporal.2.conv", "mid.0.conv", "mid.1.conv", "mid.2.conv"]
    bns = ["input_bn", "timbral.0.bn", "timbral.1.bn", "temporal.0.bn", "temporal.1.bn",
           "temporal.2.bn", "mid.0.bn", "mid.1.bn", "mid.2.bn", "pool_bn", "dense_bn"]
    out = {}
    for i, key in enumerate(convs):
        tf = "conv2d" if i == 0 else f"conv2d_{i}"
        out[f"{key}.weight"], out[f"{key}.bias"] = f"{tf}/kernel", f"{tf}/bias"
    for i, key in enumerate(bns):
        tf = "batch_normalization" if i == 0 else f"batch_normalization_{i}"
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            out[f"{key}.{ours}"] = f"{tf}/{theirs}"
    for key, tf in (("dense", "dense"), ("output", "dense_1")):
        out[f"{key}.weight"], out[f"{key}.bias"] = f"{tf}/kernel", f"{tf}/bias"
    return out


def to_state_dict(tensors: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Map TF arrays onto the backbone's keys and layouts, and check every shape."""
    reference = MusiCNNBackbone().state_dict()
    state = {}
    for key, tf in tf_names().items():
        value = torch.from_numpy(tensors[tf].copy())
        if key.endswith(".weight") and value.ndim == 4:  # TF conv2d (kh, kw, in, out)
            value = value.permute(3, 2, 0, 1)
            if key.startswith("mid."):  # a (7 x channels) 2-D conv is a 1-D conv over channels
                value = value[:, 0].permute(0, 2, 1)  # (out, 1, 7, C) -> (out, C, 7)
        elif key.endswith(".weight") and value.ndim == 2:  # TF dense (in, out)
            value = value.T
        if tuple(value.shape) != tuple(reference[key].shape):
            raise PretrainedError(f"pretrained tensor {tf} has shape {tuple(value.shape)}, "
                                  f"the network expects {tuple(reference[key].shape)}")
        state[key] = value.contiguous().float()
    for key, value in reference.items():
        state.setdefault(key, value)  # num_batches_tracked
    return state


def load_backbone_state(name: str, *, log: Callable[[str], Any] = print) -> dict[str, torch.Tensor]:
    """The backbone weights of ``name``, from the cache or fetched and converted once."""
    if name not in PRETRAINED:
        raise PretrainedError(f"no pretrained model {name!r}; choose from {', '.join(PRETRAINED)}")
    path = weights_path(name)
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("format") == FORMAT and payload.get("wheel_sha256") == WHEEL_SHA256:
                return payload["state_dict"]
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt, not trusted
            pass
        log(f"the cached {path.name} does not verify; converting again")
    fetch([name], log=log)
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def fetch(names: list[str] | None = None, *, log: Callable[[str], Any] = print) -> list[Path]:
    """Get the wheel (``$DANCEGENRE_MUSICNN_WHEEL`` or pip), verify, convert, cache.

    Returns the cached weight files.  Raises :class:`PretrainedError` in one line when
    neither an index nor the file is available, or when anything fails to verify.
    """
    names = list(names or PRETRAINED)
    unknown = [n for n in names if n not in PRETRAINED]
    if unknown:
        raise PretrainedError(f"no pretrained model {', '.join(unknown)}; choose from {', '.join(PRETRAINED)}")
    folder = cache_dir()
    with tempfile.TemporaryDirectory(prefix="dancegenre-wheel-") as tmp:
        wheel = Path(os.environ[WHEEL_ENV]) if os.environ.get(WHEEL_ENV) else _download_wheel(Path(tmp), log)
        out = []
        for name in names:
            state = convert_wheel(wheel, name)  # raises before anything is written
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path = weights_path(name)
                with atomic_path(path) as part:
                    torch.save({"format": FORMAT, "name": name, "wheel_sha256": WHEEL_SHA256,
                                "license": MUSICNN_LICENSE, "state_dict": state}, part)
            except OSError as exc:
                raise PretrainedError(f"cannot write the weights cache in {folder} ({exc.strerror}); "
                                      f"set {CACHE_ENV} to a writable folder") from None
            log(f"{name}: verified and cached in {path}")
            out.append(path)
    return out


__all__ = ["MUSICNN_LICENSE", "PretrainedError", "cache_dir", "convert_wheel", "fetch", "load_backbone_state",
           "weights_path"]
