"""The rules that keep a user's files safe, in one place.

- An output never replaces an input (:func:`check_output_file`, :func:`Inputs`).
- A folder we write into is new, empty, or one we made: we recognise ours by a marker
  file, ``.dancegenre`` (:func:`claim_folder`), or, for a folder made before the marker,
  by its complete set of files and nothing else.  We only delete what we created, and
  only from a folder with our marker.  While a command writes a folder it holds the
  folder's lock (``.dancegenre.lock``): a second command refuses and names the process.
- Files are written whole or not at all: a temporary file with a random name, created
  exclusively in the destination's folder (never through a link), fsynced, then renamed
  over the target (:func:`atomic_path`, :func:`atomic_write`).
- A table we write never replaces a file we did not write (:func:`check_output_file`
  with ``columns``); a text cell that a spreadsheet would run as a formula is written
  with a leading apostrophe, and our readers take it off (:func:`csv_text`,
  :func:`read_table`).
- Labels are data: a genre name is never a path, never markup, never a formula
  (:func:`check_label`, :func:`label_folder`).

Every violation raises :class:`~dancegenre.errors.OutputError` or
:class:`~dancegenre.errors.LabelError` with a one-line message.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import io
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pandas as pd

from dancegenre.errors import ConfigError, LabelError, OutputError

MARKER = ".dancegenre"  # {"kind": ...} in every folder a command creates
T = TypeVar("T")
LOCK = ".dancegenre.lock"  # held (flock) while a command writes the folder; names its process
LABEL_MAX_CHARS = 64
# Characters no label may hold: path separators and what Windows forbids in a folder
# name (a label becomes one with --sort-into), and markup.
_FORBIDDEN = set('/\\:*?"<>|')
_RESERVED = {".", "..", "_unsure"}  # _unsure: the folder of low-confidence files
_FORMULA_START = "=+-@"  # a CSV cell starting with one of these is a formula to a spreadsheet
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


# ---------------------------------------------------------------- labels

def check_label(label: object, where: str) -> str:
    """``label`` if it can name a genre, else LabelError saying why and ``where`` it came from.

    A label is 1-64 printable characters with no path separator, no ``: * ? " < > |``,
    no leading or trailing space, not ``.``/``..``/``_unsure``, not starting or ending
    with a dot (Windows drops a trailing one), not starting with ``= + - @`` (a formula
    in a spreadsheet) and not a Windows device name (con, nul, com1...): it becomes a
    folder name with ``--sort-into``, a CSV cell and a heading in reports.
    """
    text = label if isinstance(label, str) else str(label)
    shown = ascii(text) if len(text) <= 80 else ascii(text[:77] + "...")
    why = None
    if not text.strip():
        why = "is empty"
    elif len(text) > LABEL_MAX_CHARS:
        why = f"is longer than {LABEL_MAX_CHARS} characters"
    elif any(not ch.isprintable() for ch in text):
        why = "holds a control character"
    elif any(ch in _FORBIDDEN for ch in text):
        why = "holds a character a genre name may not hold (/ \\ : * ? \" < > |)"
    elif text != text.strip():
        why = "starts or ends with a space"
    elif text[0] in _FORMULA_START:
        why = "starts with a character a spreadsheet reads as a formula (= + - @)"
    elif text in _RESERVED or text.startswith(".") or text.endswith("."):
        why = "is reserved (., .., _unsure, or a name starting or ending with a dot)"
    elif _WINDOWS_DEVICES.match(text):
        why = "is a device name on Windows"
    if why:
        raise LabelError(f"label {shown} in {where} {why}")
    return text


def check_labels(labels: Iterable[object], where: str) -> list[str]:
    """Every label checked (:func:`check_label`), as a list; LabelError also when two of
    them differ only in case, which one folder holds on a case-insensitive file system
    (macOS, Windows)."""
    out = [check_label(lab, where) for lab in labels]
    seen: dict[str, str] = {}
    for lab in out:
        other = seen.setdefault(lab.casefold(), lab)
        if other != lab:
            raise LabelError(f"labels {ascii(other)} and {ascii(lab)} in {where} differ only in case; they would "
                             "share one folder on macOS and Windows")
    return out


def label_folder(target: Path, label: str, *, reserved_ok: bool = False) -> Path:
    """``target/label``, a folder files are sorted into: LabelError when ``label`` is not
    a safe folder name (``reserved_ok``: ``_unsure`` is taken), OutputError when that
    folder is a link or leads outside ``target``."""
    folder = target / (label if reserved_ok and label == "_unsure" else check_label(label, "the predictions"))
    if folder.is_symlink():
        raise OutputError(f"{folder} is a link; files are sorted only into real folders inside {target}")
    if Path(os.path.realpath(folder)).parent != Path(os.path.realpath(target)):
        raise OutputError(f"{folder} leads outside {target}")
    return folder


# ---------------------------------------------------------------- inputs and outputs

def real_path(path: str | os.PathLike[str]) -> str:
    """``os.path.realpath(path)``, or the absolute path where a link on the way cannot be
    read (realpath raises then: /proc's links, for one): an input's identity, never an
    error of its own; reading the file says what is wrong with it."""
    try:
        return os.path.realpath(path)
    except OSError:
        return os.path.abspath(path)


def path_list(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
              what: str = "paths") -> list[str | os.PathLike[str]]:
    """``paths`` as a list of paths; one path (a ``str`` or ``Path``) is a list of one.

    A Python caller who passes ``"music/"`` where a list is expected would otherwise
    have its characters taken for paths, and ``"/"`` searched whole.  Raises ConfigError
    for ``None`` or an entry that is not a path (bytes, a number...).
    """
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    if paths is None or isinstance(paths, bytes):
        raise ConfigError(f"{what}: give a path or a list of paths, not {type(paths).__name__}")
    out = list(paths)
    for item in out:
        if not isinstance(item, (str, os.PathLike)):
            raise ConfigError(f"{what}: {item!r} is not a path (a str or pathlib.Path)")
    return out


class Inputs:
    """The files a command reads, to check outputs against (by real path and inode).

    A folder of ours among them (a store, a run: it holds our marker) is an input as a
    whole: every file in it is one."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._real: set[str] = set()
        self._ids: set[tuple[int, int]] = set()
        self._sealed: set[Path] = set()
        for p in paths:
            self.add(p)

    def add(self, path: str | os.PathLike[str]) -> None:
        real = real_path(path)
        self._real.add(real)
        if is_ours(real):
            self._sealed.add(Path(real))
        try:
            st = os.stat(path)
        except OSError:
            return
        self._ids.add((st.st_dev, st.st_ino))

    def __contains__(self, path: object) -> bool:
        p = os.fspath(path)  # type: ignore[arg-type]
        real = real_path(p)
        if real in self._real or any(Path(real).is_relative_to(folder) for folder in self._sealed):
            return True
        try:
            st = os.stat(p)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self._ids


def _file_on_the_way(path: Path) -> Path | None:
    """The first existing parent of ``path`` that is a file, not a folder."""
    for parent in reversed(path.absolute().parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_file(path: str | os.PathLike[str], *, inputs: Inputs | Iterable[str | os.PathLike[str]] = (),
                      suffixes: Iterable[str] | None = None, columns: Iterable[str] | None = None,
                      kind: str = "table", what: str = "--out") -> Path:
    """``path`` as a file to write, or OutputError: it would replace one of ``inputs``
    (or a file inside an input folder of ours), it is a folder, a file stands where a
    parent folder should, or its suffix is not one of ``suffixes`` (lower case, with the
    dot).  With ``columns``, an existing file is replaced only when it is a table of ours
    (:func:`check_own_table`; ``kind`` names it in the message): a user's catalog or
    notes under that name are refused.  Without, a page, figure or model there is
    replaced only when it carries our mark (:data:`MARKS`)."""
    path = Path(path)
    if suffixes is not None:
        allowed = tuple(suffixes)
        if path.suffix.lower() not in allowed:
            raise OutputError(f"{what} {path} must end in {' or '.join(allowed)}")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise OutputError(f"{what} {path} cannot be written: {blocker} is a file, not a folder")
    if not isinstance(inputs, Inputs):
        inputs = Inputs(inputs)
    if path in inputs:
        raise OutputError(f"{what} {path} is one of the inputs, or inside an input folder dancegenre made; "
                          "it would be replaced. Choose another name")
    if columns is not None:
        check_own_table(path, columns=columns, what=what, kind=kind)
    elif (path.exists() or path.is_symlink()) and path.suffix.lower() in MARKS and not written_by_dancegenre(path):
        raise OutputError(f"{what} {path} exists and was not written by dancegenre; move it or choose another name")
    return path


# How a file of ours says so, by kind: a page's generator tag, a PNG's Software text,
# an ONNX model's producer name (field 2 of its ModelProto), within its first bytes.
MARKS = {
    ".html": b'<meta name="generator" content="dancegenre">',
    ".htm": b'<meta name="generator" content="dancegenre">',
    ".png": b"Software\x00dancegenre",
    ".onnx": b"\x12\x0adancegenre",
}


def written_by_dancegenre(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` carries our mark for its kind (:data:`MARKS`); a
    link, or a kind without a mark, never does."""
    path = Path(path)
    mark = MARKS.get(path.suffix.lower())
    if mark is None or path.is_symlink():
        return False
    try:
        with open(path, "rb") as f:
            return mark in f.read(4096)
    except OSError:
        return False


FAILURE_COLUMNS = ("path", "error")  # in every failures list a command writes: the file skipped, and why


def check_own_table(path: Path, *, columns: Iterable[str], what: str, kind: str = "table") -> Path:
    """``path`` may be replaced only when it is absent or a table of ours: a CSV whose
    header, a JSON object, or JSON lines whose first object holds every name in
    ``columns``.  For every
    table a command writes: the one the user named (``--out``) and those beside it (a
    table beside ``.npy`` vectors, a failures list), where a file of the user's own (a
    catalog, notes) may stand.

    Raises OutputError for any other file there, a link included."""
    path = Path(path)
    if _holds_nothing(path):
        return path
    if path.is_symlink() or path.exists():
        names: set[str] = set()
        if not path.is_symlink() and path.is_file():
            try:
                names = _names_in(path)
            except (OSError, UnicodeDecodeError, csv.Error, ValueError):
                names = set()
        if not names or not set(columns) <= names:
            raise OutputError(f"{what} {path} exists and is not a {kind} made by dancegenre; move it or choose "
                              "another name")
    return path


def _holds_nothing(path: Path) -> bool:
    """True for a regular file of white space alone (an empty table of ours, written when
    no file succeeded): replacing it loses nothing."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 64:
            return False
        return not path.read_bytes().strip()
    except OSError:
        return False


def _names_in(path: Path) -> set[str]:
    """The column names of a CSV's header, or the keys of a JSON object (a ``.json``
    file, or the first line of JSON lines); raises OSError, ValueError, csv.Error."""
    with open(path, newline="", encoding="utf-8") as f:
        first = f.readline()
        if path.suffix.lower() not in (".json", ".jsonl"):
            return set(next(csv.reader([first]), []))
        try:
            row = json.loads(first)
        except ValueError:
            if path.suffix.lower() != ".json":
                raise
            row = json.loads(first + f.read())  # one object over several lines
    return set(row) if isinstance(row, dict) else set()


def check_distinct(outputs: dict[str, Path | None]) -> None:
    """OutputError when two named outputs (e.g. ``--out`` and ``--timeline``) are one file."""
    seen: dict[str, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise OutputError(f"{seen[real]} and {what} are the same file ({path}); give each its own")
        seen[real] = what


def check_target_folder(path: str | os.PathLike[str], *, what: str) -> Path:
    """``path`` as a folder that files are added to (never replaced), e.g. a
    ``--sort-into`` target: OutputError if it is a file or a file is on its way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise OutputError(f"{what} {path} cannot be made: {blocker} is a file, not a folder")
    return path


def claim_folder(path: str | os.PathLike[str], kind: str, *, legacy: Iterable[str] = (),
                 legacy_others: Iterable[str] = (), inputs: Iterable[str | os.PathLike[str]] = (),
                 what: str = "output folder", create: bool = True) -> Path:
    """Create ``path`` (with parents) as a ``kind`` folder, or reuse it if it is ours, and
    hold its lock until the process ends (or :func:`release_folder`).

    A folder is ours when it holds our marker file for the same ``kind``.  A folder made
    by a version before the marker is recognised only by its complete set of files:
    every name in ``legacy`` is there, and nothing but those and names matching the
    ``legacy_others`` patterns (``fnmatch``); it gets the marker then.  An empty folder
    is taken.  Anything else, a link where the folder should be, a file on its way, an
    input folder inside ``path`` or equal to it, or a folder another process holds
    raises OutputError: we never write among, or delete, files we did not create.
    ``create=False`` only checks, and makes and holds nothing.
    """
    path = check_target_folder(path, what=what)
    if path.is_symlink():
        raise OutputError(f"{what} {path} is a link; give the folder itself")
    real = Path(os.path.realpath(path))
    for src in inputs:
        src_real = Path(os.path.realpath(src))
        if src_real == real or (src_real.is_dir() and real.is_relative_to(src_real)):
            raise OutputError(f"{what} {path} is inside the input {src}; choose a folder outside it")
    marker = path / MARKER
    if path.is_dir() and any(entry.name != LOCK for entry in path.iterdir()):  # our lock alone: a crash's
        owner = _marker_kind(marker)
        if owner is None and not _is_legacy(path, tuple(legacy), tuple(legacy_others)):
            raise OutputError(f"{what} {path} already holds files that dancegenre did not make; "
                              "choose a new or empty folder")
        if owner is not None and owner != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise OutputError(f"{what} {path} holds a dancegenre {owner}, not {article} {kind}; choose another folder")
    if not create:  # checked only: a command refuses before its long work, and makes nothing yet
        if path.is_dir():
            _check_unlocked(path, what)
        return path
    path.mkdir(parents=True, exist_ok=True)
    _lock(path, what)
    if not marker.exists():
        atomic_write(marker, json.dumps({"kind": kind}) + "\n")
    return path


def _is_legacy(path: Path, required: tuple[str, ...], others: tuple[str, ...]) -> bool:
    """True when ``path`` holds every name of ``required`` and nothing else but names
    matching ``others`` (and our lock): a folder a version before the marker made.  With
    no ``required`` names, ``others`` alone must describe every entry."""
    if not required and not others:
        return False
    names = {entry.name for entry in path.iterdir()} - {LOCK}
    if not set(required) <= names:
        return False
    return all(name in required or any(fnmatch.fnmatchcase(name, pat) for pat in others) for name in names)


def _marker_kind(marker: Path) -> str | None:
    if marker.is_symlink() or not marker.is_file():
        return None  # a planted link is no marker of ours
    try:
        return str(json.loads(marker.read_text())["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_ours(path: str | os.PathLike[str], kind: str | None = None) -> bool:
    """True when ``path`` is a folder we made (of ``kind``, if given)."""
    owner = _marker_kind(Path(path) / MARKER)
    return owner is not None and (kind is None or owner == kind)


# ---------------------------------------------------------------- folder locks

_HELD: dict[str, int] = {}  # real path of a folder -> the open lock file this process holds


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def _lock(path: Path, what: str) -> None:
    """Hold ``path``'s lock (``flock`` on ``path/.dancegenre.lock``, never through a
    link) until the process ends or :func:`release_folder`; OutputError naming the
    process that holds it already.  A no-op where the system has no ``fcntl``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    key = os.path.realpath(path)
    if key in _HELD:
        return
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path / LOCK, flags, 0o644)
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be locked: {exc.strerror or exc} ({path / LOCK})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise OutputError(f"{what} {path} is in use by {holder}; wait for it to finish or choose another "
                          "folder") from None
    os.ftruncate(fd, 0)
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:2]))
    os.pwrite(fd, f"process {os.getpid()} ({one_line_text(command)[:120]})\n".encode(), 0)
    _HELD[key] = fd


def _check_unlocked(path: Path, what: str) -> None:
    """OutputError when another process holds ``path``'s lock; takes nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    lock = path / LOCK
    if os.path.realpath(path) in _HELD or lock.is_symlink() or not lock.is_file():
        return
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise OutputError(f"{what} {path} is in use by {_holder(fd)}; wait for it to finish or choose another "
                          "folder") from None
    finally:
        os.close(fd)


def release_folder(path: str | os.PathLike[str]) -> None:
    """Let go of ``path``'s lock, if this process holds it (the lock file stays)."""
    fd = _HELD.pop(os.path.realpath(path), None)
    if fd is not None:
        os.close(fd)


@contextmanager
def holding(path: str | os.PathLike[str], kind: str, **claim: Any) -> Iterator[Path]:
    """:func:`claim_folder` for the length of a ``with`` block: the lock is let go when
    it ends (unless it was held before)."""
    held_before = os.path.realpath(path) in _HELD
    folder = claim_folder(path, kind, **claim)
    try:
        yield folder
    finally:
        if not held_before:
            release_folder(folder)


def releasing(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a library call that claims folders: the locks it took are let go when
    it returns or raises, so a caller that lives on (a notebook, a test, ``serve``)
    does not keep them.  Locks held before the call stay held."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> T:
        before = set(_HELD)
        try:
            return fn(*args, **kwargs)
        finally:
            for key in set(_HELD) - before:
                release_folder(key)
    return call


# ---------------------------------------------------------------- writing files

def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_NEW_FILE_MODE = _default_mode()  # what open() would give a new file here


def temporary_beside(path: Path) -> Path:
    """A new empty file with a random name in ``path``'s folder, made exclusively
    (``mkstemp``: ``O_CREAT | O_EXCL``, so never through a planted link): the one way a
    temporary file is made."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:80]}.", suffix=".part")
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name
    (``torch.save``, ``np.save``, ``soundfile.write``): a new file with a random name,
    made exclusively in ``path``'s folder.  When the block ends it is flushed to disk and
    renamed over ``path`` (a link at ``path`` is replaced, never followed), with
    ``mode``, else the mode of the file it replaces, else the usual one for a new file;
    if the block raises it is removed.  The one way files are written whole or not at
    all.  The temporary name ends in ``.part``: a writer that picks a format by suffix
    must be told the format."""
    path = Path(path)
    try:
        tmp = temporary_beside(path)
    except OSError as exc:
        raise with_file_name(exc, path) from None
    try:
        try:
            yield tmp
            os.chmod(tmp, _mode_for(path) if mode is None else mode)
            _keep_owner(tmp, path)
            _fsync(tmp)
            os.replace(tmp, path)
        except OSError as exc:  # a full disk says ENOSPC with no file name: name the output
            raise with_file_name(exc, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def _keep_owner(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the owner and group of the file it replaces, where we may (as root,
    or the group for its owner): a rewritten file in a shared library stays theirs."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass  # not ours to give; the file is still written


def open_append(path: str | os.PathLike[str], mode: str = "a", **options: Any) -> Any:
    """``path`` opened to append (``mode`` "a" or "ab"), created if need be, never
    through a link: a link planted at the name is refused (ELOOP), not followed.  The
    one way dancegenre appends to a file (journals)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise with_file_name(exc, Path(path)) from None
    return os.fdopen(fd, mode, **options)


def _mode_for(path: Path) -> int:
    """The mode of the regular file at ``path``, else the usual one for a new file."""
    try:
        st = os.stat(path)
    except OSError:
        return _NEW_FILE_MODE
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else _NEW_FILE_MODE


def with_file_name(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name where it had none (or only the temporary's)."""
    if exc.filename is None or ".part" in os.fspath(exc.filename):
        return type(exc)(exc.errno, exc.strerror or str(exc), os.fspath(path))
    return exc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def save_figure(fig: Any, path: str | os.PathLike[str] | io.IOBase, **options: Any) -> None:
    """``fig.savefig`` to ``path`` through :func:`atomic_path`, in the format of
    ``path``'s suffix (the temporary name lacks it); a binary file object is written
    as it is, as PNG unless ``format`` says otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        fig.savefig(path, **{"format": "png", **options})
        return
    path = Path(path)
    kind = path.suffix.lstrip(".").lower() or "png"
    mark = {"metadata": {"Software": "dancegenre"}} if kind == "png" else {}  # MARKS: a PNG of ours says so
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **{"format": kind, **mark, **options})


# ---------------------------------------------------------------- text in other formats

_CSV_ESCAPE = tuple("=+-@\t\r'")  # formula starts (OWASP), and our own escape character


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # "-5.5" is a number to a spreadsheet


def csv_cell(value: object) -> object:
    """``value`` as a CSV cell a spreadsheet shows and never runs: text starting with
    ``= + - @``, a tab or a carriage return gets a leading apostrophe (and so does
    text starting with one, so that :func:`read_table` gives back exactly what was
    written).  Numbers, also as text (``"-5.5"``), and other values are unchanged."""
    if isinstance(value, str) and value.startswith(_CSV_ESCAPE) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text(table: pd.DataFrame) -> str:
    """``table`` as CSV text (no index), every text cell through :func:`csv_cell`.  The
    one way dancegenre writes a CSV."""
    from pandas.api.types import is_numeric_dtype

    out = table.copy()
    out.columns = [csv_cell(str(c)) for c in out.columns]
    for column in out.columns:
        if not is_numeric_dtype(out[column]):  # text, of object or string dtype
            out[column] = out[column].map(csv_cell)
    buf = io.StringIO()
    out.to_csv(buf, index=False)
    return buf.getvalue()


def write_table(path: str | os.PathLike[str], table: pd.DataFrame) -> Path:
    """``table`` written to ``path`` as CSV (:func:`csv_text`), whole or not at all."""
    return atomic_write(path, csv_text(table))


def read_table(path: str | os.PathLike[str] | io.StringIO, **options: Any) -> pd.DataFrame:
    """A CSV as ``pandas.read_csv`` reads it, with the escape :func:`csv_cell` adds
    taken off every text cell and column name: the one way dancegenre reads a table."""
    import pandas as pd
    from pandas.api.types import is_numeric_dtype

    table = pd.read_csv(path, **options)
    table.columns = [_uncell(c) for c in table.columns]
    for column in table.columns:
        if not is_numeric_dtype(table[column]):
            table[column] = table[column].map(_uncell)
    return table


def _uncell(value: object) -> object:
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(_CSV_ESCAPE):
        return value[1:]
    return value


# Control characters; line and paragraph separators (U+2028, U+2029); lone surrogates (a
# file name's undecodable bytes, which cannot be encoded); and what XML 1.0 forbids (U+FFFE, U+FFFF).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def one_line_text(text: str) -> str:
    """``text`` safe for one line of a terminal, a log, an M3U8 playlist or an XML 1.0
    text or attribute: every control character (line breaks, ESC, NUL...), line or
    paragraph separator, lone surrogate and non-character shown as its escape
    (``\\n``, ``\\x1b``, ``\\udce9``), so no input can start a line, drive the terminal
    or make a file malformed."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


def remove_ours(folder: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Delete the files in ``folder`` whose names match ``names`` (``fnmatch``
    patterns: the names we write there), then our marker, our lock and ``folder``
    itself if nothing else is left.  Subfolders and other files stay, and a folder
    without our marker is left as it is: we only delete what we made, from a folder we
    made."""
    folder = Path(folder)
    if folder.is_symlink() or not is_ours(folder):  # a link is never followed to delete
        return
    _lock(folder, "folder")  # not while another command writes it (OutputError naming it)
    patterns = [n for n in names if n not in (MARKER, LOCK)]
    for entry in folder.iterdir():
        if (entry.is_symlink() or entry.is_file()) and any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
            entry.unlink(missing_ok=True)
    left = {entry.name for entry in folder.iterdir()}
    if left <= {MARKER, LOCK}:
        release_folder(folder)
        for name in (MARKER, LOCK):
            (folder / name).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass  # someone put a file in it meanwhile
