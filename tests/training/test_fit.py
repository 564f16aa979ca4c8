"""Training, resume, determinism, DDP, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dancegenre.config import FeatureConfig, TrainConfig
from dancegenre.data.store import prepare
from dancegenre.errors import CheckpointError, ConfigError, EmptyInputError, StoreError
from dancegenre.training.checkpoint import load_checkpoint
from dancegenre.training.fit import cross_validate, fit
from tests.conftest import tone, write

FAST = dict(epochs=2, batch_size=32, patience=5)


def test_train_one_split_end_to_end(corpus_store, tmp_path):
    result = fit(corpus_store, out=tmp_path / "run", config=TrainConfig(**FAST, val_fraction=0.25, test_fraction=0.25),
                 progress=False, log=lambda *a: None)
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "split.csv", "results.json"):
        assert (run / name).exists(), name
    assert result.split_column == "artist"
    split = pd.read_csv(run / "split.csv")
    assert split.groupby("group")["side"].nunique().max() == 1  # no artist on two sides
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    results = json.loads((run / "results.json").read_text())
    assert results["split"] == "test" and 0 <= results["test"]["item"]["accuracy"] <= 1
    with pytest.raises(ConfigError, match="already holds a run"):
        fit(corpus_store, out=run, config=TrainConfig(**FAST), progress=False, log=lambda *a: None)


def test_deterministic_and_resume(corpus_store, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=32, patience=10, split_by="item", augment=True)
    quiet = dict(progress=False, log=lambda *a: None)
    a = fit(corpus_store, out=tmp_path / "a", config=cfg, **quiet)
    b = fit(corpus_store, out=tmp_path / "b", config=cfg, **quiet)
    assert np.allclose(a.history["train_loss"], b.history["train_loss"], rtol=1e-5)
    # an interrupted run: train 1 epoch, then resume the same run to 3
    import dataclasses

    short = dataclasses.replace(cfg, epochs=1)
    fit(corpus_store, out=tmp_path / "c", config=short, **quiet)
    last = tmp_path / "c" / "last.pt"
    import torch

    payload = torch.load(last, weights_only=True)
    payload["train_config"]["epochs"] = 3  # the full run's setting
    torch.save(payload, last)
    c = fit(corpus_store, out=tmp_path / "c", resume=True, **quiet)
    assert list(c.history["epoch"]) == [1, 2, 3]
    assert np.allclose(c.history["train_loss"], a.history["train_loss"], rtol=1e-4)


def test_moving_average_is_validated_kept_and_resumed(corpus_store, tmp_path):
    """``ema``: training itself is unchanged (the same losses and raw weights as without),
    the average is what validation scores and best.pt holds, and a resumed run carries
    the average on (the same validation losses as the uninterrupted run)."""
    import dataclasses

    import torch

    quiet = dict(progress=False, log=lambda *a: None)
    plain_cfg = TrainConfig(epochs=3, batch_size=32, patience=10, split_by="item", augment=True)
    cfg = dataclasses.replace(plain_cfg, ema=0.9)
    plain = fit(corpus_store, out=tmp_path / "plain", config=plain_cfg, **quiet)
    ema = fit(corpus_store, out=tmp_path / "ema", config=cfg, **quiet)
    assert np.allclose(ema.history["train_loss"], plain.history["train_loss"], rtol=1e-5)
    assert not np.allclose(ema.history["val_loss"], plain.history["val_loss"], rtol=1e-3)

    def weights(path):
        return torch.load(path, weights_only=True)["state_dict"]

    raw, raw_plain = weights(tmp_path / "ema" / "last.pt"), weights(tmp_path / "plain" / "last.pt")
    assert all(torch.allclose(raw[k].float(), raw_plain[k].float(), atol=1e-5) for k in raw)
    # best.pt holds the average: scored again after training (results.json), it gives the
    # averaged validation loss of its epoch, not the raw weights' one
    at_best = ema.history.set_index("epoch").loc[ema.best_epoch, "val_loss"]
    assert ema.validation["loss"] == pytest.approx(at_best, rel=1e-4)
    assert ema.validation["loss"] != pytest.approx(plain.history.set_index("epoch").loc[ema.best_epoch, "val_loss"],
                                                   rel=1e-3)
    fit(corpus_store, out=tmp_path / "c", config=dataclasses.replace(cfg, epochs=1), **quiet)
    last = tmp_path / "c" / "last.pt"
    payload = torch.load(last, weights_only=True)
    payload["train_config"]["epochs"] = 3
    torch.save(payload, last)
    resumed = fit(corpus_store, out=tmp_path / "c", resume=True, **quiet)
    assert np.allclose(resumed.history["val_loss"], ema.history["val_loss"], rtol=1e-4)
    assert json.loads((tmp_path / "ema" / "results.json").read_text())["train_config"]["ema"] == 0.9
    with pytest.raises(ConfigError, match="ema"):
        TrainConfig(ema=1.0)


def test_mixup_defaults_by_input():
    """Mixup at 0.2 on segments and frozen features unless set; off on a cached front end."""
    assert TrainConfig().mixup_for(cached_maps=False) == 0.2 and TrainConfig().mixup_for(cached_maps=True) == 0.0
    assert TrainConfig(mixup_alpha=0.4).mixup_for(cached_maps=True) == 0.4
    assert TrainConfig(mixup_alpha=0.0).mixup_for(cached_maps=False) == 0.0
    with pytest.raises(ConfigError, match="mixup_alpha"):
        TrainConfig(mixup_alpha=-0.1)


@pytest.mark.parametrize("model", ["crnn", "cnn2d"])
def test_other_models_train(corpus_store, tmp_path, model):
    r = fit(corpus_store, out=tmp_path / model, model=model, config=TrainConfig(epochs=1, batch_size=32, split_by="item"),
            progress=False, log=lambda *a: None)
    assert r.epochs_run == 1


def test_cross_validation_folds_hold_out_groups(corpus_store, tmp_path):
    summary = cross_validate(corpus_store, out=tmp_path / "cv", folds=2,
                             config=TrainConfig(epochs=1, batch_size=32, split_by="track_id"),
                             progress=False, log=lambda *a: None)
    assert len(summary["folds"]) == 2
    tests = [set(pd.read_csv(tmp_path / "cv" / f"fold-{k}" / "split.csv").query("side == 'test'")["group"]) for k in range(2)]
    assert not tests[0] & tests[1]
    assert (tmp_path / "cv" / "cv.json").exists()
    # every item's held-out verdict, once: out-of-fold predictions that give cv.json's figures
    oof = pd.read_csv(tmp_path / "cv" / "cv-items.csv", keep_default_na=False)
    items = pd.read_csv(corpus_store / "items.csv")
    assert sorted(oof["item"]) == sorted(items["item"]) and set(oof["fold"]) == {0, 1}
    probs = oof[[c for c in oof.columns if c.startswith("p_")]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (oof["predicted"] == [c[2:] for c in np.array(oof.columns[oof.columns.str.startswith("p_")])[probs.argmax(1)]]).all()
    for fold in summary["folds"]:
        part = oof[oof["fold"] == fold["fold"]]
        assert (part["label"] == part["predicted"]).mean() == pytest.approx(fold["item_accuracy"])
    again = cross_validate(corpus_store, out=tmp_path / "cv", folds=2, config=TrainConfig(epochs=1, split_by="track_id"),
                           progress=False, log=lambda *a: None)
    assert again["item_accuracy_mean"] == summary["item_accuracy_mean"]  # finished folds reused
    with pytest.raises(CheckpointError, match="is a cross-validation, not one model: give one of its fold-N runs"):
        load_checkpoint(tmp_path / "cv")  # given where a model is asked for: said what to give


def test_bad_training_input(tmp_path, corpus_store):
    root = tmp_path / "one"
    for i in range(3):
        write(root / "techno" / f"{i}.wav", tone(4.0, 22050, seed=i), 22050)
    prepare(root, tmp_path / "s1", workers=1, progress=False)
    with pytest.raises(EmptyInputError, match="one genre only"):
        fit(tmp_path / "s1", out=tmp_path / "r1", config=TrainConfig(**FAST), progress=False, log=lambda *a: None)
    with pytest.raises(StoreError, match="not a prepared store"):
        fit(tmp_path, out=tmp_path / "r2", progress=False, log=lambda *a: None)
    with pytest.raises(ConfigError, match="no such column"):
        fit(corpus_store, out=tmp_path / "r3", config=TrainConfig(split_by="album"), progress=False, log=lambda *a: None)
    with pytest.raises(ConfigError, match="not in the store"):
        fit(corpus_store, out=tmp_path / "r4", config=TrainConfig(labels=("techno", "house")), progress=False,
            log=lambda *a: None)


def test_cli_ema_out_of_range_is_one_line(corpus_store, tmp_path):
    before = sorted(p.name for p in corpus_store.iterdir())
    r = subprocess.run([sys.executable, "-m", "dancegenre", "train", str(corpus_store), "--out", str(tmp_path / "r"),
                        "--ema", "1.5"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["dancegenre train: error: ema must be in [0, 1) (0: off)"]
    assert not (tmp_path / "r").exists() and sorted(p.name for p in corpus_store.iterdir()) == before


@pytest.mark.parametrize("extra, message", [
    (["--mixup", "0.4"], "--mixup is part of --augment: add --augment"),
    (["--augment", "--mixup", "-1"], "mixup_alpha must be a finite number >= 0 (0: off)"),
])
def test_cli_mixup_refused_in_one_line(corpus_store, tmp_path, extra, message):
    before = {p.name: p.stat().st_mtime_ns for p in corpus_store.iterdir()}
    r = subprocess.run([sys.executable, "-m", "dancegenre", "train", str(corpus_store), "--out", str(tmp_path / "r"),
                        *extra], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"dancegenre train: error: {message}"]
    assert not (tmp_path / "r").exists()
    assert {p.name: p.stat().st_mtime_ns for p in corpus_store.iterdir()} == before


def test_resume_refuses_store_with_other_features(corpus, corpus_store, tmp_path):
    fit(corpus_store, out=tmp_path / "r", config=TrainConfig(epochs=1, split_by="item"), progress=False, log=lambda *a: None)
    prepare(corpus, tmp_path / "s64", config=FeatureConfig(n_mels=64), workers=2, progress=False)
    with pytest.raises(StoreError, match="another feature config"):
        fit(tmp_path / "s64", out=tmp_path / "r", resume=True, progress=False, log=lambda *a: None)


def test_ddp_two_processes_matches_single(corpus_store, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(29500 + os.getpid() % 1000), "-m", "dancegenre", "train", "-q", str(corpus_store),
           "--out", str(tmp_path / "ddp"), "--epochs", "3", "--batch-size", "16", "--split-by", "item"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    single = fit(corpus_store, out=tmp_path / "single", config=TrainConfig(epochs=3, batch_size=32, split_by="item"),
                 progress=False, log=lambda *a: None)
    # same split, same kind of result: both learn the synthetic genres
    assert pd.read_csv(tmp_path / "ddp" / "split.csv").equals(pd.read_csv(tmp_path / "single" / "split.csv"))
    assert ddp["epochs_run"] == 3
    assert ddp["test"]["item"]["accuracy"] >= 0.5 and single.test["item"]["accuracy"] >= 0.5


def test_ensemble_by_size_averages_every_choice_or_a_seeded_sample():
    """``by_size``: for each N, the held-out figure of the average of N verdict tables,
    over every choice of N, or over a fixed-seed sample of distinct choices when there
    are more than ``max_choices``."""
    from dancegenre.training.ensemble import by_size
    from dancegenre.training.runs import averaged_verdicts
    from dancegenre.training.scoring import verdict_metrics

    rng = np.random.default_rng(3)
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, 60)]
    tables = []
    for _ in range(5):
        p = rng.dirichlet(np.ones(3), 60)
        tables.append(pd.DataFrame({"item": [f"i{k}" for k in range(60)], "label": labels,
                                    **{f"p_{g}": p[:, j] for j, g in enumerate("abc")}}))
    full = by_size(tables)
    assert full["sources"].tolist() == [1, 2, 3, 4, 5] and full["choices"].tolist() == [5, 10, 10, 5, 1]
    single = [verdict_metrics(t)["accuracy"] for t in tables]
    assert full["item_accuracy_mean"][0] == pytest.approx(np.mean(single))
    assert full["item_accuracy_min"][0] == min(single) and full["item_accuracy_max"][0] == max(single)
    assert full["item_macro_f1_mean"][4] == pytest.approx(verdict_metrics(averaged_verdicts(tables))["macro_f1"])
    sampled = by_size(tables, max_choices=4)
    assert sampled["choices"].tolist() == [4, 4, 4, 4, 1]
    assert sampled.equals(by_size(tables, max_choices=4))  # the same sample every time
    assert (sampled["item_accuracy_min"] <= sampled["item_accuracy_mean"]).all()
    assert (sampled["item_accuracy_mean"] <= sampled["item_accuracy_max"]).all()
