"""The iTunes Search API: a third source of previews (AAC ``.m4a``), matched with care.

``GET {base}search?term=...&entity=song&limit=10`` answers ``{"resultCount": n,
"results": [{"artistName", "trackName", "trackTimeMillis", "previewUrl", ...}]}``.  A hit
counts only when artist, title (after normalising) and duration (within 3 s) agree, as
for Deezer's search.  ``DANCEGENRE_ITUNES_API_URL`` overrides the base URL.
"""

from __future__ import annotations

from typing import Any

import requests

from dancegenre.data.collect.deezer import normalise, normalise_title
from dancegenre.data.collect.http import CollectError, base_url, is_http_url, session

ITUNES_API = "https://itunes.apple.com/"


class ITunes:
    def __init__(self, api: str | None = None) -> None:
        self.api = api or base_url("DANCEGENRE_ITUNES_API_URL", ITUNES_API)
        self.http = session()

    def search_match(self, artist: str, title: str, duration_s: float | None) -> dict[str, Any] | None:
        """The first song whose artist, title and duration agree and that has a preview."""
        if not artist or not title:
            return None
        try:
            r = self.http.get(self.api + "search", params={"term": f"{artist} {title}", "entity": "song",
                                                           "media": "music", "limit": 10}, timeout=20)
        except requests.RequestException as exc:
            raise CollectError(f"cannot reach the iTunes Search API ({type(exc).__name__})") from None
        if r.status_code >= 400:
            return None  # a refused search only means no preview from here
        try:
            results = r.json().get("results", [])
        except (ValueError, AttributeError):
            return None
        for hit in results:
            if normalise(hit.get("artistName", "")) != normalise(artist):
                continue
            if normalise_title(hit.get("trackName", "")) != normalise_title(title):
                continue
            millis = hit.get("trackTimeMillis")
            if duration_s is not None and (millis is None or abs(millis / 1000 - duration_s) > 3):
                continue
            if is_http_url(hit.get("previewUrl") or ""):
                return hit
        return None
