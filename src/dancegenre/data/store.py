"""Audio folder or catalog -> memory-mapped segment store, and its loader.

A store is a folder::

    config.json     the FeatureConfig every segment was made with
    segments.npy    float16 array (segments, n_mels, segment_frames), read memory-mapped
    index.csv       one row a segment: row, item, label, group columns, segment, start, path
    items.csv       one row an item: item, path, label, groups, kept catalog columns,
                    duration, sample_rate, channels, n_segments, offset, key
    failures.csv    one row a skipped file: item, path, label, error, reason
    store.json      written last: counts, labels, group columns and the size and mtime of
                    segments.npy; a store whose files disagree with it is not trusted
    pending/        items finished since the last complete store (resume), then removed

The cache key of an item is its absolute path, size, mtime and the feature config's
digest: a changed file or config is prepared again, an unchanged one never.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dancegenre import __version__
from dancegenre.audio.decode import join_blocks, probe
from dancegenre.audio.frontend import LogMelStream, iter_segments, mel_filterbank
from dancegenre.config import FeatureConfig, given
from dancegenre.data.catalog import item_key, list_items
from dancegenre.data.jobs import cache_keys, sort_results
from dancegenre.data.scheduler import check_workers, parallel_map
from dancegenre.errors import (
    EMPTY_PATH,
    DanceGenreError,
    EmptyInputError,
    StoreError,
)
from dancegenre.safety import (
    atomic_path,
    atomic_write,
    check_labels,
    claim_folder,
    read_table,
    releasing,
    remove_ours,
    write_table,
)

STORE_FORMAT = "dancegenre-store"
STORE_VERSION = 1
# What a store made before the folder marker holds: every one of these, and nothing but
# these and STORE_EXTRA; no other folder is taken for one.
STORE_FILES = ("store.json", "config.json", "segments.npy", "index.csv", "items.csv")
STORE_EXTRA = ("failures.csv", "summary.json", "pending")
# What a pending folder made before its marker holds (an interrupted prepare): shards only,
# each named by 16 hex digits, and their temporaries.
_SHARD = "[0-9a-f]" * 16
PENDING_EXTRA = (f"{_SHARD}.f16", f"{_SHARD}.json", f".{_SHARD}.*.part")


# ---------------------------------------------------------------- one item (worker side)

def decode_item(path: str, key: str, config: FeatureConfig) -> tuple[dict[str, Any], np.ndarray | None]:
    """(metadata, float16 segments) of one file; for bad audio (metadata with
    ``error`` and ``reason``, None): never raises for a bad file."""
    try:
        info = probe(path)
        numbers_of: list[np.ndarray] = []

        def float16_blocks() -> Iterator[np.ndarray]:
            for block in iter_segments(path, config):
                numbers_of.append(block.index)
                yield block.segments.astype(np.float16)

        # float16, joined in one array grown in place: a long mix is held once, not as
        # blocks plus their concatenation
        segments = join_blocks(float16_blocks(), np.zeros((0, config.n_mels, config.segment_frames), np.float16))
        numbers = np.concatenate(numbers_of) if numbers_of else np.zeros(0, np.int64)
    except DanceGenreError as exc:
        return {"key": key, "error": type(exc).__name__, "reason": str(exc)}, None
    except (MemoryError, ValueError) as exc:  # a header that lies about its size
        return {"key": key, "error": type(exc).__name__, "reason": f"{exc}: {path}"}, None
    meta = {"key": key, "n_segments": len(segments), "segment_numbers": numbers.tolist(),
            "duration": round(info.duration, 3), "sample_rate": info.sample_rate, "channels": info.channels}
    return meta, segments


def prepare_shard(items: list[tuple[str, str]], pending: str, config: FeatureConfig, name: str) -> dict[str, Any]:
    """Decode the (path, cache key) ``items`` into one shard of ``pending``.

    A shard is ``<name>.f16`` (the items' segments one after another, raw float16,
    each ``(n_mels, segment_frames)``) and ``<name>.json`` (every item's metadata with
    its offset in the shard, or its failure).  The JSON is written last: a shard
    without it (a worker lost half way) is ignored and its items are done again.  One
    item's segments are in memory at a time, whatever the shard's size.

    Returns ``{"shard": name, "items": [metadata, ...]}``, or ``{"shard": name,
    "error": ...}`` when this worker cannot see ``pending``.
    """
    folder = Path(pending)
    if not folder.is_dir():
        import socket

        return {"shard": name, "error": f"the worker on {socket.gethostname()} cannot see the store folder "
                                        f"{pending}: it must be on storage that every worker mounts"}
    metas, offset = [], 0
    with atomic_path(folder / f"{name}.f16") as part, open(part, "wb") as fh:
        for path, key in items:
            meta, segments = decode_item(path, key, config)
            if segments is not None:
                fh.write(np.ascontiguousarray(segments).tobytes())
                meta.update(shard=name, shard_offset=offset)
                offset += len(segments)
            metas.append(meta)
    atomic_write(folder / f"{name}.json", json.dumps({"shard": name, "items": metas}))
    return {"shard": name, "items": metas}


def _pending_items(pending: Path) -> dict[str, dict[str, Any]]:
    """Metadata of every item in a committed shard of ``pending`` (a resumed run's work)."""
    done = {}
    for meta_file in sorted(pending.glob("*.json")):
        if not (pending / f"{meta_file.stem}.f16").exists():
            continue
        for meta in json.loads(meta_file.read_text())["items"]:
            if "error" not in meta:
                done[meta["key"]] = meta
    return done


# ---------------------------------------------------------------- the store

@dataclass
class PrepareSummary:
    """What one ``prepare`` run did."""

    out: str
    items: int  # items listed in the input
    prepared: int  # decoded in this run
    reused: int  # taken unchanged from an earlier run
    skipped: int  # recorded in failures.csv
    segments: int
    seconds: float
    labels: dict[str, int]  # items per label in the store

    @property
    def items_per_second(self) -> float:
        return self.prepared / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "items_per_second": round(self.items_per_second, 2)}


