"""Preview downloads: temporary file, checked, then renamed; bounded parallelism.

A preview link comes from an API's answer, so it is checked before it is followed
(http.refusal: a configured API origin or a public host), and so is every redirect
hop: redirects are followed here, one at a time, never by requests on its own."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests

from dancegenre.audio.decode import probe
from dancegenre.data.collect.http import TIMEOUT, CollectError, refusal, session
from dancegenre.errors import AudioDecodeError
from dancegenre.safety import atomic_path

MAX_BYTES = 50 << 20  # a 30-second preview is well under 1 MB; refuse anything huge
MAX_REDIRECTS = 5  # hops from a preview link to its file; CDNs take one or two


class PreviewRefused(CollectError):
    """A preview link, or a hop it redirects to, that we may not fetch."""


@dataclass
class Download:
    track_id: str
    url: str
    dest: Path
    status: str = ""  # downloaded, kept (already there), failed
    reason: str = ""


def valid_audio(path: Path) -> bool:
    try:
        info = probe(path)
    except AudioDecodeError:
        return False
    return info.frames > 0


def open_preview(http: requests.Session, url: str, origins: Iterable[str]) -> requests.Response:
    """The streamed answer for ``url`` after its redirects, each hop allowed by
    http.refusal before it is asked; PreviewRefused for a hop that is not, or too many."""
    for _ in range(MAX_REDIRECTS + 1):
        why = refusal(url, origins)
        if why:
            raise PreviewRefused(f"refused: {why}")
        r = http.get(url, stream=True, timeout=TIMEOUT, allow_redirects=False)  # no auth header
        if not r.is_redirect:
            return r
        r.close()
        url = urljoin(url, r.headers["Location"])
    raise PreviewRefused(f"refused: more than {MAX_REDIRECTS} redirects")


def _save(r: requests.Response, tmp: Path) -> None:
    """The body of ``r`` into ``tmp``, whole and audio, or an exception saying why not."""
    expected = int(r.headers.get("Content-Length", "0") or 0)
    size = 0
    with open(tmp, "wb") as fh:
        for chunk in r.iter_content(65536):
            size += len(chunk)
            if size > MAX_BYTES:
                raise ValueError("larger than 50 MB: not a preview")
            fh.write(chunk)
    if expected and size != expected:
        raise requests.exceptions.ChunkedEncodingError(f"cut off after {size} of {expected} bytes")
    if not valid_audio(tmp):
        raise ValueError("the preview is not audio")


def fetch(job: Download, http: requests.Session, origins: Iterable[str] = (), attempts: int = 4) -> Download:
    """Download ``job.url`` to ``job.dest`` unless a valid file is there; ``origins``: the
    API base URLs whose hosts are allowed even where private (http.refusal)."""
    if job.dest.exists() and valid_audio(job.dest):
        job.status = "kept"
        return job
    # 429/5xx and connection errors are retried by the session (http.CappedRetry); this
    # loop only starts again a body that was cut off part way, which urllib3 cannot.
    for attempt in range(attempts):
        try:
            # the file appears only whole and decodable; a failed try leaves nothing
            with open_preview(http, job.url, origins) as r:
                if r.status_code >= 400:  # before the temporary file: a refusal leaves nothing
                    job.status, job.reason = "failed", f"HTTP {r.status_code}"
                    return job
                with atomic_path(job.dest) as tmp:
                    _save(r, tmp)
            job.status = "downloaded"
            return job
        except (ValueError, PreviewRefused) as exc:
            job.status, job.reason = "failed", str(exc)
            return job
        except requests.RequestException as exc:
            job.reason = f"{type(exc).__name__}: {str(exc)[:120]}"
            time.sleep(0.3 * 2**attempt)
    job.status = "failed"
    job.reason = job.reason or "gave up after retries"
    return job


def download_all(jobs: list[Download], *, origins: Iterable[str] = (), workers: int = 4,
                 progress: bool = True) -> list[Download]:
    """Fetch every job, ``workers`` at a time, with a progress bar; previews only from
    ``origins`` (the API base URLs) and public hosts (http.refusal)."""
    from tqdm import tqdm

    http = session()
    origins = tuple(origins)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(tqdm(pool.map(lambda j: fetch(j, http, origins), jobs), total=len(jobs), desc="download",
                         unit="file", disable=not progress))
