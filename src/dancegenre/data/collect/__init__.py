"""collect: playlist -> catalog.csv + preview mp3s, ready for ``prepare``.

Spotify (spotipy, client credentials) or Deezer (public API).  Since November 2024
Spotify gives new apps no preview links and no audio features, so a Spotify track's
preview is looked up on Deezer: first by ISRC, then by a search whose artist, title and
duration must all agree.  Every track records where its preview came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dancegenre.data.collect.deezer import Deezer
from dancegenre.data.collect.download import Download, download_all
from dancegenre.data.collect.http import CollectError, is_http_url, safe_id
from dancegenre.data.collect.itunes import ITunes
from dancegenre.data.collect.spotify import AUDIO_FEATURES, Spotify, credentials
from dancegenre.safety import atomic_write

CATALOG_COLUMNS = ["path", "label", "track_id", "track_name", "artist_name", "artist_id", "album_date",
                   "track_length", "popularity", "preview_url", "isrc", "source", "preview_source", "playlist"]

__all__ = ["CollectError", "CollectSummary", "collect_deezer", "collect_spotify"]


@dataclass
class CollectSummary:
    playlist: str
    tracks: int
    previews: dict[str, int] = field(default_factory=dict)  # by source
    downloaded: int = 0
    kept: int = 0
    failed: int = 0
    missing: int = 0
    notes: list[str] = field(default_factory=list)
    catalog: str = ""


def _claim_out(out: str | os.PathLike[str]) -> Path:
    """``out`` as a data folder of ours: new, empty, marked, or holding a catalog that
    ``collect`` wrote (its rows are extended, never those of another tool)."""
    from dancegenre.errors import OutputError
    from dancegenre.safety import claim_folder

    out = Path(out)
    catalog = out / "catalog.csv"
    if catalog.is_file():
        try:
            header = set(pd.read_csv(catalog, nrows=0).columns)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            header = set()
        if not {"label", "track_id", "source", "path"} <= header:
            raise OutputError(f"{catalog} is not a catalog made by collect; choose another --out")
    return claim_folder(out, "collection", legacy=("catalog.csv",), what="--out")


def _label(label: str) -> str:
    from dancegenre.safety import (
        check_label,  # the one label rule: it becomes a folder name
    )

    return check_label(label, "--label")


def _spotify_row(t: dict[str, Any], label: str, playlist: str) -> dict[str, Any]:
    artists = t.get("artists") or [{}]
    return {
        "label": label, "track_id": t.get("id"), "track_name": t.get("name"),
        "artist_name": ", ".join(a.get("name", "") for a in artists), "artist_id": artists[0].get("id"),
        "album_date": (t.get("album") or {}).get("release_date"),
        "track_length": round((t.get("duration_ms") or 0) / 1000, 3), "popularity": t.get("popularity"),
        "preview_url": t.get("preview_url") or "", "isrc": (t.get("external_ids") or {}).get("isrc", ""),
        "source": "spotify", "preview_source": "spotify" if t.get("preview_url") else "", "playlist": playlist,
    }


def _deezer_row(t: dict[str, Any], label: str, playlist: str) -> dict[str, Any]:
    artist = t.get("artist") or {}
    return {
        "label": label, "track_id": str(t.get("id", "")), "track_name": t.get("title"),
        "artist_name": artist.get("name"), "artist_id": str(artist.get("id", "")),
        "album_date": (t.get("album") or {}).get("release_date", t.get("release_date", "")),
        "track_length": t.get("duration"), "popularity": t.get("rank"), "preview_url": t.get("preview") or "",
        "isrc": t.get("isrc", ""), "source": "deezer", "preview_source": "deezer" if t.get("preview") else "",
        "playlist": playlist,
    }


def _finish(rows: list[dict[str, Any]], out: Path, label: str, summary: CollectSummary, *, workers: int,
            progress: bool) -> CollectSummary:
    """Download previews, write/extend the catalog and the list of tracks without one."""
    (out / label).mkdir(parents=True, exist_ok=True)
    jobs, skipped = [], []
    for row in rows:
        tid = safe_id(row["track_id"])
        if tid is None:
            row["preview_source"], row["path"] = "", ""
            skipped.append({**row, "reason": "unusable track id"})
            continue
        if row["preview_url"] and is_http_url(row["preview_url"]):
            ext = ".m4a" if row["preview_source"].startswith("itunes") else ".mp3"
            jobs.append(Download(tid, row["preview_url"], out / label / f"{tid}{ext}"))
        else:
            row["path"] = ""
            skipped.append({**row, "reason": "no preview found"})
    by_id = {j.track_id: j for j in download_all(jobs, workers=workers, progress=progress)}
    for row in rows:
        job = by_id.get(str(row["track_id"]))
        if job is None:
            continue
        if job.status in ("downloaded", "kept"):
            row["path"] = f"{label}/{job.dest.name}"
        else:
            row["path"] = ""
            skipped.append({**row, "reason": f"download failed: {job.reason}"})
    summary.downloaded = sum(j.status == "downloaded" for j in by_id.values())
    summary.kept = sum(j.status == "kept" for j in by_id.values())
    summary.failed = sum(j.status == "failed" for j in by_id.values())
    summary.missing = len(skipped) - summary.failed
    summary.previews = pd.Series([r["preview_source"] or "none" for r in rows]).value_counts().to_dict()
    new = pd.DataFrame(rows)
    columns = CATALOG_COLUMNS + [c for c in new.columns if c not in CATALOG_COLUMNS]
    new = new.reindex(columns=columns)
    catalog = out / "catalog.csv"
    if catalog.exists():  # extend: rows of other playlists/labels stay, these are refreshed
        old = pd.read_csv(catalog, dtype=str, keep_default_na=False)
        keep = ~old.set_index(["label", "track_id"]).index.isin(new.astype(str).set_index(["label", "track_id"]).index)
        new = pd.concat([old[keep], new.astype(object)], ignore_index=True)
    atomic_write(catalog, new.to_csv(index=False))
    missing = pd.DataFrame(skipped, columns=[*columns, "reason"])
    missing.to_csv(out / f"missing_previews_{label}.csv", index=False)
    summary.catalog = str(catalog)
    return summary


def collect_spotify(playlist: str, *, label: str, out: str | os.PathLike[str], workers: int = 4,
                    progress: bool = True, log: Any = print) -> CollectSummary:
    """A Spotify playlist into ``out/catalog.csv`` and ``out/<label>/<track_id>.mp3``."""
    label = _label(label)
    out = _claim_out(out)
    from dancegenre.data.collect.login import client_id as login_client_id
    from dancegenre.data.collect.login import stored_login

    if stored_login():  # signed in: the user's own and collaborative playlists, in any app mode
        sp = Spotify(login_client_id(), None, user=True)
    else:
        client_id, secret = credentials()
        sp = Spotify(client_id, secret)
    tracks = sp.playlist_items(playlist)
    if not tracks:
        raise CollectError("the Spotify playlist has no tracks")
    summary = CollectSummary(playlist=playlist, tracks=len(tracks))
    rows = [_spotify_row(t, label, playlist) for t in tracks]
    features, why = sp.audio_features([r["track_id"] for r in rows if safe_id(r["track_id"])])
    if why:
        log(f"note: {why}; carrying on without audio features")
        summary.notes.append(why)
    for r in rows:
        for k in AUDIO_FEATURES if features else ():
            r[k] = features.get(r["track_id"], {}).get(k)
    dz, itunes = Deezer(), ITunes()
    from tqdm import tqdm

    for r in tqdm(rows, desc="previews", unit="track", disable=not progress):
        if r["preview_url"]:
            continue
        hit = dz.track_by_isrc(r["isrc"]) if r["isrc"] else None
        if hit and hit.get("preview"):
            r["preview_url"], r["preview_source"] = hit["preview"], "deezer-isrc"
            continue
        first_artist = (r["artist_name"] or "").split(", ")[0]
        hit = dz.search_match(first_artist, r["track_name"] or "", r["track_length"])
        if hit and hit.get("preview"):
            r["preview_url"], r["preview_source"] = hit["preview"], "deezer-search"
            continue
        hit = itunes.search_match(first_artist, r["track_name"] or "", r["track_length"])
        if hit:  # an AAC .m4a, decoded through PyAV like any other file
            r["preview_url"], r["preview_source"] = hit["previewUrl"], "itunes-search"
    return _finish(rows, out, label, summary, workers=workers, progress=progress)


def collect_deezer(playlist: str | None, *, label: str, out: str | os.PathLike[str], workers: int = 4,
                   progress: bool = True, log: Any = print, search: str | None = None,
                   max_tracks: int = 1500) -> CollectSummary:
    """A public Deezer playlist into ``out/catalog.csv`` and ``out/<label>/<track_id>.mp3``.

    With ``search``, the playlists Deezer's playlist search finds for it instead (the
    study's way of finding its playlists), until ``max_tracks`` distinct tracks; a track
    in several playlists is kept once."""
    label = _label(label)
    out = _claim_out(out)
    if search:
        found = Deezer().search_playlists(search, max_tracks=max_tracks)
        if not found:
            raise CollectError(f"Deezer's playlist search found no tracks for {search!r}")
        rows = [_deezer_row(t, label, f"deezer-search:{search}:{title}") for title, tracks in found for t in tracks]
        log(f"{len(found)} playlists found for {search!r}: " + ", ".join(repr(t) for t, _ in found[:5])
            + (" ..." if len(found) > 5 else ""))
        summary = CollectSummary(playlist=f"deezer search {search!r}", tracks=len(rows))
        return _finish(rows, Path(out), label, summary, workers=workers, progress=progress)
    if not playlist:
        raise CollectError("name a Deezer playlist, or --search TEXT")
    title, tracks = Deezer().playlist_tracks(playlist)
    if not tracks:
        raise CollectError(f"the Deezer playlist {title!r} has no tracks")
    rows = [_deezer_row(t, label, playlist) for t in tracks]
    summary = CollectSummary(playlist=playlist, tracks=len(tracks))
    return _finish(rows, Path(out), label, summary, workers=workers, progress=progress)
