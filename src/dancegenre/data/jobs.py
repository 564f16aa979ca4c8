"""The steps every resumable per-file job shares (``prepare``, ``features``, ``embed``, ``tag``, ``predict``).

A job keys each file by its path, size, mtime and settings (:func:`cache_keys`); work
already done under the same key (an earlier output, or the journal of an interrupted
run) is reused; the rest runs on the scheduler (:func:`dancegenre.data.scheduler.parallel_map`);
each result is sorted into done or failed (:func:`sort_results`); the output is written
whole (:mod:`dancegenre.safety`) and only then the journal removed.  ``features``,
``embed``, ``tag`` and ``predict --out`` keep their journal in a :class:`Journal` beside the output; ``prepare``'s
workers commit shards into the store's own ``pending/`` folder instead, because a
worker on another host writes its segments there itself.  A bad file is a
failure with its reason, never the end of the job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dancegenre.errors import AudioDecodeError
from dancegenre.safety import claim_folder, open_append, remove_ours, with_file_name

Failure = dict[str, str]  # {"error": exception class name, "reason": one line}


def cache_keys(paths: Iterable[str], key: Callable[[str], str]) -> tuple[list[str | None], dict[int, Failure]]:
    """(``key(path)`` of every path, or None for an unreadable one; {position: failure})."""
    keys: list[str | None] = []
    failures: dict[int, Failure] = {}
    for i, path in enumerate(paths):
        try:
            keys.append(key(path))
        except AudioDecodeError as exc:
            keys.append(None)
            failures[i] = {"error": "AudioDecodeError", "reason": str(exc)}
    return keys, failures


def sort_results(results: dict[int, dict[str, Any]], key_field: str, done: dict[str, dict[str, Any]],
                 failures: dict[int, Failure]) -> None:
    """Put each worker result into ``done`` (by its ``key_field``) or ``failures`` (by
    position): a result with ``error`` failed, with that error and its ``reason``."""
    for i, result in results.items():
        if "error" in result:
            failures[i] = {"error": result["error"], "reason": result["reason"]}
        else:
            done[result[key_field]] = result


class Journal:
    """What an interrupted job finished: ``<out>.pending/rows.jsonl``, one JSON row a
    finished file, appended and flushed as each finishes, and optionally ``blob``, a raw
    float32 file the rows point into (``offset``/``count``/``dim``, in values).

    The folder is claimed as ``kind`` (:func:`dancegenre.safety.claim_folder`), so a
    user's folder of that name is refused, never written into.  A row a kill cut short,
    or one that points past the end of the blob, is dropped: its file runs again.
    :meth:`remove` deletes only what the journal wrote, once the output is whole.
    """

    def __init__(self, out: str | os.PathLike[str], kind: str, *, blob: str | None = None) -> None:
        out = Path(out)
        self.folder = claim_folder(out.with_name(out.name + ".pending"), kind, what="journal folder")
        self.rows_path = self.folder / "rows.jsonl"
        self.blob_path = self.folder / blob if blob else None

    def rows(self, needs: Iterable[str] = ()) -> Iterator[dict[str, Any]]:
        """The rows a previous run finished (whole ones only, holding every field of
        ``needs``); a row that is not, its file is done again."""
        if not self.rows_path.exists() or (self.blob_path and not self.blob_path.exists()):
            return
        size = self.blob_path.stat().st_size // 4 if self.blob_path else 0
        needs = (*needs, *(("offset", "count", "dim") if self.blob_path else ()))
        for line in self.rows_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a kill cut short
            if not isinstance(row, dict) or any(k not in row for k in needs):
                continue  # not a row this version wrote
            if self.blob_path and row["offset"] + row["count"] * row["dim"] > size:
                continue  # its vectors never reached the disk
            yield row

    @contextmanager
    def writer(self) -> Iterator[Callable[..., dict[str, Any]]]:
        """``add(row, vectors=None)``: append ``row`` (and ``vectors``, 2-D, to the blob,
        recording where in ``row``); returns the row as written."""
        blob = open_append(self.blob_path, "ab") if self.blob_path else None
        offset = self.blob_path.stat().st_size // 4 if self.blob_path else 0
        try:
            with open_append(self.rows_path, "a") as fh:
                def add(row: dict[str, Any], vectors: np.ndarray | None = None) -> dict[str, Any]:
                    nonlocal offset
                    if vectors is not None:
                        blob.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
                        blob.flush()
                        row = {**row, "offset": offset, "count": len(vectors), "dim": int(vectors.shape[1])}
                        offset += vectors.size
                    try:
                        fh.write(json.dumps(row) + "\n")
                        fh.flush()
                    except OSError as exc:  # a full disk names no file: name the journal
                        raise with_file_name(exc, self.rows_path) from None
                    return row

                yield add
        finally:
            if blob:
                blob.close()

    def vectors(self, row: dict[str, Any]) -> np.ndarray:
        """The (count, dim) vectors ``row`` points to in the blob."""
        return np.fromfile(self.blob_path, dtype=np.float32, count=row["count"] * row["dim"],
                           offset=row["offset"] * 4).reshape(row["count"], row["dim"])

    def remove(self) -> None:
        """Delete the journal's own files, and its folder if that leaves it empty."""
        remove_ours(self.folder, [self.rows_path.name, *([self.blob_path.name] if self.blob_path else [])])
