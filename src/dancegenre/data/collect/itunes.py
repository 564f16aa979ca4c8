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
from dancegenre.data.collect.http import (
    TIMEOUT,
    SourceDown,
    base_url,
    http_error,
    is_http_url,
    json_object,
    misfit,
    object_list,
    session,
)

ITUNES_API = "https://itunes.apple.com/"
HIT = {"artistName": "text", "trackName": "text", "trackTimeMillis": "number", "previewUrl": "text"}  # http.misfit


class ITunes:
    def __init__(self, api: str | None = None) -> None:
        self.api = api or base_url("DANCEGENRE_ITUNES_API_URL", ITUNES_API)
        self.http = session()

    def search_match(self, artist: str, title: str, duration_s: float | None) -> dict[str, Any] | None:
        """The first song whose artist, title and duration agree and that has a preview.

        Raises SourceDown when the API cannot be reached or refuses (it answers 403 to a
        client over its rate limit), CollectError for another error or a malformed answer."""
        if not artist or not title:
            return None
        url = self.api + "search"
        try:
            r = self.http.get(url, params={"term": f"{artist} {title}", "entity": "song", "media": "music",
                                           "limit": 10}, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise SourceDown(f"cannot reach the iTunes Search API ({type(exc).__name__})") from None
        if r.status_code >= 400:
            raise http_error("the iTunes Search API", r)
        for hit in object_list(json_object(r, "the iTunes Search API"), "results", source="the iTunes Search API",
                               url=url):
            if misfit(hit, HIT, "hit"):
                continue  # another hit may fit
            if normalise(hit.get("artistName") or "") != normalise(artist):
                continue
            if normalise_title(hit.get("trackName") or "") != normalise_title(title):
                continue
            millis = hit.get("trackTimeMillis")
            if duration_s is not None and (millis is None or abs(millis / 1000 - duration_s) > 3):
                continue
            if is_http_url(hit.get("previewUrl")):
                return hit
        return None
