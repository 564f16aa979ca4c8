"""Spotify through spotipy: the signed-in user's tokens (``login.py``) or the app's client
credentials (kept in memory only)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import requests

from dancegenre.data.collect.http import (
    SPOTIFY_API,
    SPOTIFY_AUTH,
    TIMEOUT,
    CollectError,
    base_url,
    json_kind,
    misfit,
    pages,
    session,
)

AUDIO_FEATURES = ("danceability", "energy", "key", "loudness", "mode", "speechiness", "acousticness",
                  "instrumentalness", "liveness", "valence", "tempo", "time_signature")
FEATURES = {"id": "text", **{k: "number" for k in AUDIO_FEATURES}}  # the shape of one row (http.misfit)
# the fields of a track we read, and their kinds (http.misfit)
TRACK = {"id": "text", "name": "text", "duration_ms": "number", "popularity": "number", "preview_url": "text",
         "artists": [{"id": "text", "name": "text"}], "album": {"release_date": "text"},
         "external_ids": {"isrc": "text"}}
PAGE_LIMIT = 50  # items a page: the most playlists/{id}/items gives; Development Mode answers 400 above it


def read_dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """The settings of a .env file (python-dotenv's reading, no expansion); {} if absent."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}


def credentials() -> tuple[str, str]:
    env = {**read_dotenv(), **os.environ}
    cid, secret = env.get("SPOTIPY_CLIENT_ID", ""), env.get("SPOTIPY_CLIENT_SECRET", "")
    if not cid or not secret:
        raise CollectError("Spotify needs SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET "
                           "(environment or a .env file); a Deezer playlist needs none")
    return cid, secret


def parse_spotify_playlist(text: str) -> str:
    m = re.search(r"playlist[/:]([A-Za-z0-9]{10,40})", text) or re.fullmatch(r"([A-Za-z0-9]{10,40})", text.strip())
    if not m:
        raise CollectError(f"not a Spotify playlist URL, URI or id: {text!r}")
    return m.group(1)


FORBIDDEN_PLAYLIST = (
    "Spotify answered 403 for this playlist: since February 2026 (new apps) and March 2026 (every app in "
    "Development Mode) an app may read the items only of playlists the signed-in user owns or collaborates "
    "on, and client credentials have no user. Ways out: sign in (dancegenre collect spotify login) for your "
    "own and collaborative playlists; copy this playlist into your account (Spotify app: select all, 'Add "
    "to playlist'); or collect the genre from Deezer (dancegenre collect deezer PLAYLIST or --search TEXT)")


def _entry_track(entry: Any) -> dict[str, Any] | None:
    """The track object of a playlist entry, in either shape (``item`` or ``track``)."""
    if not isinstance(entry, dict):
        return None
    for key in ("item", "track"):  # in the 2026 shape "track" is only a boolean flag
        value = entry.get(key)
        if isinstance(value, dict):
            return value
    return None


class Spotify:
    """Playlist items and audio features.  The access token lives in this object only:
    never on disk (spotipy's default .cache file), never in messages, never sent to any
    host but the API's."""

    def __init__(self, client_id: str, client_secret: str | None, *, user: bool = False) -> None:
        """``user``: act as the signed-in user (``collect spotify login``'s tokens,
        refreshed as needed) instead of the app's client credentials."""
        import spotipy
        from spotipy.cache_handler import MemoryCacheHandler
        from spotipy.oauth2 import SpotifyClientCredentials

        api = base_url("DANCEGENRE_SPOTIFY_API_URL", SPOTIFY_API)
        auth_url = os.environ.get("DANCEGENRE_SPOTIFY_AUTH_URL", "").strip() or SPOTIFY_AUTH

        class _Credentials(SpotifyClientCredentials):
            OAUTH_TOKEN_URL = auth_url

        import logging

        # spotipy logs every HTTP error with its URL; our own one-line messages say enough
        logging.getLogger("spotipy").setLevel(logging.CRITICAL)
        self.api = api
        self.user = user
        if user:
            from dancegenre.data.collect.login import auth_manager

            self._auth = auth_manager(client_id, open_browser=False)
        else:
            self._auth = _Credentials(client_id, client_secret, cache_handler=MemoryCacheHandler(),
                                      requests_timeout=TIMEOUT)
        # our session: its retry policy (http.CappedRetry) replaces spotipy's own
        self.client = spotipy.Spotify(auth_manager=self._auth, requests_timeout=TIMEOUT, requests_session=session())
        self.client.prefix = api

    def _call(self, fn: Any, *args: Any, forbidden: str | None = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with Spotify's errors as one-line CollectErrors;
        ``forbidden`` is the message for a 403."""
        import spotipy

        try:
            return fn(*args, **kwargs)
        except spotipy.oauth2.SpotifyOauthError:
            if self.user:
                raise CollectError("the stored Spotify login no longer works; sign in again: "
                                   "dancegenre collect spotify login") from None
            raise CollectError("Spotify refused the credentials (SPOTIPY_CLIENT_ID / SPOTIPY_CLIENT_SECRET)") from None
        except spotipy.SpotifyException as exc:
            if exc.http_status == 404:
                raise CollectError("Spotify playlist not found (unknown id, or private)") from None
            if exc.http_status == 403 and forbidden:
                raise CollectError(forbidden) from None
            if exc.http_status in (401, 403):
                raise CollectError(f"Spotify answered {exc.http_status}: not allowed for this app") from None
            raise CollectError(f"Spotify answered HTTP {exc.http_status}") from None
        except requests.RequestException as exc:
            raise CollectError(f"cannot reach Spotify ({type(exc).__name__}); is the network up?") from None

    def playlist_items(self, playlist: str) -> list[dict[str, Any]]:
        """Every track object of the playlist (episodes and local files left out).

        Reads both shapes of a playlist entry: ``{"item": {track}, "track": true}``, what
        Development Mode apps get since 2026, and ``{"track": {track}}``, what Extended
        Quota apps and older answers have.  Pages of :data:`PAGE_LIMIT` items, read by
        http.pages (each once, a bounded number, on the API's origin only: the token
        goes with them)."""
        pid = parse_spotify_playlist(playlist)
        url = f"{self.api}playlists/{pid}/items"
        first = self._call(self.client.playlist_items, pid, limit=PAGE_LIMIT, additional_types=("track",),
                           forbidden=FORBIDDEN_PLAYLIST)
        tracks = []
        for entry in pages(self._page(first, url), self._next_page, source="Spotify", api=self.api, key="items",
                           url=url):
            track = _entry_track(entry)
            if track and track.get("type", "track") == "track" and not track.get("is_local"):
                tracks.append(track)
        return tracks

    def _next_page(self, url: str) -> dict[str, Any]:
        # spotipy's next() reads only the "next" field of the page it is given
        return self._page(self._call(self.client.next, {"next": url}, forbidden=FORBIDDEN_PLAYLIST), url)

    @staticmethod
    def _page(page: object, url: str) -> dict[str, Any]:
        """``page`` if it is a JSON object (spotipy gives None for an answer that is not JSON)."""
        if not isinstance(page, dict):
            raise CollectError(f"Spotify answered a JSON {json_kind(page)} where a page of items was expected, "
                               f"for {url}")
        return page

    def audio_features(self, ids: list[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
        """({track id: features}, None), or ({}, why) when the endpoint is closed (403/404)
        or answers in a shape we do not know."""
        import spotipy

        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 100):
            try:
                with warnings.catch_warnings():  # spotipy warns the endpoint is deprecated: we know
                    warnings.simplefilter("ignore", DeprecationWarning)
                    rows = self.client.audio_features(ids[start : start + 100]) or []
            except spotipy.SpotifyException as exc:
                if exc.http_status in (403, 404):
                    return {}, f"Spotify's audio-features endpoint answered {exc.http_status} (closed to new apps since Nov 2024)"
                raise CollectError(f"Spotify answered HTTP {exc.http_status} for audio features") from None
            except requests.RequestException as exc:
                raise CollectError(f"cannot reach Spotify ({type(exc).__name__})") from None
            except TypeError:  # spotipy looks into the answer first: one that is not JSON fails there
                return {}, "Spotify's audio features came in an unexpected shape (not JSON)"
            rows = [row for row in rows if row is not None] if isinstance(rows, list) else rows  # null: unknown id
            why = misfit(rows, [FEATURES], "the audio features")
            if why:
                return {}, f"Spotify's audio features came in an unexpected shape ({why})"
            out.update({row["id"]: {k: row.get(k) for k in AUDIO_FEATURES} for row in rows if row.get("id")})
        return out, None
