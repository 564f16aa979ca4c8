"""The demo: synthetic corpus -> prepare -> train -> evaluate -> predict -> HTML report.

Everything runs from a fresh install with no network and no data of one's own; on a
2-core laptop it takes a few minutes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from dancegenre.config import TrainConfig
from dancegenre.data.store import SegmentStore, prepare
from dancegenre.data.synth import check_per_genre, synthesize
from dancegenre.inference.classifier import Classifier, expand_paths, results_table
from dancegenre.inference.evaluate import evaluate
from dancegenre.present.figures import spectrogram_grid, timeline_plot
from dancegenre.present.html import fragment, image_tag, page, table_html
from dancegenre.training.fit import fit
from dancegenre.training.runs import RUN_EXTRA, RUN_FILES
from dancegenre.safety import atomic_write, claim_folder, releasing, remove_ours, write_table


# What a demo folder made before the folder marker holds: all of DEMO_FILES, nothing but
# them and DEMO_EXTRA.
DEMO_FILES = ("report.html", "demo.json", "predictions.csv", "corpus", "heldout", "store", "run")
DEMO_EXTRA = ("spectrograms.png", "timeline.png")


@releasing
def run_demo(out: str | os.PathLike[str] = "demo-out", *, per_genre: int = 40, epochs: int = 15,
             seed: int = 0, heldout_per_genre: int = 3, fmt: str = "mp3", progress: bool = True,
             log=print) -> Path:
    """Run every stage into ``out`` and return the path of ``out/report.html``.

    A rerun reuses the corpus and the store, and trains a fresh run.
    """
    check_per_genre(per_genre)  # a refused count leaves no demo folder behind
    check_per_genre(heldout_per_genre)
    out = claim_folder(out, "demo", legacy=DEMO_FILES, legacy_others=DEMO_EXTRA, what="demo folder")
    t0 = time.perf_counter()
    log(f"1/6 synthesising {per_genre} techno and {per_genre} EDM clips ({fmt}) and "
        f"{heldout_per_genre} held-back clips per genre")
    catalog = synthesize(out / "corpus", per_genre=per_genre, seed=seed, fmt=fmt, progress=progress,
                         artists_per_genre=max(4, per_genre // 5))
    synthesize(out / "heldout", per_genre=heldout_per_genre, seed=seed + 1000, fmt=fmt, progress=progress)
    log("2/6 preparing log-mel segments")
    summary = prepare(catalog, out / "store", progress=progress)
    log("3/6 training cnn1d (split by artist)")
    run = out / "run"
    _remove_run(run)
    result = fit(out / "store", out=run, model="cnn1d", config=TrainConfig(epochs=epochs, patience=4, seed=seed),
                 progress=progress, log=log)
    log("4/6 evaluating on the run's test split")
    ev = evaluate(run)
    log("5/6 predicting the held-back clips")
    clf = Classifier.load(run)
    preds = list(clf.predict_many(expand_paths([out / "heldout"])))
    table = results_table(preds, clf.labels)
    table.insert(1, "true genre", [Path(p).parent.name for p in table["path"]])
    table["path"] = [str(Path(p).relative_to(out)) for p in table["path"]]
    write_table(out / "predictions.csv", table)
    log("6/6 writing the report")
    store = SegmentStore(out / "store")
    spectrogram_grid(store.segments, store.index, store.labels, store.config, out / "spectrograms.png")
    timeline_plot(preds[0].timeline, clf.labels, out / "timeline.png", f"timeline of {table['path'][0]}")
    seconds = time.perf_counter() - t0
    report = out / "report.html"
    atomic_write(report, _report_html(summary, store, result, ev, table, run, out, seconds))
    atomic_write(out / "demo.json", json.dumps({
        "seconds": round(seconds, 1), "test_item_accuracy": ev.item["accuracy"],
        "test_segment_accuracy": ev.segment["accuracy"], "heldout_correct": int((table["genre"] == table["true genre"]).sum()),
        "heldout_total": len(table)}, indent=2))
    log(f"demo finished in {seconds:.0f} s")
    return report


def _remove_run(run: Path) -> None:
    """Remove the files an earlier demo's run wrote, so that this one trains afresh:
    only from folders with our marker (the run, its evaluation), only the names a run
    writes; anything a user put there stays."""
    from dancegenre.inference.evaluate import EVALUATION_FILES

    if run.is_dir():
        for folder in run.glob("evaluation*"):
            remove_ours(folder, EVALUATION_FILES)
        remove_ours(run, (*RUN_FILES, *RUN_EXTRA))


def _report_html(summary, store, result, ev, predictions: pd.DataFrame, run: Path, out: Path, seconds: float) -> str:
    counts = store.items.groupby("label").agg(clips=("item", "count"), artists=("artist", "nunique"),
                                              mean_tempo=("tempo", "mean")).reset_index()
    metrics = pd.DataFrame([
        {"level": "item (one verdict per clip)", "n": ev.item["n"], "accuracy": ev.item["accuracy"],
         "balanced accuracy": ev.item["balanced_accuracy"], "macro-F1": ev.item["macro_f1"],
         "ROC-AUC": ev.item["roc_auc"]},
        {"level": "segment (3 s)", "n": ev.segment["n"], "accuracy": ev.segment["accuracy"],
         "balanced accuracy": ev.segment["balanced_accuracy"], "macro-F1": ev.segment["macro_f1"],
         "ROC-AUC": ev.segment["roc_auc"]},
    ])
    right = int((predictions["genre"] == predictions["true genre"]).sum())
    sections = [
        ("Corpus", fragment("<p>{{ n }} synthetic 30-second clips, {{ segments }} segments of 2.97 s. Tempo ranges "
                            "overlap on purpose (techno 120-135 BPM, EDM 124-132).</p>",
                            n=summary.items - summary.skipped, segments=summary.segments)
                   + table_html(counts, floats="{:.1f}") + image_tag(out / "spectrograms.png", "mel-spectrograms")),
        ("Training", fragment("<p>cnn1d, {{ params }} parameters; split by <b>{{ split }}</b> (no artist on two "
                              "sides); best epoch {{ best }} of {{ epochs }}; {{ seconds }} s on this machine.</p>",
                              params=f"{result.parameters:,}", split=result.split_column, best=result.best_epoch,
                              epochs=result.epochs_run, seconds=f"{result.seconds:.0f}")
                     + image_tag(run / "curves.png", "curves")),
        ("Evaluation", fragment("<p>Scored on {{ split }}.</p>", split=ev.split) + table_html(metrics)
                       + image_tag(ev.out / "confusion.png", "confusion matrix")
                       + image_tag(ev.out / "reliability.png", "reliability")),
        ("Predictions on held-back clips", fragment("<p>{{ right }} of {{ n }} right. These clips come from another "
                                                    "seed: new artists, new tracks.</p>", right=right, n=len(predictions))
                                           + table_html(predictions.drop(columns=["error"]))
                                           + image_tag(out / "timeline.png", "timeline")),
        ("About", fragment("<p class=note>Made by <code>dancegenre demo</code> in {{ seconds }} s. Synthetic audio is "
                           "easier than real music: see the README for results on real hard-techno clips.</p>",
                           seconds=f"{seconds:.0f}")),
    ]
    return page("dancegenre demo: techno vs EDM", sections)
