"""``dancegenre report``: one self-contained HTML page for a run, a cross-validation, an ensemble
or an experiment.

The page embeds every image (base64 PNG), so it reads offline and travels as one file.
Figures that the run folder does not already hold (confusion matrices, the store's
spectrogram grid, EDA, explanations) are drawn into a temporary folder: the run itself
is never changed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from dancegenre.data.store import SegmentStore
from dancegenre.errors import EmptyInputError, StoreError
from dancegenre.inference.evaluate import plot_confusion
from dancegenre.present.figures import spectrogram_grid
from dancegenre.present.html import fragment, image_tag, page, table_html
from dancegenre.training.runs import Run, finished_runs, kind_of, read_cv
from dancegenre.safety import read_table


def build_report(target: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 features: str | os.PathLike[str] | None = None,
                 explain_audio: list[str | os.PathLike[str]] = (), log: Any = print) -> Path:
    """Write the report for ``target`` to ``out`` (an .html file) and return its path.

    Parameters
    ----------
    target : a run folder (``train``), a cross-validation folder (``train --folds``),
        an ensemble folder (``ensemble``) or an experiment folder (``experiment``).
    features : a descriptor table (``dancegenre features``) to add an EDA section.
    explain_audio : tracks to explain with the (best) model and show.

    Raises
    ------
    EmptyInputError, StoreError, CheckpointError
    """
    from dancegenre.safety import Inputs, atomic_write, check_output_file

    target, out = Path(target), Path(out)
    check_output_file(out, suffixes=(".html", ".htm"),
                      inputs=Inputs([*(p for p in target.rglob("*") if p.is_file()),
                                     *([features] if features else []), *explain_audio]))
    kind = kind_of(target)
    with tempfile.TemporaryDirectory(prefix="dancegenre-report-") as tmp:
        work = Path(tmp)
        if kind == "experiment":
            title, sections, checkpoint, store = _experiment_sections(target, work)
        elif kind == "cv":
            title, sections, checkpoint, store = _cv_sections(target, work)
        elif kind == "ensemble":
            title, sections, checkpoint, store = _ensemble_sections(target, work)
        else:
            title, sections, checkpoint, store = _run_sections(target, work)
        if store is not None:
            sections.insert(0, ("Data", _data_section(store, work)))
        if features is not None:
            from dancegenre.research.eda import run_eda

            log(f"EDA of {features}")
            stats = run_eda([features], work / "eda")
            brief = stats[["column", "rank", "test", "p_value", "effect_size"]].head(15)
            sections.append(("Exploratory analysis of the descriptors",
                             fragment("<p>{{ f }}: the columns that separate the genres best.</p>", f=str(features))
                             + table_html(brief, floats="{:.4g}")
                             + image_tag(work / "eda" / "histograms.png", "histograms")))
        if explain_audio:
            from dancegenre.errors import AudioDecodeError
            from dancegenre.inference.classifier import Classifier
            from dancegenre.research.explanation import (
                explain_verdict,
                track_section,
                write_track,
            )
            from dancegenre.training.checkpoint import load_checkpoint

            log(f"explaining {len(explain_audio)} track(s) with {checkpoint}")
            clf = Classifier(load_checkpoint(checkpoint))
            for path in explain_audio:
                try:
                    expl, timeline = explain_verdict(clf, path, max_seconds=60)
                except AudioDecodeError as exc:  # shown on the page; the report goes on
                    sections.append((f"Explanation: {Path(path).name}",
                                     fragment("<p>not explained: {{ why }}</p>", why=str(exc))))
                    continue
                write_track(expl, work / "tracks" / Path(path).stem, timeline)
                sections.append((f"Explanation: {Path(path).name}", track_section(expl, work)))
        sections.append(("About", fragment("<p class=note>Made by <code>dancegenre report {{ target }}</code>. "
                                           "Every number names the split it comes from; splits are grouped, so no "
                                           "group (track, or artist where known) is on two sides.</p>",
                                           target=str(target))))
        text = page(title, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text)
    return out


def _data_section(store_path: Path, work: Path) -> Markup:
    if not Path(store_path).exists():
        return fragment("<p>The store {{ store }} is gone; no data summary.</p>", store=str(store_path))
    st = SegmentStore(store_path)
    agg = {"items": ("item", "count")}
    for col in st.group_columns:
        agg[f"{col}s"] = (col, "nunique")
    counts = st.items.groupby("label").agg(**agg).reset_index()
    segs = st.index.groupby("label").size().rename("segments").reset_index()
    counts = counts.merge(segs, on="label")
    spectrogram_grid(st.segments, st.index, st.labels, st.config, work / "grid.png", per_label=6)
    c = st.config
    return (fragment("<p>Store {{ store }}: {{ items }} items, {{ segments }} segments of {{ seconds }} s "
                     "({{ c.n_mels }} mel bands, {{ c.sample_rate }} Hz, hop {{ c.hop_length }}); {{ skipped }} file(s) "
                     "skipped at prepare.</p>", store=str(store_path), items=len(st.items), segments=len(st),
                     seconds=f"{c.segment_seconds:.2f}", c=c, skipped=len(st.failures)) + table_html(counts)
            + image_tag(work / "grid.png", "log-mel segments per genre"))


def _metrics_table(test: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for level, name in (("item", "item (one verdict per file)"), ("segment", "segment")):
        m = test[level]
        rows.append({"level": name, "n": m["n"], "accuracy": m["accuracy"], "balanced accuracy": m["balanced_accuracy"],
                     "macro-F1": m["macro_f1"], "weighted F1": m["weighted_f1"],
                     "ROC-AUC": np.nan if m["roc_auc"] is None else m["roc_auc"]})
    return pd.DataFrame(rows)


def _per_class(test: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"genre": lab, **v} for lab, v in test["item"]["per_class"].items()])


def _run_sections(run: Path, work: Path) -> tuple[str, list[tuple[str, Markup]], Path, Path | None]:
    res = Run(run).results
    store = _store_of(run / "best.pt")
    model = res["model"]
    sides = ", ".join(f"{s} {v['items']} items" for s, v in res["sides"].items())
    sections = [("Training", fragment("<p>{{ name }}, {{ params }} parameters; split by <b>{{ split }}</b>: {{ sides }}; "
                                      "best epoch {{ best }} of {{ epochs }}; {{ seconds }} s.</p>",
                                      name=model["name"], params=f"{res['parameters']:,}", split=res["split_column"],
                                      sides=sides, best=res["best_epoch"], epochs=res["epochs_run"],
                                      seconds=f"{res['seconds']:.0f}")
                             + image_tag(run / "curves.png", "training curves"))]
    if res["test"]:
        plot_confusion(np.asarray(res["test"]["item"]["confusion"]), res["labels"], work / "confusion.png",
                       title="test split, items")
        sections.append(("Metrics on the test split", table_html(_metrics_table(res["test"]))
                         + table_html(_per_class(res["test"])) + image_tag(work / "confusion.png", "confusion matrix")))
    return f"dancegenre run {run.name}", sections, run / "best.pt", store


def _store_of(checkpoint: Path) -> Path | None:
    from dancegenre.training.checkpoint import load_checkpoint

    store = load_checkpoint(checkpoint).store
    return Path(store) if store else None


def _folds_sections(folds: list[Path], labels: list[str], work: Path, name: str) -> list[tuple[str, Markup]]:
    """Per-fold table, the held-out confusion matrix summed over folds, and each fold's curves."""
    rows, confusion = [], None
    for f in folds:
        res = Run(f).results
        t = res["test"]
        rows.append({"fold": f.name, "test items": t["item"]["n"], "item accuracy": t["item"]["accuracy"],
                     "item macro-F1": t["item"]["macro_f1"], "item weighted F1": t["item"]["weighted_f1"],
                     "segment accuracy": t["segment"]["accuracy"], "best epoch": res["best_epoch"]})
        m = np.asarray(t["item"]["confusion"])
        confusion = m if confusion is None else confusion + m
    table = pd.DataFrame(rows)
    mean = {"fold": "mean ± std"}
    for c in ("item accuracy", "item macro-F1", "item weighted F1", "segment accuracy"):
        mean[c] = f"{table[c].mean():.3f} ± {table[c].std(ddof=1):.3f}"
    shown = pd.concat([table.astype(object), pd.DataFrame([mean])], ignore_index=True).fillna("")
    path = work / f"confusion-{name}.png"
    plot_confusion(confusion, labels, path, title="held-out folds, items, summed")
    curves = Markup("").join(fragment("<h3>{{ name }}</h3>", name=f.name) + image_tag(f / "curves.png", f"curves {f.name}")
                             for f in folds if (f / "curves.png").exists())
    return [("Held-out folds", fragment("<p>Each fold's test side was never used for its training or early "
                                        "stopping.</p>")
             + table_html(shown) + image_tag(path, "confusion matrix over the held-out folds")),
            ("Training curves", curves)]


