"""What a corpus holds: the items of a <label>/<file> folder or a catalog CSV, and their cache keys."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pandas as pd

from dancegenre.config import FeatureConfig
from dancegenre.errors import (
    EMPTY_PATH,
    AudioDecodeError,
    CatalogError,
    ConfigError,
    EmptyInputError,
)
from dancegenre.safety import check_label, check_labels, read_table

GROUP_COLUMNS = ("track_id", "artist", "artist_id", "album_id")  # recognised grouping columns
RESERVED_COLUMNS = ("item", "row", "segment", "start", "cache_key", "duration", "sample_rate",
                    "channels", "n_segments", "offset")



def list_items(source: str | os.PathLike[str]) -> tuple[pd.DataFrame, list[str]]:
    """Items of a ``<label>/<file>`` folder or of a catalog CSV.

    Returns
    -------
    (items, group_columns): ``items`` has columns item (unique id), path (absolute),
    label, then the catalog's other columns; ``group_columns`` lists those of
    :data:`GROUP_COLUMNS` that the catalog has.

    Raises
    ------
    EmptyInputError, CatalogError
    """
    if not isinstance(source, (str, os.PathLike)):  # a list of folders, say: one source a store
        raise ConfigError(f"give one folder of <label>/<file> or one catalog CSV, not {type(source).__name__}")
    if not str(source).strip():
        raise EmptyInputError(EMPTY_PATH)
    src = Path(source)
    if not src.exists():
        raise EmptyInputError(f"input not found: {src}")
    if src.is_dir():
        rows = []
        for label_dir in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(label_dir.rglob("*")):
                # a link to a missing file is an item too: it fails with its reason, as in predict
                dangling = f.is_symlink() and not f.exists()
                if (f.is_file() or dangling) and not any(part.startswith(".") for part in f.relative_to(src).parts):
                    rows.append({"item": f.relative_to(src).as_posix(), "path": str(f.absolute() if dangling
                                                                                   else f.resolve()),
                                 "label": check_label(label_dir.name, f"folder {src}")})
        if not rows:
            raise EmptyInputError(
                f"no files in {src}: expected one sub-folder per genre, e.g. {src}/techno/x.mp3"
            )
        items = pd.DataFrame(rows)
        check_labels(items["label"].unique(), f"folder {src}")  # techno/ and TECHNO/ are one folder elsewhere
        return items, []
    try:
        table = read_table(src, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if fields:
            want, line, got = fields.groups()
            raise CatalogError(f"catalog {src} line {line} has {got} fields where its header has {want}; "
                               "put a value that holds a comma in double quotes") from None
        raise CatalogError(f"cannot read catalog {src}: {str(exc).splitlines()[0]}") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read catalog {src}: {str(exc).splitlines()[0]}") from None
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise CatalogError(
            f"catalog {src} lacks column(s) {', '.join(missing)}; it needs at least path,label"
        )
    table = table[(table["path"].str.strip() != "")]
    if table.empty:
        raise EmptyInputError(f"catalog {src} lists no files")
    if (table["label"].str.strip() == "").any():
        bad = int((table["label"].str.strip() == "").sum())
        raise CatalogError(f"catalog {src}: {bad} row(s) have an empty label")
    check_labels(table["label"].unique(), f"catalog {src}")
    base = src.resolve().parent
    table = table.assign(_real=[os.path.realpath(p if Path(p).is_absolute() else base / p) for p in table["path"]])
    twice = table.groupby("_real")["label"].nunique()
    if (twice > 1).any():
        real = twice[twice > 1].index[0]
        labels = sorted(table.loc[table["_real"] == real, "label"].unique())
        raise CatalogError(f"catalog {src} lists {real} under {len(labels)} labels ({', '.join(labels)}); "
                           "give each file one label")
    table = table.drop_duplicates("_real").drop(columns="_real").reset_index(drop=True)
    paths = [str(p if Path(p).is_absolute() else (base / p)) for p in table["path"]]
    items = pd.DataFrame({"item": table["path"].tolist(), "path": paths, "label": table["label"].tolist()})
    extra = [c for c in table.columns if c not in ("path", "label")]
    for c in extra:
        # A catalog column named like one of ours is kept under a prefixed name.
        items[f"catalog_{c}" if c in RESERVED_COLUMNS else c] = table[c].tolist()
    groups = [c for c in GROUP_COLUMNS if c in table.columns]
    return items, groups


def item_key(path: str, config: FeatureConfig) -> str:
    """Cache key: path, size, mtime and feature config; raises AudioDecodeError if unreadable."""
    try:
        st = os.stat(path)
    except OSError as exc:
        what = "it is a link to a missing file" if os.path.islink(path) else exc.strerror
        raise AudioDecodeError(f"cannot read {path}: {what}") from None
    text = f"{path}|{st.st_size}|{st.st_mtime_ns}|{config.digest()}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


