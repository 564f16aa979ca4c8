"""Grouped splits: no group on two sides, every item on one, k folds, resolved columns."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dancegenre.data.splits import grouped_split, resolve_split_column
from dancegenre.errors import ConfigError, EmptyInputError


@settings(max_examples=40, deadline=None)
@given(n_groups=st.integers(16, 40), n_labels=st.integers(2, 4), seed=st.integers(0, 10_000),
       folds=st.sampled_from([0, 3]))
def test_split_never_puts_a_group_on_two_sides(n_groups, n_labels, seed, folds):
    rng = np.random.default_rng(seed)
    group_label = rng.integers(0, n_labels, n_groups)
    group_label[:n_labels * 4] = np.repeat(np.arange(n_labels), 4)  # every label has >= 4 groups
    sizes = rng.integers(1, 6, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    items = pd.DataFrame({"item": [f"i{k}" for k in range(len(groups))], "group": groups.astype(str),
                          "label": group_label[groups].astype(str)})
    try:
        sides = grouped_split(items, group_column="group", seed=seed, folds=folds, fold=1 if folds else None,
                              val_fraction=0.2, test_fraction=0.2)
    except EmptyInputError:
        return  # too few groups of a genre for a side: refused, not leaked
    seen = {}
    for side, pos in sides.items():
        for g in items["group"].iloc[pos]:
            assert seen.setdefault(g, side) == side
    assert sorted(np.concatenate(list(sides.values()))) == list(range(len(items)))


def test_k_folds_cover_every_group_once_as_test():
    items = pd.DataFrame({"item": [f"i{k}" for k in range(60)], "group": [f"g{k // 3}" for k in range(60)],
                          "label": ["a" if k % 2 else "b" for k in range(60)]})
    items["label"] = items.groupby("group")["label"].transform("first")  # one label per group
    tested = []
    for fold in range(3):
        sides = grouped_split(items, group_column="group", seed=1, folds=3, fold=fold, val_fraction=0.2)
        tested += list(items["group"].iloc[sides["test"]].unique())
        assert not set(items["group"].iloc[sides["test"]]) & set(items["group"].iloc[sides["train"]])
    assert sorted(tested) == sorted(items["group"].unique())  # each group is held out exactly once


def test_split_column_is_resolved_in_order_of_preference():
    items = pd.DataFrame({"item": ["a", "b"], "label": ["x", "y"], "track_id": ["1", "2"], "artist": ["p", "q"]})
    assert resolve_split_column(items, ["track_id", "artist"], None) == "artist"
    assert resolve_split_column(items, ["track_id"], None) == "track_id"
    assert resolve_split_column(items, [], None) == "item"
    with pytest.raises(ConfigError, match="nope"):
        resolve_split_column(items, ["track_id", "artist"], "nope")
