"""Exploratory analysis of numeric columns per genre, and a descriptor baseline.

``eda``: works on descriptor tables and on any catalog with numeric columns (the study's
``techno.csv`` / ``edm.csv`` with Spotify's audio features too).  For each numeric
column: per-genre histograms (one grid of small plots), mean / median / std per genre,
a rank test (Mann-Whitney U for two genres, Kruskal-Wallis H for more) with an effect
size (rank-biserial correlation |r| for two, epsilon-squared for more), and a ranking of
the columns by effect size.

``baseline``: logistic regression and gradient boosting on those columns, scored by the
same grouped k-fold cross-validation as ``train --folds``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from dancegenre.data.splits import group_folds
from dancegenre.errors import CatalogError, EmptyInputError
from dancegenre.present.html import fragment, image_tag, page, table_html
from dancegenre.safety import (
    atomic_write,
    check_output_file,
    path_list,
    read_table,
    releasing,
    save_figure,
    write_table,
)

NOT_FEATURES = {"item", "path", "label", "track_id", "artist", "artist_id", "album_id", "cache_key", "segment",
                "row", "offset", "n_segments", "key", "catalog_key", "mode", "time_signature", "analysed_seconds",
                "duration", "sample_rate", "channels"}


def load_tables(paths: list[str | os.PathLike[str]], label_column: str = "label") -> pd.DataFrame:
    """Concatenate CSV tables; a table without ``label_column`` is labelled by its file name
    (so the study's techno.csv and edm.csv work as they are).  Infinite values (``inf`` in
    a CSV) count as missing, as NaN does: no statistic or histogram takes them."""
    frames = []
    for p in path_list(paths, "tables"):
        if Path(p).is_dir():
            raise CatalogError(f"{p} is a folder, not a table: give a CSV such as `dancegenre features` writes")
        try:
            t = read_table(p)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise CatalogError(f"cannot read table {p}: {str(exc).splitlines()[0]}") from None
        if label_column not in t.columns:
            t[label_column] = Path(p).stem
        frames.append(t)
    return pd.concat(frames, ignore_index=True).replace([np.inf, -np.inf], np.nan)


def numeric_columns(table: pd.DataFrame, label_column: str) -> list[str]:
    cols = [c for c in table.columns if c != label_column and c not in NOT_FEATURES
            and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
            and table[c].notna().sum() >= 2 and table[c].nunique() > 1]
    return cols


def _check(table: pd.DataFrame, label_column: str) -> tuple[list[str], list[str]]:
    if label_column not in table.columns:
        raise CatalogError(f"no column {label_column!r} in the table(s)")
    labels = sorted(table[label_column].dropna().astype(str).unique())
    if len(labels) < 2:
        raise EmptyInputError(f"one genre only ({', '.join(labels) or 'none'}): comparing needs at least two")
    cols = numeric_columns(table, label_column)
    if not cols:
        raise EmptyInputError("the table has no numeric column to compare")
    return labels, cols


def column_statistics(table: pd.DataFrame, label_column: str = "label") -> pd.DataFrame:
    """One row a numeric column: per-genre mean/median/std/n, test statistic, p-value,
    effect size, sorted by effect size (most separating first).  Missing values are
    dropped column by column."""
    labels, cols = _check(table, label_column)
    rows = []
    for c in cols:
        groups = [table.loc[table[label_column].astype(str) == lab, c].dropna().to_numpy(float) for lab in labels]
        row: dict[str, Any] = {"column": c}
        for lab, g in zip(labels, groups):
            row.update({f"{lab}_mean": g.mean() if len(g) else np.nan, f"{lab}_median": np.median(g) if len(g) else np.nan,
                        f"{lab}_std": g.std(ddof=1) if len(g) > 1 else np.nan, f"{lab}_n": len(g)})
        usable = [g for g in groups if len(g)]
        if len(usable) < 2:
            row.update(test="n/a", statistic=np.nan, p_value=np.nan, effect_size=np.nan)
        elif len(labels) == 2:
            u, p = stats.mannwhitneyu(groups[0], groups[1], alternative="two-sided")
            row.update(test="Mann-Whitney U", statistic=u, p_value=p,
                       effect_size=abs(1 - 2 * u / (len(groups[0]) * len(groups[1]))))  # rank-biserial |r|
        else:
            h, p = stats.kruskal(*usable)
            n = sum(len(g) for g in usable)
            row.update(test="Kruskal-Wallis H", statistic=h, p_value=p,
                       effect_size=max(0.0, (h - len(usable) + 1) / (n - len(usable))))  # epsilon squared
        row["missing"] = int(table[c].isna().sum())
        rows.append(row)
    out = pd.DataFrame(rows).sort_values("effect_size", ascending=False, na_position="last")
    out.insert(1, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)


def histogram_grid(table: pd.DataFrame, columns: list[str], label_column: str, path: Path) -> None:
    from dancegenre.present.figures import pyplot, set_title, subplots

    plt = pyplot()

    labels = sorted(table[label_column].dropna().astype(str).unique())
    ncol = 4
    nrow = max(1, int(np.ceil(len(columns) / ncol)))
    fig, axes = subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, columns):
        values = table[c].dropna().to_numpy(float)
        bins = np.histogram_bin_edges(values, bins=20)
        for lab in labels:
            ax.hist(table.loc[table[label_column].astype(str) == lab, c].dropna(), bins=bins, alpha=0.5,
                    density=True, label=lab)
        set_title(ax, c, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    save_figure(fig, path, dpi=80)
    plt.close(fig)


EDA_FILES = ("statistics.csv", "histograms.png", "index.html")  # a report folder, before the marker as now


@releasing
def run_eda(paths: list[str | os.PathLike[str]], out: str | os.PathLike[str], *, label_column: str = "label",
            max_plots: int = 40) -> pd.DataFrame:
    """Statistics, histograms and one HTML page for the tables at ``paths`` into ``out``."""
    from dancegenre.safety import claim_folder

    table = load_tables(paths, label_column)
    stats_table = column_statistics(table, label_column)
    out = claim_folder(out, "eda", legacy=EDA_FILES, inputs=paths, what="report folder")
    write_table(out / "statistics.csv", stats_table)
    shown = stats_table["column"].tolist()[:max_plots]
    histogram_grid(table, shown, label_column, out / "histograms.png")
    counts = table[label_column].astype(str).value_counts().sort_index().rename_axis("genre").reset_index(name="rows")
    brief = stats_table[["column", "rank", "test", "p_value", "effect_size"]
                        + [c for c in stats_table.columns if c.endswith("_mean")]]
    html_text = page("dancegenre eda", [
        ("Tables", fragment("<p>{{ paths }}: {{ n }} rows.</p>", paths=", ".join(map(str, paths)), n=len(table))
         + table_html(counts)),
        ("Columns ranked by how well they separate the genres", table_html(brief, floats="{:.4g}")),
        (f"Histograms per genre (top {len(shown)} columns)", image_tag(out / "histograms.png", "histograms")),
    ])
    atomic_write(out / "index.html", html_text)
    return stats_table


def run_baseline(features: str | os.PathLike[str], *, split_by: str | None = "track_id", folds: int = 5,
                 seed: int = 0, labels: list[str] | None = None, label_column: str = "label",
                 out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Grouped k-fold CV of logistic regression and gradient boosting on a descriptor table.

    Returns per-model mean and std of item-level accuracy and macro-F1 on the held-out
    folds (the same folds as ``train --folds`` for the same seed and grouping).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if out is not None:  # before the work: never the features table, nor a JSON file of the user's
        check_output_file(out, inputs=[features], suffixes=(".json",), columns=("split", "features"))
    table = load_tables([features], label_column)
    if labels:
        table = table[table[label_column].astype(str).isin(labels)].reset_index(drop=True)
    _, cols = _check(table, label_column)
    from dancegenre.research.descriptors import DESCRIPTORS

    if set(DESCRIPTORS) <= set(table.columns):  # a features table: descriptors only, not catalog extras
        cols = list(DESCRIPTORS)
    group_col = split_by or "item"
    if group_col not in table.columns:
        raise CatalogError(f"--split-by {group_col!r}: no such column in {features}")
    y = table[label_column].astype(str).to_numpy()
    fold = group_folds(y, table[group_col].astype(str).to_numpy(), folds, seed)
    x = table[cols].to_numpy(float)
    models = {
        "logistic_regression": lambda: make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=2000)),
        "gradient_boosting": lambda: HistGradientBoostingClassifier(random_state=seed),
    }
    result: dict[str, Any] = {"split": f"{folds}-fold cross-validation grouped by {group_col!r} (held-out folds)",
                              "features": cols, "n": len(table)}
    for name, make in models.items():
        accs, f1s = [], []
        for k in range(folds):
            train, test = fold != k, fold == k
            model = make().fit(x[train], y[train])
            pred = model.predict(x[test])
            accs.append(accuracy_score(y[test], pred))
            f1s.append(f1_score(y[test], pred, average="macro"))
        result[name] = {"accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs, ddof=1)),
                        "macro_f1_mean": float(np.mean(f1s)), "macro_f1_std": float(np.std(f1s, ddof=1)),
                        "folds": [{"accuracy": a, "macro_f1": f} for a, f in zip(accs, f1s)]}
    if out is not None:
        atomic_write(out, json.dumps(result, indent=2))
    return result
