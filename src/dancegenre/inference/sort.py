"""Sorting predicted files into genre folders: copy or move, never overwrite.

A destination name only ever holds a whole file: each file is copied to a temporary
file with a random name in its destination folder (made exclusively, as
:func:`~dancegenre.safety.atomic_path` makes them), fsynced, and then given its name
by a hard link, which fails rather than replace anything there: so a kill leaves no
partial file under a track's name, and two runs never take the same name.  A name
already taken (a file, a folder, a link, even one that points nowhere) gets a ``-1``,
``-2``... suffix.  A destination folder that is a link, or that leads outside the
target, is refused for each file sorted into it.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dancegenre.inference.classifier import Prediction, prediction_list
from dancegenre.safety import temporary_beside

UNSURE = "_unsure"  # the folder of files below --min-confidence
_COPY_CHUNK = 1 << 20  # bytes a read: audio files are large
# errors of a file system without hard links (FAT, exFAT, some network shares)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


@dataclass
class SortAction:
    """What ``sort_into`` did, or would do, to one file."""

    source: str
    destination: str | None
    action: str  # copy, move, skip
    reason: str = ""


def _names(folder: Path, name: str) -> Iterator[Path]:
    """``folder/name``, then ``stem-1.ext``, ``stem-2.ext``..."""
    stem, suffix = Path(name).stem, Path(name).suffix
    yield folder / name
    k = 1
    while True:
        yield folder / f"{stem}-{k}{suffix}"
        k += 1


def _free_name(folder: Path, name: str, taken: set[Path]) -> Path:
    """The first of :func:`_names` that nothing occupies (a dangling link does) and
    this run has not planned already (``taken``)."""
    return next(c for c in _names(folder, name) if c not in taken and not os.path.lexists(c))


def _destination_folder(target: Path, p: Prediction, min_confidence: float) -> tuple[Path | None, str]:
    """(``target/<genre>`` or ``target/_unsure`` for ``p``, '') or (None, why not):
    a link there, or a folder that leads outside ``target``.

    Raises LabelError for a genre that is not a safe folder name."""
    from dancegenre.errors import OutputError
    from dancegenre.safety import label_folder

    try:
        return label_folder(target, p.genre if p.confidence >= min_confidence else UNSURE, reserved_ok=True), ""
    except OutputError as exc:
        return None, str(exc)


def sort_into(predictions: list[Prediction], target: str | os.PathLike[str], *, move: bool = False,
              min_confidence: float = 0.0, dry_run: bool = False) -> list[SortAction]:
    """Copy (or move) each predicted file into ``target/<genre>/``; one SortAction a prediction.

    Never overwrites: a name already taken gets a ``-1``, ``-2``... suffix, and a name
    only ever holds a whole file.  A move copies first, checks the copy's size, and only
    then removes the source; a source that cannot be removed (a read-only folder) is not
    copied at all, and a copy whose source then stays is removed again, so a rerun never
    adds a second copy.  Files below ``min_confidence`` go to ``target/_unsure/``; files
    with errors stay where they are.  A file whose destination folder is a link or leads
    outside ``target``, or that cannot be copied, is skipped with its reason; the others
    go on.  ``dry_run`` only returns the plan.

    Raises
    ------
    OutputError
        ``target`` is a file, or a file stands where one of its parents should be.
    LabelError
        A genre is not a safe folder name.
    """
    from dancegenre.config import check_probability
    from dancegenre.safety import check_target_folder

    check_probability(min_confidence, "min_confidence")
    predictions = prediction_list(predictions, "sort_into")
    target = check_target_folder(target, what="--sort-into")
    taken: set[Path] = set()  # names this run gave (planned, for a dry run)
    return [_sort_one(p, target, taken, move=move, min_confidence=min_confidence, dry_run=dry_run)
            for p in predictions]


def _sort_one(p: Prediction, target: Path, taken: set[Path], *, move: bool, min_confidence: float,
              dry_run: bool) -> SortAction:
    """Copy or move (or plan) one file; ``taken`` gains its destination."""
    verb = "move" if move else "copy"
    if p.error or p.genre is None:
        return SortAction(p.source, None, "skip", p.error or "no verdict")
    if move and not os.access(Path(p.source).parent, os.W_OK):
        return SortAction(p.source, None, "skip", "cannot move: its folder is read-only; nothing copied")
    folder, why = _destination_folder(target, p, min_confidence)
    if folder is None:
        return SortAction(p.source, None, "skip", f"{why}; the source was kept")
    if dry_run:
        dest = _free_name(folder, Path(p.source).name, taken)
    else:
        try:
            dest = _copy_or_move(Path(p.source), folder, taken, move=move)
        except OSError as exc:
            return SortAction(p.source, None, "skip", f"{exc.strerror or exc}; the source was kept")
    taken.add(dest)
    return SortAction(p.source, str(dest), verb)


def _copy_or_move(source: Path, folder: Path, taken: set[Path], *, move: bool) -> Path:
    """Copy ``source`` whole into ``folder`` under a free name (:func:`_publish`); for a
    move, check the copy and remove the source.  Returns the new file.

    Raises OSError; our copy is removed again then (nothing partial is left under a name)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _whole_copy(source, folder)
    try:
        dest = _publish(tmp, folder, source.name, taken)
    finally:
        tmp.unlink(missing_ok=True)
    if move:
        try:
            if dest.stat().st_size != source.stat().st_size:
                raise OSError(f"the copy of {source} is incomplete")
            os.remove(source)
        except OSError:
            dest.unlink(missing_ok=True)
            raise
    return dest


def _whole_copy(source: Path, folder: Path) -> Path:
    """A copy of ``source`` (data, mode, times) in ``folder`` under a random temporary
    name, made exclusively (never through a link) and fsynced.  Raises OSError, leaving nothing."""
    tmp = temporary_beside(folder / source.name)
    try:
        with open(tmp, "wb") as dst, open(source, "rb") as src:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _publish(tmp: Path, folder: Path, name: str, taken: set[Path]) -> Path:
    """Give the whole file ``tmp`` the first free name of :func:`_names` and return it.

    A hard link is made only where nothing is (not even a link that points nowhere), so
    a name another run took meanwhile is passed over, never replaced.  Where the file
    system has no hard links, the name is made exclusively (empty) and the copy renamed
    over it at once."""
    for candidate in _names(folder, name):
        if candidate in taken:
            continue
        try:  # no look first: the link itself is the test, so two runs cannot both pass it
            os.link(tmp, candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            try:
                _claim_name(candidate)
            except FileExistsError:
                continue
            os.replace(tmp, candidate)
        return candidate
    raise AssertionError("unreachable: _names never ends")


def _claim_name(path: Path) -> None:
    """Create ``path`` empty, or FileExistsError when anything is there (a link included)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    os.close(os.open(path, flags, 0o600))
