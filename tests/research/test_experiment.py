"""experiment, explain and report: end to end on the small synthetic store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dancegenre.cli.parser import main
from dancegenre.errors import Interrupted
from dancegenre.research import experiment as experiment_module
from dancegenre.research.experiment import load_spec, run_experiment
from tests.conftest import check_html


def test_two_configurations_two_folds_end_to_end(finished):
    summary = pd.read_csv(finished / "summary.csv")
    assert len(summary) == 2 and set(summary["pooling"]) == {"max", "avg"}
    assert (summary["runs"] == 2).all() and summary["complete"].all()
    assert summary["best"].sum() == 1
    # best first, by validation
    assert summary["val_item_accuracy_mean"].is_monotonic_decreasing
    for col in ("item_accuracy_mean", "item_accuracy_std", "segment_accuracy_mean", "item_macro_f1_mean",
                "segment_macro_f1_std", "seconds_mean", "parameters"):
        assert summary[col].notna().all(), col
    results = pd.read_csv(finished / "results.csv")
    assert len(results) == 4 and set(results["fold"]) == {0, 1}
    assert ((results["item_accuracy"] >= 0) & (results["item_accuracy"] <= 1)).all()
    md = (finished / "summary.md").read_text()
    assert "★" in md and "| avg |" in md.replace("|  avg", "| avg")
    assert (finished / "factor-pooling.png").stat().st_size > 1000
    assert (finished / "configurations.png").exists()
    check_html(finished / "summary.html")


def test_folds_never_share_a_track(finished, corpus_store):
    from dancegenre.data.store import SegmentStore

    store = SegmentStore(corpus_store)
    track_of = dict(zip(store.items["item"], store.items["track_id"]))
    for config in (finished / "runs").iterdir():
        tests = []
        for k in range(2):
            split = pd.read_csv(config / "seed-0" / f"fold-{k}" / "split.csv")
            sides = split.groupby("side")["item"].apply(lambda s: {track_of[i] for i in s})
            assert not sides["train"] & sides["test"] and not sides["val"] & sides["test"]
            assert not sides["train"] & sides["val"]
            tests.append(sides["test"])
        assert not tests[0] & tests[1]
        assert tests[0] | tests[1] == set(store.items["track_id"])


def test_interrupted_experiment_resumes_and_skips_finished_runs(spec, corpus_store, tmp_path, monkeypatch):
    real = experiment_module.train_one
    calls: list[str] = []

    def stop_after_one(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(experiment_module, "train_one", stop_after_one)
    out = tmp_path / "exp"
    with pytest.raises(Interrupted, match="resume"):
        run_experiment(spec, store=corpus_store, out=out, progress=False, log=lambda *a: None)
    finished = sorted(p.parent for p in (out / "runs").glob("*/seed-*/fold-*/results.json"))
    assert [str(p) for p in finished] == calls
    stamp = (finished[0] / "results.json").stat().st_mtime_ns

    trained: list[str] = []
    monkeypatch.setattr(experiment_module, "train_one", lambda *a: trained.append(a[1]) or real(*a))
    lines: list[str] = []
    summary = run_experiment(spec, store=corpus_store, out=out, progress=False, log=lines.append)
    assert "1 done before" in lines[0]
    assert len(trained) == 3 and calls[0] not in trained
    assert (finished[0] / "results.json").stat().st_mtime_ns == stamp
    assert (summary["runs"] == 2).all()


def test_spec_errors_are_one_line(tmp_path, corpus_store, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[factors]\npoolin = ["max"]\n')
    assert main(["experiment", str(bad), "--store", str(corpus_store), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown setting(s) poolin" in err and "Traceback" not in err
    bad.write_text("folds = 1\n")
    with pytest.raises(Exception, match="folds"):
        load_spec(bad)
    bad.write_text("not toml [")
    assert main(["experiment", str(bad), "--store", str(corpus_store), "--out", str(tmp_path / "o")]) == 2
    bad.write_text('[factors]\npooling = ["sideways"]\n')
    assert main(["experiment", str(bad), "--store", str(corpus_store), "--out", str(tmp_path / "o")]) == 2
    assert "sideways" in capsys.readouterr().err
    for text, words in [('[base]\nepochs = "x"\n', "spec [base] epochs: 'x' is not a whole number"),
                        ('[factors]\nlr = [0.1, "x"]\n', "spec [factors] lr: 'x' is not a number"),
                        ('[base]\naugment = 1\n', "spec [base] augment: 1 is not true or false"),
                        ('[[runs]]\nname = "r"\nfilters = 64\n', "spec [runs.r] filters: 64 is not a list"),
                        ("seeds = [-1]\n", "spec seeds must be a non-empty list of whole numbers from 0 to"),
                        ("folds = 99999999999\n", "spec folds 99999999999: more than the store's 16 items")]:
        bad.write_text(text)  # once: a comparison's TypeError, a run that failed later, a dry run that never ended
        assert main(["experiment", str(bad), "--store", str(corpus_store), "--out", str(tmp_path / "o"),
                     "--dry-run"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"dancegenre experiment: error: {words}"), err
    assert not (tmp_path / "o").exists()
    good = tmp_path / "good.toml"
    good.write_text("folds = 2\n[base]\nepochs = 20.0\n")  # a whole number written as a float is one
    assert load_spec(good).base["epochs"] == 20.0


def test_one_at_a_time_dedupes_equal_configurations(tmp_path, corpus_store):
    path = tmp_path / "s.toml"
    path.write_text('mode = "one-at-a-time"\nfolds = 2\n[base]\npooling = "max"\n'
                    '[factors]\npooling = ["max", "avg"]\ndropout = [0.5]\n')
    configs = run_experiment(path, store=corpus_store, out=tmp_path / "o", dry_run=True, log=lambda *a: None)
    # pooling=max and dropout=0.5 are the base itself
    assert list(configs["name"]) == ["base", "pooling=avg"]



def test_identity_counts_only_settings_that_change_the_run():
    from dancegenre.research.experiment import Configuration

    def cid(**settings):
        return Configuration("c", settings).identity(5, 96)

    base = cid()
    # defaults spelled out, whole numbers as floats, augmentation's settings without augment
    assert cid(dropout=0.5, lr=0.001, ema=0.0, epochs=30.0, mixup_alpha=0.4, time_masks=5) == base
    assert cid(epochs=20) == cid(epochs=20.0) != base
    assert cid(augment=True) != base and cid(augment=True, time_masks=5) != cid(augment=True)
    # mixup counts by the strength that applies: 0.2 is the default on segments ...
    assert cid(augment=True, mixup_alpha=0.2) == cid(augment=True) != cid(augment=True, mixup_alpha=0.4)
    # ... and off on musicnn's cached front end, where 0.2 is a change
    ft = {"model": "musicnn-msd", "finetune": 4, "augment": True}
    assert cid(**ft, mixup_alpha=0.0) == cid(**ft) != cid(**ft, mixup_alpha=0.2)
    assert cid(**{**ft, "finetune": 0}, mixup_alpha=0.2) == cid(**{**ft, "finetune": 0})
    assert cid(model="musicnn-msd") != base and cid(rnn="lstm") == base  # rnn means nothing to cnn1d


def test_runs_filed_under_an_earlier_id_are_adopted(finished, corpus_store, spec, tmp_path, monkeypatch):
    """An earlier release hashed every setting, so a setting added since gave every
    configuration a new id: its runs are found by the settings they recorded and renamed."""
    import shutil

    out = tmp_path / "exp"
    shutil.copytree(finished, out)
    ids = sorted(p.name for p in (out / "runs").iterdir())
    (out / "runs" / ids[0]).rename(out / "runs" / "0123456789")  # as an earlier release named it
    (out / "runs" / "stray").mkdir()  # a folder no configuration claims: left alone
    for name, file, data in (("broken", "results.json", b"{not json"), ("garbage", "last.pt", b"\x00junk")):
        bad = out / "runs" / name / "seed-0" / "fold-0"  # unreadable records: left alone, no traceback
        bad.mkdir(parents=True)
        (bad / file).write_bytes(data)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("results.json") if "broken" not in p.parts}

    lines: list[str] = []
    run_experiment(spec, store=corpus_store, out=out, dry_run=True, log=lines.append)
    assert "4 done before" in lines[0] and (out / "runs" / "0123456789").is_dir()  # a dry run renames nothing

    monkeypatch.setattr(experiment_module, "train_one", lambda *a: pytest.fail(f"retrained {a[1]}"))
    lines.clear()
    summary = run_experiment(spec, store=corpus_store, out=out, progress=False, log=lines.append)
    assert any(f"runs/0123456789 -> runs/{ids[0]}" in line for line in lines)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted([*ids, "stray", "broken", "garbage"])
    assert (out / "runs/broken/seed-0/fold-0/results.json").read_bytes() == b"{not json"
    assert (out / "runs/garbage/seed-0/fold-0/last.pt").read_bytes() == b"\x00junk"
    assert (summary["runs"] == 2).all() and summary["complete"].all()
    after = sorted(p.stat().st_mtime_ns for p in (out / "runs").rglob("results.json") if "broken" not in p.parts)
    assert after == sorted(stamps.values())  # every finished run kept as it was


# ------------------------------------------------------------------ explain


def test_seeds_averaged_is_an_honest_ensemble(corpus_store, tmp_path, finished):
    """With two seeds, each item's held-out probabilities are averaged over the seeds'
    fold models, none of which saw its track; one seed gives no such column."""
    assert pd.read_csv(finished / "summary.csv")["seed_ensemble_item_accuracy"].isna().all()
    spec = tmp_path / "seeds.toml"
    spec.write_text('name = "seeds"\nfolds = 2\nseeds = [0, 1]\nmode = "grid"\n[base]\nepochs = 1\n'
                    'batch_size = 32\nfilters = [8, 8, 8]\ndense = 16\nsplit_by = "track_id"\n')
    out = tmp_path / "exp"
    assert main(["experiment", "-q", str(spec), "--store", str(corpus_store), "--out", str(out), "--jobs", "2"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    runs = {s: pd.concat([pd.read_csv(f, keep_default_na=False)
                          for f in sorted((out / "runs").glob(f"*/seed-{s}/fold-*/test-items.csv"))]).set_index("item")
            for s in (0, 1)}
    for s in (0, 1):  # the two seeds split the tracks differently, and each covers every item once
        split = pd.concat([pd.read_csv(f) for f in (out / "runs").glob(f"*/seed-{s}/fold-*/split.csv")])
        assert sorted(runs[s].index) == sorted(pd.read_csv(corpus_store / "items.csv")["item"])
        for run in (out / "runs").glob(f"*/seed-{s}/fold-*"):
            test = set(pd.read_csv(run / "split.csv").query("side == 'test'")["group"])
            train = set(pd.read_csv(run / "split.csv").query("side != 'test'")["group"])
            assert not test & train
        assert len(split) == 2 * len(runs[s])
    cols = [c for c in runs[0].columns if c.startswith("p_")]
    mean = (runs[0][cols] + runs[1].loc[runs[0].index, cols]) / 2
    predicted = np.array([c[2:] for c in cols])[mean.to_numpy().argmax(1)]
    assert summary["seed_ensemble_item_accuracy"][0] == pytest.approx((predicted == runs[0]["label"]).mean())
    assert "seeds averaged" in (out / "summary.md").read_text()


# ------------------------------------------------------------------ sizes, writes and folders


@pytest.fixture
def never_expanded(monkeypatch):
    """An experiment that lists its grid fails here at once (it took gigabytes)."""
    from types import SimpleNamespace

    def product(*_):
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr(experiment_module, "itertools", SimpleNamespace(product=product))


def test_a_grid_of_a_hundred_million_points_is_refused_before_it_is_expanded(tmp_path, corpus_store, capsys,
                                                                               never_expanded):
    keys = ("dense", "rnn_hidden", "epochs", "batch_size", "patience", "time_masks", "freq_masks", "mask_width")
    spec = tmp_path / "huge.toml"
    spec.write_text("folds = 2\n[factors]\n" + "".join(f"{k} = {list(range(1, 11))}\n" for k in keys))
    out = tmp_path / "o"
    assert main(["experiment", str(spec), "--store", str(corpus_store), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "100,000,000 configurations" in err[0] and "more than the 10,000" in err[0], err
    assert not out.exists()


def test_too_many_runs_are_refused_before_they_are_listed(tmp_path, corpus_store, capsys):
    spec = tmp_path / "seeds.toml"  # 1,001 configurations x 50 seeds x 2 folds
    spec.write_text(f"folds = 2\nseeds = {list(range(50))}\n[factors]\ndense = {list(range(1, 1002))}\n")
    out = tmp_path / "o"
    assert main(["experiment", str(spec), "--store", str(corpus_store), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "= 100,100 runs, more than the 100,000" in err[0], err
    assert not out.exists()


def test_tables_pages_and_figures_are_written_whole_never_through_a_link(finished, tmp_path):
    """Each output replaces what stands at its name (a planted link included) and never
    writes where a link points; a name a spreadsheet would run is written inert."""
    import shutil

    from dancegenre.research.experiment import write_tables
    from dancegenre.safety import read_table

    out = tmp_path / "exp"
    shutil.copytree(finished, out)
    configs = read_table(out / "configs.csv", keep_default_na=False, dtype={"config": str})
    configs.loc[0, "name"] = "=1+1"
    configs.to_csv(out / "configs.csv", index=False)  # raw, as a spec's run name once was
    names = ("results.csv", "summary.csv", "summary.md", "summary.html", "configurations.png", "factor-pooling.png")
    victims = {}
    for name in names:
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("mine")
        (out / name).unlink()
        (out / name).symlink_to(victims[name])
    write_tables(out)
    assert all(v.read_text() == "mine" for v in victims.values())
    assert all((out / n).is_file() and not (out / n).is_symlink() for n in names)
    assert ",'=1+1," in (out / "summary.csv").read_text()
    assert "=1+1" in set(read_table(out / "summary.csv", keep_default_na=False)["name"])


def _as_before_the_marker(folder):
    for path in folder.rglob(".dancegenre*"):
        path.unlink()


def test_an_experiment_made_before_the_marker_resumes_its_unfinished_run(finished, corpus_store, spec, tmp_path,
                                                                         monkeypatch):
    """Recognised by its complete set of files: the experiment folder, and a run folder
    stopped after its first epoch (train.log, split.csv, checkpoints, metrics)."""
    import shutil

    out = tmp_path / "exp"
    shutil.copytree(finished, out)
    _as_before_the_marker(out)
    run = min((out / "runs").glob("*/seed-0/fold-1"))
    for name in ("results.json", "curves.png", "test-items.csv", "best.onnx"):  # what a run writes at its end
        (run / name).unlink()
    real = experiment_module.train_one
    trained: list[str] = []
    monkeypatch.setattr(experiment_module, "train_one", lambda *a: trained.append(a[1]) or real(*a))
    summary = run_experiment(spec, store=corpus_store, out=out, progress=False, log=lambda *a: None)
    assert trained == [str(run)] and (run / "results.json").exists()
    assert (summary["runs"] == 2).all() and (out / ".dancegenre").exists() and (run / ".dancegenre").exists()


@pytest.mark.parametrize("where", [".", "run"])
def test_a_folder_holding_anything_else_is_not_taken_for_an_experiment(finished, corpus_store, spec, tmp_path, where):
    import shutil

    from dancegenre.errors import OutputError

    out = tmp_path / "exp"
    shutil.copytree(finished, out)
    _as_before_the_marker(out)
    run = min((out / "runs").glob("*/seed-0/fold-1"))
    (run / "results.json").unlink()
    (out if where == "." else run).joinpath("notes.txt").write_text("the user's")
    with pytest.raises(OutputError, match="already holds files that dancegenre did not make"):
        run_experiment(spec, store=corpus_store, out=out, progress=False, log=lambda *a: None)
    assert (out if where == "." else run).joinpath("notes.txt").read_text() == "the user's"
