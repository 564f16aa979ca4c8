"""Classifier.load(checkpoint).predict(path or waveform): a genre for any track.

Uses the checkpoint's own feature config and the same decode and feature code as
``prepare`` (``features.iter_segments``).  Files are decoded in blocks and scored block
by block, so a two-hour mix needs no more memory than a short clip.

On the CPU, the network runs from the checkpoint's ONNX export (``best.onnx``, written
by ``train``) with onnxruntime when that file matches the checkpoint: torch is then
never imported, which is most of a one-file prediction's time.  Otherwise, on a GPU, or
with ``engine="torch"``, the checkpoint runs in torch.  Both give the same numbers
(tests/inference/test_portable.py).

With the network on a GPU (``device="cuda"``), the features run there too
(``features="device"``, the default there): the pool's workers only decode, downmix
and resample, and :func:`~dancegenre.audio.frontend.device_segments` makes the
segments next to the network.  Files over 30 MB keep the CPU front end, block by block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dancegenre.audio.decode import is_audio_path
from dancegenre.audio.frontend import device_segments, iter_segments, whole_mono
from dancegenre.config import ENGINES, FeatureConfig, check_batch_size
from dancegenre.device import resolve_device
from dancegenre.errors import (
    EMPTY_PATH,
    CheckpointError,
    ConfigError,
    DanceGenreError,
    EmptyInputError,
)
from dancegenre.safety import path_list, real_path, releasing

if TYPE_CHECKING:
    from dancegenre.inference.portable import PortableModel
    from dancegenre.training.checkpoint import Checkpoint

FEATURES = ("auto", "workers", "device")  # where segments are computed: auto = on a GPU if the network is there

LONG_FILE_BYTES = 30 << 20  # files above this are streamed in the main process, not the pool
UNSURE = "_unsure"


@dataclass
class Prediction:
    """The verdict on one track.

    ``timeline`` has one row a segment: start and end (s), one probability column a
    genre, and the segment's top genre.  ``sections`` merges the smoothed timeline into
    runs of one genre: where a DJ mix changes style.
    """

    source: str
    genre: str | None
    probabilities: dict[str, float]
    timeline: pd.DataFrame
    duration: float = 0.0  # seconds covered by the scored segments
    error: str | None = None
    sections: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, float] = field(default_factory=dict)  # a musicnn run: its pretrained tags, top 5
    stamp: tuple[int, int] | None = None  # the file's (size, mtime_ns) when scored: tags only go onto that file

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely genres with their probabilities, most likely first."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:max(1, k)]

    @property
    def confidence(self) -> float:
        return max(self.probabilities.values()) if self.probabilities else 0.0

    def ranked(self, k: int) -> dict[str, Any]:
        """``genre_2, p_2 ... genre_k, p_k``: the runners-up (empty for k <= 1 or no verdict)."""
        out: dict[str, Any] = {}
        top = self.top(k) if self.probabilities else []
        for r in range(2, k + 1):
            g, p = top[r - 1] if r <= len(top) else ("", float("nan"))
            out[f"genre_{r}"], out[f"p_{r}"] = g, round(p, 4)
        return out

    def to_dict(self, timeline: bool = True, top_k: int = 1) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.source, "genre": self.genre, "confidence": round(self.confidence, 4),
                             **{k: (None if v != v else v) for k, v in self.ranked(top_k).items()},
                             "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
                             "segments": len(self.timeline), "seconds_scored": round(self.duration, 2),
                             "error": self.error}
        if self.tags:
            d["tags"] = {k: round(v, 4) for k, v in self.tags.items()}
        if timeline:
            d["timeline"] = self.timeline.round(4).to_dict(orient="records")
            d["sections"] = self.sections
        return d

    def to_record(self) -> dict[str, Any]:
        """Everything, unrounded, as JSON types: :meth:`from_record` gives back an equal
        Prediction, column dtypes included (a resumed ``predict`` writes the same bytes)."""
        t = self.timeline
        return {"source": self.source, "genre": self.genre, "probabilities": self.probabilities,
                "duration": self.duration, "error": self.error, "sections": self.sections, "tags": self.tags,
                "stamp": list(self.stamp) if self.stamp else None,
                "timeline": {"dtypes": {c: str(t[c].dtype) for c in t.columns},
                             "columns": {c: t[c].tolist() for c in t.columns}}}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Prediction:
        """The Prediction :meth:`to_record` wrote."""
        t = record["timeline"]
        timeline = pd.DataFrame({c: pd.Series(v, dtype=t["dtypes"][c]) for c, v in t["columns"].items()})
        return cls(source=record["source"], genre=record["genre"], probabilities=record["probabilities"],
                   timeline=timeline, duration=record["duration"], error=record["error"],
                   sections=record["sections"], tags=record["tags"],
                   stamp=tuple(record["stamp"]) if record["stamp"] else None)


def _segments_worker(args: tuple[list[str], FeatureConfig]) -> list[tuple[str, np.ndarray | None, str | None]]:
    """``(path, float16 segments, error)`` for each of a batch of files: one round trip
    to the worker a batch, not a file."""
    paths, config = args
    out = []
    for path in paths:
        try:
            # float16 halves what travels back through the pipe; dB values need no more
            blocks = [b.segments.astype(np.float16) for b in iter_segments(path, config)]
            out.append((path, np.concatenate(blocks), None))
        except DanceGenreError as exc:
            out.append((path, None, str(exc)))
    return out


def _waveform_worker(args: tuple[list[str], FeatureConfig]) -> list[tuple[str, np.ndarray | None, str | None]]:
    """``(path, mono samples at the config's rate, error)`` for each of a batch of files:
    the workers' share when the features run on the network's device."""
    paths, config = args
    out = []
    for path in paths:
        try:
            out.append((path, whole_mono(path, config), None))
        except DanceGenreError as exc:
            out.append((path, None, str(exc)))
    return out


def _joined(parts: list[Any]) -> Any:
    """Segment arrays, or device tensors, one after the other."""
    if parts and not isinstance(parts[0], np.ndarray):
        import torch

        return torch.cat(parts)
    return np.concatenate(parts)


def centred_mean(probs: np.ndarray, window: int) -> np.ndarray:
    """The moving average of each column over ``window`` rows centred on each row, fewer
    at the ends (pandas' ``rolling(window, center=True, min_periods=1).mean()``)."""
    n = len(probs)
    sums = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    lo = np.clip(np.arange(n) - window // 2, 0, n)
    hi = np.clip(np.arange(n) - window // 2 + window, 0, n)
    return (sums[hi] - sums[lo]) / (hi - lo)[:, None]


def prediction_list(predictions: Iterable[Prediction], what: str) -> list[Prediction]:
    """``predictions`` as a list (an iterator is read once), every one a :class:`Prediction`;
    else ConfigError: ``what`` takes verdicts, not paths."""
    if not isinstance(predictions, (str, os.PathLike)):
        predictions = list(predictions)
        if all(isinstance(p, Prediction) for p in predictions):
            return predictions
    raise ConfigError(f"{what} takes the Prediction objects of Classifier.predict or predict_many, not paths")


def sections_of(probs: np.ndarray, starts: np.ndarray, ends: np.ndarray, labels: list[str], *,
                smooth: int = 5) -> list[dict[str, Any]]:
    """Runs of one genre in a timeline, after a moving average over ``smooth`` segments:
    its probabilities (k, n_classes), the segments' start and end times (k,) in seconds."""
    if not len(probs):
        return []
    top = centred_mean(probs, smooth).argmax(1)
    cuts = [0, *(np.flatnonzero(np.diff(top)) + 1).tolist(), len(top)]
    return [{"start": float(starts[a]), "end": float(ends[b - 1]), "genre": labels[top[a]], "segments": int(b - a)}
            for a, b in zip(cuts[:-1], cuts[1:])]


class TorchScorer:
    """A checkpoint's network in torch, called like ``PortableModel``: (k, n_mels, frames)
    -> (probabilities (k, n_classes), tags (k, n_tags) or None)."""

    def __init__(self, model: Any, device: str) -> None:
        self.model, self.device = model, device

    def __call__(self, segments: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``segments``: an array, or a tensor already on the device."""
        from dancegenre.training.scoring import predict_proba

        return predict_proba(self.model, [segments], device=self.device, tags=True)

    @staticmethod
    def set_threads(n: int) -> int:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
        return before


class Classifier:
    """A trained model ready to label tracks.

    >>> clf = Classifier.load("runs/demo")                 # doctest: +SKIP
    >>> result = clf.predict("track.mp3")                  # doctest: +SKIP
    >>> result.genre, result.probabilities["techno"]       # doctest: +SKIP

    ``engine`` is ``"onnx"`` (the checkpoint's ONNX export, run by onnxruntime) or
    ``"torch"``; ``path`` is the checkpoint (or ONNX file) it was loaded from;
    ``feature_device`` is where torch computes the segments (None: the CPU front end, in
    the workers).
    """

    feature_device: str | None = None
    kept: list[int] | None = None  # positions of the genres a verdict is among (restrict)

    def __init__(self, checkpoint: Checkpoint, *, batch_size: int = 256, device: str = "cpu",
                 features: str = "auto") -> None:
        self._checkpoint: Checkpoint | None = checkpoint
        self.path = Path(checkpoint.path)
        self.model_name = checkpoint.model_config.name
        self.labels = checkpoint.labels
        self.config = checkpoint.feature_config
        self.batch_size = check_batch_size(batch_size)
        self.device = device = resolve_device(device)
        self.engine = "torch"
        self.scorer: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]] = \
            TorchScorer(checkpoint.model.to(device).eval(), device)
        from dancegenre.models.musicnn import PRETRAINED

        name = checkpoint.model_config.name
        self.tag_names: list[str] = PRETRAINED[name][1] if name in PRETRAINED else []
        if features not in FEATURES:
            raise ConfigError(f"unknown features {features!r}; choose from {', '.join(FEATURES)}")
        on_device = features == "device" or (features == "auto" and str(device) != "cpu")
        self.feature_device = str(device) if on_device else None

    @classmethod
    def from_portable(cls, model: PortableModel, *, batch_size: int = 256, checkpoint_path: Path | None = None,
                      ) -> Classifier:
        """From an opened ONNX export; ``checkpoint_path`` is the checkpoint it matches
        (``checkpoint`` then loads it on demand), None for a bare ``.onnx`` file."""
        clf = cls.__new__(cls)
        clf._checkpoint = None
        clf.path = checkpoint_path or model.path
        clf.model_name = model.model
        clf.labels = model.labels
        clf.config = model.feature_config
        clf.batch_size = check_batch_size(batch_size)
        clf.device = "cpu"
        clf.engine = "onnx"
        clf.scorer = model
        clf.tag_names = model.tags
        return clf

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu", batch_size: int = 256,
             engine: str = "auto", features: str = "auto") -> Classifier:
        """From a checkpoint file, a run folder (its best.pt) or an exported ``.onnx`` file.

        ``engine="auto"`` runs the ONNX export on the CPU when it matches the checkpoint,
        else torch; ``"onnx"`` insists on the export; ``"torch"`` on the checkpoint.
        ``features``: where the segments are computed; ``"auto"`` on the network's device
        when that is not the CPU, else in the workers; ``"workers"`` always in the workers
        (numpy); ``"device"`` by torch next to the network (the torch engine only).

        Raises
        ------
        CheckpointError for a missing or unusable model; ConfigError for an engine or a
        ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) that cannot run here.
        """
        check_batch_size(batch_size)  # before anything is loaded
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        if features not in FEATURES:
            raise ConfigError(f"unknown features {features!r}; choose from {', '.join(FEATURES)}")
        if features == "device" and engine == "onnx":
            raise ConfigError("features on the device run next to the torch network: use --engine torch")
        if features == "device":
            engine = "torch"
        device = resolve_device(device)
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            if engine == "torch" or device != "cpu":
                raise ConfigError(f"{path} is an ONNX file: it runs with --engine onnx on the CPU only")
            from dancegenre.inference.portable import PortableModel

            try:
                return cls.from_portable(PortableModel.open(path), batch_size=batch_size)
            except ImportError:
                raise ConfigError("onnxruntime is not installed: pip install onnxruntime") from None
        if engine != "torch" and device == "cpu":
            from dancegenre.inference.portable import current_export

            exported = current_export(path)
            if exported is not None:
                pt = path / "best.pt" if path.is_dir() else path
                return cls.from_portable(exported, batch_size=batch_size, checkpoint_path=pt)
            if engine == "onnx":
                raise CheckpointError(f"no ONNX export of {path} matches its checkpoint; "
                                      f"write one with: dancegenre export {path}")
        elif engine == "onnx":
            raise ConfigError(f"--engine onnx runs on the CPU only, not on {device}")
        from dancegenre.training.checkpoint import load_checkpoint

        return cls(load_checkpoint(path, device=device), batch_size=batch_size, device=device, features=features)

    def restrict(self, genres: Sequence[str]) -> None:
        """From now on, give verdicts among ``genres`` only (at least two of the model's).

        Each item's mean probabilities, and each segment's for the timeline, are taken over
        those genres and scaled to sum to 1: what the model believes given that the answer
        is one of them.  ``labels`` becomes those genres in the model's order.  The
        network is unchanged; a 7-subgenre model asked about the study's 5 classes is
        how the README's "5 of 7" figures were measured.

        Raises ConfigError for a genre the model lacks, or fewer than two.
        """
        from dancegenre.training.runs import genre_subset

        full = self.labels if self.kept is None else self.all_labels
        self.kept = genre_subset(genres, full)
        self.all_labels = list(full)
        self.labels = [full[i] for i in self.kept]

    @property
    def model_files(self) -> list[Path]:
        """The files this classifier was loaded from (checkpoint, ONNX export)."""
        return [self.path] + ([self.scorer.path] if self.engine == "onnx" and self.scorer.path != self.path else [])

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint (splits, training config...), loaded on first use."""
        if self._checkpoint is None:
            from dancegenre.training.checkpoint import load_checkpoint

            self._checkpoint = load_checkpoint(self.path)  # an ONNX file is refused there, saying why
        return self._checkpoint

    def _probs(self, segments: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(genre probabilities (k, n_classes), pretrained tag probabilities (k, 50) or None)
        of segments (k, n_mels, frames): an array, or a tensor on the feature device."""
        probs, tags = [], []
        for s in range(0, len(segments), self.batch_size):
            p, t = self.scorer(segments[s : s + self.batch_size])
            probs.append(p)
            tags.append(t)
        if not probs:
            return np.zeros((0, len(self.labels if self.kept is None else self.all_labels)), np.float32), None
        return np.concatenate(probs), (np.concatenate(tags) if tags[0] is not None else None)

    def _result(self, source: str, scored: tuple[np.ndarray, np.ndarray | None], numbers: np.ndarray) -> Prediction:
        probs, taggram = scored
        mean = probs.mean(0)
        if not np.isfinite(mean).all():  # weights that overflow, or a crafted checkpoint
            raise DanceGenreError(f"the model gave non-finite probabilities for {source}; "
                                  "its checkpoint may be damaged")
        if self.kept is not None:  # the item's mean, then each segment, over the kept genres
            from dancegenre.training.runs import among

            mean, probs = among(mean[None], self.kept)[0], among(probs, self.kept)
        c = self.config
        start = (numbers * c.segment_hop_seconds).round(3)
        end = (numbers * c.segment_hop_seconds + c.segment_seconds).round(3)
        timeline = pd.DataFrame({"segment": numbers, "start": start, "end": end,
                                 **{lab: probs[:, i] for i, lab in enumerate(self.labels)},
                                 "genre": np.asarray(self.labels, dtype=object)[probs.argmax(1)]})
        try:
            st = os.stat(source) if source != "<waveform>" else None
        except OSError:
            st = None
        return Prediction(source=source, genre=self.labels[int(mean.argmax())],
                          stamp=(st.st_size, st.st_mtime_ns) if st else None,
                          probabilities={lab: float(mean[i]) for i, lab in enumerate(self.labels)},
                          timeline=timeline, duration=float(end[-1]) if len(end) else 0.0,
                          sections=sections_of(probs, start, end, self.labels), tags=self._top_tags(taggram))

    def _top_tags(self, taggram: np.ndarray | None, top: int = 5) -> dict[str, float]:
        if taggram is None or not len(taggram):
            return {}
        mean = taggram.mean(0)
        return {self.tag_names[j]: float(mean[j]) for j in np.argsort(-mean)[:top]}

    def predict(self, source: str | os.PathLike[str] | np.ndarray, sr: int | None = None, *,
                max_duration: float | None = None) -> Prediction:
        """Genre of one file, or of a waveform (``(n,)`` or ``(n, channels)``) at ``sr`` Hz.

        ``max_duration``: seconds; a longer source is refused, a file by its header before
        any decoding and while decoding when the header understates it (None: no cap).

        Raises
        ------
        AudioDecodeError (and subclasses) for a file that cannot be used, or is too long.
        """
        name = "<waveform>" if isinstance(source, np.ndarray) else str(source)
        if self.feature_device is not None and (isinstance(source, np.ndarray) or _size(name) <= LONG_FILE_BYTES):
            segs = device_segments(whole_mono(source, self.config, sr=sr, max_duration=max_duration), self.config,
                                   self.feature_device)
            return self._result(name, self._probs(segs), np.arange(len(segs)))
        probs, tags, numbers, waiting = [], [], [], []

        def score() -> None:  # the blocks decoded so far, in one forward pass
            p, t = self._probs(np.concatenate(waiting))
            probs.append(p)
            tags.append(t)
            waiting.clear()

        from threadpoolctl import threadpool_limits

        # The front end's matrix products are small: numpy's BLAS threads would only
        # spin beside it (twice the CPU time for predict --workers 1).  torch and
        # onnxruntime keep their own thread counts.
        with threadpool_limits(1, user_api="blas"):
            for block in iter_segments(source, self.config, sr=sr, max_duration=max_duration):
                waiting.append(block.segments)
                numbers.append(block.index)
                if sum(len(w) for w in waiting) >= self.batch_size:
                    score()
        if waiting:
            score()
        taggram = np.concatenate(tags) if tags and tags[0] is not None else None
        return self._result(name, (np.concatenate(probs), taggram), np.concatenate(numbers))

    def predict_many(self, paths: Iterable[str | os.PathLike[str]], *, workers: int | None = None,
                     scheduler: str = "processes") -> Iterator[Prediction]:
        """Predictions for many files, in order; a bad file yields a Prediction with ``error``.

        Files are decoded into segments on ``scheduler`` (``workers`` local processes by
        default, or Dask: see :mod:`dancegenre.scheduler`) while this process runs the
        network; long files (over 30 MB) are streamed block by block here.  A path that
        appears twice is predicted twice.
        """
        pending: list[tuple[str, Any]] = []  # decoded files whose segments go through the network together

        def flush() -> Iterator[Prediction]:
            if not pending:
                return
            probs, tags = self._probs(_joined([segs for _, segs in pending]))
            start = 0
            for p, segs in pending:
                end = start + len(segs)
                try:
                    yield self._result(p, (probs[start:end], None if tags is None else tags[start:end]),
                                       np.arange(len(segs)))
                except DanceGenreError as exc:
                    yield Prediction(p, None, {}, pd.DataFrame(), error=str(exc))
                start = end
            pending.clear()

        on_device = self.feature_device is not None
        for p, segs, err in decode_many(paths, self.config, workers=workers, scheduler=scheduler,
                                        set_threads=self.scorer.set_threads, waveforms=on_device):
            if err is None and segs is not None:
                if on_device:  # a waveform: its segments made here, on the device
                    segs = device_segments(segs, self.config, self.feature_device)
                pending.append((p, segs))
                if sum(len(s) for _, s in pending) >= self.batch_size:  # a full batch: one forward pass
                    yield from flush()
                continue
            yield from flush()  # in order: what came before, then this file
            if err is not None:
                yield Prediction(p, None, {}, pd.DataFrame(), error=err)
            else:
                yield self._safe(p)  # a long file: streamed block by block in this process
        yield from flush()

    def _safe(self, path: str) -> Prediction:
        try:
            return self.predict(path)
        except DanceGenreError as exc:
            return Prediction(path, None, {}, pd.DataFrame(), error=str(exc))


@releasing
def predict_files(clf: Classifier, paths: Sequence[str | os.PathLike[str]], *, journal: str | os.PathLike[str] | None,
                  workers: int | None = None, scheduler: str = "processes", progress: bool = True,
                  log: Callable[[str], Any] = print) -> list[Prediction]:
    """``clf.predict_many(paths)`` as a list, resumable: with ``journal`` (the output the
    predictions are for, e.g. ``results.csv``), each finished file is appended to
    ``<journal>.pending/rows.jsonl`` as it finishes, and a rerun after an interruption
    predicts only the files that are not there with the same model, genres, size and
    mtime.  The caller removes the journal (``Journal(journal, ...).remove()``) once its
    outputs are whole.  A file that failed is tried again by the rerun.
    """
    from tqdm import tqdm

    from dancegenre.data.catalog import item_key
    from dancegenre.data.jobs import Journal, cache_keys

    paths = [str(p) for p in path_list(paths)]
    if journal is None:
        return list(tqdm(clf.predict_many(paths, workers=workers, scheduler=scheduler), total=len(paths),
                         desc="predict", unit="file", disable=not progress))
    files = []
    for f in clf.model_files:
        st = os.stat(f)
        files.append(f"{os.path.realpath(f)}|{st.st_size}|{st.st_mtime_ns}")
    model = "|".join([*files, *clf.labels])  # the weights as they are now, and the genres asked about
    book = Journal(journal, "predict-journal")
    done: dict[str, Prediction] = {}
    for row in book.rows(needs=("key", "model", "prediction")):
        try:
            if row["model"] == model:
                done[row["key"]] = Prediction.from_record(row["prediction"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # a prediction this version cannot read: its file is predicted again
    keys, _ = cache_keys(paths, lambda path: item_key(path, clf.config))  # an unreadable file: None, predicted again
    todo = [p for p, k in zip(paths, keys) if k is None or k not in done]
    if len(todo) < len(paths):
        log(f"resuming: {len(paths) - len(todo)} of {len(paths)} files predicted before")
    key_of = dict(zip(paths, keys))
    fresh: dict[str, Prediction] = {}
    with book.writer() as add, tqdm(total=len(todo), desc="predict", unit="file", disable=not progress) as bar:
        for p in clf.predict_many(todo, workers=workers, scheduler=scheduler):
            fresh[p.source] = p
            if p.error is None and key_of[p.source] is not None:  # a failure is tried again on a rerun
                add({"key": key_of[p.source], "model": model, "prediction": p.to_record()})
            bar.update(1)
    return [fresh[p] if p in fresh else done[key_of[p]] for p in paths]


def decode_many(paths: Iterable[str | os.PathLike[str]], config: FeatureConfig, *, workers: int | None = None,
                scheduler: str = "processes", network_threads: int = 1,
                set_threads: Callable[[int], int] = TorchScorer.set_threads, waveforms: bool = False,
                ) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """``(path, segments, error)`` for every file, in order, decoded on ``scheduler``.

    ``segments`` is float16 (k, n_mels, segment_frames); with ``waveforms``, the file's
    mono samples (n,) float32 at the config's rate instead (:func:`whole_mono`).  A file over 30 MB comes back
    as ``(path, None, None)``: the caller streams it block by block (``iter_segments``)
    so that a long mix never sits in memory whole.  While the pool decodes, this
    process runs the network on ``network_threads`` threads (0 keeps its setting), set
    through ``set_threads`` (sets a count, returns the one before; torch's by default).
    """
    from dancegenre.data.scheduler import (
        IN_FLIGHT_PER_WORKER,
        check_workers,
        open_scheduler,
    )

    paths = [str(p) for p in path_list(paths)]
    check_workers(workers, scheduler)  # as open_scheduler would, but before any file
    workers = workers or os.cpu_count() or 1
    sizes = {p: _size(p) for p in paths}
    if scheduler == "processes" and (workers == 1 and network_threads == 1 or len(paths) < 2):
        for p in paths:
            yield p, None, None
        return
    threads = set_threads(network_threads) if scheduler == "processes" and network_threads else None
    # files in batches (up to 8, fewer when there are few files, so every worker gets some)
    short = [i for i, p in enumerate(paths) if sizes[p] <= LONG_FILE_BYTES]
    size = int(np.clip(len(short) // (4 * workers), 1, 8))
    batches = [short[k : k + size] for k in range(0, len(short), size)]
    batch_of = {i: b for b, rows in enumerate(batches) for i in rows}
    running: dict[int, Any] = {}
    ready: dict[int, tuple[str, np.ndarray | None, str | None]] = {}
    queue = list(range(len(batches)))[::-1]
    try:
        with open_scheduler(scheduler, workers) as pool:
            for i, p in enumerate(paths):
                while queue and len(running) < IN_FLIGHT_PER_WORKER * pool.workers:  # bounded in flight
                    b = queue.pop()
                    running[b] = pool.submit(_waveform_worker if waveforms else _segments_worker,
                                             ([paths[k] for k in batches[b]], config))
                if sizes[p] > LONG_FILE_BYTES:
                    yield p, None, None
                    continue
                if i not in ready:
                    b = batch_of[i]
                    ready.update(zip(batches[b], running.pop(b).result()))
                yield ready.pop(i)
    finally:
        for fut in running.values():
            fut.cancel()
        if threads is not None:
            set_threads(threads)


def _size(path: str) -> int:
    """A file's size in bytes; 0 where it cannot be read (decoding then says why)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _is(path: Path, test: str) -> bool:
    """``path.is_dir()`` or ``is_file()``, False where the path cannot even be looked at
    (a link into a folder we may not enter): decoding it then says why, in its own row."""
    try:
        return bool(getattr(path, test)())
    except OSError:
        return False


def _under(folder: Path) -> list[tuple[Path, bool]]:
    """``(path, listed)`` for every file under ``folder``, sorted, links to files included
    (links to folders are not followed, as ``Path.rglob`` does not).  A folder that
    cannot be listed comes as ``(folder, False)``, so that it gets an error row instead
    of vanishing."""
    found: list[tuple[Path, bool]] = []
    for root, _, files in os.walk(folder, onerror=lambda exc: found.append((Path(exc.filename), False))):
        found.extend((f, True) for f in (Path(root) / name for name in files))
    return sorted(found)


def expand_paths(inputs: Iterable[str | os.PathLike[str]], *,
                 exclude: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """Files as given, and the audio files under folders (recursive, sorted).

    A file reached twice (listed and inside a listed folder, or through a link) is
    kept once, at its first place.  Folders in ``exclude`` (a ``--sort-into`` target
    inside an input folder, say) are not searched: a rerun does not sort its own copies.
    An empty path (an unset shell variable) raises ConfigError.
    """
    inputs = path_list(inputs, "inputs")
    skip = [Path(real_path(e)) for e in path_list(exclude, "exclude")]
    out: list[Path] = []
    seen: set[str] = set()

    def keep(f: Path) -> None:
        real = real_path(f)
        if real not in seen:
            seen.add(real)
            out.append(f)

    for item in inputs:
        if not str(item).strip():  # Path("") is the current folder: never searched by mistake
            raise ConfigError(EMPTY_PATH)
        p = Path(item)
        if _is(p, "is_dir"):
            for f, listed in _under(p):
                hidden = any(part.startswith(".") for part in f.relative_to(p).parts)
                if ((is_audio_path(f) or not listed) and not hidden
                        and not any(Path(real_path(f)).is_relative_to(e) for e in skip)):
                    keep(f)
        else:
            keep(p)  # a missing or bad file gets its own error row
    if not out:
        raise EmptyInputError("no audio files in " + ", ".join(str(i) for i in inputs))
    return out


def results_table(predictions: list[Prediction], labels: list[str], top_k: int = 1) -> pd.DataFrame:
    """One row a file: path, genre, confidence, the runners-up up to ``top_k``
    (``genre_2, p_2``...), one probability column a genre, segments, seconds, error."""
    rows = []
    top_k = min(top_k, len(labels))  # no more runners-up than genres
    for p in predictions:
        row: dict[str, Any] = {"path": p.source, "genre": p.genre or "", "confidence": round(p.confidence, 4),
                               **p.ranked(top_k)}
        for lab in labels:
            row[f"p_{lab}"] = round(p.probabilities.get(lab, float("nan")), 4)
        row.update(segments=len(p.timeline), seconds_scored=round(p.duration, 2), error=p.error or "")
        rows.append(row)
    return pd.DataFrame(rows)


def timeline_table(predictions: list[Prediction]) -> pd.DataFrame:
    parts = [p.timeline.assign(path=p.source) for p in predictions if len(p.timeline)]
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    return table[["path"] + [c for c in table.columns if c != "path"]]


