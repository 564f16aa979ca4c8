"""Verdicts into a DJ's library: genre tags in the files (mutagen), an undo journal,
M3U8 playlists and a rekordbox collection XML.

Tags
    ID3 ``TCON`` (mp3, aiff), Vorbis ``GENRE`` (flac, ogg, opus), MP4 ``©gen`` (m4a), and
    a custom field with the whole result (``TXXX:DANCEGENRE``, the Vorbis comment
    ``DANCEGENRE``, the MP4 freeform atom ``----:com.dancegenre:DANCEGENRE``): JSON
    with genre, confidence, top-k and model.  mutagen rewrites the tag block only: the
    audio frames, every other tag and the cover art stay as they were.

Safety
    Before a file is touched, its previous genre and custom field go into a journal CSV
    (flushed and fsynced); ``untag`` restores them.  Each write modifies a copy in the
    same folder, fsyncs it and renames it over the file, so a kill at any moment leaves
    the old file or the new one.  A file that changed since it was scored (size or
    mtime), is read-only, or is in a container without a genre tag gets one line and
    the batch goes on.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dancegenre import __version__
from dancegenre.config import check_probability
from dancegenre.errors import ConfigError, DanceGenreError
from dancegenre.inference.classifier import Prediction, prediction_list
from dancegenre.inference.sort import UNSURE
from dancegenre.safety import atomic_write, check_label, claim_folder

TAG_MODES = ("replace", "append", "only-empty")
FIELD = "DANCEGENRE"
MP4_GENRE, MP4_FIELD = "\xa9gen", "----:com.dancegenre:DANCEGENRE"
PLAYLISTS_FOLDER = {"kind": "playlists", "legacy": ("rekordbox.xml",), "what": "--playlists folder"}
JOURNAL_COLUMNS = ["path", "size", "mtime_ns", "kind", "old_genre", "old_field", "new_genre", "new_field", "time"]


@dataclass
class TagAction:
    """What ``write_tags`` (or ``untag``) did, or would do, to one file."""

    path: str
    action: str  # write, skip, restore
    genres: list[str]
    reason: str = ""


# ---------------------------------------------------------------- containers

class _Tags:
    """The genre list and the custom field of one file, over mutagen."""

    def __init__(self, path: Path) -> None:
        import mutagen
        from mutagen.aiff import AIFF
        from mutagen.flac import FLAC
        from mutagen.id3 import ID3FileType
        from mutagen.mp4 import MP4
        from mutagen.oggopus import OggOpus
        from mutagen.oggvorbis import OggVorbis

        try:
            f = mutagen.File(str(path))
        except mutagen.MutagenError as exc:
            raise DanceGenreError(f"cannot read its tags ({exc})") from None
        if isinstance(f, (ID3FileType, AIFF)) and not path.suffix.lower() == ".wav":
            self.kind = "id3"
        elif isinstance(f, (FLAC, OggVorbis, OggOpus)):
            self.kind = "vorbis"
        elif isinstance(f, MP4):
            self.kind = "mp4"
        else:
            raise DanceGenreError(f"no genre tag in this container ({path.suffix or 'no extension'}); "
                                  "tags go into mp3, aiff, flac, ogg, opus and m4a")
        if f.tags is None:
            f.add_tags()
        self.file = f

    def genres(self) -> list[str]:
        t = self.file.tags
        if self.kind == "id3":
            return list(t["TCON"].text) if "TCON" in t else []
        if self.kind == "vorbis":
            return list(t.get("GENRE", []))
        return list(t.get(MP4_GENRE, []))

    def field(self) -> str | None:
        t = self.file.tags
        if self.kind == "id3":
            frames = t.getall(f"TXXX:{FIELD}")
            return str(frames[0].text[0]) if frames and frames[0].text else None
        if self.kind == "vorbis":
            values = t.get(FIELD, [])
            return values[0] if values else None
        values = t.get(MP4_FIELD, [])
        return bytes(values[0]).decode("utf-8") if values else None

    def set(self, genres: list[str] | None, field: str | None) -> None:
        """Set (or, with None / [], remove) the genre list and the custom field."""
        from mutagen.id3 import TCON, TXXX
        from mutagen.mp4 import MP4FreeForm

        t = self.file.tags
        if self.kind == "id3":
            t.delall("TCON")
            if genres:
                t.add(TCON(encoding=3, text=genres))
            t.delall(f"TXXX:{FIELD}")
            if field is not None:
                t.add(TXXX(encoding=3, desc=FIELD, text=[field]))
        elif self.kind == "vorbis":
            for key, value in (("GENRE", genres or None), (FIELD, [field] if field is not None else None)):
                if value:
                    t[key] = value
                elif key in t:
                    del t[key]
        else:
            for key, value in ((MP4_GENRE, genres or None),
                               (MP4_FIELD, [MP4FreeForm(field.encode("utf-8"))] if field is not None else None)):
                if value:
                    t[key] = value
                elif key in t:
                    del t[key]

    def save_atomically(self, path: Path) -> None:
        """Write the tags into a copy beside ``path``, fsync it, rename it over ``path``."""
        tmp = path.with_name(f".{path.name}.dancegenre-tags")
        try:
            shutil.copy2(path, tmp)
            self.file.save(str(tmp))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_folder(path.parent)
        finally:
            tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not on this platform
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- write and undo

def _plan(prediction: Prediction, tags: _Tags, *, mode: str, min_confidence: float, top_k: int,
          model_id: str) -> tuple[list[str] | None, str, str]:
    """(the new genre list or None to skip, the new custom field, why not)."""
    ranked = prediction.top(top_k)
    wanted = [g for g, p in ranked if p >= min_confidence]
    if not wanted:
        return None, "", f"confidence {prediction.confidence:.2f} is below --min-confidence {min_confidence:g}"
    old = tags.genres()
    if mode == "only-empty" and old:
        return None, "", f"already has a genre ({'; '.join(old)})"
    # replace and only-empty write the verdict; append adds every genre of the top k above
    # --min-confidence (the runners-up are in the custom field either way)
    new = old + [g for g in wanted if g not in old] if mode == "append" else [wanted[0]]
    field = json.dumps({"genre": prediction.genre, "confidence": round(prediction.confidence, 4),
                        "top": [[g, round(p, 4)] for g, p in ranked], "model": model_id}, ensure_ascii=False)
    return new, field, ""


def write_tags(predictions: Iterable[Prediction], *, journal: str | os.PathLike[str] | None, mode: str = "replace",
               min_confidence: float = 0.0, top_k: int = 1, model_id: str = "", dry_run: bool = False,
               ) -> list[TagAction]:
    """Write each verdict into its file's genre tag; return what was done.

    ``mode``: replace the genre, append to it, or write only-empty ones.  Genres below
    ``min_confidence`` are not written (with ``top_k`` > 1, every genre of the top k
    above it).  The previous values go into ``journal`` (CSV, appended) before each
    file is changed; ``untag(journal)`` restores them.  ``dry_run`` returns the plan and
    writes nothing, not even the journal.

    Raises
    ------
    ConfigError
        An unknown mode, or no journal for a real run.
    """
    if mode not in TAG_MODES:
        raise ConfigError(f"--tag-mode must be one of {', '.join(TAG_MODES)}, not {mode!r}")
    check_probability(min_confidence, "min_confidence")
    predictions = prediction_list(predictions, "write_tags")
    if journal is None and not dry_run:
        raise ConfigError("writing tags needs a journal of the previous values")
    actions: list[TagAction] = []
    writer = None
    fh = None
    try:
        for p in predictions:
            path = Path(p.source)
            if p.error or p.genre is None:
                actions.append(TagAction(str(path), "skip", [], p.error or "no verdict"))
                continue
            why = _unchanged(path, p)
            if why:
                actions.append(TagAction(str(path), "skip", [], why))
                continue
            try:
                tags = _Tags(path)
            except DanceGenreError as exc:
                actions.append(TagAction(str(path), "skip", [], str(exc)))
                continue
            new, field, why = _plan(p, tags, mode=mode, min_confidence=min_confidence, top_k=top_k,
                                    model_id=model_id)
            if new is None:
                actions.append(TagAction(str(path), "skip", [], why))
                continue
            if dry_run:
                actions.append(TagAction(str(path), "write", new))
                continue
            if writer is None:
                fh, writer = _open_journal(Path(journal))  # type: ignore[arg-type]
            st = path.stat()
            writer.writerow({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                             "kind": tags.kind, "old_genre": json.dumps(tags.genres(), ensure_ascii=False),
                             "old_field": json.dumps(tags.field(), ensure_ascii=False),
                             "new_genre": json.dumps(new, ensure_ascii=False), "new_field": field,
                             "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
            fh.flush()
            os.fsync(fh.fileno())  # the old values are safe on disk before the file changes
            actions.append(_rewrite(tags, path, new, field, "write"))
    finally:
        if fh is not None:
            fh.close()
    return actions


def _rewrite(tags: _Tags, path: Path, genres: list[str], field: str | None, action: str) -> TagAction:
    """Set the genres and the field and save atomically; a refusal of the file system
    is a skip with its reason (the file stays as it was)."""
    try:
        tags.set(genres, field)
        tags.save_atomically(path)
    except OSError as exc:
        return TagAction(str(path), "skip", [], f"cannot write ({exc.strerror or exc}); unchanged")
    return TagAction(str(path), action, genres)


def check_journal(path: str | os.PathLike[str]) -> Path:
    """``path`` as a tag journal to append to: new, empty, or one of ours (ConfigError)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            header = next(csv.reader(f), [])
        if header != JOURNAL_COLUMNS:
            raise ConfigError(f"{path} exists and is not a dancegenre tag journal; choose another --tag-journal")
    return path


