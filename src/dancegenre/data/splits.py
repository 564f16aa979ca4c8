"""Grouped, stratified splits: no item, and no group, on two sides.

A *group* column (``track_id``, ``artist``...) ties items together; every split here
puts all items of a group on one side, stratified by label as far as the groups allow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from dancegenre.errors import ConfigError, EmptyInputError

SPLIT_PREFERENCE = ("artist", "artist_id", "track_id")  # coarsest grouping first


def resolve_split_column(items: pd.DataFrame, group_columns: list[str], split_by: str | None) -> str:
    """The grouping column to split by: ``split_by`` if given, else the coarsest known
    group the store has, else ``item`` (each file its own group)."""
    if split_by is not None:
        if split_by != "item" and split_by not in items.columns:
            raise ConfigError(
                f"--split-by {split_by!r}: the store has no such column "
                f"(it has: item, {', '.join(group_columns) or 'no group columns'})"
            )
        return split_by
    for col in SPLIT_PREFERENCE:
        if col in group_columns:
            return col
    return "item"


def group_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of every row, folds stratified by label and grouped."""
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise EmptyInputError(
            f"only {n_groups} distinct groups: too few to split {k} ways; "
            "add data or split by a finer column (--split-by item)"
        )
    fold = np.full(len(labels), -1)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # "least populated class has fewer members": handled below
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            fold[test] = i
    return fold


def grouped_split(
    items: pd.DataFrame,
    *,
    label_column: str = "label",
    group_column: str = "item",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    folds: int = 0,
    fold: int | None = None,
) -> dict[str, np.ndarray]:
    """Positions of ``items`` rows on each side: {"train", "val", "test"}.

    With ``folds`` = k >= 2, the test side is fold ``fold`` of a k-fold grouped split
    and validation is carved from the rest; otherwise test takes ``test_fraction`` of
    the groups (0 for no test side) and validation ``val_fraction``.

    Raises
    ------
    EmptyInputError
        Too few groups for the requested sides, or a side misses a class entirely.
    """
    labels = items[label_column].astype(str).to_numpy()
    groups = items[group_column].astype(str).to_numpy()
    positions = np.arange(len(items))
    if len(np.unique(labels)) < 2:
        raise EmptyInputError(f"one genre only ({labels[0] if len(labels) else 'none'}): a classifier needs at least two")
    # The fewest groups any genre has caps how many ways a split can go and still give
    # every side every genre; small corpora get larger sides instead of an error.
    fewest = min(len(np.unique(groups[labels == lab])) for lab in np.unique(labels))
    if folds >= 2:
        k_test, test_id = folds, (fold or 0)
    elif test_fraction > 0:
        k_test, test_id = max(2, min(round(1 / test_fraction), fewest)), 0
    else:
        k_test, test_id = 0, -1
    if k_test:
        f = group_folds(labels, groups, k_test, seed)
        test = positions[f == test_id]
        rest = positions[f != test_id]
    else:
        test, rest = positions[:0], positions
    k_val = max(2, min(round((1 - (len(test) / len(items))) / val_fraction), fewest - (1 if k_test else 0)))
    fv = group_folds(labels[rest], groups[rest], k_val, seed + 1)
    val, train = rest[fv == 0], rest[fv != 0]
    for name, side in (("train", train), ("val", val)) + ((("test", test),) if k_test else ()):
        missing = sorted(set(labels) - set(labels[side]))
        if missing:
            raise EmptyInputError(
                f"the {name} side has no item of {', '.join(missing)}: too few groups of that "
                f"genre to split by {group_column!r}; add data or use a smaller fraction"
            )
    return {"train": train, "val": val, "test": test}
