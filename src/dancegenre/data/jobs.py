"""The steps every resumable per-file job shares (``prepare``, ``features``, ``embed``).

A job keys each file by its path, size, mtime and settings (:func:`cache_keys`); work
already done under the same key (an earlier output, or the journal of an interrupted
run) is reused; the rest runs on the scheduler (:func:`dancegenre.data.scheduler.parallel_map`);
each result is sorted into done or failed (:func:`sort_results`); the output is written
whole (:mod:`dancegenre.safety`) and only then the journal removed.  A bad file is a
failure with its reason, never the end of the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dancegenre.errors import AudioDecodeError

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