def _cv_sections(cv: Path, work: Path) -> tuple[str, list[tuple[str, Markup]], Path, Path | None]:
    summary = read_cv(cv)
    folds = [r.path for r in finished_runs(cv, "fold-*")]
    if not folds:
        raise EmptyInputError(f"no finished folds in {cv}")
    res = Run(folds[0]).results
    sections = [("Cross-validation", fragment("<p>{{ split }}, grouped by <b>{{ column }}</b>; {{ name }}, "
                                              "{{ params }} parameters.</p>", split=summary["split"],
                                              column=res["split_column"], name=res["model"]["name"],
                                              params=f"{res['parameters']:,}"))]
    sections += _folds_sections(folds, res["labels"], work, "cv")
    return f"dancegenre cross-validation {cv.name}", sections, folds[0] / "best.pt", _store_of(folds[0] / "best.pt")


def _experiment_sections(exp: Path, work: Path) -> tuple[str, list[tuple[str, Markup]], Path, Path | None]:
    from dancegenre.research.experiment import display_table, parse_spec, write_tables

    summary = write_tables(exp) if not (exp / "summary.csv").exists() else read_table(exp / "summary.csv", keep_default_na=False)
    meta = json.loads((exp / "experiment.json").read_text())
    spec = parse_spec(meta["spec"], where=str(exp / "experiment.json"))
    varied = [k for k in spec.varied if k in summary.columns] or ["model"]
    summary["best"] = summary["best"].astype(str).str.lower() == "true"
    plots = [exp / "configurations.png"] + [exp / f"factor-{f}.png" for f in spec.factors]
    images = Markup("").join(image_tag(p, p.stem) for p in plots if p.exists())
    best = summary[summary["best"]]
    if not len(best):
        raise StoreError(f"no configuration of {exp} has finished all its runs yet")
    b = best.iloc[0]
    folds = [r.path for r in finished_runs(exp / "runs" / b["config"], "seed-*/fold-*")]
    labels = Run(folds[0]).labels
    sections = [("Configurations", fragment("<p>{{ folds }}-fold grouped cross-validation, seeds {{ seeds }}; held-out "
                                            "columns are on the held-out folds; ★ marks the best complete configuration "
                                            "by mean validation item accuracy.</p>", folds=spec.folds,
                                            seeds=str(list(spec.seeds)))
                 + table_html(display_table(summary, varied)) + images)]
    sections += [(f"Best configuration ({b['name']}): {h}", c) for h, c in _folds_sections(folds, labels, work, "best")]
    sections.append(("Spec", fragment("<pre>{{ text }}</pre>", text=spec.text)))
    return f"dancegenre experiment: {spec.name}", sections, folds[0] / "best.pt", Path(meta["store"])