def _unchanged(path: Path, p: Prediction) -> str:
    """Why ``path`` may not be tagged now ('' if it may): gone, changed since scored, read-only."""
    try:
        st = path.stat()
    except OSError:
        return "the file is gone"
    if p.stamp is not None and (st.st_size, st.st_mtime_ns) != p.stamp:
        return "the file changed since it was scored; predict it again"
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        return "read-only"
    return ""


def _open_journal(path: Path) -> tuple[Any, csv.DictWriter]:
    new = not path.exists() or path.stat().st_size == 0
    check_journal(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a", newline="", encoding="utf-8")
    writer = csv.DictWriter(fh, fieldnames=JOURNAL_COLUMNS)
    if new:
        writer.writeheader()
    return fh, writer


def untag(journal: str | os.PathLike[str], *, dry_run: bool = False) -> list[TagAction]:
    """Restore the genre and custom field each file had before the journal's writes.

    Files are restored last write first, so a file tagged twice gets its first value
    back.  A file changed since (by hand, or by another tool) is skipped with that
    reason when its tags are no longer the ones dancegenre wrote.

    Raises
    ------
    ConfigError
        ``journal`` is not a tag journal.
    """
    path = Path(journal)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != JOURNAL_COLUMNS:
                raise ConfigError(f"{path} is not a dancegenre tag journal")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read the tag journal {path}: {getattr(exc, 'strerror', None) or exc}") from None
    actions: list[TagAction] = []
    for row in reversed(rows):
        file = Path(row["path"])
        try:
            old_genre, old_field = json.loads(row["old_genre"]), json.loads(row["old_field"])
            tags = _Tags(file)
        except (ValueError, DanceGenreError, OSError) as exc:
            actions.append(TagAction(str(file), "skip", [], str(exc) or "unreadable"))
            continue
        if tags.field() != row["new_field"] or tags.genres() != json.loads(row["new_genre"]):
            actions.append(TagAction(str(file), "skip", [], "its tags changed since dancegenre wrote them"))
            continue
        actions.append(TagAction(str(file), "restore", old_genre) if dry_run
                       else _rewrite(tags, file, old_genre, old_field, "restore"))
    return actions


# ---------------------------------------------------------------- playlists

def _track_info(path: Path, p: Prediction) -> tuple[str, str, float]:
    """(artist, title, seconds) from the file's tags, or the file name and the scored length."""
    artist, title, seconds = "", "", p.duration
    try:
        import mutagen

        f = mutagen.File(str(path), easy=True)
        if f is not None:
            seconds = float(getattr(f.info, "length", 0.0) or seconds)
            tags = f.tags or {}
            artist = "; ".join(tags.get("artist", [])) if hasattr(tags, "get") else ""
            title = "; ".join(tags.get("title", [])) if hasattr(tags, "get") else ""
    except Exception:  # noqa: BLE001 - tags are a nicety here; the playlist entry stands without them
        pass
    return artist, title or path.stem, seconds


def file_url(path: Path) -> str:
    """``file://localhost/`` URL of an absolute path, percent-encoded (UTF-8), as rekordbox writes."""
    posix = path.resolve().as_posix()
    if not posix.startswith("/"):
        posix = "/" + posix  # C:/Music/... on Windows
    return "file://localhost" + quote(posix, safe="/:")


def write_playlists(predictions: Iterable[Prediction], folder: str | os.PathLike[str], *,
                    min_confidence: float = 0.0) -> list[Path]:
    """One M3U8 per genre and ``rekordbox.xml`` in ``folder``; return the files written.

    Files below ``min_confidence`` go to the ``_unsure`` playlist; failed files to none.
    M3U8 paths are relative to ``folder`` where possible (so the folder can move with
    the music), absolute otherwise.
    """
    check_probability(min_confidence, "min_confidence")
    predictions = prediction_list(predictions, "write_playlists")
    folder = claim_folder(folder, **PLAYLISTS_FOLDER)
    lists: dict[str, list[tuple[Path, Prediction, str, str, float]]] = {}
    for p in predictions:
        if p.error or p.genre is None:
            continue
        name = check_label(p.genre, "the predictions") if p.confidence >= min_confidence else UNSURE
        path = Path(p.source).resolve()
        lists.setdefault(name, []).append((path, p, *_track_info(path, p)))
    written = []
    for name, entries in sorted(lists.items()):
        lines = ["#EXTM3U"]
        for path, _, artist, title, seconds in entries:
            lines.append(f"#EXTINF:{int(round(seconds))},{artist + ' - ' if artist else ''}{title}")
            try:
                lines.append(os.path.relpath(path, folder.resolve()))
            except ValueError:  # another drive (Windows): absolute
                lines.append(str(path))
        written.append(atomic_write(folder / f"{name}.m3u8", "\n".join(lines) + "\n"))
    written.append(atomic_write(folder / "rekordbox.xml", rekordbox_xml(lists)))
    return written


def rekordbox_xml(lists: dict[str, list[tuple[Path, Prediction, str, str, float]]]) -> str:
    """A rekordbox collection: DJ_PLAYLISTS > COLLECTION (one TRACK a file) and PLAYLISTS >
    ROOT > the folder ``dancegenre`` > one playlist a genre."""
    root = ET.Element("DJ_PLAYLISTS", Version="1.0.0")
    ET.SubElement(root, "PRODUCT", Name="dancegenre", Version=__version__, Company="dancegenre")
    entries = [e for name in sorted(lists) for e in lists[name]]
    collection = ET.SubElement(root, "COLLECTION", Entries=str(len(entries)))
    ids: dict[Path, int] = {}
    for path, p, artist, title, seconds in entries:
        if path in ids:
            continue
        ids[path] = len(ids) + 1
        ET.SubElement(collection, "TRACK", TrackID=str(ids[path]), Name=title, Artist=artist, Genre=p.genre or "",
                      Comments=f"dancegenre: {p.genre} {p.confidence:.2f}", TotalTime=str(int(round(seconds))),
                      Kind=f"{path.suffix.lstrip('.').upper()} File", Location=file_url(path))
    collection.set("Entries", str(len(ids)))
    playlists = ET.SubElement(root, "PLAYLISTS")
    top = ET.SubElement(playlists, "NODE", Type="0", Name="ROOT", Count="1")
    node = ET.SubElement(top, "NODE", Type="0", Name="dancegenre", Count=str(len(lists)))
    for name in sorted(lists):
        pl = ET.SubElement(node, "NODE", Name=name, Type="1", KeyType="0", Entries=str(len(lists[name])))
        for path, *_ in lists[name]:
            ET.SubElement(pl, "TRACK", Key=str(ids[path]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
