"""HTTP plumbing shared by the collectors: one retry policy, one pager, JSON shapes, safe URLs.

One retry policy for every request (Spotify through spotipy, Deezer, iTunes, the
downloads): :class:`CappedRetry` retries connection errors and 429/5xx answers with
exponential backoff, honouring ``Retry-After`` up to :data:`MAX_RETRY_AFTER` seconds, so
a hostile server cannot park us.  Only Deezer's in-band "quota exceeded" (an HTTP 200
holding an error) is retried by hand, with the same cap.

Every listing is read by :func:`pages`: each ``next`` URL once, on the API's own origin,
at most :data:`MAX_PAGES` pages.  Every answer is checked for its shape here
(:func:`json_object`, :func:`object_list`, :func:`misfit`) before a field is read, so a
malformed answer is one line naming its source, never a traceback.  A preview is fetched
only from a configured API origin or a public address (:func:`refusal`), every redirect
hop checked again.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
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
# pages of one listing: twice the 200 pages of 50 that hold a 10,000-track Spotify
# playlist (the largest Spotify allows); a server that pages on past it is not answering
# a playlist
MAX_PAGES = 400
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class CollectError(DanceGenreError):
    """A playlist could not be collected (unknown, private, empty, bad credentials, offline,
    a malformed answer)."""


class SourceDown(CollectError):
    """A source as a whole cannot be reached or says no (connection refused, timeout, a
    rate limit, a server error): a fallback source in this state is asked no more."""


def http_error(source: str, r: requests.Response) -> CollectError:
    """The error for an HTTP error answer: :class:`SourceDown` where the whole source says
    no (401, 403 and 429: keys and rate limits; 5xx), a CollectError for this request
    alone otherwise (400, 404...)."""
    down = r.status_code in (401, 403, 429) or r.status_code >= 500
    return (SourceDown if down else CollectError)(f"{source} answered HTTP {r.status_code} for {r.url}")


def base_url(env: str, default: str) -> str:
    """A base URL from the environment (for proxies and tests), ending in '/'."""
    url = os.environ.get(env, "").strip() or default
    if not is_http_url(url):
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


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the port filled in: what a browser calls its origin."""
    parts = urlparse(url)
    try:
        port = parts.port
    except ValueError:  # a port out of range: an origin of its own, equal to none we use
        port = -1
    return parts.scheme.lower(), parts.hostname or "", port or {"http": 80, "https": 443}.get(parts.scheme.lower())


def same_host(url: str, base: str) -> bool:
    return origin(url) == origin(base)


def is_http_url(url: object) -> bool:
    return isinstance(url, str) and urlparse(url).scheme in ("http", "https") and bool(urlparse(url).hostname)


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


# ---------------------------------------------------------------- JSON shapes