def _verdict_sections(table: pd.DataFrame, labels: list[str], work: Path, name: str, split: str) -> Markup:
    """Metrics, per-genre table and confusion matrix of held-out verdicts (``cv-items.csv``:
    label and one ``p_<genre>`` column a genre)."""
    from dancegenre.training.scoring import classification_metrics

    known = table[table["label"].isin(labels)]
    probs = known[[f"p_{g}" for g in labels]].to_numpy(dtype=float)
    m = classification_metrics(known["label"].map(labels.index).to_numpy(), probs, labels)
    metrics = pd.DataFrame([{"items": len(known), "accuracy": m["accuracy"],
                             "balanced accuracy": m["balanced_accuracy"],
                             "macro-F1": m["macro_f1"], "weighted F1": m["weighted_f1"],
                             "ROC-AUC": np.nan if m["roc_auc"] is None else m["roc_auc"]}])
    per_class = pd.DataFrame([{"genre": lab, **v} for lab, v in m["per_class"].items()])
    path = work / f"confusion-{name}.png"
    plot_confusion(np.asarray(m["confusion"]), labels, path, title="held-out verdicts, items")
    return (fragment("<p>{{ split }}.</p>", split=split) + table_html(metrics) + table_html(per_class)
            + image_tag(path, f"confusion matrix, {split}"))


