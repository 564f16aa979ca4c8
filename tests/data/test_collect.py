"""collect against a local server that answers as the Spotify and Deezer APIs do."""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from dancegenre.audio.decode import probe
from dancegenre.cli.parser import main
from dancegenre.data.collect import (
    CATALOG_COLUMNS,
    CollectError,
    collect_deezer,
    collect_spotify,
)
from dancegenre.data.store import SegmentStore, prepare
from dancegenre.errors import OutputError
from dancegenre.safety import read_table
from tests.conftest import tone, write_m4a

CLIENT_ID, SECRET, TOKEN = "client-abc", "s3cr3t-value-never-printed", "tok-ZZZ-secret-token"
USER_CODE, USER_TOKEN, REFRESH = "code-PKCE-1234", "user-tok-YYY-secret", "refresh-XXX-secret"


@functools.lru_cache  # every test's server serves the same few previews
def mp3_bytes(seed: int) -> bytes:
    t = np.arange(4 * 44100) / 44100
    y = (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, 44100, format="MP3")
    return buf.getvalue()


@functools.lru_cache
def m4a_bytes(seed: int) -> bytes:
    """A 6-s AAC preview in an MP4 container, as the iTunes Search API serves."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return write_m4a(Path(tmp) / "p.m4a", tone(6.0, 44100, seed=seed), 44100).read_bytes()


def sp_track(i: int, preview: bool, isrc: str | None) -> dict:
    return {"id": f"spTrack{i:04d}xx", "name": f"Song {i}", "type": "track", "is_local": False,
            "artists": [{"id": f"spArtist{i % 2}", "name": f"Artist {i % 2}"}], "duration_ms": 30000 + i,
            "popularity": 40 + i, "preview_url": None if not preview else f"{{base}}/audio/sp{i}.mp3",
            "external_ids": {"isrc": isrc} if isrc else {}, "album": {"release_date": f"2020-01-0{i + 1}"}}


HOSTILE_SPOTIFY = ("loopplaylist00001", "endlessplaylist01", "listplaylist00001", "badtrackplaylist1")


class Api:
    """Recorded-shape answers; page size 2 so paging is exercised."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.queries: list[tuple[str, dict]] = []
        self.hits: dict[str, int] = {}
        self.audio = {name: mp3_bytes(k) for k, name in enumerate(["sp0", "dzA", "dzB", "dz1", "dz2", "slow", "cut", "dz3"])}
        self.audio["it3"] = m4a_bytes(9)
        self.challenge: str | None = None
        self.grants: list[str | None] = []
        self.tracks = [sp_track(0, True, "USAAA0000001"), sp_track(1, False, "USAAA0000002"),
                       sp_track(2, False, None), sp_track(3, False, "USAAA0000004"), sp_track(4, False, None)]
        self.tracks[2]["name"], self.tracks[2]["artists"][0]["name"] = "Found By Search (Original Mix)", "Search Artist"
        self.tracks[2]["duration_ms"] = 181000
        self.tracks[4]["name"] = "No Match Anywhere"

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append((url.path, dict(h.headers)))
        self.queries.append((url.path, q))
        self.hits[url.path] = self.hits.get(url.path, 0) + 1
        base = f"http://127.0.0.1:{h.server.server_address[1]}"
        if url.path == "/redirect":  # an open redirect on the API's own host
            return self.raw(h, 302, b"", "text/plain", {"Location": q["to"]})
        if url.path.startswith("/refuse/"):  # a source over its rate limit: 403 to everything
            return self.json(h, 403, {"error": {"code": 403, "message": "rate limit exceeded"}})
        if url.path.startswith("/hostile/"):
            return self.hostile(h, url.path[len("/hostile/"):], q, base)
        if url.path == "/authorize":  # the accounts service's PKCE sign-in page, already agreed
            if (q.get("client_id") != CLIENT_ID or q.get("response_type") != "code"
                    or q.get("code_challenge_method") != "S256" or not q.get("redirect_uri", "").startswith("http://127.0.0.1:")):
                return self.json(h, 400, {"error": "invalid_request"})
            self.challenge = q["code_challenge"]
            target = q["redirect_uri"] + "?code=" + USER_CODE + (f"&state={q['state']}" if q.get("state") else "")
            return self.raw(h, 302, b"", "text/plain", {"Location": target})
        if url.path == "/api/token" and method == "POST" and "grant_type=client_credentials" not in h.body:
            form = {k: v[0] for k, v in parse_qs(h.body).items()}
            self.grants.append(form.get("grant_type"))
            if form.get("client_id") != CLIENT_ID or "Authorization" in h.headers:
                return self.json(h, 400, {"error": "invalid_client"})
            if form.get("grant_type") == "authorization_code":
                import hashlib

                verifier = form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                if form.get("code") != USER_CODE or (self.challenge and digest != self.challenge):
                    return self.json(h, 400, {"error": "invalid_grant"})
                return self.json(h, 200, {"access_token": USER_TOKEN, "token_type": "Bearer", "expires_in": 3600,
                                          "refresh_token": REFRESH, "scope": "playlist-read-private playlist-read-collaborative"})
            if form.get("grant_type") == "refresh_token" and form.get("refresh_token") == REFRESH:
                return self.json(h, 200, {"access_token": USER_TOKEN, "token_type": "Bearer", "expires_in": 3600,
                                          "scope": "playlist-read-private playlist-read-collaborative"})
            return self.json(h, 400, {"error": "invalid_grant"})
        if url.path == "/api/token" and method == "POST":
            auth = h.headers.get("Authorization", "")
            ok = auth == "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
            if not ok:
                return self.json(h, 400, {"error": "invalid_client", "error_description": "Invalid client"})
            return self.json(h, 200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600})
        if url.path.startswith("/v1/"):
            if h.headers.get("Authorization") not in (f"Bearer {TOKEN}", f"Bearer {USER_TOKEN}"):
                return self.json(h, 401, {"error": {"status": 401, "message": "Invalid access token"}})
            # spotipy >= 2.26 asks /items (Spotify's new name), older ones /tracks
            kind = url.path.rsplit("/", 1)[-1]
            if kind in ("items", "tracks") and int(q.get("limit", 20)) > 50:  # Development Mode's rule
                return self.json(h, 400, {"error": {"status": 400, "message": "Invalid limit"}})
            if url.path.startswith("/v1/playlists/") and url.path.split("/")[3] in HOSTILE_SPOTIFY:
                return self.hostile_spotify(h, url.path.split("/")[3], q, base)
            if url.path in ("/v1/playlists/goodplaylist000001/tracks", "/v1/playlists/goodplaylist000001/items"):
                if self.hits[url.path] == 2:  # the second page is rate limited once
                    return self.json(h, 429, {"error": {"status": 429, "message": "API rate limit exceeded"}},
                                     {"Retry-After": "1"})
                off = int(q.get("offset", 0))
                items = [{"added_at": "2024-01-01T00:00:00Z", "track": json.loads(json.dumps(t).replace("{base}", base))}
                         for t in self.tracks[off : off + 2]]
                nxt = f"{base}/v1/playlists/goodplaylist000001/{kind}?offset={off + 2}&limit=2" if off + 2 < len(self.tracks) else None
                return self.json(h, 200, {"href": "", "items": items, "limit": 2, "next": nxt, "offset": off,
                                          "previous": None, "total": len(self.tracks)})
            if url.path in ("/v1/playlists/devmodeplaylist01/tracks", "/v1/playlists/devmodeplaylist01/items"):
                # Development Mode since 2026: the track under "item", "track" only a flag; no
                # preview_url, no popularity, ISRC sometimes missing
                items = []
                for t in self.tracks[:4]:
                    t = json.loads(json.dumps(t).replace("{base}", base))
                    t.pop("preview_url"), t.pop("popularity")
                    if t["id"].endswith("0003xx"):
                        t.pop("external_ids")
                    items.append({"added_at": "2026-03-01T00:00:00Z", "is_local": False, "item": t, "track": True})
                return self.json(h, 200, {"href": "", "items": items, "limit": 100, "next": None, "offset": 0,
                                          "previous": None, "total": len(items)})
            if url.path.startswith("/v1/playlists/ownplaylist000001/"):
                # Development Mode: the signed-in owner gets the items; client credentials get 403
                if h.headers.get("Authorization") != f"Bearer {USER_TOKEN}":
                    return self.json(h, 403, {"error": {"status": 403, "message": "Forbidden"}})
                t = json.loads(json.dumps(self.tracks[1]).replace("{base}", base))
                return self.json(h, 200, {"href": "", "items": [{"item": t, "track": True}], "limit": 100,
                                          "next": None, "offset": 0, "previous": None, "total": 1})
            if url.path.startswith("/v1/playlists/notmyplaylist0001/"):
                return self.json(h, 403, {"error": {"status": 403, "message": "Forbidden"}})
            if url.path.startswith("/v1/playlists/emptyplaylist00001/"):
                return self.json(h, 200, {"href": "", "items": [], "limit": 100, "next": None, "offset": 0, "total": 0})
            if url.path.rstrip("/") == "/v1/audio-features":
                return self.json(h, 403, {"error": {"status": 403, "message": "Forbidden"}})
            return self.json(h, 404, {"error": {"status": 404, "message": "Resource not found"}})
        if url.path.startswith("/deezer/"):
            path = url.path[len("/deezer/"):]
            tracks = {"USAAA0000002": {"id": 11, "title": "Song 1", "preview": f"{base}/audio/dzA.mp3", "duration": 30},
                      "USAAA0000004": {"id": 13, "title": "Song 3", "preview": "", "duration": 30}}
            if path.startswith("track/isrc:"):
                t = tracks.get(path.split(":", 1)[1])
                return self.json(h, 200, t or {"error": {"type": "DataException", "message": "no data", "code": 800}})
            if path == "search":
                if "Search Artist" in q.get("q", ""):
                    return self.json(h, 200, {"data": [
                        {"id": 21, "title": "Found By Search", "duration": 250, "preview": f"{base}/audio/dzB.mp3",
                         "artist": {"id": 5, "name": "Search Artist"}},  # wrong duration: rejected
                        {"id": 22, "title": "Found by search", "duration": 182, "preview": f"{base}/audio/dzB.mp3",
                         "artist": {"id": 5, "name": "Search Artist"}}], "total": 2})
                return self.json(h, 200, {"data": [{"id": 9, "title": "Other", "duration": 30, "preview": f"{base}/audio/dzA.mp3",
                                                    "artist": {"id": 1, "name": "Someone"}}], "total": 1})
            if path == "search/playlist":
                # two pages of playlist hits; 888 shares a track with 777; 999 has gone private
                if q.get("q") != "hard techno":
                    return self.json(h, 200, {"data": [], "total": 0})
                if q.get("index") == "2":
                    return self.json(h, 200, {"data": [{"id": 999, "title": "Gone", "nb_tracks": 3}], "total": 3})
                return self.json(h, 200, {"data": [{"id": 777, "title": "EDM hits", "nb_tracks": 4},
                                                   {"id": 888, "title": "Hard techno 2026", "nb_tracks": 2}],
                                          "total": 3, "next": f"{base}/deezer/search/playlist?q=hard+techno&index=2"})
            if path == "playlist/888":
                return self.json(h, 200, {"id": 888, "title": "Hard techno 2026", "nb_tracks": 2})
            if path == "playlist/888/tracks":
                return self.json(h, 200, {"data": [
                    {"id": 101, "title": "Dz 1", "duration": 30, "preview": f"{base}/audio/dz2.mp3",
                     "artist": {"id": 51, "name": "DzArtist 1"}},  # also in 777: kept once
                    {"id": 301, "title": "Hard one", "duration": 30, "preview": f"{base}/audio/dzB.mp3",
                     "artist": {"id": 61, "name": "Hard Artist"}}], "total": 2})
            if path == "playlist/777":
                return self.json(h, 200, {"id": 777, "title": "EDM hits", "nb_tracks": 4})
            if path == "playlist/777/tracks":
                idx = int(q.get("index", 0))
                data = [{"id": 100 + k, "title": f"Dz {k}", "duration": 30, "rank": 5000 + k,
                         "preview": f"{base}/audio/{name}.mp3", "artist": {"id": 50 + k, "name": f"DzArtist {k}"},
                         "album": {"id": 1, "title": "A"}} for k, name in enumerate(["dz1", "dz2", "slow", "cut"])]
                data.append({"id": "../../evil", "title": "../../x", "duration": 30, "preview": f"{base}/audio/dz3.mp3",
                             "artist": {"id": 1, "name": "x"}})
                data.append({"id": 105, "title": "Not audio", "duration": 30, "preview": f"{base}/audio/page.mp3",
                             "artist": {"id": 1, "name": "x"}})
                page = data[idx : idx + 3]
                body = {"data": page, "total": len(data)}
                if idx + 3 < len(data):
                    body["next"] = f"{base}/deezer/playlist/777/tracks?index={idx + 3}"
                return self.json(h, 200, body)
            return self.json(h, 200, {"error": {"type": "DataException", "message": "no data", "code": 800}})
        if url.path == "/itunes/search":
            # the iTunes Search API: only "Song 3" by "Artist 1" has a preview (an AAC .m4a);
            # a decoy with the wrong duration comes first
            if q.get("entity") == "song" and q.get("term") == "Artist 1 Song 3":
                return self.json(h, 200, {"resultCount": 2, "results": [
                    {"wrapperType": "track", "kind": "song", "artistName": "Artist 1", "trackName": "Song 3",
                     "trackTimeMillis": 95000, "previewUrl": f"{base}/audio/itX.m4a"},
                    {"wrapperType": "track", "kind": "song", "artistName": "Artist 1", "trackName": "Song 3",
                     "trackTimeMillis": 30500, "previewUrl": f"{base}/audio/it3.m4a"}]})
            return self.json(h, 200, {"resultCount": 0, "results": []})
        if url.path.startswith("/audio/"):
            name = url.path[len("/audio/"):-4]
            if name == "page":
                return self.raw(h, 200, b"<html>not audio</html>" * 50, "text/html")
            if name == "slow" and self.hits[url.path] == 1:
                return self.raw(h, 429, b"", "text/plain", {"Retry-After": "1"})
            data = self.audio.get(name)
            if data is None:
                return self.raw(h, 404, b"", "text/plain")
            if name == "cut" and self.hits[url.path] == 1:  # a transfer cut off half way
                h.send_response(200)
                h.send_header("Content-Type", "audio/mpeg")
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data[: len(data) // 2])
                h.close_connection = True
                return
            return self.raw(h, 200, data, "audio/mpeg")
        return self.raw(h, 404, b"", "text/plain")

    def hostile_spotify(self, h, pid, q, base):
        """Playlists whose paging or shapes are wrong."""
        off, calls = int(q.get("offset", 0)), self.hits[f"/v1/playlists/{pid}/items"]
        items = [{"track": json.loads(json.dumps(t).replace("{base}", base))} for t in self.tracks[:2]]
        page = {"href": "", "items": items, "limit": 2, "offset": off, "previous": None, "total": 10**6}
        if pid == "loopplaylist00001":  # the second page names itself as the next one
            page["next"] = f"{base}/v1/playlists/{pid}/items?offset=2&limit=2"
        elif pid == "endlessplaylist01":  # a next page, always a new one
            page["next"] = f"{base}/v1/playlists/{pid}/items?offset={off + 2}&limit=2"
        elif pid == "listplaylist00001":
            return self.json(h, 200, [1, 2])
        elif pid == "badtrackplaylist1":
            page["items"][1]["track"]["artists"] = "Someone"
            page["items"].append({"track": {**page["items"][1]["track"], "id": "spTrack0007xx",
                                            "artists": [{"id": "a", "name": "A"}], "duration_ms": "long"}})
        if calls > 100:  # the old pager never stopped: end it so the test ends
            page["next"] = None
        return self.json(h, 200, page)

    def hostile(self, h, path, q, base):
        """A Deezer API whose answers are ill-formed, loop, or point previews at hosts we must not ask."""
        port = h.server.server_address[1]
        def track(i, preview, **fields):
            return {"id": i, "title": f"T {i}", "duration": 30, "preview": preview, "artist": {"id": 1, "name": "A"},
                    **fields}

        playlists = {
            "555": {"data": [track(1, f"{base}/audio/dz1.mp3")], "next": f"{base}/hostile/playlist/555/tracks?index=3"},
            "600": None,
            "601": {"data": "oops"},
            "602": {"data": [1, "x"]},
            "603": {"data": [track(1, f"{base}/audio/dz1.mp3"), track(2, f"{base}/audio/dz2.mp3", artist="Someone"),
                             track(3, f"{base}/audio/dzA.mp3", duration="long")]},
            "700": {"data": [track(1, f"{base}/audio/dz1.mp3"),
                             track(2, f"http://localhost:{port}/audio/dz2.mp3"),
                             track(3, f"http://[::1]:{port}/audio/dzA.mp3"),
                             track(4, f"{base}/redirect?to=http://localhost:{port}/audio/dzB.mp3"),
                             track(5, f"{base}/redirect?to={base}/audio/dzA.mp3"),
                             track(6, "http://169.254.169.254/latest/meta-data/iam.mp3")]},
            "800": {"data": [track(1, f"{base}/audio/dz1.mp3", title="@SUM(1+1)",
                                   artist={"id": 7, "name": '=HYPERLINK("http://evil.example","click")'}),
                             track(2, "", title="-2+3", artist={"id": 8, "name": "+cmd|' /C calc'!A0"})]},
        }
        pid = path.split("/")[1] if path.startswith("playlist/") else ""
        if pid not in playlists:
            return self.json(h, 200, {"error": {"type": "DataException", "message": "no data", "code": 800}})
        if path == f"playlist/{pid}":
            return self.json(h, 200, [1, 2] if pid == "600" else {"id": int(pid), "title": f"Hostile {pid}"})
        page = dict(playlists[pid])
        if self.hits[f"/hostile/{path}"] > 100:  # the old pager never stopped: end it so the test ends
            page.pop("next", None)
        return self.json(h, 200, page)

    @staticmethod
    def json(h, status, body, headers=None):
        Api.raw(h, status, json.dumps(body).encode(), "application/json", headers)

    @staticmethod
    def raw(h, status, data, ctype, headers=None):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def api(monkeypatch):
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state.handle(self, "GET")

        def do_POST(self):
            self.body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0)).decode()
            state.handle(self, "POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("DANCEGENRE_SPOTIFY_API_URL", f"{base}/v1/")
    monkeypatch.setenv("DANCEGENRE_SPOTIFY_AUTH_URL", f"{base}/api/token")
    monkeypatch.setenv("DANCEGENRE_DEEZER_API_URL", f"{base}/deezer/")
    monkeypatch.setenv("DANCEGENRE_ITUNES_API_URL", f"{base}/itunes/")
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", SECRET)
    yield state
    server.shutdown()


def all_text(root: Path) -> str:
    return "".join(p.read_text(errors="ignore") for p in root.rglob("*") if p.is_file() and p.suffix != ".mp3")


def test_spotify_playlist_with_deezer_fallback(api, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    notes = []
    s = collect_spotify("https://open.spotify.com/playlist/goodplaylist000001?si=x", label="techno",
                        out=tmp_path / "data", progress=False, log=notes.append)
    assert s.tracks == 5  # three pages, one of them rate limited (429 + Retry-After) once
    cat = pd.read_csv(tmp_path / "data" / "catalog.csv", keep_default_na=False).set_index("track_id")
    assert cat.loc["spTrack0000xx", "preview_source"] == "spotify"
    assert cat.loc["spTrack0001xx", "preview_source"] == "deezer-isrc"
    assert cat.loc["spTrack0002xx", "preview_source"] == "deezer-search"  # artist, title and duration agree
    # Deezer knows the ISRC but has no preview: iTunes' search (artist, title, duration agree)
    assert cat.loc["spTrack0003xx", "preview_source"] == "itunes-search"
    assert cat.loc["spTrack0003xx", "path"] == "techno/spTrack0003xx.m4a"
    assert cat.loc["spTrack0004xx", "path"] == ""
    assert cat.loc["spTrack0001xx", "path"] == "techno/spTrack0001xx.mp3"
    assert {"track_name", "artist_name", "artist_id", "album_date", "track_length", "popularity", "isrc"} <= set(cat.columns)
    missing = pd.read_csv(tmp_path / "data" / "missing_previews_techno.csv")
    assert sorted(missing["track_id"]) == ["spTrack0004xx"]
    assert any("403" in n for n in notes)  # audio features: said once, carried on
    assert s.downloaded == 4
    # the token went to the Spotify API only; the secret and token are nowhere
    for path, headers in api.requests:
        if not path.startswith("/v1/"):
            assert "Authorization" not in headers or path == "/api/token"
    out = capsys.readouterr()
    for secret in (SECRET, TOKEN):
        assert secret not in out.out + out.err and secret not in all_text(tmp_path)
    assert not (tmp_path / ".cache").exists()
    # a rerun downloads nothing new
    again = collect_spotify("spotify:playlist:goodplaylist000001", label="techno", out=tmp_path / "data",
                            progress=False, log=lambda *a: None)
    assert again.downloaded == 0 and again.kept == 4
    # the catalog feeds prepare, grouped by artist id
    summary = prepare(tmp_path / "data" / "catalog.csv", tmp_path / "store", workers=1, progress=False)
    assert summary.items == 4 and SegmentStore(tmp_path / "store").group_columns == ["track_id", "artist_id"]


def test_deezer_playlist(api, tmp_path):
    s = collect_deezer("https://www.deezer.com/en/playlist/777", label="edm", out=tmp_path / "d", progress=False)
    cat = pd.read_csv(tmp_path / "d" / "catalog.csv", keep_default_na=False)
    ok = cat[cat["path"] != ""]
    assert sorted(ok["track_id"].astype(str)) == ["100", "101", "102", "103"]  # 429 and cut-off retried
    assert api.hits["/audio/cut.mp3"] == 2 and api.hits["/audio/slow.mp3"] == 2
    assert s.failed == 1  # the preview that is not audio
    files = sorted(p.name for p in (tmp_path / "d" / "edm").iterdir())
    assert files == ["100.mp3", "101.mp3", "102.mp3", "103.mp3"]  # no .part left, no path tricks
    assert not (tmp_path / "evil").exists() and not list(tmp_path.rglob("x*.mp3"))
    missing = pd.read_csv(tmp_path / "d" / "missing_previews_edm.csv")
    assert "unusable track id" in set(missing["reason"]) and any("not audio" in r for r in missing["reason"])


def test_errors_are_one_line(api, tmp_path, monkeypatch, capsys):
    assert main(["collect", "-q", "spotify", "unknownplaylist01", "--label", "techno", "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["collect", "-q", "spotify", "emptyplaylist00001", "--label", "techno", "--out", str(tmp_path)]) == 2
    assert "no tracks" in capsys.readouterr().err
    assert main(["collect", "-q", "deezer", "12345", "--label", "edm", "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["collect", "-q", "spotify", "goodplaylist000001", "--label", "../x", "--out", str(tmp_path)]) == 2
    assert "label '../x' in --label holds a character" in capsys.readouterr().err
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", "wrong-secret-value")
    assert main(["collect", "-q", "spotify", "goodplaylist000001", "--label", "techno", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "refused the credentials" in err and "wrong-secret-value" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CollectError, match="SPOTIPY_CLIENT_SECRET"):
        collect_spotify("goodplaylist000001", label="techno", out=tmp_path / "o", progress=False)


def test_network_down(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DANCEGENRE_DEEZER_API_URL", "http://127.0.0.1:9/")  # nothing listens on port 9
    assert main(["collect", "-q", "deezer", "777", "--label", "edm", "--out", str(tmp_path)]) == 2
    assert "cannot reach Deezer" in capsys.readouterr().err


def test_spotify_development_mode_shape_and_403(api, tmp_path, capsys):
    """The 2026 shape (``item`` entries, ``track: true``, no preview, ISRC sometimes missing)
    is read like the legacy one; a playlist the user does not own gets the rule in one line."""
    out = tmp_path / "data"
    assert main(["collect", "-q", "spotify", "devmodeplaylist01", "--label", "techno", "--out", str(out)]) == 0
    catalog = pd.read_csv(out / "catalog.csv", dtype=str, keep_default_na=False)
    assert sorted(catalog["track_id"]) == sorted(t["id"] for t in api.tracks[:4])
    source = dict(zip(catalog["track_id"], catalog["preview_source"]))
    # Deezer by ISRC; Deezer's search (no ISRC at all); iTunes' search (ISRC missing, nothing on
    # Deezer: an AAC .m4a); none found anywhere
    assert source == {"spTrack0001xx": "deezer-isrc", "spTrack0002xx": "deezer-search",
                      "spTrack0003xx": "itunes-search", "spTrack0000xx": ""}
    m4a = out / catalog.loc[catalog["track_id"] == "spTrack0003xx", "path"].item()
    assert m4a.name == "spTrack0003xx.m4a" and probe(m4a).format == "MOV/aac"
    assert (catalog["popularity"] == "").all() and catalog.loc[catalog["track_id"] == "spTrack0003xx", "isrc"].item() == ""
    assert main(["collect", "-q", "spotify", "notmyplaylist0001", "--label", "techno", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "owns or collaborates" in err[0] and "Deezer" in err[0] and "collect spotify login" in err[0]


def test_deezer_playlist_search(api, tmp_path, capsys):
    """The study's way: the playlists a search finds, duplicates kept once, up to --max-tracks."""
    out = tmp_path / "data"
    assert main(["collect", "-q", "deezer", "--search", "hard techno", "--label", "techno", "--out", str(out)]) == 0
    catalog = pd.read_csv(out / "catalog.csv", dtype=str, keep_default_na=False)
    ids = list(catalog["track_id"])
    assert len(ids) == len(set(ids)) and "301" in ids and "101" in ids
    assert set(catalog["playlist"]) == {"deezer-search:hard techno:EDM hits", "deezer-search:hard techno:Hard techno 2026"}
    capped = tmp_path / "capped"
    assert main(["collect", "-q", "deezer", "--search", "hard techno", "--max-tracks", "2", "--label", "techno",
                 "--out", str(capped)]) == 0
    assert len(pd.read_csv(capped / "catalog.csv")) == 2
    for args in (["deezer", "--label", "x", "--out", str(tmp_path)],
                 ["deezer", "777", "--search", "x", "--label", "x", "--out", str(tmp_path)],
                 ["spotify", "--search", "x", "--label", "x", "--out", str(tmp_path)],
                 ["deezer", "--search", "nothing at all", "--label", "x", "--out", str(tmp_path / "n")]):
        assert main(["collect", "-q", *args]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_spotify_login_pkce_end_to_end(api, tmp_path, monkeypatch, capsys):
    """Sign in with BROWSER set to a script that follows the redirect; the login reads the
    user's own playlist where client credentials get 403; refresh; logout."""
    import socket
    import stat

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DANCEGENRE_CONFIG", str(tmp_path / "config"))
    follow = tmp_path / "follow.py"
    follow.write_text("import sys, urllib.request\nurllib.request.urlopen(sys.argv[1], timeout=20).read()\n")
    monkeypatch.setenv("BROWSER", f"sh -c \"{sys.executable} {follow} '%s' >/dev/null 2>&1 &\"")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # before signing in, Development Mode answers 403 to client credentials: one line with the rule
    assert main(["collect", "-q", "spotify", "ownplaylist000001", "--label", "techno", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "collect spotify login" in err[0] and SECRET not in err[0]
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET")  # PKCE: the client id alone
    done = subprocess.run([sys.executable, "-m", "dancegenre", "collect", "spotify", "login", "--port", str(port)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    token = tmp_path / "config" / "spotify-login.json"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and api.grants == ["authorization_code"]
    for secret in (USER_TOKEN, REFRESH, USER_CODE):
        assert secret not in done.stdout + done.stderr
    assert not list(work.iterdir())  # nothing in the working directory
    assert main(["collect", "-q", "spotify", "ownplaylist000001", "--label", "techno", "--out", str(tmp_path / "d")]) == 0
    assert pd.read_csv(tmp_path / "d" / "catalog.csv")["track_id"].tolist() == ["spTrack0001xx"]
    # an expired access token is refreshed with the stored refresh token, and kept 0600
    data = json.loads(token.read_text())
    data["expires_at"] = 1
    token.write_text(json.dumps(data))
    assert main(["collect", "-q", "spotify", "ownplaylist000001", "--label", "techno", "--out", str(tmp_path / "d")]) == 0
    assert api.grants[-1] == "refresh_token" and stat.S_IMODE(token.stat().st_mode) == 0o600
    out = capsys.readouterr()
    for secret in (USER_TOKEN, REFRESH):
        assert secret not in out.out + out.err and secret not in all_text(tmp_path / "d")
    assert main(["collect", "spotify", "logout"]) == 0 and not token.exists()
    assert "signed out" in capsys.readouterr().out
    # signed out, with no secret: one line, nothing collected
    assert main(["collect", "-q", "spotify", "ownplaylist000001", "--label", "techno", "--out", str(tmp_path / "e")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # --no-browser: the URL is printed and the redirected URL read back, with the state the
    # URL carried (the user's own browser would show the sign-in page; here nobody does, so
    # the server holds no challenge to check)
    api.challenge = None
    url, done = login_no_browser(port, lambda state: f"http://127.0.0.1:{port}/callback?code={USER_CODE}&state={state}")
    assert done.returncode == 0, done.stderr
    assert "/authorize?" in url and "code_challenge=" in url and token.exists()


def login_no_browser(port: int, reply, env: dict | None = None) -> tuple[str, subprocess.CompletedProcess]:
    """``collect spotify login --no-browser``: the sign-in URL it prints, and how it ended
    after ``reply(state)`` (the URL pasted back) was typed in."""
    proc = subprocess.Popen([sys.executable, "-m", "dancegenre", "collect", "spotify", "login", "--no-browser",
                             "--port", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "BROWSER": "false", **(env or {})})
    url = proc.stdout.readline().split("Go to the following URL: ", 1)[-1].strip()
    state = parse_qs(urlparse(url).query).get("state", [""])[0]
    out, err = proc.communicate(reply(state) + "\n", timeout=60)
    return url, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_spotify_login_refuses_a_redirect_without_its_state(api, tmp_path, monkeypatch):
    """The sign-in sends a random state; a redirect that does not bring it back (another
    page's, forged) is refused in one line and no token is kept, in both ways of signing in."""
    import socket

    monkeypatch.setenv("DANCEGENRE_CONFIG", str(tmp_path / "config"))
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    states = []
    for reply in (lambda state: f"http://127.0.0.1:{port}/callback?code={USER_CODE}&state=forged",
                  lambda state: f"http://127.0.0.1:{port}/callback?code={USER_CODE}"):
        _, done = login_no_browser(port, lambda state, reply=reply: states.append(state) or reply(state))
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(err) == 1 and "state" in err[0], done.stderr
    assert all(len(state) >= 16 for state in states) and len(set(states)) == 2  # random, fresh each time
    # the browser way: a page that calls the loopback redirect with a code of its own
    forge = tmp_path / "forge.py"
    forge.write_text("import sys, urllib.request\n"
                     f"urllib.request.urlopen('http://127.0.0.1:{port}/callback?code={USER_CODE}&state=x', timeout=20)\n")
    monkeypatch.setenv("BROWSER", f"sh -c \"{sys.executable} {forge} '%s' >/dev/null 2>&1 &\"")
    done = subprocess.run([sys.executable, "-m", "dancegenre", "collect", "spotify", "login", "--port", str(port)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "state" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "config" / "spotify-login.json").exists() and api.grants == []


def hostile_deezer(monkeypatch, api_base: str) -> None:
    monkeypatch.setenv("DANCEGENRE_DEEZER_API_URL", f"{api_base}/hostile/")


@pytest.fixture
def base(api, monkeypatch):
    """The local server's base URL, with Deezer's base on its hostile answers."""
    url = os.environ["DANCEGENRE_SPOTIFY_AUTH_URL"].rsplit("/api/token", 1)[0]
    hostile_deezer(monkeypatch, url)
    return url


def test_paging_follows_each_page_once(api, base, tmp_path, monkeypatch, capsys):
    """A next page that names itself, or pages without end, is one line after a bounded
    number of requests, never a loop; nothing is written."""
    from dancegenre.data.collect import http

    for service, playlist, path in (("deezer", "555", "/hostile/playlist/555/tracks"),
                                    ("spotify", "loopplaylist00001", "/v1/playlists/loopplaylist00001/items")):
        assert main(["collect", "-q", service, playlist, "--label", "x", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "already read" in err[0] and api.hits[path] <= 3, (err, api.hits[path])
    monkeypatch.setattr(http, "MAX_PAGES", 5)
    assert main(["collect", "-q", "spotify", "endlessplaylist01", "--label", "x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "5 pages" in err[0] and api.hits["/v1/playlists/endlessplaylist01/items"] == 5
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("playlist, shape", [("600", "list"), ("601", "data is text"), ("602", "data[0] is number")])
def test_malformed_answer_is_one_line(api, base, tmp_path, capsys, playlist, shape):
    assert main(["collect", "-q", "deezer", playlist, "--label", "x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Deezer" in err[0] and f"/hostile/playlist/{playlist}" in err[0] and shape in err[0], err
    assert not (tmp_path / "o").exists()


def test_malformed_spotify_page_and_tracks(api, tmp_path, capsys):
    """A page that is not an object is one line naming the URL; a track whose fields have the
    wrong kinds is one track without a preview, with the reason, and the rest is collected."""
    assert main(["collect", "-q", "spotify", "listplaylist00001", "--label", "x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Spotify" in err[0] and "/v1/playlists/listplaylist00001/items" in err[0]
    out = tmp_path / "d"
    assert main(["collect", "-q", "spotify", "badtrackplaylist1", "--label", "x", "--out", str(out)]) == 0
    missing = read_table(out / "missing_previews_x.csv", dtype=str, keep_default_na=False).set_index("track_id")
    assert "artists is text, not a list" in missing.loc["spTrack0001xx", "reason"]
    assert "duration_ms is text, not number" in missing.loc["spTrack0007xx", "reason"]
    assert (out / "x" / "spTrack0000xx.mp3").is_file()


def test_malformed_deezer_tracks_are_reasons(api, base, tmp_path):
    s = collect_deezer("603", label="x", out=tmp_path / "d", progress=False)
    missing = read_table(tmp_path / "d" / "missing_previews_x.csv", dtype=str, keep_default_na=False)
    reasons = dict(zip(missing["track_id"], missing["reason"]))
    assert "artist is text, not an object" in reasons["2"] and "duration is text, not number" in reasons["3"]
    assert s.downloaded == 1 and (tmp_path / "d" / "x" / "1.mp3").is_file()


@pytest.mark.parametrize("url, allowed", [
    ("http://169.254.169.254/latest/meta-data/", False), ("http://10.0.0.7/a.mp3", False),
    ("http://192.168.1.1/a.mp3", False), ("http://127.0.0.1:1/a.mp3", False), ("http://[::1]/a.mp3", False),
    ("http://[::ffff:127.0.0.1]/a.mp3", False), ("http://[fe80::1]/a.mp3", False), ("http://0.0.0.0/a.mp3", False),
    ("http://224.0.0.1/a.mp3", False), ("http://100.64.0.1/a.mp3", False), ("file:///etc/passwd", False),
    ("http://127.0.0.1:8080/audio/a.mp3", True),  # the configured API origin (tests point it at 127.0.0.1)
    ("http://93.184.216.34/a.mp3", True), ("https://[2606:2800:220:1:248:1893:25c8:1946]/a.mp3", True),
])
def test_preview_hosts(url, allowed):
    """Previews come from a configured API origin or a public address, nowhere else (IP
    literals only: no name is looked up on the network)."""
    from dancegenre.data.collect.http import refusal

    assert (refusal(url, ["http://127.0.0.1:8080/deezer/"]) is None) == allowed


def test_previews_from_private_hosts_are_refused(api, base, tmp_path):
    """A preview on a loopback host that is not the API's, or redirected to one, is a reason
    on that track; the collection goes on, and a redirect on the API's host is followed."""
    s = collect_deezer("700", label="x", out=tmp_path / "d", progress=False)
    missing = read_table(tmp_path / "d" / "missing_previews_x.csv", dtype=str, keep_default_na=False)
    reasons = dict(zip(missing["track_id"], missing["reason"]))
    assert set(reasons) == {"2", "3", "4", "6"} and all("refused" in r for r in reasons.values()), reasons
    assert sorted(p.name for p in (tmp_path / "d" / "x").iterdir()) == ["1.mp3", "5.mp3"] and s.downloaded == 2
    assert "/audio/dzB.mp3" not in api.hits and "/audio/dz2.mp3" not in api.hits  # never asked


def test_spotify_pages_ask_at_most_50(api, tmp_path):
    """Development Mode answers 400 to limit=100 on playlists/{id}/items (the server here does too)."""
    collect_spotify("devmodeplaylist01", label="x", out=tmp_path / "d", progress=False, log=lambda *a: None)
    limits = [q.get("limit") for path, q in api.queries if path.startswith("/v1/playlists/")]
    assert limits and all(int(limit) <= 50 for limit in limits)


def test_fallback_sources_down_are_reasons(api, tmp_path, monkeypatch):
    """Deezer over its rate limit (403) and iTunes unreachable: the tracks they could not help
    are listed with why, each source is asked once, and the playlist is still collected."""
    from dancegenre.data.collect import http, itunes

    url = os.environ["DANCEGENRE_SPOTIFY_AUTH_URL"].rsplit("/api/token", 1)[0]
    monkeypatch.setenv("DANCEGENRE_DEEZER_API_URL", f"{url}/refuse/")
    monkeypatch.setenv("DANCEGENRE_ITUNES_API_URL", "http://127.0.0.1:9/")  # nothing listens on port 9
    monkeypatch.setattr(itunes, "session", lambda: http.session(backoff=0))  # refused at once, not after backoff
    notes = []
    s = collect_spotify("goodplaylist000001", label="techno", out=tmp_path / "d", progress=False, log=notes.append)
    assert s.tracks == 5 and s.downloaded == 1
    catalog = read_table(tmp_path / "d" / "catalog.csv", dtype=str, keep_default_na=False)
    assert len(catalog) == 5
    missing = read_table(tmp_path / "d" / "missing_previews_techno.csv", dtype=str, keep_default_na=False)
    assert len(missing) == 4
    for reason in missing["reason"]:
        assert "Deezer unavailable: Deezer answered HTTP 403" in reason and "iTunes unavailable: cannot reach" in reason
    assert sum(n for path, n in api.hits.items() if path.startswith("/refuse/")) == 1
    assert any("Deezer unavailable" in n for n in notes)


@pytest.mark.parametrize("args, env", [
    (["spotify", "not a playlist!"], {}),
    (["spotify", "unknownplaylist01"], {}),
    (["deezer", "not-a-playlist"], {}),
    (["deezer", "12345"], {}),
    (["deezer", "777"], {"DANCEGENRE_DEEZER_API_URL": "ftp://example.org/"}),
    (["spotify", "goodplaylist000001"], {"DANCEGENRE_ITUNES_API_URL": "file:///etc/"}),
    (["spotify", "goodplaylist000001"], {"SPOTIPY_CLIENT_SECRET": ""}),
])
def test_refused_collect_makes_no_folder(api, tmp_path, monkeypatch, capsys, args, env):
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "new" / "data"
    assert main(["collect", "-q", *args, "--label", "techno", "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_csv_cells_are_never_formulas(api, base, tmp_path):
    """Names from an API that a spreadsheet would run are written with a leading apostrophe,
    read back as they were, and stay so when the catalog is extended."""
    out = tmp_path / "d"
    for _ in range(2):
        collect_deezer("800", label="x", out=out, progress=False)
    for name in ("catalog.csv", "missing_previews_x.csv"):
        text = (out / name).read_text()
        cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
        assert not any(cell[:1] in ("=", "+", "-", "@") for cell in cells), name
        assert "''" not in text  # read back and written again: escaped once, not twice
    catalog = read_table(out / "catalog.csv", dtype=str, keep_default_na=False).set_index("track_id")
    assert catalog.loc["1", "artist_name"] == '=HYPERLINK("http://evil.example","click")'
    assert catalog.loc["1", "track_name"] == "@SUM(1+1)" and catalog.loc["2", "track_name"] == "-2+3"
    assert len(catalog) == 2


def test_folder_from_before_the_marker(api, tmp_path):
    """A collection folder made before the marker (its catalog, label folders and missing
    lists, nothing else) is taken and extended; one holding anything else is refused."""
    old = tmp_path / "old"
    (old / "house").mkdir(parents=True)
    (old / "house" / "1.mp3").write_bytes(b"")
    pd.DataFrame([{c: "" for c in CATALOG_COLUMNS} | {"label": "house", "track_id": "1", "source": "deezer"}]).to_csv(
        old / "catalog.csv", index=False)
    pd.DataFrame({"track_id": [], "reason": []}).to_csv(old / "missing_previews_house.csv", index=False)
    collect_deezer("https://www.deezer.com/en/playlist/888", label="edm", out=old, progress=False)
    assert set(read_table(old / "catalog.csv", dtype=str)["label"]) == {"house", "edm"}
    assert (old / ".dancegenre").is_file()
    mixed = tmp_path / "mixed"
    shutil.copytree(old, mixed)
    (mixed / ".dancegenre").unlink()
    (mixed / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not make"):
        collect_deezer("888", label="edm", out=mixed, progress=False)


def test_a_refused_download_leaves_nothing_under_the_name(api, base, tmp_path):
    from dancegenre.data.collect.download import Download, fetch
    from dancegenre.data.collect.http import session

    dest = tmp_path / "x" / "1.mp3"
    dest.parent.mkdir()
    job = fetch(Download("1", f"{base}/no/such/preview.mp3", dest), session(retries=0), origins=[base], attempts=1)
    assert job.status == "failed" and job.reason.startswith("HTTP 4")
    assert list(dest.parent.iterdir()) == []  # neither an empty file under the name nor a temporary
