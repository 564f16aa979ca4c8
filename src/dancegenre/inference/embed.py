"""``embed`` and ``tag``: vectors and pretrained tags for files, folders, catalogs and stores."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from dancegenre.config import EMBED_LAYERS as LAYERS
from dancegenre.config import ENGINES, check_batch_size
from dancegenre.config import PRETRAINED_NAMES as PRETRAINED
from dancegenre.data.jobs import Journal, cache_keys
from dancegenre.audio.decode import join_blocks
from dancegenre.config import MAX_AUDIO_SECONDS
from dancegenre.errors import DanceGenreError, OutputError
from dancegenre.safety import csv_text, releasing, write_table

if TYPE_CHECKING:
    from torch import nn

TABLE_COLUMNS = ("row", "path", "item", "label")  # the first columns of every vector table embed writes


class Embedder:
    """Vectors (and, for a pretrained musicnn, tags) of audio segments.

    ``Embedder.load("musicnn-msd")`` takes the pretrained network (its features:
    ``layer`` all = max_pool + mean_pool + penultimate + taggram, 1,756 values, or one
    of them); ``Embedder.load("runs/x")`` takes a trained run and gives the input of its
    last linear layer.  ``config`` is the front end the input must be prepared with.
    A pretrained network runs with onnxruntime (``session``) where it can; then
    ``model`` may be None and torch is never imported (``digest`` names its weights).
    """

    def __init__(self, model: nn.Module | None, config: Any, *, name: str, kind: str, layer: str = "all",
                 tags: list[str] | None = None, batch_size: int = 16, session: Any = None,
                 digest: str | None = None) -> None:
        self.model = model.eval() if model is not None else None
        self.config = config
        self.name = name
        self.kind = kind  # "pretrained" or "run"
        self.layer = layer
        self.tags = tags or []
        self.batch_size = check_batch_size(batch_size)
        self.session = session  # onnxruntime, for a pretrained network (backbone_session); None: torch
        self.digest = digest

    @classmethod
    def load(cls, model: str | os.PathLike[str], *, layer: str = "all", engine: str = "auto",
             log: Callable[[str], Any] = print) -> Embedder:
        """``engine``: how a pretrained network runs: ``auto`` with onnxruntime where it
        can (:func:`~dancegenre.training.backbone.backbone_session`), else torch; ``onnx``
        insists; ``torch`` always.  A run's penultimate layer runs with torch.

        With onnxruntime, the ONNX file and stamp a first use left in the cache folder
        are used without importing torch (:func:`~dancegenre.training.backbone.cached_backbone`).
        """
        from dancegenre.errors import ConfigError

        if layer not in LAYERS:
            raise ConfigError(f"unknown layer {layer!r}; choose from {', '.join(LAYERS)}")
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        name = str(model)
        if name in PRETRAINED:
            return cls._pretrained(name, layer=layer, engine=engine, log=log)
        from dancegenre.models.musicnn import PRETRAINED as TAGS
        from dancegenre.training.checkpoint import load_checkpoint

        if not name.strip() or not Path(model).exists():  # Path("") is the current folder
            raise ConfigError(f"--model: {name!r} is neither a pretrained model ({', '.join(PRETRAINED)}) "
                              "nor a run folder or checkpoint")
        ckpt = load_checkpoint(model)
        if layer != "all":
            raise ConfigError("--layer names a musicnn layer; a run gives its penultimate layer")
        if engine == "onnx":
            raise ConfigError("--engine onnx runs a pretrained network; a run's penultimate layer runs with torch")
        tags = TAGS[ckpt.model_config.name][1] if ckpt.model_config.name in TAGS else []
        return cls(ckpt.model, ckpt.feature_config, name=str(ckpt.path), kind="run", tags=tags)

    @classmethod
    def _pretrained(cls, name: str, *, layer: str, engine: str, log: Callable[[str], Any]) -> Embedder:
        from dancegenre.config import FeatureConfig
        from dancegenre.errors import ConfigError

        config = FeatureConfig.preset("musicnn")
        if engine != "torch":
            from dancegenre.training.backbone import cached_backbone

            found = cached_backbone(name)
            if found is not None:
                session, meta = found
                return cls(None, config, name=name, kind="pretrained", layer=layer, tags=list(meta["tags"]),
                           session=session, digest=str(meta["weights"]))
        from dancegenre.models.embedding import weights_digest
        from dancegenre.models.musicnn import PRETRAINED as TAGS
        from dancegenre.models.musicnn import MusiCNNBackbone
        from dancegenre.models.pretrained import load_backbone_state
        from dancegenre.training.backbone import backbone_session, stamp_backbone

        net = MusiCNNBackbone()
        net.load_state_dict(load_backbone_state(name, log=log))
        net.eval()
        digest = weights_digest(net)
        session = None
        if engine != "torch":
            session = backbone_session(name, net, digest=digest, log=log)
            if session is not None:
                stamp_backbone(name, digest)
        if session is None and engine == "onnx":
            raise ConfigError(f"--engine onnx: {name} cannot run with onnxruntime here (is it installed? "
                              "is the cache folder writable?); use --engine torch")
        return cls(net, config, name=name, kind="pretrained", layer=layer, tags=TAGS[name][1], session=session,
                   digest=digest)

    @property
    def model_id(self) -> str:
        """What the vectors depend on: the network's weights and the layer."""
        if self.digest is None:
            from dancegenre.models.embedding import weights_digest

            self.digest = weights_digest(self.model)
        return f"{Path(self.name).name}-{self.digest}-{self.layer}"

    def __call__(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(k, n_mels, frames) -> (vectors (k, D) float32, taggram (k, 50) of a pretrained model, else None)."""
        if self.session is None:
            import torch

            with torch.no_grad():
                return self._torch(segments)
        from dancegenre.training.backbone import BACKBONE_OUTPUTS

        vecs, tags = [], []
        for s in range(0, len(segments), self.batch_size):
            x = np.ascontiguousarray(segments[s : s + self.batch_size], dtype=np.float32)
            out = dict(zip(BACKBONE_OUTPUTS, self.session.run(None, {"segments": x})))
            vecs.append(out["features" if self.layer == "all" else self.layer])
            tags.append(out["taggram"])
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32)
        return vectors, (np.concatenate(tags) if tags else None)

    def set_threads(self, n: int) -> int:
        """Run the network on ``n`` threads from now on; returns the count before.  An
        onnxruntime session keeps the count it was made with (every core)."""
        if self.session is not None:
            return n
        from dancegenre.inference.classifier import TorchScorer

        return TorchScorer.set_threads(n)

    def _torch(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        vecs, tags = [], []
        for s in range(0, len(segments), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(segments[s : s + self.batch_size], dtype=np.float32))
            if self.kind == "pretrained":
                from dancegenre.models.musicnn import backbone_features

                out = self.model(x)
                v = backbone_features(out) if self.layer == "all" else out[self.layer]
                tags.append(out["taggram"].numpy())
            else:
                v = self.model.penultimate(x)
            vecs.append(v.float().numpy())
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32)
        return vectors, (np.concatenate(tags) if tags else None)


def list_sources(inputs: list[str | os.PathLike[str]]) -> pd.DataFrame:
    """Files to embed from files, folders (recursive), catalogs (CSV) and prepared stores.

    Returns a table with path, item, label (empty where unknown) and store (the store
    folder a row came from, else empty), in input order, each path once.
    """
    from dancegenre.data.catalog import list_items
    from dancegenre.data.store import SegmentStore
    from dancegenre.errors import EmptyInputError
    from dancegenre.inference.classifier import expand_paths
    from dancegenre.safety import path_list

    parts = []
    inputs = path_list(inputs, "inputs")
    for src in inputs:
        p = Path(src)
        if p.is_dir() and (p / "store.json").exists():
            st = SegmentStore(p)
            parts.append(pd.DataFrame({"path": st.items["path"], "item": st.items["item"],
                                       "label": st.items["label"], "store": str(p)}))
        elif p.is_file() and p.suffix.lower() == ".csv":
            items, _ = list_items(p)
            parts.append(pd.DataFrame({"path": items["path"], "item": items["item"], "label": items["label"],
                                       "store": ""}))
        else:
            files = expand_paths([p])
            parts.append(pd.DataFrame({"path": [str(f) for f in files], "item": [str(f) for f in files],
                                       "label": "", "store": ""}))
    table = pd.concat(parts, ignore_index=True).drop_duplicates("path").reset_index(drop=True)
    if table.empty:
        raise EmptyInputError("nothing to embed in " + ", ".join(str(i) for i in inputs))
    return table


def _store_segments(store_path: str, embedder: Embedder) -> Any:
    """The store's segments by item, when its front end is the embedder's (else None)."""
    from dancegenre.data.store import SegmentStore

    st = SegmentStore(store_path)
    if not st.config.same_frontend(embedder.config):
        return None
    rows = st.index.groupby("item", sort=False)["row"].agg(list)
    fn = lambda item: np.asarray(st.segments[rows[item]]) if item in rows.index else None  # noqa: E731
    fn.config = st.config  # type: ignore[attr-defined]  # its segment hop gives the start times
    return fn


def _check_own_vectors(out: Path, table_path: Path) -> None:
    """OutputError when ``out`` exists and is not vectors embed wrote: a ``.npy`` with no
    vector table of ours beside it, or a ``.parquet`` without our columns."""
    if not (out.exists() or out.is_symlink()):
        return
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            ours = not out.is_symlink() and set(TABLE_COLUMNS) <= set(pq.read_schema(out).names)
        except Exception:  # noqa: BLE001 - pyarrow raises several kinds for a file that is not parquet
            ours = False
    else:
        ours = not out.is_symlink() and table_path.is_file()  # the table's own header was checked
    if not ours:
        raise OutputError(f"--out {out} exists and is not a vector file made by dancegenre; move it or choose "
                          "another name")


@releasing
def embed_files(inputs: list[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                model: str | os.PathLike[str] = "musicnn-msd", layer: str = "all", per_segment: bool = False,
                workers: int | None = None, progress: bool = True, engine: str = "auto",
                log: Callable[[str], Any] = print) -> pd.DataFrame:
    """Write one vector per file (the mean of its segments') or per segment to ``out``.

    ``out`` ends in ``.npy`` (vectors, float32 (rows, D), with ``<out>.csv`` beside it
    describing each row) or ``.parquet`` (one table: the description, then columns
    e0, e1 ...).  Files that fail are listed in ``<out stem>.failures.csv`` and skipped.
    Resumable: finished files are journalled in ``<out>.pending/`` and not embedded
    again by a rerun with the same model (the journal is removed once ``out`` is
    written).  Returns the row table.

    Raises
    ------
    OutputError : ``out`` has another suffix, or is one of the inputs.
    EmptyInputError : nothing to embed, or no file could be embedded.
    """
    from dancegenre.data.catalog import item_key
    from dancegenre.errors import ConfigError, EmptyInputError
    from dancegenre.inference.classifier import decode_many
    from dancegenre.safety import (
        FAILURE_COLUMNS,
        Inputs,
        atomic_path,
        check_output_file,
        check_own_table,
        path_list,
    )

    out = check_output_file(out, suffixes=(".npy", ".parquet"))
    table_path = out.with_suffix(".csv") if out.suffix.lower() == ".npy" else out
    failures_path = out.with_name(out.stem + ".failures.csv")
    inputs = path_list(inputs, "inputs")
    sources = list_sources(inputs)
    given = Inputs([*inputs, *sources["path"]])
    for target, what in ((out, "--out"), (table_path, "the table beside --out"), (failures_path, "the failures file")):
        check_output_file(target, inputs=given, what=what)
    # the files beside --out were not named by the user: never one of theirs (a catalog.csv, notes)
    if table_path != out:
        check_own_table(table_path, columns=TABLE_COLUMNS, what="the table beside --out", kind="vector table")
    check_own_table(failures_path, columns=FAILURE_COLUMNS, what="the failures file", kind="failures list")
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("--out .parquet needs pyarrow (pip install pyarrow); or use .npy") from None
    _check_own_vectors(out, table_path)
    embedder = Embedder.load(model, layer=layer, engine=engine, log=log)
    from_store = {s: _store_segments(s, embedder) for s in sources["store"].unique() if s}

    # ---- the journal of an interrupted run: rows.jsonl + vectors.f32, appended per file
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(out, "embed-journal", blob="vectors.f32")
    done = {row["key"]: row for row in journal.rows(needs=("key", "segments")) if row.get("model") == embedder.model_id}
    key_list, failed = cache_keys(sources["path"], lambda path: f"{item_key(path, embedder.config)}:{embedder.model_id}")
    keys = {i: k for i, k in enumerate(key_list) if k is not None}
    failures = [{"path": sources.at[i, "path"], "error": f["reason"]} for i, f in failed.items()]
    todo = [i for i in keys if keys[i] not in done]
    if done:
        log(f"resuming: {len(keys) - len(todo)} of {len(keys)} files embedded before")

    def segments_of_store(i: int) -> np.ndarray | None:
        fn = from_store.get(sources.at[i, "store"])
        return fn(sources.at[i, "item"]) if fn else None

    from tqdm import tqdm

    direct = {i: segments_of_store(i) for i in todo if sources.at[i, "store"]}
    decode = [i for i in todo if direct.get(i) is None]
    bar = tqdm(total=len(todo), desc="embed", unit="file", disable=not progress)
    with journal.writer() as add:
        def keep(i: int, segs: np.ndarray) -> None:
            vectors, _ = embedder(segs)
            data = vectors if per_segment else vectors.mean(0, keepdims=True)
            done[keys[i]] = add({"key": keys[i], "model": embedder.model_id, "segments": len(vectors)}, data)
            bar.update(1)

        for i in [i for i in todo if direct.get(i) is not None]:
            keep(i, direct[i])
        by_path = {sources.at[i, "path"]: i for i in decode}
        # one decoding process overlaps with the network, which takes every core
        for path, segs, err in decode_many(list(by_path), embedder.config, workers=1,
                                           network_threads=os.cpu_count() or 1, set_threads=embedder.set_threads):
            i = by_path[path]
            if err is None and segs is None:  # a long file: decoded here, block by block
                from dancegenre.audio.frontend import iter_segments
                from dancegenre.errors import DanceGenreError

                try:
                    segs = np.concatenate([b.segments for b in iter_segments(path, embedder.config)])
                except DanceGenreError as exc:
                    err = str(exc)
            if err is not None:
                failures.append({"path": path, "error": err})
                bar.update(1)
                continue
            keep(i, segs)
    bar.close()

    # ---- the outputs, from the journal, in input order
    rows, chunks = [], []
    for i, key in keys.items():
        if key not in done:
            continue
        r = done[key]
        seg = getattr(from_store.get(sources.at[i, "store"]), "config", embedder.config)
        chunks.append(journal.vectors(r))
        base = {"path": sources.at[i, "path"], "item": sources.at[i, "item"], "label": sources.at[i, "label"]}
        if per_segment:
            for k in range(r["count"]):
                rows.append({**base, "segment": k, "start": round(k * seg.segment_hop_seconds, 3),
                             "end": round(k * seg.segment_hop_seconds + seg.segment_seconds, 3)})
        else:
            rows.append({**base, "segments": r["segments"]})
    write_table(failures_path, pd.DataFrame(failures, columns=["path", "error"]))
    if not chunks:
        raise EmptyInputError(f"no file could be embedded (reasons in {failures_path})")
    vectors = np.concatenate(chunks)
    table = pd.DataFrame(rows)
    table.insert(0, "row", np.arange(len(table)))
    if out.suffix.lower() == ".npy":
        write_table(table_path, table)
        with atomic_path(out) as part, open(part, "wb") as f:
            np.save(f, vectors)
    else:
        full = pd.concat([table, pd.DataFrame(vectors, columns=[f"e{j}" for j in range(vectors.shape[1])])], axis=1)
        with atomic_path(out) as part:
            full.to_parquet(part, index=False)
    journal.remove()  # only what this job wrote
    log(f"{len(table)} vectors of {vectors.shape[1]} values ({embedder.name}"
        + (f", {layer}" if embedder.kind == "pretrained" else ", penultimate layer") + f") in {out}"
        + (f" and {table_path}" if table_path != out else "")
        + (f"; {len(failures)} file(s) failed, reasons in {failures_path}" if failures else ""))
    return table



def _refused_by_header(paths: list[str], max_duration: float | None) -> dict[str, str]:
    """{path: why} for the files whose header says they last more than ``max_duration``
    seconds, or that cannot be opened."""
    from dancegenre.audio.decode import check_duration, check_max_duration

    check_max_duration(max_duration)
    out = {}
    for path in paths:
        try:
            check_duration(path, max_duration)
        except DanceGenreError as exc:
            out[path] = str(exc)
    return out


@releasing
def tag_files(inputs: list[str | os.PathLike[str]], *, model: str = "musicnn-msd", top: int = 5,
              out: str | os.PathLike[str] | None = None, timeline: str | os.PathLike[str] | None = None,
              progress: bool = True, engine: str = "auto", log: Callable[[str], Any] = print,
              max_duration: float | None = MAX_AUDIO_SECONDS) -> pd.DataFrame:
    """The pretrained network's tags for every file: the mean taggram over its 3-s patches.

    A file longer than ``max_duration`` seconds (None: no cap) is a failed row, refused
    from its header before any decoding: a small file of many hours would otherwise
    take gigabytes.

    Returns one row a file (path, the ``top`` tags with their probabilities as
    ``tag1, p1, ...``, patches, error).  ``out`` writes that table as CSV;
    ``timeline`` writes JSON lines, one a file, with every patch's start, end and the
    probability of each of the 50 tags.  A bad file gets a row with its error.
    """
    from dancegenre.audio.frontend import iter_segments
    from dancegenre.data.catalog import item_key
    from dancegenre.errors import ConfigError, DanceGenreError
    from dancegenre.inference.classifier import decode_many

    if model not in PRETRAINED:
        raise ConfigError(f"--model must be one of {', '.join(PRETRAINED)} (the tags are theirs), not {model!r}")
    from dancegenre.safety import (
        Inputs,
        atomic_write,
        check_distinct,
        check_output_file,
        path_list,
    )

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"--top must be a whole number >= 1, not {top!r}")

    for target, what, suffixes in ((out, "--out", (".csv",)), (timeline, "--timeline", (".jsonl", ".json"))):
        if target is not None:
            check_output_file(target, suffixes=suffixes, what=what)
    check_distinct({"--out": Path(out) if out else None, "--timeline": Path(timeline) if timeline else None})
    inputs = path_list(inputs, "inputs")
    sources = list_sources(inputs)
    given = Inputs([*inputs, *sources["path"]])
    for target, what, columns in ((out, "--out", ("path", "patches", "error")),
                                  (timeline, "--timeline", ("path", "tags", "timeline"))):
        if target is not None:  # an input, or a file that is not a table of ours, is refused
            check_output_file(target, inputs=given, what=what, columns=columns)
    embedder = Embedder.load(model, engine=engine, log=log)
    cfg = embedder.config
    paths = list(sources["path"])
    # with an output, a journal of finished files: an interrupted tag resumes where it stopped
    anchor = out or timeline
    book = None
    done: dict[str, dict[str, Any]] = {}
    keys: list[str | None] = [None] * len(paths)
    if anchor is not None:
        Path(anchor).parent.mkdir(parents=True, exist_ok=True)
        book = Journal(anchor, "tag-journal")
        settings = f"{embedder.model_id}:{top}"
        done = {r["key"]: r for r in book.rows(needs=("key", "row", "line")) if r.get("settings") == settings}
        keys, _ = cache_keys(paths, lambda path: item_key(path, cfg))  # an unreadable file: None, tried again
        if done:
            log(f"resuming: {sum(k in done for k in keys)} of {len(paths)} files tagged before")
    finished: dict[str, dict[str, Any]] = {p: done[k] for p, k in zip(paths, keys) if k in done}
    key_of = dict(zip(paths, keys))
    from tqdm import tqdm

    todo = [p for p in paths if p not in finished]
    bar = tqdm(total=len(todo), desc="tag", unit="file", disable=not progress)
    with book.writer() if book else contextlib.nullcontext(None) as add:
        refused = _refused_by_header(todo, max_duration)
        for path, why in refused.items():  # not journaled: a rerun tries it again
            finished[path] = {"row": {"path": path, "patches": 0, "error": why}, "line": None}
            bar.update(1)
        for path, segs, err in decode_many([p for p in todo if p not in refused], cfg, workers=1,
                                           network_threads=os.cpu_count() or 1, set_threads=embedder.set_threads):
            if err is None and segs is None:
                try:
                    segs = join_blocks((b.segments for b in iter_segments(path, cfg, max_duration=max_duration)),
                                       np.zeros((0, cfg.n_mels, cfg.segment_frames), np.float32))
                except DanceGenreError as exc:
                    err = str(exc)
            bar.update(1)
            if err is not None:  # not journaled: a rerun tries it again
                finished[path] = {"row": {"path": path, "patches": 0, "error": err}, "line": None}
                continue
            _, taggram = embedder(segs)
            mean = taggram.mean(0)
            row: dict[str, Any] = {"path": path}
            for rank, j in enumerate(np.argsort(-mean)[:top], 1):
                row[f"tag{rank}"], row[f"p{rank}"] = embedder.tags[j], round(float(mean[j]), 4)
            row.update(patches=len(taggram), error="")
            start = np.arange(len(taggram)) * cfg.segment_hop_seconds
            line = json.dumps({"path": path, "model": model, "tags": embedder.tags,
                               "mean": [round(float(v), 4) for v in mean],
                               "timeline": [{"start": round(float(t), 3),
                                             "end": round(float(t) + cfg.segment_seconds, 3),
                                             "probabilities": [round(float(v), 4) for v in p]}
                                            for t, p in zip(start, taggram)]})
            finished[path] = {"row": row, "line": line}
            if add is not None and key_of[path] is not None:
                add({"key": key_of[path], "settings": settings, **finished[path]})
    bar.close()
    rows = [finished[p]["row"] for p in paths]
    lines = [finished[p]["line"] for p in paths if finished[p]["line"] is not None]
    table = pd.DataFrame(rows)
    ranked = [c for r in range(1, top + 1) for c in (f"tag{r}", f"p{r}") if c in table.columns]
    table = table[["path", *ranked, "patches", "error"]]
    for target, text in ((out, lambda: csv_text(table)),
                         (timeline, lambda: "\n".join(lines) + ("\n" if lines else ""))):
        if target is not None:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, text())
    if book is not None:
        book.remove()  # the outputs are whole
    return table


__all__ = ["Embedder", "embed_files", "list_sources", "tag_files"]
