"""The public Deezer API: playlist tracks, a track by ISRC, and a careful search."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

import requests

from dancegenre.data.collect.http import (
    DEEZER_API,
    TIMEOUT,
    CollectError,
    SourceDown,
    base_url,
    http_error,
    json_object,
    misfit,
    object_list,
    pages,
    same_host,
    session,
    sleep_retry_after,
)

QUOTA_CODE = 4  # Deezer answers HTTP 200 with error code 4 when its quota is exceeded
NOT_FOUND_CODE = 800
# the fields of a track we read, and their kinds (http.misfit)
TRACK = {"id": "number|text", "title": "text", "duration": "number", "rank": "number", "preview": "text",
         "isrc": "text", "release_date": "text", "artist": {"id": "number|text", "name": "text"},
         "album": {"release_date": "text"}}


class Deezer:
    """A small client: no credentials, retries, and Deezer's in-body errors turned into
    Python ones."""

    def __init__(self, api: str | None = None) -> None:
        self.api = api or base_url("DANCEGENRE_DEEZER_API_URL", DEEZER_API)
        self.http = session()

    def get(self, path_or_url: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The JSON object of a GET, or None for Deezer's "no data" (code 800, HTTP 404).

        Raises SourceDown when Deezer cannot be reached or refuses (its quota included),
        CollectError for any other error or an answer that is not a JSON object."""
        url = path_or_url if path_or_url.startswith("http") else self.api + path_or_url
        if not same_host(url, self.api):
            raise CollectError(f"Deezer paging pointed at another host: {url}")
        for attempt in range(5):
            try:
                r = self.http.get(url, params=params, timeout=TIMEOUT)
            except requests.RequestException as exc:
                raise SourceDown(f"cannot reach Deezer ({type(exc).__name__}); is the network up?") from None
            if r.status_code == 404:
                return None
            if r.status_code >= 400:
                raise http_error("Deezer", r)
            data = json_object(r, "Deezer")
            error = data.get("error")
            if not error:
                return data
            code = error.get("code") if isinstance(error, dict) else None
            if code == QUOTA_CODE:
                sleep_retry_after(r, attempt)
                continue
            if code == NOT_FOUND_CODE:
                return None
            message = error.get("message") if isinstance(error, dict) else error
            raise CollectError(f"Deezer error {code}: {str(message)[:200]} ({url})")
        raise SourceDown("Deezer kept answering 'quota exceeded'; try again later")

    def _listing(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The items of a paged listing (http.pages: each page once, a bounded number)."""
        return pages(self.get(path, params), self.get, source="Deezer", api=self.api, key="data",
                     url=self.api + path)

    def playlist(self, pid: str) -> tuple[str, list[dict[str, Any]]] | None:
        """(title, every track) of the public playlist ``pid``, or None if there is none."""
        meta = self.get(f"playlist/{pid}")
        if meta is None:
            return None
        title = meta.get("title")
        return (title if isinstance(title, str) else pid), list(self._listing(f"playlist/{pid}/tracks", {"limit": 100}))

    def playlist_tracks(self, playlist: str) -> tuple[str, list[dict[str, Any]]]:
        """(title, every track) of a public playlist given by URL or id."""
        pid = parse_deezer_playlist(playlist)
        found = self.playlist(pid)
        if found is None:
            raise CollectError(f"Deezer playlist {pid} not found (or not public)")
        return found

    def search_playlists(self, query: str, *, max_tracks: int) -> list[tuple[str, list[dict[str, Any]]]]:
        """(playlist title, tracks) of the playlists Deezer's playlist search finds for
        ``query``, in its order, until ``max_tracks`` distinct tracks are in hand.

        Tracks met twice (in two playlists) are kept once: by ISRC where the track has
        one, else by Deezer id."""
        seen: set[str] = set()
        out: list[tuple[str, list[dict[str, Any]]]] = []
        for hit in self._listing("search/playlist", {"q": query, "limit": 25}):
            if len(seen) >= max_tracks:
                break  # the pager is lazy: no further page is asked
            pid = str(hit.get("id", ""))
            found = self.playlist(pid) if pid.isdigit() else None
            if found is None:
                continue  # a playlist gone private or removed since the search
            fresh = []
            for t in found[1]:
                key = f"isrc:{t['isrc']}" if t.get("isrc") else f"id:{t.get('id')}"
                if key not in seen and len(seen) < max_tracks:
                    seen.add(key)
                    fresh.append(t)
            if fresh:
                out.append((found[0], fresh))
        return out

    def track_by_isrc(self, isrc: str) -> dict[str, Any] | None:
        """The track with this ISRC, or None; CollectError when the answer is no track."""
        if not re.fullmatch(r"[A-Za-z0-9]{12}", isrc or ""):
            return None
        hit = self.get(f"track/isrc:{isrc.upper()}")
        why = misfit(hit, TRACK, "the track")
        if why:
            raise CollectError(f"Deezer answered an unexpected shape for ISRC {isrc}: {why}")
        return hit

    def search_match(self, artist: str, title: str, duration_s: float | None) -> dict[str, Any] | None:
        """A search hit whose artist and title agree (after normalising) and whose
        duration is within 3 seconds; None when no hit agrees on all three."""
        q = f'artist:"{artist}" track:"{title}"'
        page = self.get("search", {"q": q, "limit": 10})
        for hit in object_list(page or {}, "data", source="Deezer", url=self.api + "search"):
            if misfit(hit, TRACK, "hit"):
                continue  # another hit may fit
            if normalise((hit.get("artist") or {}).get("name") or "") != normalise(artist):
                continue
            if normalise_title(hit.get("title") or "") != normalise_title(title):
                continue
            duration = hit.get("duration")
            if duration_s is not None and (duration is None or abs(duration - duration_s) > 3):
                continue
            return hit
        return None


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def normalise_title(text: str) -> str:
    """Lower-case title without version tags such as '(Original Mix)' or '- Radio Edit'."""
    text = re.sub(r"\((original mix|radio edit|extended mix|remastered[^)]*)\)", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s-\s(original mix|radio edit|extended mix|remastered.*)$", "", text, flags=re.IGNORECASE)
    return normalise(text)


def parse_deezer_playlist(text: str) -> str:
    m = re.search(r"playlist[/:](\d+)", text) or re.fullmatch(r"(\d+)", text.strip())
    if not m:
        raise CollectError(f"not a Deezer playlist URL or id: {text!r}")
    return m.group(1)