@releasing
def prepare(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: FeatureConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
    scheduler: str = "processes",
    shard_items: int | None = None,
) -> PrepareSummary:
    """Prepare every file of ``source`` (folder or catalog) into the store ``out``.

    The files are decoded in shards of ``shard_items`` files (default: 1 to 64, so
    that every worker gets several) on ``scheduler`` (see :mod:`dancegenre.scheduler`),
    each shard written by its worker into ``out/pending``; the store is merged from
    the shards in catalog order, so it is the same whatever ran the work.

    Resumable: items already in ``out`` with the same key, and items finished by an
    interrupted run, are not decoded again.  Bad files are recorded in
    ``failures.csv`` and skipped.  The source files are only read.

    Raises
    ------
    EmptyInputError
        Nothing in ``source``, or no file could be prepared.
    CatalogError, StoreError
        A malformed catalog; ``out`` holds a store made with another config.
    ConfigError
        ``config`` would give mel bands without an FFT bin.
    Interrupted
        Ctrl-C; finished items are kept in ``out/pending``.
    """
    config = given(config, FeatureConfig)
    check_workers(workers, scheduler)  # before the store folder exists, as parallel_map would after
    t0 = time.perf_counter()
    mel_filterbank(config)  # a front end with empty bands is refused before the store folder exists
    items, groups = list_items(source)
    # A store inside an input folder would be read as a genre folder on the next run.
    out = claim_folder(out, "store", legacy=STORE_FILES, legacy_others=STORE_EXTRA, what="store folder",
                       inputs=[source] if Path(source).is_dir() else [])
    _check_config(out, config)
    # its own marker: only what a prepare wrote there is ever removed from it
    pending = claim_folder(out / "pending", "store-pending", legacy_others=PENDING_EXTRA,
                           what="the store's pending folder")

    previous = _previous_items(out)
    keys, failures = cache_keys(items["path"], lambda path: item_key(path, config))
    items["cache_key"] = keys
    done = _pending_items(pending)
    todo = [i for i, k in enumerate(keys) if k is not None and k not in done and k not in previous]
    reused = sum(1 for k in keys if k is not None and (k in done or k in previous)) 

    results = _run_shards(items, todo, pending, config, workers=workers, progress=progress,
                          scheduler=scheduler, shard_items=shard_items)
    sort_results(results, "key", done, failures)
    summary = _finalize(out, items, groups, config, done, previous, failures)
    summary.prepared = sum(1 for m in results.values() if "error" not in m)
    summary.reused = reused
    summary.seconds = round(time.perf_counter() - t0, 3)
    atomic_write(out / "summary.json", json.dumps(summary.to_dict(), indent=2))
    if summary.segments == 0:
        raise EmptyInputError(
            f"none of the {len(items)} file(s) could be prepared; reasons in {out / 'failures.csv'}"
        )
    return summary


def _check_config(out: Path, config: FeatureConfig) -> None:
    path = out / "config.json"
    if path.exists():
        try:
            existing = FeatureConfig.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, DanceGenreError):
            existing = None
        if existing != config:
            raise StoreError(
                f"{out} holds a store made with another feature config; "
                "choose a new output folder (or delete that one)"
            )
    else:
        atomic_write(path, json.dumps(config.to_dict(), indent=2))


def _previous_items(out: Path) -> dict[str, dict[str, Any]]:
    """Items of the last complete store in ``out``, by key, if it validates."""
    try:
        store = SegmentStore(out)
        store.items["cache_key"]
    except (StoreError, KeyError):
        return {}
    return {row.cache_key: {"offset": int(row.offset), "n_segments": int(row.n_segments)}
            for row in store.items.itertuples()}


