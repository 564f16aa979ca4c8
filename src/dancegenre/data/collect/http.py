"""HTTP plumbing shared by the collectors: one retry policy, safe URLs, base URLs.

One retry policy for every request (Spotify through spotipy, Deezer, iTunes, the
downloads): :class:`CappedRetry` retries connection errors and 429/5xx answers with
exponential backoff, honouring ``Retry-After`` up to :data:`MAX_RETRY_AFTER` seconds, so
a hostile server cannot park us.  Only Deezer's in-band "quota exceeded" (an HTTP 200
holding an error) is retried by hand, with the same cap.
"""

from __future__ import annotations

import os
import re
import time
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from dancegenre.errors import DanceGenreError

SPOTIFY_API = "https://api.spotify.com/v1/"
SPOTIFY_AUTH = "https://accounts.spotify.com/api/token"
DEEZER_API = "https://api.deezer.com/"
TIMEOUT = 20  # seconds per request
MAX_RETRY_AFTER = 120  # seconds: the longest Retry-After we wait for
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class CollectError(DanceGenreError):
    """A playlist could not be collected (unknown, private, empty, bad credentials, offline)."""


def base_url(env: str, default: str) -> str:
    """A base URL from the environment (for proxies and tests), ending in '/'."""
    url = os.environ.get(env, "").strip() or default
    if urlparse(url).scheme not in ("http", "https"):
        raise CollectError(f"{env} must be an http(s) URL")
    return url if url.endswith("/") else url + "/"


class CappedRetry(Retry):
    """urllib3's Retry with ``Retry-After`` capped at :data:`MAX_RETRY_AFTER` seconds
    (urllib3 2.x caps only its own backoff, ``backoff_max``, not the server's header)."""

    def get_retry_after(self, response: object) -> float | None:
        seconds = super().get_retry_after(response)  # type: ignore[arg-type]
        return None if seconds is None else min(max(seconds, 0.0), MAX_RETRY_AFTER)


def session(retries: int = 4, backoff: float = 0.5) -> requests.Session:
    """A session retrying connection errors and 429/5xx, honouring a capped Retry-After."""
    s = requests.Session()
    retry = CappedRetry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff,
                        backoff_max=MAX_RETRY_AFTER, status_forcelist=(429, 500, 502, 503, 504),
                        allowed_methods=frozenset(["GET", "POST"]), respect_retry_after_header=True,
                        raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = "dancegenre-collect"
    return s


def same_host(url: str, base: str) -> bool:
    a, b = urlparse(url), urlparse(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def is_http_url(url: object) -> bool:
    return isinstance(url, str) and urlparse(url).scheme in ("http", "https") and bool(urlparse(url).netloc)


def safe_id(value: object) -> str | None:
    """An id usable as a file name, or None: ids become file names, titles never do."""
    text = str(value) if value is not None else ""
    return text if SAFE_ID.match(text) else None


def sleep_retry_after(response: requests.Response, attempt: int) -> None:
    wait = response.headers.get("Retry-After")
    try:
        seconds = float(wait) if wait is not None else 0.5 * 2**attempt
    except ValueError:
        seconds = 0.5 * 2**attempt
    time.sleep(min(max(seconds, 0.0), MAX_RETRY_AFTER))