def _ensemble_sections(ens: Path, work: Path) -> tuple[str, list[tuple[str, Markup]], Path, Path | None]:
    """The members, the held-out verdicts averaged over them (where the members are
    cross-validations of the same items), the same among ``--only`` genres, and the
    figure for each number of members."""
    from dancegenre.training.ensemble import BY_SIZE, CV_ITEMS_ONLY, SUMMARY
    from dancegenre.training.runs import CV_ITEMS

    summary = json.loads((ens / SUMMARY).read_text())
    labels = list(summary["labels"])
    sources = pd.DataFrame({"source": summary["sources"]})
    sections = [("Ensemble", fragment("<p>{{ members }} {{ model }} models averaged (their probabilities' mean), "
                                      "from {{ n }} source(s); genres: {{ labels }}.</p>", members=summary["members"],
                                      model=summary["model"], n=len(sources), labels=", ".join(labels))
                 + table_html(sources))]
    held = summary.get("held_out")
    if held and (ens / CV_ITEMS).exists():
        sections.append(("Held-out verdicts", _verdict_sections(read_table(ens / CV_ITEMS), labels, work, "all",
                                                                held["split"])))
    else:
        sections.append(("Held-out verdicts", fragment(
            "<p>No held-out figure: {{ why }}</p>",
            why=summary.get("note") or "its members are not cross-validations of the same items, so no item "
                                       "was held out of all of them.")))
    only = summary.get("held_out_only")
    if only and (ens / CV_ITEMS_ONLY).exists():
        genres = list(only["genres"])
        sections.append((f"Held-out verdicts among {len(genres)} of the genres",
                         _verdict_sections(read_table(ens / CV_ITEMS_ONLY), genres, work, "only",
                                           f"the same verdicts among {', '.join(genres)} only (their probabilities "
                                           f"rescaled to sum to 1), on the items of those genres")))
    if (ens / BY_SIZE).exists():
        sections.append(("By the number of sources averaged", fragment(
            "<p>The held-out figures of every choice of N of the sources averaged: what each added source "
            "brings.</p>") + table_html(read_table(ens / BY_SIZE), floats="{:.4f}")))
    # the store the members trained on, for the data section: the ensemble's own checkpoint
    # names none, its first member's does (a run, or a cross-validation's first fold)
    first = Path(summary["sources"][0])
    member = next((c for c in (first, first / "best.pt", first / "fold-0" / "best.pt") if c.is_file()), None)
    store = _store_of(ens / "best.pt") or (_store_of(member) if member is not None else None)
    return f"dancegenre ensemble {ens.name}", sections, ens / "best.pt", store
