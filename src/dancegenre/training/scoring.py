"""Batched inference on segments, item verdicts from segments, and the metrics.

Shared by ``train`` (validation and test), ``evaluate`` and ``predict``: one way to turn
segments into probabilities and probabilities into numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dancegenre.data.store import batches


@torch.no_grad()
def predict_proba(model: nn.Module, segments: Iterable[np.ndarray], *, device: torch.device | str = "cpu",
                  tags: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities of every segment: (n_segments, n_classes) float32.  The one
    batched inference path (training's scoring, ``predict``, ``explain``).

    ``segments`` yields arrays (B, n_mels, frames) (float16 or float32), or tensors.  The model is
    put in eval mode (no dropout, batch-norm running statistics) and back.  With
    ``tags``, returns (probabilities, the pretrained tags (n_segments, n_tags) or None
    for a network without them), from the same forward pass.
    """
    was_training = model.training
    model.eval()
    out, taggram = [], []
    for x in segments:
        if isinstance(x, torch.Tensor):  # segments made on the device (predict's GPU front end)
            batch = x.to(device=device, dtype=torch.float32)
        else:
            batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        if tags:
            logits, t = model.forward_with_tags(batch)
            if t is not None:
                taggram.append(t.float().cpu().numpy())
        else:
            logits = model(batch)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    model.train(was_training)
    n_classes = model.config.n_classes if hasattr(model, "config") else 0
    probs = np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)
    if not tags:
        return probs
    return probs, (np.concatenate(taggram) if taggram else None)


def item_probabilities(segment_probs: np.ndarray, items: Iterable[str]) -> pd.DataFrame:
    """Mean segment probability per item: one row an item (first-seen order), one column a class."""
    frame = pd.DataFrame(segment_probs)
    frame["item"] = list(items)
    return frame.groupby("item", sort=False).mean()


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class P/R/F1, ROC-AUC, confusion matrix.

    ``y_true`` holds class indices (n,), ``probs`` (n, n_classes).  ROC-AUC is binary for
    two classes and one-vs-rest macro for more; it is None where a class is absent.
    """
    y_pred = probs.argmax(axis=1)
    idx = list(range(len(labels)))
    from sklearn import (
        metrics as skm,  # imported when metrics are asked for: predict never is
    )

    p, r, f, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    try:
        if len(labels) == 2:
            auc = float(skm.roc_auc_score(y_true, probs[:, 1]))
        else:
            auc = float(skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=idx))
    except ValueError:
        auc = None  # a class missing from y_true
    present = np.unique(y_true)
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else float("nan"),
        "balanced_accuracy": float(np.mean([np.mean(y_pred[y_true == c] == c) for c in present])),
        "macro_f1": float(np.mean(f[present])) if len(present) else float("nan"),
        "weighted_f1": float(skm.f1_score(y_true, y_pred, labels=idx, average="weighted", zero_division=0)),
        "roc_auc": auc,
        "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                            "support": int(support[i])} for i, lab in enumerate(labels)},
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }


def verdict_metrics(table: pd.DataFrame) -> dict:
    """:func:`classification_metrics` of a verdict table (``test-items.csv``,
    ``cv-items.csv`` or :func:`~dancegenre.training.runs.averaged_verdicts`): one row an
    item, its ``label`` and a ``p_<genre>`` column per class, in label order."""
    labels = [c[2:] for c in table.columns if c.startswith("p_")]
    truth = table["label"].map({g: i for i, g in enumerate(labels)}).to_numpy()
    return classification_metrics(truth, table[[f"p_{g}" for g in labels]].to_numpy(dtype=float), labels)


def evaluate_rows(model: nn.Module, store: Any, rows: np.ndarray, labels: list[str],
                  *, batch_size: int = 256, device: torch.device | str = "cpu",
                  inputs: np.ndarray | None = None) -> dict[str, Any]:
    """Segment- and item-level metrics of ``model`` on the store's ``rows``.

    ``inputs`` replaces the store's segments row for row (a frozen backbone's cached
    features, for a model that takes them)."""
    source = store.segments if inputs is None else inputs
    probs = predict_proba(model, batches(source, rows, batch_size), device=device)
    index = store.index.iloc[rows]
    y_seg = index["label"].map({lab: i for i, lab in enumerate(labels)}).to_numpy()
    item_probs = item_probabilities(probs, index["item"])
    item_label = index.groupby("item", sort=False)["label"].first().loc[item_probs.index]
    y_item = item_label.map({lab: i for i, lab in enumerate(labels)}).to_numpy()
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y_seg)), y_seg], eps, 1)))) if len(rows) else float("nan")
    return {"segment": classification_metrics(y_seg, probs, labels),
            "item": classification_metrics(y_item, item_probs.to_numpy(), labels),
            "loss": loss, "item_probs": item_probs, "segment_probs": probs}