def json_kind(value: object) -> str:
    """The JSON name of ``value``'s type: object, list, text, number, boolean or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: True is an int to Python, not to JSON
        return "boolean"
    kinds = {dict: "object", list: "list", str: "text", int: "number", float: "number"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), type(value).__name__)


Spec = str | dict[str, Any] | list[Any]


def misfit(value: object, spec: Spec, what: str) -> str | None:
    """Why ``value`` does not have the shape ``spec`` describes, or None when it does.

    ``spec`` is a kind (``"text"``, ``"number|text"``...), a dict of field -> spec for an
    object, or ``[spec]`` for a list of such items.  A missing or null field fits: every
    field is optional, but one that is there has the kind it should have.  A null item of
    a list does not fit."""
    if value is None:
        return None
    kind = json_kind(value)
    if isinstance(spec, str):
        return None if kind in spec.split("|") else f"{what} is {kind}, not {spec.replace('|', ' or ')}"
    if isinstance(spec, list):
        if kind != "list":
            return f"{what} is {kind}, not a list"
        for i, item in enumerate(value):  # type: ignore[arg-type]
            why = f"{what}[{i}] is null" if item is None else misfit(item, spec[0], f"{what}[{i}]")
            if why:
                return why
        return None
    if kind != "object":
        return f"{what} is {kind}, not an object"
    for key, sub in spec.items():
        why = misfit(value.get(key), sub, f"{what}.{key}")  # type: ignore[attr-defined]
        if why:
            return why
    return None


def json_object(r: requests.Response, source: str) -> dict[str, Any]:
    """The JSON object ``r`` holds, or CollectError naming ``source`` and the URL."""
    try:
        data = r.json()
    except ValueError:
        raise CollectError(f"{source} answered something that is not JSON for {r.url}") from None
    if not isinstance(data, dict):
        raise CollectError(f"{source} answered a JSON {json_kind(data)} where an object was expected, for {r.url}")
    return data


def object_list(page: object, key: str, *, source: str, url: str) -> list[dict[str, Any]]:
    """``page[key]`` as a list of JSON objects (absent or null: none; a null item is left
    out); CollectError naming ``source`` and ``url`` when the page is not an object or
    ``page[key]`` not a list of objects."""
    if not isinstance(page, dict):
        raise CollectError(f"{source} answered an unexpected shape for {url}: the answer is {json_kind(page)}")
    items = page.get(key)
    items = [item for item in items if item is not None] if isinstance(items, list) else items
    why = misfit(items, [{}], f"the answer's {key}")
    if why:
        raise CollectError(f"{source} answered an unexpected shape for {url}: {why}")
    return items or []


def pages(first: object, fetch: Callable[[str], object], *, source: str, api: str, key: str,
          url: str) -> Iterator[dict[str, Any]]:
    """The items of a paged listing: ``first`` (the answer for ``url``), then the page at
    each ``next`` URL, each URL fetched once, at most :data:`MAX_PAGES` pages.

    The one pager of every listing (Spotify's playlist items, Deezer's playlist tracks
    and playlist search).  Lazy: a caller that stops early fetches no further page.
    Raises CollectError when a ``next`` URL leaves ``api``'s origin (a token would
    follow it), comes back to a page already read (it would loop forever), or the pages
    pass :data:`MAX_PAGES`."""
    page, seen = first, {url}
    while page is not None:
        yield from object_list(page, key, source=source, url=url)
        nxt = page.get("next")  # type: ignore[union-attr]
        if not nxt:
            return
        if not isinstance(nxt, str) or not same_host(nxt, api):
            raise CollectError(f"{source} paging pointed away from {api}: {str(nxt)[:200]}; stopped")
        if nxt in seen:
            raise CollectError(f"{source} paging came back to a page already read ({nxt}); stopped")
        if len(seen) >= MAX_PAGES:
            raise CollectError(f"{source} paging went past {MAX_PAGES} pages; stopped")
        seen.add(nxt)
        page, url = fetch(nxt), nxt


# ---------------------------------------------------------------- where previews may come from

def _refused_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (%eth0) is no part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
            or ip.is_multicast or ip.is_unspecified)


def refusal(url: str, origins: Iterable[str]) -> str | None:
    """Why a preview may not be fetched from ``url``, or None when it may.

    Allowed: an http(s) URL on the origin of one of ``origins`` (the API base URLs this
    collection was given, which tests point at 127.0.0.1), or on a host whose every
    address is public.  A private, loopback, link-local, reserved or multicast address
    (169.254.169.254, 10.x, 127.x, ::1...) is refused: a playlist's preview link must not
    make us fetch from the user's own network."""
    if not is_http_url(url):
        return "not an http(s) URL"
    if any(same_host(url, base) for base in origins):
        return None
    host = urlparse(url).hostname
    try:
        infos = socket.getaddrinfo(host, urlparse(url).port or 443, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # ValueError: a port out of range, a name IDNA cannot encode
        return f"host {host} cannot be resolved ({type(exc).__name__})"
    if any(_refused_address(str(info[4][0])) for info in infos):
        return f"host {host} is a private, loopback, link-local or reserved address; refused"
    return None
