"""Verdicts into a DJ's library: genre tags in the files (mutagen), an undo journal,
M3U8 playlists and a rekordbox collection XML.

Tags
    ID3 ``TCON`` (mp3, aiff), Vorbis ``GENRE`` (flac, ogg, opus), MP4 ``©gen`` (m4a), and
    a custom field with the whole result (``TXXX:DANCEGENRE``, the Vorbis comment
    ``DANCEGENRE``, the MP4 freeform atom ``----:com.dancegenre:DANCEGENRE``): JSON
    with genre, confidence, top-k and model.  mutagen rewrites the tag block only: the
    audio frames, every other tag and the cover art stay as they were.  An ID3 tag keeps
    its version: a v2.3 tag is read and written as v2.3, frame for frame (``TYER`` stays
    ``TYER``); a v2.2 tag, which mutagen cannot write, becomes v2.3; a new tag is v2.4.

Safety
    A file changes whole or not at all: its tags are written into a copy beside it
    (:func:`~dancegenre.safety.atomic_path`: a random name, made exclusively), the copy
    is read back and checked, the previous values go into the journal (a CSV through
    :func:`~dancegenre.safety.csv_text`, flushed and fsynced), and only then is the copy
    renamed over the file.  A kill at any moment leaves the old file or the new one.
    ``untag`` restores the previous genre and custom field, and removes the tag again
    from a file that had none.  A file that changed since it was scored (size or
    mtime), is read-only, or is in a container without a genre tag gets one line and
    the batch goes on.

Links
    A symbolic link is followed: the file it points to is tagged (the link stays the same
    link) and the journal names that file, so ``untag`` restores it.  A file with more
    than one hard link is skipped with that reason: a rewritten file is a new one, which
    would split it from its other names.

Playlists
    One M3U8 entry is exactly two lines: control characters in a title are shown as
    their escapes (``\\n``), and a track whose path holds one (or bytes that are not
    UTF-8) is left out of the M3U8 with its reason.  In ``rekordbox.xml`` text and
    attributes never hold a character XML 1.0 forbids (shown as its escape), and the
    location is a percent-encoded ``file://localhost/`` URL of the path's bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from dancegenre import __version__
from dancegenre.config import check_probability
from dancegenre.errors import ConfigError, DanceGenreError, OutputError
from dancegenre.inference.classifier import Prediction, prediction_list
from dancegenre.inference.sort import UNSURE
from dancegenre.safety import (
    atomic_path,
    atomic_write,
    check_label,
    claim_folder,
    csv_text,
    is_ours,
    one_line_text,
    open_append,
    read_table,
    releasing,
)

TAG_MODES = ("replace", "append", "only-empty")
FIELD = "DANCEGENRE"
MP4_GENRE, MP4_FIELD = "\xa9gen", "----:com.dancegenre:DANCEGENRE"
# A playlists folder made before the marker held rekordbox.xml and one M3U8 per genre, nothing else.
PLAYLISTS_FOLDER = {"kind": "playlists", "legacy": ("rekordbox.xml",), "legacy_others": ("*.m3u8",),
                    "what": "--playlists folder"}
# old_genre: the JSON list the file held, or null when it held no tag at all
JOURNAL_COLUMNS = ["path", "size", "mtime_ns", "kind", "old_genre", "old_field", "new_genre", "new_field", "time"]
# a file name may hold bytes that are not UTF-8 (str holds them as lone surrogates): the
# journal keeps them as they are, so that untag finds the file again
_JOURNAL_ENCODING = {"encoding": "utf-8", "encoding_errors": "surrogateescape"}


@dataclass
class TagAction:
    """What ``write_tags`` (or ``untag``) did, or would do, to one file."""

    path: str
    action: str  # write, skip, restore
    genres: list[str]
    reason: str = ""


# ---------------------------------------------------------------- containers

def _open(path: Path, cls: type | None = None) -> Any:
    """mutagen's view of ``path``: a ``mutagen.FileType`` (None for a file it does not know).

    ``cls``: its type, known already (a copy of ours has no suffix to tell it by).  An
    ID3 tag is read as it is in the file, never converted to v2.4: so a v2.3 tag is
    written back frame for frame.  Raises DanceGenreError when mutagen cannot read it.
    """
    import mutagen
    from mutagen.aiff import AIFF
    from mutagen.id3 import ID3FileType

    try:
        if cls is None:
            found = mutagen.File(str(path))
            if found is None or not isinstance(found, (ID3FileType, AIFF)):
                return found
            cls = type(found)
        if not issubclass(cls, (ID3FileType, AIFF)):
            return cls(str(path))
        f = cls(str(path), translate=False)
        if f.tags is not None and f.tags.version[:2] == (2, 2):
            f = cls(str(path), v2_version=3)  # mutagen cannot write v2.2: its frames as v2.3
        return f
    except mutagen.MutagenError as exc:
        raise DanceGenreError(f"cannot read its tags ({exc})") from None


class _Tags:
    """The genre list and the custom field of one file, over mutagen.

    ``kind``: id3, vorbis or mp4; ``had_tags``: whether the file held a tag block at all;
    ``v2_version``: the ID3v2 version the tag is written in (3 for a v2.3 or v2.2 tag, else 4).
    Raises DanceGenreError for a file mutagen cannot read or a container without a genre tag.
    """

    def __init__(self, path: Path, like: _Tags | None = None) -> None:
        from mutagen.aiff import AIFF
        from mutagen.flac import FLAC
        from mutagen.id3 import ID3FileType
        from mutagen.mp4 import MP4
        from mutagen.oggopus import OggOpus
        from mutagen.oggvorbis import OggVorbis

        f = _open(path, type(like.file) if like is not None else None)
        if isinstance(f, (ID3FileType, AIFF)) and (like is not None or path.suffix.lower() != ".wav"):
            self.kind = "id3"
        elif isinstance(f, (FLAC, OggVorbis, OggOpus)):
            self.kind = "vorbis"
        elif isinstance(f, MP4):
            self.kind = "mp4"
        else:
            raise DanceGenreError(f"no genre tag in this container ({path.suffix or 'no extension'}); "
                                  "tags go into mp3, aiff, flac, ogg, opus and m4a")
        self.had_tags = f.tags is not None
        if f.tags is None:
            f.add_tags()
        version = f.tags.version[:2] if self.kind == "id3" else None
        self.v2_version = 3 if version in ((2, 3), (2, 2)) else 4
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

    def empty(self) -> bool:
        """True when the tag holds nothing at all."""
        return len(self.file.tags) == 0

    def set(self, genres: list[str] | None, field: str | None) -> None:
        """Set (or, with None / [], remove) the genre list and the custom field."""
        from mutagen.id3 import TCON, TXXX
        from mutagen.mp4 import MP4FreeForm

        t = self.file.tags
        if self.kind == "id3":
            encoding = _text_encoding(t.get("TCON"), genres or [])
            t.delall("TCON")
            if genres:
                t.add(TCON(encoding=encoding, text=genres))
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

    def save(self, path: Path) -> None:
        """Write the tag into ``path`` (a copy of the file), an ID3 tag in its own version."""
        if self.kind == "id3":
            # v23_sep None: several genres stay several values, as they were read
            self.file.save(str(path), v2_version=self.v2_version, v23_sep=None)
        else:
            self.file.save(str(path))

    def delete(self, path: Path) -> None:
        """Remove the whole tag block from ``path`` (a copy of the file)."""
        self.file.delete(str(path))


def _text_encoding(frame: Any, text: list[str]) -> int:
    """The text encoding of ``frame`` (the ID3 frame being replaced, or None) where it
    can hold ``text``, else UTF-8: a Latin-1 genre frame stays Latin-1, so that untag
    gives back the frame the file had (v2.3 writes UTF-8 as UTF-16)."""
    from mutagen.id3 import Encoding

    if frame is None:
        return Encoding.UTF8
    if frame.encoding == Encoding.LATIN1:
        try:
            "".join(text).encode("latin-1")
        except UnicodeEncodeError:
            return Encoding.UTF8
    return frame.encoding


# ---------------------------------------------------------------- one file, whole or not at all

def _tags_of(path: Path, *args: Any) -> tuple[Path | None, _Tags | None, str]:
    """(the real file, its tags, '') for a file whose tags may be written
    (:func:`_writable`, with ``args``), or (None or the file, None, why not)."""
    real, why = _writable(path, *args)
    if real is None:
        return None, None, why
    try:
        return real, _Tags(real), ""
    except DanceGenreError as exc:
        return real, None, str(exc)


def _writable(path: Path, stamp: tuple[int, int] | None = None) -> tuple[Path | None, str]:
    """(the file to rewrite: ``path`` with its links resolved, '') or (None, why it may
    not be rewritten now): gone, not a regular file, more than one hard link, changed
    since it was scored (``stamp``: size and mtime_ns then), read-only."""
    try:
        real = Path(os.path.realpath(path, strict=True))
        st = real.stat()
    except OSError:
        return None, "the file is gone"
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    if st.st_nlink > 1:
        return None, (f"it has {st.st_nlink} hard links; a rewritten file is a new one, which would split it "
                      "from its other names: unchanged")
    if stamp is not None and (st.st_size, st.st_mtime_ns) != tuple(stamp):
        return None, "the file changed since it was scored; predict it again"
    if not os.access(real, os.W_OK) or not os.access(real.parent, os.W_OK):
        return None, "read-only"
    return real, ""


def _commit(tags: _Tags, real: Path, genres: list[str] | None, field: str | None, *, drop_empty: bool = False,
            before: Callable[[], None] | None = None) -> None:
    """Set ``genres`` and ``field`` (None: remove them) in a copy of ``real``, check that
    the copy reads back so, call ``before`` (the journal row), rename the copy over ``real``.

    ``drop_empty``: remove the whole tag block when nothing else is left in it (the file
    had none).  Raises OSError (the file system refused), ``mutagen.MutagenError``, or
    DanceGenreError (the copy did not read back as written); ``real`` is unchanged then.
    """
    with atomic_path(real) as tmp:
        shutil.copy2(real, tmp)
        tags.set(genres, field)
        drop = drop_empty and tags.empty()
        if drop:
            tags.delete(tmp)
        else:
            tags.save(tmp)
        _check_written(tags, tmp, genres or [], field, dropped=drop)
        if before is not None:
            before()


def _check_written(tags: _Tags, tmp: Path, genres: list[str], field: str | None, *, dropped: bool) -> None:
    """DanceGenreError unless ``tmp`` holds ``genres`` and ``field`` (and no tag at all
    when ``dropped``) in the tag version ``tags`` had."""
    written = _Tags(tmp, like=tags)
    if written.genres() != genres or written.field() != field:
        raise DanceGenreError("the tags did not read back as written")
    if dropped and not written.empty():
        raise DanceGenreError("the tag block could not be removed")
    if not dropped and written.v2_version != tags.v2_version:
        raise DanceGenreError(f"the ID3 tag did not stay v2.{tags.v2_version}")


def _rewrite(tags: _Tags, real: Path, shown: str, genres: list[str] | None, field: str | None, action: str,
             **commit: Any) -> TagAction:
    """:func:`_commit`, as a TagAction for ``shown`` (the path the user gave); a refusal
    is a skip with its reason (the file stays as it was)."""
    import mutagen

    try:
        _commit(tags, real, genres, field, **commit)
    except OSError as exc:
        return TagAction(shown, "skip", [], f"cannot write ({exc.strerror or exc}); unchanged")
    except (mutagen.MutagenError, DanceGenreError) as exc:
        return TagAction(shown, "skip", [], f"cannot write ({exc}); unchanged")
    return TagAction(shown, action, genres or [])


# ---------------------------------------------------------------- the journal

def _read_journal(path: Path, nrows: int | None = None) -> Any:
    """The journal as a DataFrame of exact strings (ConfigError when it is not one)."""
    try:
        table = read_table(path, dtype=object, keep_default_na=False, nrows=nrows, **_JOURNAL_ENCODING)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the tag journal {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if list(table.columns) != JOURNAL_COLUMNS:
        raise ConfigError(f"{path} is not a dancegenre tag journal")
    return table


def check_journal(path: str | os.PathLike[str]) -> Path:
    """``path`` as a tag journal to append to: new, empty, or one of ours.

    Raises ConfigError for a link or any other file."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"{path} is a link; give the tag journal itself as --tag-journal")
    if path.is_file() and path.stat().st_size:
        try:
            _read_journal(path, nrows=0)
        except ConfigError:
            raise ConfigError(f"{path} exists and is not a dancegenre tag journal; choose another --tag-journal") \
                from None
    return path