def _run_shards(items: pd.DataFrame, todo: list[int], pending: Path, config: FeatureConfig, *,
                workers: int | None, progress: bool, scheduler: str,
                shard_items: int | None) -> dict[int, dict[str, Any]]:
    """Decode the ``todo`` rows of ``items`` in shards; return {row: metadata or failure}."""
    # Build the mel filters (and import librosa) once here: forked workers inherit them.
    LogMelStream(config)
    # about 24 shards a worker: the last shard to finish, while the other workers wait, is short
    size = shard_items or int(np.clip(np.ceil(len(todo) / (24 * max(workers or os.cpu_count() or 1, 2))), 1, 64))
    shards: dict[str, list[int]] = {}
    for start in range(0, len(todo), size):
        rows = todo[start:start + size]
        keys = [items.at[i, "cache_key"] for i in rows]
        # the first row is in the name: a file listed twice still makes two shards
        shards[hashlib.sha1(f"{rows[0]} {' '.join(keys)}".encode()).hexdigest()[:16]] = rows
    tasks = {name: ([(items.at[i, "path"], items.at[i, "cache_key"]) for i in rows], str(pending), config, name)
             for name, rows in shards.items()}
    results = parallel_map(prepare_shard, tasks, workers=workers, progress=progress, desc="prepare",
                           scheduler=scheduler, weight=lambda name: len(shards[name]))
    out: dict[int, dict[str, Any]] = {}
    for name, result in results.items():
        if "error" in result:
            raise StoreError(result["error"])
        out.update(zip(shards[name], result["items"]))
    return out


ITEM_AUDIO = ("duration", "sample_rate", "channels")  # what decoding tells about an item, in items.csv


def _finalize(out: Path, items: pd.DataFrame, groups: list[str], config: FeatureConfig,
              done: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]],
              failures: dict[int, dict[str, str]]) -> PrepareSummary:
    """Write the complete store from pending items and the previous store's segments."""
    ok = [i for i, k in enumerate(items["cache_key"]) if k is not None and i not in failures
          and (k in done or k in previous)]
    counts = [done[k]["n_segments"] if k in done else previous[k]["n_segments"]
              for k in items["cache_key"].iloc[ok]]
    total = int(sum(counts))
    shape = (total, config.n_mels, config.segment_frames)
    old = np.load(out / "segments.npy", mmap_mode="r") if previous else None
    shards: dict[str, np.ndarray] = {}
    offset = 0
    numbers_of, extras = [], []  # each kept item's segment numbers, and its duration, sample rate, channels
    old_index = read_table(out / "index.csv", usecols=["segment"]) if previous else None
    old_items = read_table(out / "items.csv", dtype={"cache_key": str}).set_index("cache_key") if previous else None
    with atomic_path(out / "segments.npy") as tmp:  # replaced only once it is whole
        if total == 0:  # a zero-length memmap cannot be opened; nothing will be written
            with open(tmp, "wb") as fh:
                np.save(fh, np.zeros(shape, np.float16))
            new = np.zeros(shape, np.float16)
        else:
            new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        for i, n in zip(ok, counts):
            key = items.at[i, "cache_key"]
            if key in done:
                meta = done[key]
                if meta["shard"] not in shards:
                    shards[meta["shard"]] = np.memmap(out / "pending" / f"{meta['shard']}.f16", dtype=np.float16,
                                                      mode="r").reshape(-1, config.n_mels, config.segment_frames)
                new[offset : offset + n] = shards[meta["shard"]][meta["shard_offset"] : meta["shard_offset"] + n]
                numbers_of.append(np.asarray(meta["segment_numbers"], dtype=np.int64))
                extras.append([meta[k] for k in ITEM_AUDIO])
            else:
                p = previous[key]
                new[offset : offset + n] = old[p["offset"] : p["offset"] + n]
                numbers_of.append(old_index["segment"].to_numpy()[p["offset"] : p["offset"] + n])
                extras.append([old_items.at[key, k] for k in ITEM_AUDIO])
            offset += n
        if isinstance(new, np.memmap):
            new.flush()
        del new, old, shards
    # the tables in one go (one DataFrame per item cost 2 ms each, after the workers are done)
    items_table = items.iloc[ok].reset_index(drop=True)
    for j, k in enumerate(ITEM_AUDIO):
        items_table[k] = [e[j] for e in extras]
    items_table["n_segments"] = counts
    items_table["offset"] = np.cumsum([0, *counts])[:-1].astype(np.int64)
    numbers = np.concatenate(numbers_of) if numbers_of else np.zeros(0, np.int64)
    per_segment = lambda col: np.repeat(items_table[col].to_numpy(), counts)  # noqa: E731
    index = pd.DataFrame({"row": np.arange(total), "item": per_segment("item"), "label": per_segment("label"),
                          **{g: per_segment(g) for g in groups},
                          "segment": numbers, "start": np.round(numbers * config.segment_hop_seconds, 3),
                          "path": per_segment("path")})
    fail_rows = [{"item": items.at[i, "item"], "path": items.at[i, "path"],
                  "label": items.at[i, "label"], **f} for i, f in sorted(failures.items())]
    fail_table = pd.DataFrame(fail_rows, columns=["item", "path", "label", "error", "reason"])
    write_table(out / "index.csv", index)
    write_table(out / "items.csv", items_table)
    write_table(out / "failures.csv", fail_table)
    st = os.stat(out / "segments.npy")
    labels = items_table["label"].value_counts().sort_index().to_dict() if len(items_table) else {}
    manifest = {
        "format": STORE_FORMAT, "version": STORE_VERSION, "dancegenre": __version__,
        "feature_config": config.to_dict(), "n_items": len(items_table), "n_segments": total,
        "n_failures": len(fail_table), "labels": labels, "group_columns": groups,
        "segments_size": st.st_size, "segments_mtime_ns": st.st_mtime_ns,
    }
    # store.json is the commit point: written last, it vouches for the files above.
    atomic_write(out / "store.json", json.dumps(manifest, indent=2))
    pending = out / "pending"  # the shards this job's workers wrote, and nothing else
    remove_ours(pending, [f.name for f in pending.glob("*") if f.suffix in (".f16", ".json", ".part")])
    return PrepareSummary(out=str(out), items=len(items), prepared=0, reused=0,
                          skipped=len(fail_table), segments=total, seconds=0.0,
                          labels={str(k): int(v) for k, v in labels.items()})


