"""The one reader and writer of run folders (``train``) and cross-validation folders.

A run folder holds ``best.pt`` and ``last.pt`` (checkpoints), ``metrics.csv`` (one row
an epoch), ``results.json`` (the test split's metrics and how the run went) and
``curves.png``; a cross-validation folder holds ``fold-<k>/`` run folders, ``cv.csv``
and ``cv.json``.  Which epoch a run chose is written once, as ``best_epoch`` in
``results.json``, and every reader takes it from there (:attr:`Run.chosen`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dancegenre.errors import ConfigError, EmptyInputError
from dancegenre.safety import atomic_write, read_table, write_table

RESULTS, HISTORY, CV, SPLIT = "results.json", "metrics.csv", "cv.json", "split.csv"
ENSEMBLE = "ensemble.json"  # what ``dancegenre ensemble`` writes beside its best.pt
TEST_ITEMS, CV_ITEMS = "test-items.csv", "cv-items.csv"  # held-out verdicts: a run's test side; every fold's
# A run folder made before the folder marker: every one of RUN_FILES, and nothing but
# them and RUN_EXTRA (fnmatch patterns); no other folder is taken for one.
RUN_FILES = (RESULTS, "best.pt", "last.pt", HISTORY)
RUN_EXTRA = (SPLIT, TEST_ITEMS, "curves.png", "best.onnx", "train.log", "evaluation", "evaluation-*")
# A cross-validation folder made before the marker, likewise.
CV_FILES = (CV, "fold-0")
CV_EXTRA = ("fold-*", "cv.csv", CV_ITEMS, "cv-items-*.csv", "ensemble.pt", "ensemble-size.csv", ENSEMBLE)


@dataclass(frozen=True)
class Run:
    """A finished run folder."""

    path: Path

    @cached_property
    def results(self) -> dict[str, Any]:
        return json.loads((self.path / RESULTS).read_text())

    @cached_property
    def history(self) -> pd.DataFrame:
        return read_table(self.path / HISTORY)

    @property
    def best_epoch(self) -> int:
        return int(self.results["best_epoch"])

    @property
    def chosen(self) -> pd.Series:
        """The history row of the epoch whose weights are ``best.pt``."""
        return self.history.loc[self.history["epoch"] == self.best_epoch].iloc[0]

    @property
    def test(self) -> dict[str, Any]:
        return self.results.get("test") or {}

    @property
    def labels(self) -> list[str]:
        return list(self.results["labels"])

    def row(self) -> dict[str, Any]:
        """Held-out (test side) metrics and the chosen epoch's validation, flat."""
        res, test, best = self.results, self.test, self.chosen
        return {"item_accuracy": test["item"]["accuracy"], "item_macro_f1": test["item"]["macro_f1"],
                "item_weighted_f1": test["item"]["weighted_f1"],
                "segment_accuracy": test["segment"]["accuracy"], "segment_macro_f1": test["segment"]["macro_f1"],
                "val_item_accuracy": float(best["val_item_acc"]), "val_item_macro_f1": float(best["val_item_macro_f1"]),
                "best_epoch": self.best_epoch, "epochs_run": res["epochs_run"], "seconds": res["seconds"],
                "parameters": res["parameters"], "test_items": test["item"]["n"], "split_column": res["split_column"]}


def is_finished(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / RESULTS).exists()


def finished_runs(pattern_root: str | os.PathLike[str], pattern: str) -> list[Run]:
    """The finished runs under ``pattern_root`` matching ``pattern`` (``fold-*``), sorted."""
    return [Run(p) for p in sorted(Path(pattern_root).glob(pattern)) if is_finished(p)]


def write_results(path: str | os.PathLike[str], results: dict[str, Any]) -> None:
    atomic_write(Path(path) / RESULTS, json.dumps(results, indent=2))


def write_history(path: str | os.PathLike[str], history: pd.DataFrame) -> None:
    write_table(Path(path) / HISTORY, history)


def read_cv(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(path) / CV).read_text())


def write_test_items(path: str | os.PathLike[str], item_probs: pd.DataFrame, truth: pd.Series,
                     labels: list[str]) -> None:
    """``test-items.csv``: one row a held-out item: item, label, predicted, p_<genre>...
    (``item_probs``: one row an item, one column a class; ``truth``: its label by item)."""
    table = pd.DataFrame({"item": item_probs.index, "label": truth.loc[item_probs.index].to_numpy(),
                          "predicted": np.asarray(labels, dtype=object)[item_probs.to_numpy().argmax(1)]})
    for i, lab in enumerate(labels):
        table[f"p_{lab}"] = item_probs.iloc[:, i].to_numpy().round(6)
    write_table(Path(path) / TEST_ITEMS, table)


def gather_test_items(path: str | os.PathLike[str], folds: int) -> Path | None:
    """``cv-items.csv``: the folds' ``test-items.csv`` with a fold column, so every item
    has one held-out verdict (out-of-fold predictions).  None if a fold lacks one (a
    fold trained before runs wrote them)."""
    parts = []
    for k in range(folds):
        f = Path(path) / f"fold-{k}" / TEST_ITEMS
        if not f.exists():
            return None
        parts.append(read_table(f, keep_default_na=False).assign(fold=k))
    table = pd.concat(parts, ignore_index=True)
    return write_table(Path(path) / CV_ITEMS, table[["fold", *[c for c in table.columns if c != "fold"]]])


