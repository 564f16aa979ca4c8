"""Preview downloads: temporary file, checked, then renamed; bounded parallelism."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from dancegenre.audio.decode import probe
from dancegenre.data.collect.http import is_http_url, session
from dancegenre.errors import AudioDecodeError
from dancegenre.safety import atomic_path

MAX_BYTES = 50 << 20  # a 30-second preview is well under 1 MB; refuse anything huge


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


def fetch(job: Download, http: requests.Session, attempts: int = 4) -> Download:
    """Download ``job.url`` to ``job.dest`` (via ``.part``) unless a valid file is there."""
    if job.dest.exists() and valid_audio(job.dest):
        job.status = "kept"
        return job
    if not is_http_url(job.url):
        job.status, job.reason = "failed", "not an http(s) URL"
        return job
    # 429/5xx and connection errors are retried by the session (http.CappedRetry); this
    # loop only starts again a body that was cut off part way, which urllib3 cannot.
    for attempt in range(attempts):
        try:
            # the file appears only whole and decodable; a failed try leaves nothing
            with atomic_path(job.dest) as tmp, http.get(job.url, stream=True, timeout=20) as r:  # no auth header
                if r.status_code >= 400:
                    job.status, job.reason = "failed", f"HTTP {r.status_code}"
                    return job
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
            job.status = "downloaded"
            return job
        except ValueError as exc:
            job.status, job.reason = "failed", str(exc)
            return job
        except requests.RequestException as exc:
            job.reason = f"{type(exc).__name__}: {str(exc)[:120]}"
            time.sleep(0.3 * 2**attempt)
    job.status = "failed"
    job.reason = job.reason or "gave up after retries"
    return job


def download_all(jobs: list[Download], *, workers: int = 4, progress: bool = True) -> list[Download]:
    """Fetch every job, ``workers`` at a time, with a progress bar."""
    from tqdm import tqdm

    http = session()
    out = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for job in tqdm(pool.map(lambda j: fetch(j, http), jobs), total=len(jobs), desc="download",
                        unit="file", disable=not progress):
            out.append(job)
    return out
