"""The rules that keep a user's files safe, in one place.

- An output never replaces an input (:func:`check_output_file`, :func:`Inputs`).
- A folder we write into is new, empty, or one we made: we recognise ours by a marker
  file, ``.dancegenre`` (:func:`claim_folder`).  We only delete what we created.
- Files are written whole or not at all: a temporary file beside the target, then an
  atomic rename (:func:`atomic_write`).
- Labels are data: a genre name is never a path, never markup (:func:`check_label`,
  :func:`label_folder`).

Every violation raises :class:`~dancegenre.errors.OutputError` or
:class:`~dancegenre.errors.LabelError` with a one-line message.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dancegenre.errors import ConfigError, LabelError, OutputError

MARKER = ".dancegenre"  # {"kind": ...} in every folder a command creates
LABEL_MAX_CHARS = 64
# Characters no label may hold: path separators and what Windows forbids in a folder
# name (a label becomes one with --sort-into), and markup.
_FORBIDDEN = set('/\\:*?"<>|')
_RESERVED = {".", "..", "_unsure"}  # _unsure: the folder of low-confidence files
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


# ---------------------------------------------------------------- labels

def check_label(label: object, where: str) -> str:
    """``label`` if it can name a genre, else LabelError saying why and ``where`` it came from.

    A label is 1-64 printable characters with no path separator, no ``: * ? " < > |``,
    no leading or trailing space, not ``.``/``..``/``_unsure``, not starting with a dot
    and not a Windows device name (con, nul, com1...): it becomes a folder name with
    ``--sort-into`` and a heading in reports.
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
    elif text in _RESERVED or text.startswith("."):
        why = "is reserved (., .., _unsure, or a name starting with a dot)"
    elif _WINDOWS_DEVICES.match(text):
        why = "is a device name on Windows"
    if why:
        raise LabelError(f"label {shown} in {where} {why}")
    return text


def check_labels(labels: Iterable[object], where: str) -> list[str]:
    """Every label checked (:func:`check_label`), as a list."""
    return [check_label(lab, where) for lab in labels]


def label_folder(target: Path, label: str) -> Path:
    """``target/label``, after checking that ``label`` is a safe folder name and that the
    result lies inside ``target`` (also when ``target`` holds links)."""
    folder = target / check_label(label, "the predictions")
    if Path(os.path.realpath(folder)).parent != Path(os.path.realpath(target)):
        raise LabelError(f"label {label!r} leads outside {target}")
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
    """The files a command reads, to check outputs against (by real path and inode)."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._real: set[str] = set()
        self._ids: set[tuple[int, int]] = set()
        for p in paths:
            self.add(p)

    def add(self, path: str | os.PathLike[str]) -> None:
        self._real.add(real_path(path))
        try:
            st = os.stat(path)
        except OSError:
            return
        self._ids.add((st.st_dev, st.st_ino))

    def __contains__(self, path: object) -> bool:
        p = os.fspath(path)  # type: ignore[arg-type]
        if real_path(p) in self._real:
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
                      suffixes: Iterable[str] | None = None, what: str = "--out") -> Path:
    """``path`` as a file to write, or OutputError: it would replace one of ``inputs``,
    it is a folder, a file stands where a parent folder should, or its suffix is not one
    of ``suffixes`` (lower case, with the dot)."""
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
    if path.exists() and path in inputs:
        raise OutputError(f"{what} {path} is one of the inputs; it would be replaced. Choose another name")
    return path


FAILURE_COLUMNS = ("path", "error")  # in every failures list a command writes: the file skipped, and why


def check_own_table(path: Path, *, columns: Iterable[str], what: str, kind: str = "table") -> Path:
    """``path`` may be replaced only when it is absent or a CSV table of ours: one whose
    header holds every name in ``columns``.  For the files a command writes beside a
    named output (a table beside ``.npy`` vectors, a failures list), which the user did
    not name and may hold a file of their own (a catalog, notes).

    Raises OutputError for any other file there."""
    if path.exists():
        try:
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []
        if not set(columns) <= set(header):
            raise OutputError(f"{what} {path} exists and is not a {kind} made by dancegenre; move it or choose "
                              "another --out")
    return path


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
                 inputs: Iterable[str | os.PathLike[str]] = (), what: str = "output folder",
                 create: bool = True) -> Path:
    """Create ``path`` (with parents) as a ``kind`` folder, or reuse it if it is ours.

    A folder is ours when it holds our marker file for the same ``kind``, or, when made
    by a version before the marker, one of the ``legacy`` file names.  An empty folder
    is taken.  Anything else, a file where the folder should be, or an input folder
    inside ``path`` or equal to it, raises OutputError: we never write among, or delete,
    files we did not create.  ``create=False`` only checks.
    """
    path = check_target_folder(path, what=what)
    real = Path(os.path.realpath(path))
    for src in inputs:
        src_real = Path(os.path.realpath(src))
        if src_real == real or (src_real.is_dir() and real.is_relative_to(src_real)):
            raise OutputError(f"{what} {path} is inside the input {src}; choose a folder outside it")
    marker = path / MARKER
    if path.is_dir() and any(path.iterdir()):
        owner = _marker_kind(marker)
        if owner is None and not any((path / name).exists() for name in legacy):
            raise OutputError(f"{what} {path} already holds files that dancegenre did not make; "
                              "choose a new or empty folder")
        if owner is not None and owner != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise OutputError(f"{what} {path} holds a dancegenre {owner}, not {article} {kind}; choose another folder")
    if not create:  # checked only: a command refuses before its long work, and makes nothing yet
        return path
    path.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        atomic_write(marker, json.dumps({"kind": kind}) + "\n")
    return path


def _marker_kind(marker: Path) -> str | None:
    try:
        return str(json.loads(marker.read_text())["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_ours(path: str | os.PathLike[str], kind: str | None = None) -> bool:
    """True when ``path`` is a folder we made (of ``kind``, if given)."""
    owner = _marker_kind(Path(path) / MARKER)
    return owner is not None and (kind is None or owner == kind)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` for a writer that needs a file name
    (``torch.save``, ``np.save``, ``soundfile.write``); renamed over ``path`` when the
    block ends (if the writer made it), removed if the block raises.  The one way files
    are written whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all: a hidden temporary file beside it,
    then a rename over it."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def remove_ours(folder: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Delete the files ``names`` that we wrote into ``folder``, then ``folder`` if that
    left it empty.  Anything else in it stays."""
    folder = Path(folder)
    for name in names:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (someone else's files) or gone