def averaged_verdicts(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean held-out probabilities of the same items in several tables (``test-items``
    or ``cv-items`` of replicate cross-validations, one a seed): one row an item, with
    ``label``, ``predicted`` and ``p_<genre>``.  Honest as a held-out figure of an
    ensemble when, in every table, each item's verdict comes from a model that never
    saw its group.  Items missing from any table are left out."""
    probs = [c for c in tables[0].columns if c.startswith("p_")]
    indexed = [t.set_index("item") for t in tables]
    common = indexed[0].index
    for t in indexed[1:]:
        common = common.intersection(t.index)
    mean = sum(t.loc[common, probs].to_numpy(dtype=float) for t in indexed) / len(indexed)
    out = pd.DataFrame({"item": common, "label": indexed[0].loc[common, "label"].to_numpy(),
                        "predicted": np.asarray([c[2:] for c in probs], dtype=object)[mean.argmax(1)]})
    for j, c in enumerate(probs):
        out[c] = mean[:, j]
    return out


def genre_subset(wanted: Sequence[str], labels: Sequence[str], what: str = "--only") -> list[int]:
    """The positions in ``labels`` (a model's genres) of the genres ``wanted``, in the
    model's order.  Raises ConfigError for a genre the model does not have, or fewer
    than two: a verdict among one genre says nothing."""
    wanted = [str(g).strip() for g in wanted if str(g).strip()]
    unknown = sorted(set(wanted) - set(labels))
    if unknown:
        raise ConfigError(f"{what}: not a genre of this model: {', '.join(unknown)} (it has {', '.join(labels)})")
    keep = [i for i, lab in enumerate(labels) if lab in set(wanted)]
    if len(keep) < 2:
        raise ConfigError(f"{what} must name at least two of the model's genres ({', '.join(labels)})")
    return keep


def among(probs: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """Probabilities (n, genres) over the genres at ``keep`` only, each row summing to 1:
    the model's belief given that the answer is one of them.  A row with no mass there
    (every kept probability rounded to 0) becomes uniform."""
    part = np.asarray(probs, dtype=np.float64)[:, list(keep)]
    total = part.sum(axis=1, keepdims=True)
    return np.where(total > 0, part / np.where(total > 0, total, 1.0), 1.0 / len(keep)).astype(np.float32)


def restricted_verdicts(table: pd.DataFrame, genres: Sequence[str]) -> pd.DataFrame:
    """A verdict table (``cv-items``, :func:`averaged_verdicts`) cut to the items labelled
    with one of ``genres``, each item's probabilities over those genres only
    (:func:`among`) and its verdict the most likely of them: how a model of more genres
    scores when the question is only among these (``ensemble --only``, ``predict --only``)."""
    labels = [c[2:] for c in table.columns if c.startswith("p_")]
    keep = genre_subset(genres, labels)
    kept = [labels[i] for i in keep]
    rows = table[table["label"].astype(str).isin(kept)]
    probs = among(rows[[f"p_{g}" for g in labels]].to_numpy(dtype=float), keep)
    out = pd.DataFrame({"item": rows["item"].to_numpy(), "label": rows["label"].to_numpy(),
                        "predicted": np.asarray(kept, dtype=object)[probs.argmax(1)] if len(rows) else []})
    for j, g in enumerate(kept):
        out[f"p_{g}"] = probs[:, j].round(6)
    return out


def write_cv(path: str | os.PathLike[str], rows: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """``cv.csv`` (one row a fold) and ``cv.json`` (the rows, and mean and std of each
    metric over the folds); returns the summary."""
    table = pd.DataFrame(rows)
    write_table(Path(path) / "cv.csv", table)
    metrics = [c for c in table.columns if c not in ("fold", "items")]
    summary = {"split": split, "folds": rows,
               **{f"{c}_mean": float(table[c].mean()) for c in metrics},
               **{f"{c}_std": float(table[c].std(ddof=1)) for c in metrics}}
    atomic_write(Path(path) / CV, json.dumps(summary, indent=2))
    return summary


def kind_of(path: str | os.PathLike[str]) -> str:
    """'experiment', 'cv', 'ensemble' or 'run'; raises EmptyInputError for anything else."""
    path = Path(path)
    if (path / "experiment.json").exists():
        return "experiment"
    if (path / CV).exists():
        return "cv"
    if (path / ENSEMBLE).exists() and (path / "best.pt").exists():
        return "ensemble"
    if is_finished(path) and (path / "best.pt").exists():
        return "run"
    raise EmptyInputError(f"{path} is not a finished run, cross-validation, ensemble or experiment folder "
                          "(no results.json + best.pt, cv.json, ensemble.json + best.pt or experiment.json)")


def results_beside(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """``results.json`` of the run a checkpoint file sits in, or {}."""
    path = Path(checkpoint).parent / RESULTS
    return json.loads(path.read_text()) if path.exists() else {}


def held_out_beside(checkpoint: str | os.PathLike[str]) -> tuple[pd.DataFrame, str] | None:
    """The held-out verdicts of the run a checkpoint file sits in, and which items they
    are: its ``test-items.csv`` (a run's test side) or ``cv-items.csv`` (an ensemble of
    cross-validations: every item out of fold).  None where there is neither, or it
    cannot be read."""
    folder = Path(checkpoint).parent
    for name, words in ((TEST_ITEMS, "test items of its run"),
                        (CV_ITEMS, "out-of-fold items of its cross-validation(s)")):
        path = folder / name
        if path.exists():
            try:
                return read_table(path, keep_default_na=False), words
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
                return None
    return None


def split_beside(checkpoint: str | os.PathLike[str]) -> pd.DataFrame | None:
    """``split.csv`` of the run a checkpoint file sits in (item, label, group, side),
    or None where the run has none (an ensemble, a copied .pt)."""
    path = Path(checkpoint).parent / SPLIT
    try:
        return read_table(path, dtype=str, keep_default_na=False) if path.exists() else None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