class _Journal:
    """The tag journal, opened for appending at its first row: one CSV row a file
    (:func:`~dancegenre.safety.csv_text`), flushed and fsynced before the file changes.

    Rows are appended rather than the table rewritten whole, so a batch of N files costs
    N rows, not N tables; a kill leaves every row before it complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._header_due = False

    def add(self, row: dict[str, object]) -> None:
        import pandas as pd

        if self._fh is None:
            self._open()
        text = csv_text(pd.DataFrame([row], columns=JOURNAL_COLUMNS, dtype=object))  # text kept as str objects
        if not self._header_due:
            text = text.split("\n", 1)[1]
        self._fh.write(text)
        self._fh.flush()
        os.fsync(self._fh.fileno())  # the old values are safe on disk before the file changes
        self._header_due = False

    def _open(self) -> None:
        check_journal(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open_append(self.path, "a", encoding="utf-8", errors="surrogateescape", newline="")
        fd = self._fh.fileno()
        size = os.fstat(fd).st_size
        self._header_due = size == 0
        if size and os.pread(fd, 1, size - 1) != b"\n":
            self._fh.write("\n")  # a row cut short (a power cut) stays one damaged row, not two
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


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
    """Write each verdict into its file's genre tag; return what was done, one TagAction a prediction.

    ``mode``: replace the genre, append to it, or write only-empty ones.  Genres below
    ``min_confidence`` are not written (with ``top_k`` > 1, every genre of the top k
    above it).  The previous values go into ``journal`` (CSV, appended) before each
    file is changed; ``untag(journal)`` restores them.  A link is followed (its file is
    tagged, the journal names that file); a file with several hard links is skipped.
    ``dry_run`` returns the plan and writes nothing, not even the journal.

    Raises
    ------
    ConfigError
        An unknown mode, no journal for a real run, or a journal that is not one of ours.
    """
    if mode not in TAG_MODES:
        raise ConfigError(f"--tag-mode must be one of {', '.join(TAG_MODES)}, not {mode!r}")
    check_probability(min_confidence, "min_confidence")
    predictions = prediction_list(predictions, "write_tags")
    if journal is None and not dry_run:
        raise ConfigError("writing tags needs a journal of the previous values")
    log = _Journal(Path(journal)) if journal is not None and not dry_run else None
    plan = {"mode": mode, "min_confidence": min_confidence, "top_k": top_k, "model_id": model_id}
    tagged: dict[Path, str] = {}  # real file -> the path it was tagged as (two links to one file)
    try:
        return [_tag_one(p, log, tagged, plan) for p in predictions]
    finally:
        if log is not None:
            log.close()


def _tag_one(p: Prediction, log: _Journal | None, tagged: dict[Path, str], plan: dict[str, Any]) -> TagAction:
    """Tag one file (``log`` None: only plan it); ``tagged`` gains its real path once written."""
    shown = str(p.source)
    if p.error or p.genre is None:
        return TagAction(shown, "skip", [], p.error or "no verdict")
    same = tagged.get(Path(os.path.realpath(p.source)))
    if same is not None:
        return TagAction(shown, "skip", [], f"the same file as {same}, tagged already")
    real, tags, why = _tags_of(Path(p.source), p.stamp)
    if tags is None:
        return TagAction(shown, "skip", [], why)
    new, field, why = _plan(p, tags, **plan)
    if new is None:
        return TagAction(shown, "skip", [], why)
    if log is None:
        return TagAction(shown, "write", new)
    st = real.stat()
    row = {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "kind": tags.kind,
           "old_genre": json.dumps(tags.genres() if tags.had_tags else None, ensure_ascii=False),
           "old_field": json.dumps(tags.field(), ensure_ascii=False),
           "new_genre": json.dumps(new, ensure_ascii=False), "new_field": field,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    action = _rewrite(tags, real, shown, new, field, "write", before=lambda: log.add(row))
    if action.action == "write":
        tagged[real] = shown
    return action


def untag(journal: str | os.PathLike[str], *, dry_run: bool = False) -> list[TagAction]:
    """Restore the genre and custom field each file had before the journal's writes,
    and remove the tag block again from a file that had none; one TagAction a row.

    Files are restored last write first, so a file tagged twice gets its first value
    back.  A file changed since (by hand, or by another tool) is skipped with that
    reason when its tags are no longer the ones dancegenre wrote; so is a file that
    has several hard links now.  The ID3 version stays the one the file has.

    Raises
    ------
    ConfigError
        ``journal`` is not a tag journal.
    """
    rows = _read_journal(Path(journal)).to_dict("records")
    return [_restore_one(row, dry_run) for row in reversed(rows)]


def _restore_one(row: dict[str, str], dry_run: bool) -> TagAction:
    """Restore one journal row's file (``dry_run``: only say so)."""
    shown = str(row["path"])
    try:
        old_genre, old_field = json.loads(row["old_genre"]), json.loads(row["old_field"])
        new_genre = json.loads(row["new_genre"])
    except (TypeError, ValueError):  # a row cut short: its missing cells are NaN
        return TagAction(shown, "skip", [], "its journal row is damaged")
    real, tags, why = _tags_of(Path(shown))
    if tags is None:
        return TagAction(shown, "skip", [], why)
    if tags.field() != row["new_field"] or tags.genres() != new_genre:
        return TagAction(shown, "skip", [], "its tags changed since dancegenre wrote them")
    if dry_run:
        return TagAction(shown, "restore", old_genre or [])
    # old_genre null: the file held no tag at all, and gets none again (unless someone added to it since)
    return _rewrite(tags, real, shown, old_genre, old_field, "restore", drop_empty=old_genre is None)


