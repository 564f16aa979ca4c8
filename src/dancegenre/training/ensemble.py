"""``dancegenre ensemble``: several trained runs of one pretrained model, averaged as one.

Replicate cross-validations (one a seed) of the same configuration give models that
err on different clips; averaging their probabilities is the cheapest accuracy there is
(three fine-tuned musicnn seeds: 0.851 -> 0.874 on the hard-techno folds).  This module
gathers their members (a run's ``best.pt``, a cross-validation's fold models, or the
members of an ``ensemble.pt``) into one checkpoint, ``OUT/best.pt`` (and ``best.onnx``),
that ``predict``, ``serve`` and ``export`` use like any run.

Its held-out figure is honest only where every item's verdict comes from models that
never saw its group: when every source is a cross-validation of the same items, each
item's out-of-fold probabilities (``cv-items.csv``) are averaged over the sources and
scored (``OUT/cv-items.csv``, ``OUT/ensemble.json``), and so is the average of every
choice of N of them, N = 1 to all (``OUT/ensemble-size.csv``: what each more source
buys).  The combined model itself, like any fold ensemble, has no held-out side of its own.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dancegenre.errors import CheckpointError, ConfigError
from dancegenre.models.base import Network
from dancegenre.safety import atomic_write, claim_folder, path_list, read_table, releasing, write_table
from dancegenre.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from dancegenre.training.runs import (
    CV_ITEMS,
    ENSEMBLE,
    averaged_verdicts,
    genre_subset,
    read_cv,
    restricted_verdicts,
)

SUMMARY = ENSEMBLE
BY_SIZE = "ensemble-size.csv"
CV_ITEMS_ONLY = "cv-items-only.csv"  # the held-out verdicts among --only genres
MAX_CHOICES = 50  # combinations scored for each size; more are sampled (seeded)


@dataclass
class Source:
    """One argument of ``ensemble``: its single-model members and, for a cross-validation,
    its out-of-fold verdicts (``cv-items.csv``)."""

    path: Path
    files: list[Path]  # the checkpoints it was read from, resolved
    covers: list[Path]  # those and, for an ensemble.pt, its members' checkpoints: none may come twice
    members: list[tuple[Network, Checkpoint]]
    held_out: Path | None


def read_source(path: str | os.PathLike[str]) -> Source:
    """A run folder (its ``best.pt``), a cross-validation folder (every fold's ``best.pt``)
    or a checkpoint file (an ``ensemble.pt`` gives all its members).  Raises
    CheckpointError for anything else."""
    from dancegenre.models.registry import members_of

    path = Path(path)
    held_out = None
    if path.is_dir() and (path / "cv.json").exists():
        folds = len(read_cv(path).get("folds", []))
        files = [path / f"fold-{k}" / "best.pt" for k in range(folds)]
        held_out = path / CV_ITEMS
    elif path.is_dir():
        files = [path / "best.pt"]
    elif path.is_file():
        files = [path]
        if (path.parent / "cv.json").exists():  # train --folds K --ensemble: its members are the folds
            held_out = path.parent / CV_ITEMS
    else:
        raise CheckpointError(f"no run, cross-validation folder or checkpoint at {path}")
    if not files or not all(f.is_file() for f in files):
        raise CheckpointError(f"{path} is not a finished run or cross-validation (a best.pt is missing)")
    members, covers = [], [f.resolve() for f in files]
    for f in files:
        ckpt = load_checkpoint(f)
        members += [(m, ckpt) for m in members_of(ckpt.model)]
        covers += [Path(m).resolve() for m in ckpt.ensemble_of]  # an ensemble.pt stands for its folds too
    if held_out is not None and not held_out.exists():
        held_out = None  # folds trained before runs wrote their held-out verdicts
    return Source(path, [f.resolve() for f in files], covers, members, held_out)


def _same(members: list[tuple[Network, Checkpoint]]) -> None:
    """One line naming the first way a member differs from the first, if any does."""
    import dataclasses

    first_net, first = members[0]
    for net, ckpt in members[1:]:
        if ckpt.labels != first.labels:
            raise ConfigError(f"{ckpt.path} has labels {', '.join(ckpt.labels)}, not {', '.join(first.labels)}: "
                              "an ensemble averages models of the same genres")
        if ckpt.feature_config != first.feature_config:
            raise ConfigError(f"{ckpt.path} was trained on another front end than {first.path}")
        if net.config != first_net.config:
            diff = [f.name for f in dataclasses.fields(net.config)
                    if getattr(net.config, f.name) != getattr(first_net.config, f.name)]
            raise ConfigError(f"{ckpt.path} differs from {first.path} in {', '.join(diff)}: an ensemble "
                              "averages runs of one pretrained model with the same settings")


def by_size(tables: Sequence[pd.DataFrame], *, max_choices: int = MAX_CHOICES) -> pd.DataFrame:
    """What more sources buy: for every N from 1 to len(tables), the held-out item accuracy
    and macro-F1 of the average of N of the tables (out-of-fold verdicts, one a
    cross-validation), as mean, min and max over every choice of N (at most
    ``max_choices`` of them, drawn with a fixed seed).  One row a size."""
    from dancegenre.training.scoring import verdict_metrics

    rng = np.random.default_rng(0)
    rows = []
    for n in range(1, len(tables) + 1):
        if math.comb(len(tables), n) <= max_choices:
            choices = list(itertools.combinations(range(len(tables)), n))
        else:
            drawn: dict[tuple[int, ...], None] = {}  # distinct choices, in the order drawn
            while len(drawn) < max_choices:
                drawn[tuple(sorted(rng.choice(len(tables), n, replace=False).tolist()))] = None
            choices = list(drawn)
        scores = [verdict_metrics(averaged_verdicts([tables[i] for i in c])) for c in choices]
        acc = [m["accuracy"] for m in scores]
        f1 = [m["macro_f1"] for m in scores]
        rows.append({"sources": n, "choices": len(choices),
                     "item_accuracy_mean": float(np.mean(acc)), "item_accuracy_min": min(acc),
                     "item_accuracy_max": max(acc), "item_macro_f1_mean": float(np.mean(f1)),
                     "item_macro_f1_min": min(f1), "item_macro_f1_max": max(f1)})
    return pd.DataFrame(rows)


@releasing
def combine(sources: Sequence[str | os.PathLike[str]], *, out: str | os.PathLike[str],
            only: Sequence[str] | None = None, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Average the members of ``sources`` into ``out/best.pt`` (and ``best.onnx``); write
    ``out/ensemble.json`` and, when every source is a cross-validation of the same items,
    ``out/cv-items.csv``: their out-of-fold verdicts averaged (and ``out/ensemble-size.csv``,
    :func:`by_size`).  With ``only`` (at least two of the genres), also the held-out figure
    among those genres (``held_out_only``, ``out/cv-items-only.csv``:
    :func:`~dancegenre.training.runs.restricted_verdicts`).  Returns the summary.

    Raises ConfigError when the members differ in labels, front end, model or settings,
    or repeat a checkpoint, or ``only`` names a genre they lack; CheckpointError for a
    source that is not a finished run.
    """
    from dancegenre.models.registry import ensemble_of
    from dancegenre.training.export import try_export
    from dancegenre.training.scoring import verdict_metrics

    sources = path_list(sources, "sources")
    if len(sources) < 1:
        raise ConfigError("ensemble needs at least one run, cross-validation or checkpoint")
    claim_folder(out, "ensemble", inputs=[Path(s) for s in sources], what="--out", create=False)
    read = [read_source(s) for s in sources]
    seen: dict[Path, Path] = {}
    for s in read:
        for f in set(s.covers):
            if f in seen:
                raise ConfigError(f"{seen[f]} and {s.path} both hold {f}: an ensemble averages different models")
            seen[f] = s.path
    members = [m for s in read for m in s.members]
    files = [str(f) for s in read for f in s.files]
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two models; these sources hold one")
    _same(members)
    net = ensemble_of([m for m, _ in members])  # refuses models that are not pretrained with a frozen front end
    first = members[0][1]
    if only is not None:
        genre_subset(only, first.labels)  # before anything is written

    held_out: dict[str, Any] | None = None
    table = sizes = None
    if all(s.held_out is not None for s in read):
        tables = [read_table(s.held_out, keep_default_na=False) for s in read]
        table = averaged_verdicts(tables)
        if len(table) and all(len(t) == len(table) for t in tables):
            m = verdict_metrics(table)
            held_out = {"split": f"every item's out-of-fold probabilities averaged over {len(read)} "
                                 "cross-validation(s), grouped by " + str(first.split.get("column")),
                        "items": m["n"], "item_accuracy": m["accuracy"], "item_macro_f1": m["macro_f1"],
                        "item_balanced_accuracy": m["balanced_accuracy"]}
            sizes = by_size(tables) if len(tables) > 1 else None
        else:
            table = None
    why_not = None if held_out else ("no held-out figure: every source must be a cross-validation "
                                     "(train --folds K) of the same items")
    held_only = table_only = None
    if held_out is not None and only is not None:
        table_only = restricted_verdicts(table, only)
        m = verdict_metrics(table_only)
        held_only = {"genres": [c[2:] for c in table_only.columns if c.startswith("p_")], "items": m["n"],
                     "item_accuracy": m["accuracy"], "item_macro_f1": m["macro_f1"],
                     "item_balanced_accuracy": m["balanced_accuracy"]}

    out = claim_folder(out, "ensemble", inputs=[Path(s) for s in sources], what="--out")
    items = sorted({i for _, c in members for side in c.split.get("sides", {}).values() for i in side})
    split = {"column": first.split.get("column"), "seed": None, "folds": None, "fold": None,
             "sides": {"train": items, "val": [], "test": []}}
    save_checkpoint(out / "best.pt", net, feature_config=first.feature_config, train_config=first.train_config,
                    labels=first.labels, split=split,
                    extra={"ensemble_of": files, "cv": {k: v for k, v in (held_out or {}).items() if k != "split"}})
    try_export(out / "best.pt", log=log)
    for name, frame in ((CV_ITEMS, table), (BY_SIZE, None if sizes is None else sizes.round(4)),
                        (CV_ITEMS_ONLY, table_only)):
        if frame is not None:
            write_table(out / name, frame)
        else:  # not a figure of these sources: one an earlier ensemble wrote into this folder goes
            (out / name).unlink(missing_ok=True)
    summary = {"sources": [str(Path(s)) for s in sources], "members": len(members), "model": net.config.name,
               "labels": first.labels, "held_out": held_out, "held_out_only": held_only, "note": why_not,
               "by_size": None if sizes is None else sizes.round(4).to_dict(orient="records")}
    atomic_write(out / SUMMARY, json.dumps(summary, indent=2))
    return summary

