"""The public Deezer API: playlist tracks, a track by ISRC, and a careful search."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import requests

from dancegenre.data.collect.http import (
    DEEZER_API,
    CollectError,
    base_url,
    same_host,
    session,
    sleep_retry_after,
)

QUOTA_CODE = 4  # Deezer answers HTTP 200 with error code 4 when its quota is exceeded
NOT_FOUND_CODE = 800


class Deezer:
    """A small client: no credentials, retries, and Deezer's in-body errors turned into
    Python ones."""

    def __init__(self, api: str | None = None) -> None:
        self.api = api or base_url("DANCEGENRE_DEEZER_API_URL", DEEZER_API)
        self.http = session()

    def get(self, path_or_url: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """JSON of a GET, or None for Deezer's "no data" (code 800)."""
        url = path_or_url if path_or_url.startswith("http") else self.api + path_or_url
        if not same_host(url, self.api):
            raise CollectError(f"Deezer paging pointed at another host: {url}")
        for attempt in range(5):
            try:
                r = self.http.get(url, params=params, timeout=20)
            except requests.RequestException as exc:
                raise CollectError(f"cannot reach Deezer ({type(exc).__name__}); is the network up?") from None
            if r.status_code == 404:
                return None
            if r.status_code >= 400:
                raise CollectError(f"Deezer answered HTTP {r.status_code} for {url}")
            try:
                data = r.json()
            except ValueError:
                raise CollectError(f"Deezer answered something that is not JSON for {url}") from None
            error = data.get("error") if isinstance(data, dict) else None
            if not error:
                return data
            if error.get("code") == QUOTA_CODE:
                sleep_retry_after(r, attempt)
                continue
            if error.get("code") == NOT_FOUND_CODE:
                return None
            raise CollectError(f"Deezer error {error.get('code')}: {error.get('message')}")
        raise CollectError("Deezer kept answering 'quota exceeded'; try again later")

    def playlist_tracks(self, playlist: str) -> tuple[str, list[dict[str, Any]]]:
        """(title, every track) of a public playlist, following ``next`` pages."""
        pid = parse_deezer_playlist(playlist)
        meta = self.get(f"playlist/{pid}")
        if meta is None:
            raise CollectError(f"Deezer playlist {pid} not found (or not public)")
        page = self.get(f"playlist/{pid}/tracks", {"limit": 100})
        tracks: list[dict[str, Any]] = []
        while page:
            tracks += page.get("data", [])
            nxt = page.get("next")
            page = self.get(nxt) if nxt else None
        return str(meta.get("title", pid)), tracks

    def search_playlists(self, query: str, *, max_tracks: int) -> list[tuple[str, list[dict[str, Any]]]]:
        """(playlist title, tracks) of the playlists Deezer's playlist search finds for
        ``query``, in its order, until ``max_tracks`` distinct tracks are in hand.

        Tracks met twice (in two playlists) are kept once: by ISRC where the track has
        one, else by Deezer id."""
        page = self.get("search/playlist", {"q": query, "limit": 25})
        seen: set[str] = set()
        out: list[tuple[str, list[dict[str, Any]]]] = []
        while page and len(seen) < max_tracks:
            for hit in page.get("data", []):
                if len(seen) >= max_tracks:
                    break
                try:
                    title, tracks = self.playlist_tracks(str(hit.get("id", "")))
                except CollectError:
                    continue  # a playlist gone private or removed since the search
                fresh = []
                for t in tracks:
                    key = f"isrc:{t['isrc']}" if t.get("isrc") else f"id:{t.get('id')}"
                    if key not in seen and len(seen) < max_tracks:
                        seen.add(key)
                        fresh.append(t)
                if fresh:
                    out.append((title, fresh))
            nxt = page.get("next")
            page = self.get(nxt) if nxt and len(seen) < max_tracks else None
        return out

    def track_by_isrc(self, isrc: str) -> dict[str, Any] | None:
        if not re.fullmatch(r"[A-Za-z0-9]{12}", isrc or ""):
            return None
        return self.get(f"track/isrc:{isrc.upper()}")

    def search_match(self, artist: str, title: str, duration_s: float | None) -> dict[str, Any] | None:
        """A search hit whose artist and title agree (after normalising) and whose
        duration is within 3 seconds; None when no hit agrees on all three."""
        q = f'artist:"{artist}" track:"{title}"'
        page = self.get("search", {"q": q, "limit": 10})
        for hit in (page or {}).get("data", []):
            if normalise(hit.get("artist", {}).get("name", "")) != normalise(artist):
                continue
            if normalise_title(hit.get("title", "")) != normalise_title(title):
                continue
            if duration_s is not None and abs(float(hit.get("duration", -99)) - duration_s) > 3:
                continue
            return hit
        return None


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def normalise_title(text: str) -> str:
    """Lower-case title without version tags such as '(Original Mix)' or '- Radio Edit'."""
    text = re.sub(r"\((original mix|radio edit|extended mix|remastered[^)]*)\)", "", text, flags=re.I)
    text = re.sub(r"\s-\s(original mix|radio edit|extended mix|remastered.*)$", "", text, flags=re.I)
    return normalise(text)


def parse_deezer_playlist(text: str) -> str:
    m = re.search(r"playlist[/:](\d+)", text) or re.fullmatch(r"(\d+)", text.strip())
    if not m:
        raise CollectError(f"not a Deezer playlist URL or id: {text!r}")
    return m.group(1)
