"""evaluate(run or checkpoint, [store]) -> metrics JSON, Markdown report, confusion and
reliability plots, per-item verdicts.

Without a store it scores the run's own test split (the items the run never trained or
early-stopped on); with a store, every item of that store whose genre the model knows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from dancegenre.data.store import SegmentStore
from dancegenre.device import resolve_device
from dancegenre.errors import EmptyInputError, StoreError
from dancegenre.training.checkpoint import load_checkpoint
from dancegenre.training.scoring import evaluate_rows
from dancegenre.safety import atomic_write, releasing, save_figure, write_table


@dataclass
class Evaluation:
    """Metrics of one checkpoint on one set of items."""

    split: str  # what was scored, in words
    grouping: str  # the split's grouping column
    segment: dict[str, Any]
    item: dict[str, Any]
    labels: list[str]
    items: pd.DataFrame  # item, label, predicted, confidence, p_<genre>...
    out: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "grouping": self.grouping, "labels": self.labels,
                "segment": self.segment, "item": self.item}


@releasing
def evaluate(checkpoint: str | os.PathLike[str], store: str | os.PathLike[str] | None = None, *,
             out: str | os.PathLike[str] | None = None, device: str = "cpu") -> Evaluation:
    """Score ``checkpoint`` (a .pt file or a run folder) and write the report to ``out``
    (default: ``<run>/evaluation`` or ``<run>/evaluation-<store name>``).

    Raises
    ------
    CheckpointError, StoreError, EmptyInputError; ConfigError for a ``device`` this
    machine lacks (``auto``, ``cpu``, ``cuda``, ``cuda:N``)
    """
    device = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=device)
    labels = ckpt.labels
    if store is None:
        store_path = ckpt.store
        if not ckpt.split.get("sides", {}).get("test") and ckpt.model_config.members > 1:
            raise EmptyInputError("an ensemble has no test split of its own (every item trained a member); its "
                                  "held-out figure is in its folder's cv.json or ensemble.json, or pass a store "
                                  "of other tracks")
        if not store_path or not Path(store_path).exists():
            raise StoreError(f"the run's store {store_path!r} is gone; pass the store to evaluate on")
        st = SegmentStore(store_path)
        wanted = set(ckpt.split["sides"]["test"])
        if not wanted:
            raise EmptyInputError("the run has no test split (it was trained with --test-fraction 0); pass a store")
        split = f"the run's test split ({len(wanted)} items, grouped by {ckpt.split['column']!r})"
        grouping = ckpt.split["column"]
    else:
        st = SegmentStore(store)
        known = st.items["label"].isin(labels)
        wanted = set(st.items.loc[known, "item"])
        if not wanted:
            raise EmptyInputError(f"no item of {store} has a genre the model knows ({', '.join(labels)})")
        split = f"all {len(wanted)} items of {store}" + (
            f" ({int((~known).sum())} items of unknown genres left out)" if (~known).any() else "")
        grouping = "none (a separate store)"
    if st.config != ckpt.feature_config:
        raise StoreError(f"{st.path} was prepared with another feature config than the checkpoint; "
                         "prepare it again with the checkpoint's settings")
    mask = st.index["item"].isin(wanted).to_numpy()
    rows = st.index["row"].to_numpy()[mask]
    res = evaluate_rows(ckpt.model, st, rows, labels, device=device)
    probs: pd.DataFrame = res["item_probs"]
    table = pd.DataFrame({"item": probs.index})
    table["label"] = st.index.loc[mask].groupby("item", sort=False)["label"].first().loc[probs.index].to_numpy()
    p = probs.to_numpy()
    table["predicted"] = [labels[i] for i in p.argmax(1)]
    table["confidence"] = p.max(1).round(4)
    for i, lab in enumerate(labels):
        table[f"p_{lab}"] = p[:, i].round(4)
    if out is None:
        base = ckpt.path.parent
        out = base / ("evaluation" if store is None else f"evaluation-{Path(store).name}")
    from dancegenre.safety import claim_folder

    # before the figures: a folder of someone else's files is refused, not written into
    out = claim_folder(out, "evaluation", legacy=EVALUATION_FILES, what="evaluation folder")
    ev = Evaluation(split=split, grouping=grouping, segment=res["segment"], item=res["item"], labels=labels,
                    items=table, out=Path(out))
    write_report(ev, res["segment_probs"], st.index.loc[mask, "label"].to_numpy())
    return ev


# What an evaluation folder holds, before the folder marker as now: all of these.
EVALUATION_FILES = ("metrics.json", "items.csv", "report.md", "confusion.png", "reliability.png")


def write_report(ev: Evaluation, segment_probs: np.ndarray, segment_labels: np.ndarray) -> None:
    """metrics.json, items.csv, confusion.png, reliability.png and report.md in ``ev.out``."""
    out = ev.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "metrics.json", json.dumps(ev.to_dict(), indent=2))
    write_table(out / "items.csv", ev.items)
    plot_confusion(np.asarray(ev.item["confusion"]), ev.labels, out / "confusion.png",
                   title="items (one verdict per file)")
    y_item = ev.items["label"].map({lab: i for i, lab in enumerate(ev.labels)}).to_numpy()
    p_item = ev.items[[f"p_{lab}" for lab in ev.labels]].to_numpy()
    plot_reliability(y_item, p_item, out / "reliability.png")
    atomic_write(out / "report.md", markdown_report(ev))


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path | BinaryIO, *, title: str = "") -> None:
    """The matrix (rows true, columns predicted) as a PNG at ``path`` (a file name or a
    binary file object), each genre's name in its colour."""
    from dancegenre.present.figures import genre_colors, pyplot, set_title, subplots

    plt = pyplot()

    size = 2.5 + 0.6 * len(labels)
    fig, ax = subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted"); ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > top / 2 else "black")
    colors = genre_colors(labels)  # each genre's colour on every figure of a page
    for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        tick.set_color(colors.get(tick.get_text(), "black"))
    set_title(ax, f"confusion matrix: {title}")
    save_figure(fig, path, dpi=110); plt.close(fig)


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Confidence of the top class vs how often it is right, in equal-width bins."""
    conf = probs.max(1)
    right = probs.argmax(1) == y_true
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    rows = [{"bin_low": edges[b], "bin_high": edges[b + 1], "count": int((which == b).sum()),
             "confidence": float(conf[which == b].mean()) if (which == b).any() else np.nan,
             "accuracy": float(right[which == b].mean()) if (which == b).any() else np.nan}
            for b in range(n_bins)]
    return pd.DataFrame(rows)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    table = reliability_bins(y_true, probs, n_bins).dropna()
    return float((table["count"] * (table["confidence"] - table["accuracy"]).abs()).sum() / max(len(y_true), 1))


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, path: Path) -> None:
    from dancegenre.present.figures import pyplot, set_title, subplots

    plt = pyplot()

    table = reliability_bins(y_true, probs).dropna()
    fig, ax = subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(table["confidence"], table["accuracy"], marker="o", label="model")
    ax.set_xlabel("confidence of the verdict"); ax.set_ylabel("fraction right")
    set_title(ax, f"reliability (ECE {expected_calibration_error(y_true, probs):.3f})")
    ax.set_xlim(0, 1); ax.set_ylim(0, 1.02); ax.legend(loc="lower right")
    save_figure(fig, path, dpi=110); plt.close(fig)


def markdown_report(ev: Evaluation) -> str:
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        "# Evaluation", "",
        f"Scored on: {ev.split}. Grouping of the split: {ev.grouping}.", "",
        "| level | n | accuracy | balanced accuracy | macro-F1 | weighted F1 | ROC-AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for level, m in (("item (file verdict)", ev.item), ("segment (3 s)", ev.segment)):
        lines.append(f"| {level} | {m['n']} | {fmt(m['accuracy'])} | {fmt(m['balanced_accuracy'])} | "
                     f"{fmt(m['macro_f1'])} | {fmt(m['weighted_f1'])} | {fmt(m['roc_auc'])} |")
    lines += ["", "## Per genre (items)", "", "| genre | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for lab, m in ev.item["per_class"].items():
        lines.append(f"| {lab} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    lines += ["", "![confusion matrix](confusion.png)", "", "![reliability](reliability.png)", ""]
    return "\n".join(lines)