# ---------------------------------------------------------------- playlists

class Track(NamedTuple):
    """One playlist entry: the file (resolved), its verdict, and what a player shows."""

    path: Path
    prediction: Prediction
    artist: str
    title: str
    seconds: float


class PlaylistFiles(list[Path]):
    """The files :func:`write_playlists` wrote: each M3U8, then ``rekordbox.xml`` (last).

    ``left_out``: (path, reason) for each track an M3U8 cannot hold; it is still in
    ``rekordbox.xml``."""

    def __init__(self, files: Iterable[Path], left_out: list[tuple[str, str]]) -> None:
        super().__init__(files)
        self.left_out = left_out


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
    except Exception:  # noqa: BLE001, S110 - tags are a nicety here; the playlist entry stands without them
        pass
    return artist, title or path.stem, seconds


def file_url(path: Path) -> str:
    """``file://localhost/`` URL of an absolute path, its bytes percent-encoded (UTF-8
    names as rekordbox writes them; any other byte, or a control character, as ``%XX``)."""
    posix = path.resolve().as_posix()
    if not posix.startswith("/"):
        posix = "/" + posix  # C:/Music/... on Windows
    return "file://localhost" + quote(os.fsencode(posix), safe="/:")


def _m3u8_location(path: Path, folder: Path) -> tuple[str | None, str]:
    """(the M3U8 line for ``path``, '') or (None, why no M3U8 line can hold it).

    Relative to ``folder`` where possible (the folder can move with the music)."""
    try:
        line = os.path.relpath(path, folder.resolve())
    except ValueError:  # another drive (Windows): absolute
        line = str(path)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in line):
        return None, "its path is not valid UTF-8, which an M3U8 file cannot hold"
    if one_line_text(line) != line:
        return None, "its path holds a line break or another control character, which an M3U8 line cannot hold"
    if line.startswith("#"):
        line = os.curdir + os.sep + line  # a line starting with # is a comment
    return line, ""


