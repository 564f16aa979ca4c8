"""Sorting predicted files into genre folders: copy or move, never overwrite."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dancegenre.inference.classifier import Prediction, prediction_list

UNSURE = "_unsure"  # the folder of files below --min-confidence


@dataclass
class SortAction:
    source: str
    destination: str | None
    action: str  # copy, move, skip
    reason: str = ""


def _free_name(dest_dir: Path, name: str, taken: set[Path]) -> Path:
    """``dest_dir/name``, or ``stem-1.ext``, ``stem-2.ext``... whichever is free."""
    candidate = dest_dir / name
    stem, suffix = Path(name).stem, Path(name).suffix
    k = 1
    while candidate.exists() or candidate in taken:
        candidate = dest_dir / f"{stem}-{k}{suffix}"
        k += 1
    return candidate


def sort_into(predictions: list[Prediction], target: str | os.PathLike[str], *, move: bool = False,
              min_confidence: float = 0.0, dry_run: bool = False) -> list[SortAction]:
    """Copy (or move) each predicted file into ``target/<genre>/``.

    Never overwrites: a name already taken gets a ``-1``, ``-2``... suffix.  A move
    copies first, checks the copy's size, and only then removes the source; a source
    that cannot be removed (a read-only folder) is not copied at all, and a copy whose
    source then stays is removed again, so a rerun never adds a second copy.  Files
    below ``min_confidence`` go to ``target/_unsure/``; files with errors stay where
    they are.  A genre that is not a safe folder name is refused (LabelError).  A file
    that cannot be copied is skipped with its reason; the others go on.  ``dry_run``
    only returns the plan.

    Raises
    ------
    OutputError
        ``target`` is a file, or a file stands where one of its parents should be.
    """
    from dancegenre.config import check_probability
    from dancegenre.safety import check_target_folder, label_folder

    check_probability(min_confidence, "min_confidence")
    predictions = prediction_list(predictions, "sort_into")
    target = check_target_folder(target, what="--sort-into")
    actions: list[SortAction] = []
    taken: set[Path] = set()
    for p in predictions:
        if p.error or p.genre is None:
            actions.append(SortAction(p.source, None, "skip", p.error or "no verdict"))
            continue
        if move and not os.access(Path(p.source).parent, os.W_OK):
            actions.append(SortAction(p.source, None, "skip", "cannot move: its folder is read-only; nothing copied"))
            continue
        folder = label_folder(target, p.genre) if p.confidence >= min_confidence else target / UNSURE
        dest = _free_name(folder, Path(p.source).name, taken)
        taken.add(dest)
        if dry_run:
            actions.append(SortAction(p.source, str(dest), "move" if move else "copy"))
            continue
        try:
            _copy_or_move(Path(p.source), dest, move=move)
        except OSError as exc:
            actions.append(SortAction(p.source, None, "skip", f"{exc.strerror or exc}; the source was kept"))
            continue
        actions.append(SortAction(p.source, str(dest), "move" if move else "copy"))
    return actions


def _copy_or_move(source: Path, dest: Path, *, move: bool) -> None:
    """Copy ``source`` to the new file ``dest`` (never over one); for a move, check the
    copy and remove the source.  On any failure our partial copy is removed again."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    created = False
    try:
        with open(source, "rb") as src, open(dest, "xb") as dst:  # "x": never overwrite
            created = True
            shutil.copyfileobj(src, dst)
        shutil.copystat(source, dest)
        if move:
            if os.path.getsize(dest) != os.path.getsize(source):
                raise OSError(f"the copy of {source} is incomplete")
            os.remove(source)
    except OSError:
        if created:
            dest.unlink(missing_ok=True)
        raise