class SegmentStore:
    """A prepared store, opened without loading its segments into memory.

    Attributes
    ----------
    config : FeatureConfig the segments were made with.
    segments : np.memmap, shape (n_segments, n_mels, segment_frames), float16 dB.
    index : DataFrame, one row a segment (see module docstring).
    items : DataFrame, one row an item.
    labels : sorted label names.
    group_columns : grouping columns the catalog had (e.g. track_id, artist).

    Raises
    ------
    StoreError
        The folder is not a complete store (never prepared, or interrupted before its
        commit, or its files changed since).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not str(path).strip():  # Path("") is the current folder
            raise StoreError(EMPTY_PATH)
        self.path = Path(path)
        manifest_path = self.path / "store.json"
        if not manifest_path.is_file():
            raise StoreError(f"not a prepared store (no store.json): {self.path}; run `dancegenre prepare` first")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            raise StoreError(f"corrupt store.json in {self.path}") from None
        if manifest.get("format") != STORE_FORMAT or manifest.get("version") != STORE_VERSION:
            raise StoreError(f"{self.path} is not a dancegenre store of version {STORE_VERSION}")
        seg_path = self.path / "segments.npy"
        try:
            st = os.stat(seg_path)
        except OSError:
            raise StoreError(f"store {self.path} lacks segments.npy; run prepare again") from None
        if st.st_size != manifest["segments_size"] or st.st_mtime_ns != manifest["segments_mtime_ns"]:
            raise StoreError(f"store {self.path} is incomplete or was changed; run prepare again")
        self.manifest = manifest
        self.config = FeatureConfig.from_dict(manifest["feature_config"])
        self.segments = np.load(seg_path, mmap_mode="r")
        self.index = read_table(self.path / "index.csv", dtype={"item": str, "label": str})
        self.items = read_table(self.path / "items.csv", dtype={"item": str, "label": str, "cache_key": str})
        if len(self.index) != len(self.segments) or len(self.segments) != manifest["n_segments"]:
            raise StoreError(f"store {self.path} is inconsistent; run prepare again")
        self.group_columns: list[str] = list(manifest["group_columns"])
        for g in self.group_columns:
            self.index[g] = self.index[g].astype(str)
            self.items[g] = self.items[g].astype(str)
        self.labels: list[str] = check_labels(sorted(self.items["label"].astype(str).unique().tolist()),
                                              f"store {self.path}")

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def failures(self) -> pd.DataFrame:
        return read_table(self.path / "failures.csv")

    def __repr__(self) -> str:
        return (f"SegmentStore({str(self.path)!r}, items={len(self.items)}, "
                f"segments={len(self)}, labels={self.labels})")


def batches(array: np.ndarray, rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Segments ``array[rows]`` in batches, as float32 (B, n_mels, frames).

    ``array`` may be a memmap: rows are read in sorted order a batch at a time, so
    memory stays at one batch whatever the store's size.
    """
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        order = np.argsort(chunk, kind="stable")
        data = np.asarray(array[chunk[order]], dtype=np.float32)
        out = np.empty_like(data)
        out[order] = data
        yield out