def m3u8_text(tracks: Iterable[Track], folder: Path) -> tuple[str, list[tuple[str, str]]]:
    """(an extended M3U8 of ``tracks`` for a file in ``folder``, (path, reason) for each
    track left out of it).  Every entry is exactly two lines: ``#EXTINF`` and the path."""
    lines, left_out = ["#EXTM3U"], []
    for t in tracks:
        location, why = _m3u8_location(t.path, folder)
        if location is None:
            left_out.append((str(t.path), why))
            continue
        shown = one_line_text(f"{t.artist} - {t.title}" if t.artist else t.title)
        lines += [f"#EXTINF:{round(t.seconds)},{shown}", location]
    return "\n".join(lines) + "\n", left_out


def _playlists_of(predictions: list[Prediction], min_confidence: float) -> dict[str, list[Track]]:
    """Genre (or ``_unsure`` below ``min_confidence``) -> its tracks; failed files in none."""
    lists: dict[str, list[Track]] = {}
    for p in predictions:
        if p.error or p.genre is None:
            continue
        name = check_label(p.genre, "the predictions") if p.confidence >= min_confidence else UNSURE
        path = Path(p.source).resolve()
        lists.setdefault(name, []).append(Track(path, p, *_track_info(path, p)))
    return lists


def _our_rekordbox_xml(path: Path) -> bool:
    """True when ``path`` is a rekordbox.xml that dancegenre wrote (its PRODUCT names us).
    Reads only its first two elements: a DJ's collection export may be large."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        elements = ET.iterparse(path, events=("start",))
        root, product = next(elements)[1], next(elements)[1]
    except (ET.ParseError, OSError, StopIteration):
        return False
    return root.tag == "DJ_PLAYLISTS" and product.tag == "PRODUCT" and product.get("Name") == "dancegenre"


def check_playlists_folder(folder: str | os.PathLike[str], *, create: bool = True) -> Path:
    """``folder`` claimed as a playlists folder (:func:`~dancegenre.safety.claim_folder`
    with :data:`PLAYLISTS_FOLDER`; ``create=False`` only checks).

    Raises OutputError also when a folder without our marker holds a ``rekordbox.xml``
    that dancegenre did not write (a DJ's collection export): it would be replaced."""
    folder = Path(folder)
    xml = folder / "rekordbox.xml"
    if folder.is_dir() and not is_ours(folder) and (xml.is_symlink() or xml.exists()) \
            and not _our_rekordbox_xml(xml):
        raise OutputError(f"--playlists folder {folder} holds a rekordbox.xml that dancegenre did not write "
                          "(a collection export?); choose a new or empty folder")
    return claim_folder(folder, **PLAYLISTS_FOLDER, create=create)


@releasing
def write_playlists(predictions: Iterable[Prediction], folder: str | os.PathLike[str], *,
                    min_confidence: float = 0.0) -> PlaylistFiles:
    """One M3U8 per genre and ``rekordbox.xml`` in ``folder``; return the files written
    (a list: the M3U8s, then rekordbox.xml) with ``left_out``, the tracks an M3U8
    cannot hold (a path with a control character or undecodable bytes) and why.

    Files below ``min_confidence`` go to the ``_unsure`` playlist; failed files to none.
    M3U8 paths are relative to ``folder`` where possible (so the folder can move with
    the music), absolute otherwise.

    Raises
    ------
    OutputError
        ``folder`` is not new, empty or ours (:func:`check_playlists_folder`).
    LabelError
        A genre is not a safe playlist name.
    """
    check_probability(min_confidence, "min_confidence")
    predictions = prediction_list(predictions, "write_playlists")
    folder = check_playlists_folder(folder)
    lists = _playlists_of(predictions, min_confidence)
    written, left_out = [], []
    for name, tracks in sorted(lists.items()):
        text, left = m3u8_text(tracks, folder)
        written.append(atomic_write(folder / f"{name}.m3u8", text))
        left_out += left
    written.append(atomic_write(folder / "rekordbox.xml", rekordbox_xml(lists)))
    return PlaylistFiles(written, left_out)


def rekordbox_xml(lists: dict[str, list[Track]]) -> str:
    """A rekordbox collection: DJ_PLAYLISTS > COLLECTION (one TRACK a file) and PLAYLISTS >
    ROOT > the folder ``dancegenre`` > one playlist a genre.  Every text is
    :func:`plain_text` (XML 1.0 holds no control character, even escaped); every
    location a percent-encoded URL (:func:`file_url`)."""
    root = ET.Element("DJ_PLAYLISTS", Version="1.0.0")
    ET.SubElement(root, "PRODUCT", Name="dancegenre", Version=__version__, Company="dancegenre")
    entries = [t for name in sorted(lists) for t in lists[name]]
    collection = ET.SubElement(root, "COLLECTION", Entries=str(len(entries)))
    ids: dict[Path, int] = {}
    for path, p, artist, title, seconds in entries:
        if path in ids:
            continue
        ids[path] = len(ids) + 1
        ET.SubElement(collection, "TRACK", TrackID=str(ids[path]), Name=one_line_text(title), Artist=one_line_text(artist),
                      Genre=one_line_text(p.genre or ""), Comments=one_line_text(f"dancegenre: {p.genre} {p.confidence:.2f}"),
                      TotalTime=str(round(seconds)), Kind=one_line_text(f"{path.suffix.lstrip('.').upper()} File"),
                      Location=file_url(path))
    collection.set("Entries", str(len(ids)))
    playlists = ET.SubElement(root, "PLAYLISTS")
    top = ET.SubElement(playlists, "NODE", Type="0", Name="ROOT", Count="1")
    node = ET.SubElement(top, "NODE", Type="0", Name="dancegenre", Count=str(len(lists)))
    for name in sorted(lists):
        pl = ET.SubElement(node, "NODE", Name=one_line_text(name), Type="1", KeyType="0", Entries=str(len(lists[name])))
        for t in lists[name]:
            ET.SubElement(pl, "TRACK", Key=str(ids[t.path]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
