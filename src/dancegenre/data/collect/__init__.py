"""collect: playlist -> catalog.csv + preview mp3s, ready for ``prepare``.

Spotify (spotipy, client credentials) or Deezer (public API).  Since November 2024
Spotify gives new apps no preview links and no audio features, so a Spotify track's
preview is looked up on Deezer: first by ISRC, then by a search whose artist, title and
duration must all agree.  Every track records where its preview came from.

Everything that can be checked without the network (the label, the playlist id, the
base URLs, the credentials, ``--out``) is checked before anything is asked, and the
output folder is made only once there are tracks to write.  A fallback source that
fails (unreachable, rate limited, a malformed answer) is a reason on the tracks it could
not help, in ``missing_previews_<label>.csv``; the collection goes on.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dancegenre.data.collect.deezer import TRACK as DEEZER_TRACK
from dancegenre.data.collect.deezer import Deezer, parse_deezer_playlist
from dancegenre.data.collect.download import Download, download_all
from dancegenre.data.collect.http import (
    CollectError,
    SourceDown,
    is_http_url,
    json_kind,
    misfit,
    safe_id,
)
from dancegenre.data.collect.itunes import ITunes
from dancegenre.data.collect.spotify import (
    AUDIO_FEATURES,
    Spotify,
    credentials,
    parse_spotify_playlist,
)
from dancegenre.data.collect.spotify import TRACK as SPOTIFY_TRACK
from dancegenre.safety import (
    check_label,
    check_own_table,
    claim_folder,
    is_ours,
    read_table,
    releasing,
    write_table,
)

CATALOG_COLUMNS = ["path", "label", "track_id", "track_name", "artist_name", "artist_id", "album_date",
                   "track_length", "popularity", "preview_url", "isrc", "source", "preview_source", "playlist"]
OWN_COLUMNS = ("label", "track_id", "source", "path")  # a catalog.csv holding these is one collect wrote

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


# ---------------------------------------------------------------- the output folder

def _claim_out(out: str | os.PathLike[str], *, create: bool) -> Path:
    """``out`` as a data folder of ours: new, empty, marked, or one collect made before the
    marker; ``create=False`` only checks it.

    A folder from before the marker holds exactly what collect writes: ``catalog.csv``
    (with our columns), and for each label in it a folder of previews and
    ``missing_previews_<label>.csv``."""
    out = Path(out)
    catalog = out / "catalog.csv"
    labels: list[str] = []
    if catalog.exists() or catalog.is_symlink():
        check_own_table(catalog, columns=OWN_COLUMNS, what="--out", kind="catalog made by collect")
        if not is_ours(out):
            labels = _catalog_labels(catalog)
    others = [glob.escape(name) for label in labels for name in (label, f"missing_previews_{label}.csv")]
    return claim_folder(out, "collection", legacy=("catalog.csv",), legacy_others=others, what="--out",
                        create=create)


def _catalog_labels(catalog: Path) -> list[str]:
    try:
        labels = read_table(catalog, dtype=str, keep_default_na=False, usecols=["label"])["label"]
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError):
        return []  # unreadable: no label folder counts as ours
    return [label for label in labels.unique() if label]


# ---------------------------------------------------------------- rows of the catalog

def _malformed_row(t: dict[str, Any], source: str, label: str, playlist: str, why: str) -> dict[str, Any]:
    """A track whose answer has the wrong shape: its id where it has one, and why."""
    tid = t.get("id")
    return {"label": label, "track_id": str(tid) if json_kind(tid) in ("text", "number") else "",
            "preview_url": "", "source": source, "preview_source": "", "playlist": playlist,
            "reason": f"malformed track: {why}"}


def _spotify_row(t: dict[str, Any], label: str, playlist: str) -> dict[str, Any]:
    why = misfit(t, SPOTIFY_TRACK, "the track")
    if why:
        return _malformed_row(t, "spotify", label, playlist, why)
    artists = t.get("artists") or [{}]
    return {
        "label": label, "track_id": t.get("id"), "track_name": t.get("name"),
        "artist_name": ", ".join(a.get("name") or "" for a in artists), "artist_id": artists[0].get("id"),
        "album_date": (t.get("album") or {}).get("release_date"),
        "track_length": round((t.get("duration_ms") or 0) / 1000, 3), "popularity": t.get("popularity"),
        "preview_url": t.get("preview_url") or "", "isrc": (t.get("external_ids") or {}).get("isrc") or "",
        "source": "spotify", "preview_source": "spotify" if t.get("preview_url") else "", "playlist": playlist,
    }


def _deezer_row(t: dict[str, Any], label: str, playlist: str) -> dict[str, Any]:
    why = misfit(t, DEEZER_TRACK, "the track")
    if why:
        return _malformed_row(t, "deezer", label, playlist, why)
    artist = t.get("artist") or {}
    return {
        "label": label, "track_id": str(t.get("id", "")), "track_name": t.get("title"),
        "artist_name": artist.get("name"), "artist_id": str(artist.get("id", "")),
        "album_date": (t.get("album") or {}).get("release_date", t.get("release_date", "")),
        "track_length": t.get("duration"), "popularity": t.get("rank"), "preview_url": t.get("preview") or "",
        "isrc": t.get("isrc", ""), "source": "deezer", "preview_source": "deezer" if t.get("preview") else "",
        "playlist": playlist,
    }


# ---------------------------------------------------------------- previews from other sources

def _ask(source: str, lookup: Callable[[], dict[str, Any] | None], down: dict[str, str],
         notes: list[str]) -> dict[str, Any] | None:
    """``lookup()``, or None with the reason in ``notes``.  A source that cannot be
    reached or refuses goes into ``down`` and is asked no more in this collection: every
    later track gets the same reason at once, and a rate limit is not hammered."""
    if source in down:
        notes.append(down[source])
        return None
    try:
        return lookup()
    except SourceDown as exc:
        down[source] = f"{source} unavailable: {exc}"
        notes.append(down[source])
    except CollectError as exc:  # this answer only (a malformed one, a 404): the source stays
        notes.append(str(exc))
    return None


def _find_preview(r: dict[str, Any], dz: Deezer, itunes: ITunes, down: dict[str, str]) -> None:
    """A preview for row ``r`` from Deezer (by ISRC, then a careful search) or iTunes,
    with where it came from; else why none was found, in ``r["reason"]``."""
    artist, title = (r["artist_name"] or "").split(", ")[0], r["track_name"] or ""
    lookups = (("deezer-isrc", "Deezer", lambda: dz.track_by_isrc(r["isrc"]) if r["isrc"] else None, "preview"),
               ("deezer-search", "Deezer", lambda: dz.search_match(artist, title, r["track_length"]), "preview"),
               # an AAC .m4a, decoded through PyAV like any other file
               ("itunes-search", "iTunes", lambda: itunes.search_match(artist, title, r["track_length"]),
                "previewUrl"))
    notes: list[str] = []
    for name, source, lookup, key in lookups:
        hit = _ask(source, lookup, down, notes)
        if hit and is_http_url(hit.get(key)):
            r["preview_url"], r["preview_source"] = hit[key], name
            return
    if notes:
        r["reason"] = "no preview found; " + "; ".join(dict.fromkeys(notes))


# ---------------------------------------------------------------- downloads and tables

def _plan(rows: list[dict[str, Any]], out: Path, label: str) -> tuple[list[Download], list[dict[str, Any]]]:
    """A download for each row with a usable id and preview link; the other rows, each
    with why (a row's ``reason``, taken off it), for the list of tracks without one."""
    jobs, skipped = [], []
    for row in rows:
        tid = safe_id(row["track_id"])
        reason = row.pop("reason", "") or ("unusable track id" if tid is None else "")
        reason = reason or ("" if is_http_url(row["preview_url"]) else "no preview found")
        if reason:
            row["path"], row["preview_source"] = "", ""
            skipped.append({**row, "reason": reason})
            continue
        ext = ".m4a" if row["preview_source"].startswith("itunes") else ".mp3"
        jobs.append(Download(tid, row["preview_url"], out / label / f"{tid}{ext}"))
    return jobs, skipped


def _write_tables(rows: list[dict[str, Any]], skipped: list[dict[str, Any]], out: Path, label: str) -> Path:
    """Write or extend ``out/catalog.csv`` (rows of other playlists and labels stay, these
    are refreshed) and write ``out/missing_previews_<label>.csv``; CSV cells never formulas."""
    new = pd.DataFrame(rows)
    columns = CATALOG_COLUMNS + [c for c in new.columns if c not in CATALOG_COLUMNS]
    new = new.reindex(columns=columns)
    catalog = out / "catalog.csv"
    if catalog.exists():
        old = read_table(catalog, dtype=str, keep_default_na=False)
        keep = ~old.set_index(["label", "track_id"]).index.isin(new.astype(str).set_index(["label", "track_id"]).index)
        new = pd.concat([old[keep], new.astype(object)], ignore_index=True)
    write_table(catalog, new)
    write_table(out / f"missing_previews_{label}.csv", pd.DataFrame(skipped, columns=[*columns, "reason"]))
    return catalog


def _finish(rows: list[dict[str, Any]], out: str | os.PathLike[str], label: str, summary: CollectSummary, *,
            origins: tuple[str, ...], workers: int, progress: bool) -> CollectSummary:
    """Claim ``out`` (made here, once there are tracks), download the previews (only from
    ``origins``, the API base URLs, and public hosts), write the catalog and the list of
    tracks without a preview."""
    out = _claim_out(out, create=True)
    (out / label).mkdir(exist_ok=True)
    jobs, skipped = _plan(rows, out, label)
    by_id = {j.track_id: j for j in download_all(jobs, origins=origins, workers=workers, progress=progress)}
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
    summary.catalog = str(_write_tables(rows, skipped, out, label))
    return summary


# ---------------------------------------------------------------- the two commands

def _spotify_client() -> Spotify:
    """The signed-in user's client (their own and collaborative playlists, in any app
    mode), else the app's client credentials."""
    from dancegenre.data.collect.login import client_id as login_client_id
    from dancegenre.data.collect.login import stored_login

    if stored_login():
        return Spotify(login_client_id(), None, user=True)
    return Spotify(*credentials())


@releasing
def collect_spotify(playlist: str, *, label: str, out: str | os.PathLike[str], workers: int = 4,
                    progress: bool = True, log: Any = print) -> CollectSummary:
    """A Spotify playlist into ``out/catalog.csv`` and ``out/<label>/<track_id>.mp3``."""
    label = check_label(label, "--label")  # the one label rule: it becomes a folder name
    pid = parse_spotify_playlist(playlist)
    sp, dz, itunes = _spotify_client(), Deezer(), ITunes()
    _claim_out(out, create=False)
    tracks = sp.playlist_items(pid)
    if not tracks:
        raise CollectError("the Spotify playlist has no tracks")
    summary = CollectSummary(playlist=playlist, tracks=len(tracks))
    rows = [_spotify_row(t, label, playlist) for t in tracks]
    _add_features(sp, rows, summary, log)
    from tqdm import tqdm

    down: dict[str, str] = {}
    for r in tqdm(rows, desc="previews", unit="track", disable=not progress):
        if not is_http_url(r["preview_url"]) and "reason" not in r:
            _find_preview(r, dz, itunes, down)
    for why in down.values():
        log(f"note: {why}; the tracks it could not help are listed with that reason")
        summary.notes.append(why)
    return _finish(rows, out, label, summary, origins=(sp.api, dz.api, itunes.api), workers=workers,
                   progress=progress)


def _add_features(sp: Spotify, rows: list[dict[str, Any]], summary: CollectSummary, log: Any) -> None:
    """Spotify's audio features on each row, where the endpoint still answers."""
    features, why = sp.audio_features([r["track_id"] for r in rows if safe_id(r["track_id"])])
    if why:
        log(f"note: {why}; carrying on without audio features")
        summary.notes.append(why)
    for r in rows:
        for k in AUDIO_FEATURES if features else ():
            r[k] = features.get(r["track_id"], {}).get(k)


def _deezer_search_rows(dz: Deezer, search: str, label: str, *, max_tracks: int, log: Any) -> list[dict[str, Any]]:
    found = dz.search_playlists(search, max_tracks=max_tracks)
    if not found:
        raise CollectError(f"Deezer's playlist search found no tracks for {search!r}")
    log(f"{len(found)} playlists found for {search!r}: " + ", ".join(repr(t) for t, _ in found[:5])
        + (" ..." if len(found) > 5 else ""))
    return [_deezer_row(t, label, f"deezer-search:{search}:{title}") for title, tracks in found for t in tracks]


@releasing
def collect_deezer(playlist: str | None, *, label: str, out: str | os.PathLike[str], workers: int = 4,
                   progress: bool = True, log: Any = print, search: str | None = None,
                   max_tracks: int = 1500) -> CollectSummary:
    """A public Deezer playlist into ``out/catalog.csv`` and ``out/<label>/<track_id>.mp3``.

    With ``search``, the playlists Deezer's playlist search finds for it instead (the
    study's way of finding its playlists), until ``max_tracks`` distinct tracks; a track
    in several playlists is kept once."""
    label = check_label(label, "--label")
    if not search and not playlist:
        raise CollectError("name a Deezer playlist, or --search TEXT")
    pid = None if search else parse_deezer_playlist(playlist or "")
    dz = Deezer()
    _claim_out(out, create=False)
    if search:
        rows = _deezer_search_rows(dz, search, label, max_tracks=max_tracks, log=log)
        summary = CollectSummary(playlist=f"deezer search {search!r}", tracks=len(rows))
    else:
        title, tracks = dz.playlist_tracks(pid or "")
        if not tracks:
            raise CollectError(f"the Deezer playlist {title!r} has no tracks")
        rows = [_deezer_row(t, label, playlist or "") for t in tracks]
        summary = CollectSummary(playlist=playlist or "", tracks=len(tracks))
    return _finish(rows, out, label, summary, origins=(dz.api,), workers=workers, progress=progress)
