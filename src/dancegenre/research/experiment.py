"""Experiments: many training configurations, each scored by grouped k-fold cross-validation.

A spec is a TOML file::

    name = "pooling and activation"
    folds = 5                    # grouped k-fold; folds never share a group
    seeds = [0]                  # replicates: each seed gives its own folds and init
    mode = "grid"                # grid: every combination of [factors];
                                 # one-at-a-time: [base], then each factor value alone
    [base]                       # settings every configuration starts from
    model = "cnn1d"
    epochs = 30
    [factors]                    # the values to try
    pooling = ["max", "avg", "meanmaxl2"]
    activation = ["relu", "elu"]
    [[runs]]                     # extra named configurations (optional)
    name = "crnn-lstm"
    model = "crnn"
    rnn = "lstm"

Keys are ``model``, the fields of ``ModelConfig`` (filters, kernel_size, pool_sizes,
pooling, activation, dense, dropout, rnn, rnn_hidden, first_stride) and of
``TrainConfig`` (epochs, batch_size, lr, weight_decay, patience, augment, split_by,
labels, class_weights, mixup_alpha ...).  An experiment folder holds::

    experiment.json   the spec, the store and its feature-config digest
    configs.csv       one row per configuration: its id and every resolved setting
    runs/<config>/seed-<s>/fold-<k>/   one training run each (see dancegenre.train)
    results.csv       one row per finished run: held-out fold and validation metrics
    summary.csv/.md/.html   one row per configuration: mean and std over folds x seeds
    factor-<name>.png one plot per varied factor

A spec gives at most ``MAX_CONFIGURATIONS`` configurations (10,000; a grid's size is the
product of its factors' value counts, counted before the grid is expanded) and at most
``MAX_EXPERIMENT_RUNS`` runs (100,000 configurations x seeds x folds), so that a typo is
refused in a line, before it takes gigabytes (:mod:`dancegenre.config`).

A configuration's identity is a hash of its resolved settings that differ from their
defaults (:func:`settings_identity`), so a rerun (or a spec that gained values) reuses
every finished run and resumes interrupted ones, and so does a later release that adds
settings.  Run folders named by an earlier release's ids are recognised by the settings
their runs recorded and renamed to today's id (:func:`adopt_earlier_runs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dancegenre.config import MAX_CONFIGURATIONS, MAX_EXPERIMENT_RUNS, MAX_SEED, ModelConfig, TrainConfig
from dancegenre.data.scheduler import ProcessScheduler
from dancegenre.data.store import SegmentStore
from dancegenre.errors import ConfigError, Interrupted, StoreError
from dancegenre.models.registry import MODELS, model_config
from dancegenre.safety import atomic_write, claim_folder, read_table, releasing, save_figure, write_table
from dancegenre.training.runs import (
    RUN_EXTRA,
    RUN_FILES,
    SPLIT,
    TEST_ITEMS,
    Run,
    averaged_verdicts,
    is_finished,
)

MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig)) - {"name", "n_classes", "n_mels"}
TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"folds", "fold", "seed", "device"}
KEYS = MODEL_KEYS | TRAIN_KEYS | {"model"}
METRICS = ("item_accuracy", "item_macro_f1", "segment_accuracy", "segment_macro_f1",
           "val_item_accuracy", "val_item_macro_f1")
SELECT_BY = "val_item_accuracy"  # the best configuration is chosen on validation, never on the held-out folds
# An experiment folder made before the folder marker: every one of EXPERIMENT_FILES, and
# nothing but them and EXPERIMENT_EXTRA (fnmatch patterns); no other folder is taken for one.
EXPERIMENT_FILES = ("experiment.json", "configs.csv", "runs")
EXPERIMENT_EXTRA = ("results.csv", "summary.csv", "summary.md", "summary.html", "configurations.png",
                    "factor-*.png")
# A run folder an experiment made before the marker: train_one opened its train.log and
# the run wrote its split.csv before the first epoch; the rest is a run's.  Only a run
# that did not finish is claimed again (a finished one is only read), so its
# results.json cannot be one that must be there.
EXPERIMENT_RUN_FILES = ("train.log", SPLIT)
EXPERIMENT_RUN_EXTRA = (*RUN_FILES, *RUN_EXTRA)


@dataclass(frozen=True)
class Configuration:
    """One point of the experiment: a model and its training settings."""

    name: str  # readable: "base", "pooling=avg", "crnn-lstm", "pooling=avg activation=elu"
    settings: dict[str, Any]  # the spec's keys for this configuration (model plus overrides)

    def resolve(self, n_classes: int, n_mels: int) -> tuple[str, ModelConfig, TrainConfig]:
        """(model name, ModelConfig, TrainConfig) with every default filled in."""
        s = dict(self.settings)
        name = s.pop("model", "cnn1d")
        model_opts = {k: v for k, v in s.items() if k in MODEL_KEYS}
        if name != "crnn":  # recurrent settings mean nothing elsewhere: keep them out of the identity
            model_opts = {k: v for k, v in model_opts.items() if k not in ("rnn", "rnn_hidden")}
        train_opts = {k: v for k, v in s.items() if k in TRAIN_KEYS}
        if isinstance(train_opts.get("labels"), list):
            train_opts["labels"] = tuple(train_opts["labels"])
        if train_opts.get("labels"):
            n_classes = len(train_opts["labels"])
        return name, model_config(name, n_classes=n_classes, n_mels=n_mels, **model_opts), TrainConfig(**train_opts)

    def identity(self, n_classes: int, n_mels: int) -> str:
        """Short hash of the resolved settings: equal settings, equal id, whatever the spelling."""
        _, mcfg, tcfg = self.resolve(n_classes, n_mels)
        return settings_identity(mcfg, tcfg)


def settings_identity(mcfg: ModelConfig, tcfg: TrainConfig) -> str:
    """Short hash of what a model and its training settings change: the model's name and
    shape, and every setting that differs from its default (the registry's defaults for
    that model, TrainConfig's).  A setting added in a later release, at a default that
    keeps the old behaviour, leaves every id, and so every finished run, as it was.
    Settings that do not apply are left out (augmentation's without ``augment``), mixup
    counts by the strength that applies, and 1 and 1.0 are the same number."""
    defaults_m = model_config(mcfg.name, n_classes=mcfg.n_classes, n_mels=mcfg.n_mels).to_dict()
    model = {k: v for k, v in mcfg.to_dict().items()
             if k in ("name", "n_classes", "n_mels") or _number(v) != _number(defaults_m[k])}
    cached_maps = MODELS[mcfg.name].stage_for(mcfg) not in (None, "features")

    def applied(cfg: TrainConfig) -> dict[str, Any]:
        data = {k: v for k, v in cfg.to_dict().items() if k in TRAIN_KEYS}
        if cfg.augment:
            data["mixup_alpha"] = cfg.mixup_for(cached_maps)
        else:
            for k in AUGMENT_KEYS:
                data.pop(k)
        return data

    defaults_t = {**applied(dataclasses.replace(TrainConfig(), augment=tcfg.augment)),
                  "augment": TrainConfig().augment}
    train = {k: v for k, v in applied(tcfg).items() if _number(v) != _number(defaults_t[k])}
    text = json.dumps({"model": _number(model), "train": _number(train)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


AUGMENT_KEYS = ("mixup_alpha", "time_masks", "freq_masks", "mask_width")  # TrainConfig's, used only with augment


def _number(value: Any) -> Any:
    """``value`` with every whole number as a float and tuples as lists (for hashing)."""
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_number(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclass(frozen=True)
class Spec:
    """A parsed experiment spec."""

    name: str
    folds: int
    seeds: tuple[int, ...]
    mode: str
    base: dict[str, Any]
    factors: dict[str, list[Any]]
    runs: tuple[dict[str, Any], ...]
    text: str  # the TOML as written, kept with the results

    @property
    def size(self) -> int:
        """How many configurations :meth:`configurations` lists, counted without listing
        them: a grid's is the product of its factors' value counts."""
        return count_configurations(self.mode, self.factors, self.runs)

    def configurations(self) -> list[Configuration]:
        """Every configuration in a stable order (duplicates are removed later, by identity)."""
        out = [Configuration("base", dict(self.base))] if self.mode == "one-at-a-time" or not self.factors else []
        if self.mode == "grid" and self.factors:
            names = list(self.factors)
            for values in itertools.product(*(self.factors[n] for n in names)):
                change = dict(zip(names, values))
                out.append(Configuration(" ".join(f"{k}={_show(v)}" for k, v in change.items()),
                                         {**self.base, **change}))
        elif self.mode == "one-at-a-time":
            for factor, values in self.factors.items():
                for v in values:
                    out.append(Configuration(f"{factor}={_show(v)}", {**self.base, factor: v}))
        for run in self.runs:
            run = dict(run)
            out.append(Configuration(str(run.pop("name")), {**self.base, **run}))
        return out

    @property
    def varied(self) -> list[str]:
        """The settings that change between configurations: factors first, then named runs' keys."""
        keys = list(self.factors)
        for run in self.runs:
            keys += [k for k in run if k != "name" and k not in keys]
        return keys


def count_configurations(mode: str, factors: dict[str, list[Any]], runs: tuple[dict[str, Any], ...]) -> int:
    """The configurations a spec gives (before duplicates are dropped): in ``grid`` mode
    the product of the factors' value counts (the base alone without factors), in
    ``one-at-a-time`` mode the base and each value; then the named runs."""
    if mode == "grid" and factors:
        points = math.prod(len(values) for values in factors.values())
    else:
        points = 1 + (sum(len(values) for values in factors.values()) if mode == "one-at-a-time" else 0)
    return points + len(runs)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


# what a setting's TOML value must be, by the first type of its dataclass annotation
_KINDS = {"bool": ((bool,), "true or false"), "int": ((int,), "a whole number"), "float": ((int, float), "a number"),
          "str": ((str,), "a string"), "tuple": ((list,), "a list")}
_ANNOTATIONS = {f.name: str(f.type) for c in (ModelConfig, TrainConfig)
                for f in dataclasses.fields(c)} | {"model": "str"}


def _check_keys(where: str, table: dict[str, Any], *, listed: bool = False) -> None:
    """Known settings only, each of its kind (``listed``: a list of such values, a factor)."""
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(f"spec [{where}]: unknown setting(s) {', '.join(unknown)}; "
                          f"known: model, {', '.join(sorted(MODEL_KEYS | TRAIN_KEYS))}")
    for key, value in table.items():
        kinds, words = _KINDS[_ANNOTATIONS[key].split("|")[0].split("[")[0].strip()]
        for v in value if listed and isinstance(value, list) else [value]:
            whole = isinstance(v, float) and v.is_integer() and kinds == (int,)  # 20.0 epochs: 20
            if not (isinstance(v, kinds) or whole) or (isinstance(v, bool) and bool not in kinds):
                raise ConfigError(f"spec [{where}] {key}: {v!r} is not {words}")


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Parse and check a spec file.

    Raises
    ------
    ConfigError : unreadable TOML, unknown keys, an empty factor, too few folds.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the spec {path}: {exc}") from None
    return parse_spec(text, name=path.stem, where=str(path))


def parse_spec(text: str, *, name: str = "experiment", where: str = "spec") -> Spec:
    """Parse spec TOML text (see :func:`load_spec`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"spec {where} is not valid TOML: {exc}") from None
    allowed = {"name", "description", "folds", "seeds", "mode", "base", "factors", "runs"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"spec {where}: unknown top-level key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(allowed))}")
    base = dict(data.get("base", {}))
    factors = dict(data.get("factors", {}))
    runs = tuple(dict(r) for r in data.get("runs", []))
    _check_keys("base", base)
    for factor, values in factors.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"spec [factors] {factor}: give a non-empty list of values")
    _check_keys("factors", factors, listed=True)
    for i, run in enumerate(runs):
        if "name" not in run:
            raise ConfigError(f"spec [[runs]] number {i + 1} has no name")
        _check_keys(f"runs.{run['name']}", {k: v for k, v in run.items() if k != "name"})
    mode = data.get("mode", "grid")
    if mode not in ("grid", "one-at-a-time"):
        raise ConfigError(f"spec mode {mode!r}: choose grid or one-at-a-time")
    size = count_configurations(mode, factors, runs)
    if size > MAX_CONFIGURATIONS:
        raise ConfigError(f"spec {where}: {size:,} configurations (in grid mode, the product of the factors' value "
                          f"counts), more than the {MAX_CONFIGURATIONS:,} an experiment may hold; give fewer values "
                          "or vary the factors one at a time")
    folds = data.get("folds", 5)
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ConfigError("spec folds must be a whole number >= 2")
    seeds = data.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)):
        raise ConfigError(f"spec seeds must be a non-empty list of whole numbers from 0 to {MAX_SEED}")
    return Spec(name=str(data.get("name", name)), folds=folds, seeds=tuple(seeds), mode=mode,
                base=base, factors=factors, runs=runs, text=text)


@dataclass(frozen=True)
class Task:
    """One training run: a configuration on one seed, holding out one fold."""

    config_id: str
    seed: int
    fold: int
    run_dir: Path


def _plan(spec: Spec, store: SegmentStore) -> tuple[pd.DataFrame, dict[str, Configuration]]:
    """(configs table, {config id: configuration}), duplicates by identity dropped."""
    n_classes, n_mels = len(store.labels), store.config.n_mels
    configs: dict[str, Configuration] = {}
    rows = []
    for conf in spec.configurations():
        try:
            cid = conf.identity(n_classes, n_mels)
            model, mcfg, tcfg = conf.resolve(n_classes, n_mels)
        except (ConfigError, TypeError) as exc:  # TypeError: a value of the wrong kind
            raise ConfigError(f"configuration {conf.name!r}: {exc}") from None
        if cid in configs:
            continue
        configs[cid] = conf
        resolved = {**{k: v for k, v in mcfg.to_dict().items() if k not in ("name", "n_classes", "n_mels")},
                    **{k: v for k, v in tcfg.to_dict().items() if k in TRAIN_KEYS}}
        if model != "crnn":
            resolved.update(rnn="-", rnn_hidden="-")
        rows.append({"config": cid, "name": conf.name, "model": model,
                     **{k: _show(v) if isinstance(v, (list, tuple)) else v for k, v in resolved.items()}})
    return pd.DataFrame(rows), configs


def adopt_earlier_runs(out: Path, configs: dict[str, Configuration], *, rename: bool,
                       log: Any = print) -> dict[str, Path]:
    """{config id: its run folder} for configurations whose runs an earlier release filed
    under another id (ids then hashed every setting, so each added setting changed them).
    A folder under ``out/runs`` that no configuration claims is matched by the settings its
    runs recorded (a finished run's ``results.json``, else a stopped one's ``last.pt``) and,
    with ``rename``, renamed to today's id, so its finished runs count and stopped ones resume."""
    runs = out / "runs"
    if not runs.is_dir():
        return {}
    wanted = {cid for cid in configs if not (runs / cid).exists()}
    found: dict[str, Path] = {}
    for folder in sorted(p for p in runs.iterdir() if p.is_dir() and p.name not in configs):
        cid = _recorded_identity(folder)
        if cid not in wanted:
            continue
        wanted.discard(cid)
        if rename:
            folder.rename(runs / cid)
            log(f"runs/{folder.name} -> runs/{cid}: {configs[cid].name!r}, filed under an earlier release's id")
            found[cid] = runs / cid
        else:
            found[cid] = folder
    return found


def _recorded_identity(folder: Path) -> str | None:
    """``settings_identity`` of the settings the runs in ``folder`` recorded, or None."""
    from dancegenre.errors import CheckpointError
    from dancegenre.training.checkpoint import read_payload

    fold_runs = sorted(folder.glob("seed-*/fold-*"))
    try:
        for run in fold_runs:
            if is_finished(run):
                recorded = Run(run).results
                return settings_identity(ModelConfig.from_dict(recorded["model"]),
                                         TrainConfig.from_dict(recorded["train_config"]))
        for run in fold_runs:
            if (run / "last.pt").exists():
                payload = read_payload(run / "last.pt")
                return settings_identity(ModelConfig.from_dict(payload["model_config"]),
                                         TrainConfig.from_dict(payload["train_config"]))
    except (ConfigError, CheckpointError, KeyError, TypeError, ValueError, OSError):
        return None  # not a run this release can read: left where it is
    return None


def claim_experiment(out: str | os.PathLike[str]) -> Path:
    """Claim ``out`` as an experiment folder (:func:`~dancegenre.safety.claim_folder`):
    new, empty, ours by its marker, or made before the marker (every one of
    :data:`EXPERIMENT_FILES`, nothing but them and :data:`EXPERIMENT_EXTRA`)."""
    return claim_folder(out, "experiment", legacy=EXPERIMENT_FILES, legacy_others=EXPERIMENT_EXTRA,
                        what="experiment folder")


def _read_meta(path: Path) -> dict[str, Any]:
    """An experiment folder's ``experiment.json``; StoreError when it is not one."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{path} cannot be read as an experiment's record ({exc}); choose another --out") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{path} is not an experiment's record; choose another --out")
    return meta


@releasing
def run_experiment(spec_path: str | os.PathLike[str], *, store: str | os.PathLike[str],
                   out: str | os.PathLike[str], jobs: int = 1, progress: bool = True,
                   dry_run: bool = False, log: Any = print) -> pd.DataFrame:
    """Run (or resume) every configuration x seed x fold of the spec and write the tables.

    Parameters
    ----------
    spec_path : the TOML spec.
    store : a prepared store; every run trains on it.
    out : the experiment folder.  A rerun skips finished runs and resumes stopped ones.
    jobs : training runs at once (each gets cores / jobs threads).
    dry_run : only list the runs and say which are done.

    Returns the summary table (one row per configuration, best first).

    Raises
    ------
    ConfigError
        A bad spec, or one of more than ``MAX_CONFIGURATIONS`` configurations or
        ``MAX_EXPERIMENT_RUNS`` runs (counted before anything is listed or written).
    StoreError, OutputError, Interrupted (Ctrl-C: finished runs are kept)
    """
    spec = load_spec(spec_path)
    st = SegmentStore(store)
    if spec.folds > len(st.items):  # each fold holds out at least one group of at least one item
        raise ConfigError(f"spec folds {spec.folds}: more than the store's {len(st.items)} items")
    runs = spec.size * len(spec.seeds) * spec.folds  # counted before any run is listed
    if runs > MAX_EXPERIMENT_RUNS:
        raise ConfigError(f"spec {spec.name!r}: {spec.size:,} configurations x {len(spec.seeds):,} seeds x "
                          f"{spec.folds} folds = {runs:,} runs, more than the {MAX_EXPERIMENT_RUNS:,} an experiment "
                          "may hold")
    out = Path(out)
    configs_table, configs = _plan(spec, st)
    if dry_run:
        tasks, done = _tasks(spec, configs, out, adopt_earlier_runs(out, configs, rename=False, log=log), log)
        for cid, conf in configs.items():
            n = sum(1 for t in done if t.config_id == cid)
            log(f"  {cid}  {conf.name:40s} {n}/{len(spec.seeds) * spec.folds} runs done")
        return configs_table
    meta = {"name": spec.name, "spec": spec.text, "store": str(Path(store).resolve()),
            "feature_digest": st.config.digest(), "labels": st.labels}
    claim_experiment(out)
    meta_path = out / "experiment.json"
    if meta_path.exists() and _read_meta(meta_path).get("feature_digest") != meta["feature_digest"]:
        raise StoreError(f"{out} holds an experiment on a store with other features; choose another --out")
    atomic_write(meta_path, json.dumps(meta, indent=2))
    write_table(out / "configs.csv", configs_table)
    tasks, done = _tasks(spec, configs, out, adopt_earlier_runs(out, configs, rename=True, log=log), log)

    todo = [t for t in tasks if t not in done]
    t0 = time.perf_counter()
    try:
        _execute(todo, configs, st, Path(store), spec.folds, jobs=jobs, progress=progress, log=log)
    except KeyboardInterrupt:
        raise Interrupted(f"experiment interrupted; finished runs are kept in {out / 'runs'}; "
                          "run the same command again to resume") from None
    log(f"{len(todo)} run(s) trained in {time.perf_counter() - t0:.0f} s")
    return write_tables(out)


def _tasks(spec: Spec, configs: dict[str, Configuration], out: Path, adopted: dict[str, Path],
           log: Any) -> tuple[list[Task], list[Task]]:
    """(every run of the experiment, those finished), logged in one line."""
    folders = {cid: adopted.get(cid, out / "runs" / cid) for cid in configs}
    tasks = [Task(cid, seed, k, folders[cid] / f"seed-{seed}" / f"fold-{k}")
             for cid in configs for seed in spec.seeds for k in range(spec.folds)]
    done = [t for t in tasks if is_finished(t.run_dir)]
    log(f"experiment {spec.name!r}: {len(configs)} configurations x {len(spec.seeds)} seed(s) x "
        f"{spec.folds} folds = {len(tasks)} runs; {len(done)} done before")
    return tasks, done


def _execute(todo: list[Task], configs: dict[str, Configuration], store: SegmentStore, store_path: Path,
             folds: int, *, jobs: int, progress: bool, log: Any) -> None:
    from tqdm import tqdm

    if not todo:
        return
    jobs = max(1, min(jobs, len(todo)))
    n_classes, n_mels = len(store.labels), store.config.n_mels
    args = []
    for t in todo:
        model, mcfg, tcfg = configs[t.config_id].resolve(n_classes, n_mels)
        options = {k: v for k, v in mcfg.to_dict().items() if k not in ("name", "n_classes", "n_mels")}
        tcfg = dataclasses.replace(tcfg, folds=folds, fold=t.fold, seed=t.seed)
        args.append((str(store_path), str(t.run_dir), model, options, tcfg.to_dict(), max(1, (os.cpu_count() or 1) // jobs)))
    bar = tqdm(total=len(todo), desc="experiment", unit="run", disable=not progress)

    def report(t: Task, summary: dict[str, Any]) -> None:
        line = (f"{configs[t.config_id].name} seed {t.seed} fold {t.fold}: held-out item accuracy "
                f"{summary['item_accuracy']:.3f}, validation {summary['val_item_accuracy']:.3f} "
                f"({summary['seconds']:.0f} s)")
        (bar.write if progress else log)(line)
        bar.update()

    if jobs == 1:
        for t, a in zip(todo, args):
            report(t, train_one(*a))
    else:
        # spawn, not fork: each run starts torch afresh, with its own thread count
        with ProcessScheduler(jobs, initializer=None, start="spawn") as pool:
            for k, summary in pool.map_unordered(train_one, dict(enumerate(args))):
                report(todo[k], summary)
    bar.close()


def train_one(store: str, run_dir: str, model: str, options: dict[str, Any], train_config: dict[str, Any],
              threads: int) -> dict[str, Any]:
    """Train (or resume) one fold quietly, logging to ``run_dir/train.log``; return its row."""
    import torch

    from dancegenre.training.fit import fit

    torch.set_num_threads(threads)

    run = claim_folder(run_dir, "run", legacy=EXPERIMENT_RUN_FILES, legacy_others=EXPERIMENT_RUN_EXTRA,
                       what="run folder")
    # appended to across resumes, so not written whole; never through a link planted in its place
    fd = os.open(run / "train.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with open(fd, "a", encoding="utf-8") as logfile:
        fit(store, out=run, model=model, model_options=options, config=TrainConfig.from_dict(train_config),
            resume=(run / "last.pt").exists(), progress=False, log=lambda *a: print(*a, file=logfile, flush=True))
    return run_row(run)


def run_row(run: Path) -> dict[str, Any]:
    """Metrics of one finished run: held-out fold (test side) and the chosen epoch's validation."""
    return Run(Path(run)).row()


@releasing
def write_tables(out: str | os.PathLike[str]) -> pd.DataFrame:
    """Collect finished runs into results.csv and summary.csv/.md/.html plus factor plots,
    each written whole or not at all, into the experiment folder ``out`` (claimed:
    :func:`claim_experiment`).

    Returns the summary, sorted by mean validation item accuracy (best first).
    """
    out = claim_experiment(out)
    meta = _read_meta(out / "experiment.json")
    spec = parse_spec(meta["spec"], where=str(out / "experiment.json"))
    configs = read_table(out / "configs.csv", keep_default_na=False, dtype={"config": str})
    rows = []
    for cid in configs["config"]:
        for run in sorted((out / "runs" / cid).glob("seed-*/fold-*")):
            if is_finished(run):
                rows.append({"config": cid, "seed": int(run.parent.name[5:]), "fold": int(run.name[5:]), **run_row(run)})
    results = pd.DataFrame(rows)
    if results.empty:
        raise StoreError(f"no finished runs in {out / 'runs'}")
    results = results.merge(configs[["config", "name"]], on="config")
    write_table(out / "results.csv", results)
    meta["split_column"] = ", ".join(sorted(results["split_column"].unique()))
    expected = len(spec.seeds) * spec.folds
    agg: dict[str, Any] = {"runs": ("fold", "size")}
    for m in METRICS:
        agg[f"{m}_mean"] = (m, "mean")
        agg[f"{m}_std"] = (m, "std")
    agg["seconds_mean"] = ("seconds", "mean")
    agg["parameters"] = ("parameters", "first")
    summary = results.groupby("config").agg(**agg).reset_index()
    ensembles = {cid: seed_ensemble(out / "runs" / cid, spec) for cid in summary["config"]}
    for key in ("accuracy", "macro_f1"):
        summary[f"seed_ensemble_item_{key}"] = [ensembles[c][key] if ensembles[c] else np.nan
                                                for c in summary["config"]]
    varied = [k for k in spec.varied if k in configs.columns] or ["model"]
    summary = configs[["config", "name", *varied]].merge(summary, on="config")
    summary = summary.sort_values(f"{SELECT_BY}_mean", ascending=False, kind="stable").reset_index(drop=True)
    summary["complete"] = summary["runs"] == expected
    summary["best"] = False
    complete = summary.index[summary["complete"]]
    if len(complete):
        summary.loc[complete[0], "best"] = True
    write_table(out / "summary.csv", summary)
    plots = plot_factors(results, configs, spec, out)
    atomic_write(out / "summary.md", summary_markdown(summary, spec, meta, varied))
    atomic_write(out / "summary.html", summary_html(summary, spec, meta, varied, plots))
    return summary


def seed_ensemble(config_dir: Path, spec: Spec) -> dict[str, float] | None:
    """Item accuracy and macro-F1 of a configuration's seeds averaged: every item's mean
    held-out probability over the seeds, each from the fold model of that seed that
    never saw its group.  None with one seed, or while a run lacks its test-items.csv."""
    if len(spec.seeds) < 2:
        return None
    tables = []
    for seed in spec.seeds:
        runs = [config_dir / f"seed-{seed}" / f"fold-{k}" / TEST_ITEMS for k in range(spec.folds)]
        if not all(r.exists() for r in runs):
            return None
        tables.append(pd.concat([read_table(r, keep_default_na=False) for r in runs], ignore_index=True))
    from dancegenre.training.scoring import verdict_metrics

    m = verdict_metrics(averaged_verdicts(tables))
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def display_table(summary: pd.DataFrame, varied: list[str]) -> pd.DataFrame:
    """The summary as strings: mean ± std columns, the best row marked."""
    show = pd.DataFrame({"": ["★" if b else "" for b in summary["best"]], "configuration": summary["name"]})
    for k in varied:
        show[k] = summary[k].astype(str)
    names = {"val_item_accuracy": "val item acc", "item_accuracy": "item acc", "item_macro_f1": "item macro-F1",
             "segment_accuracy": "segment acc", "segment_macro_f1": "segment macro-F1"}
    for m, title in names.items():
        show[title] = [_pm(a, b) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_std"])]
    averaged = [pd.to_numeric(summary.get(f"seed_ensemble_item_{k}", pd.Series(np.nan, summary.index)),
                              errors="coerce") for k in ("accuracy", "macro_f1")]
    if averaged[0].notna().any():  # (absent from the summary of an experiment written before it)
        show["seeds averaged: item acc / macro-F1"] = [
            "" if pd.isna(a) else f"{a:.3f} / {f:.3f}" for a, f in zip(*averaged)]
    show["runs"] = summary["runs"]
    show["s/run"] = summary["seconds_mean"].round(0).astype(int)
    show["params"] = summary["parameters"].map("{:,}".format)
    return show


def _caption(spec: Spec, meta: dict[str, Any], results_column: str) -> str:
    return (f"{spec.folds}-fold cross-validation grouped by {results_column}, seeds {list(spec.seeds)}; "
            f"mean ± std over folds x seeds. `item acc`, `item macro-F1` and the segment columns are on the "
            f"held-out folds; ★ marks the best complete configuration by mean validation item accuracy "
            f"(chosen without looking at the held-out folds). With several seeds, `seeds averaged` is an ensemble "
            f"of one model a seed: each item's held-out probabilities averaged over the seeds, every one from "
            f"a model that never saw its group. Store: {meta['store']} ({', '.join(meta['labels'])}).")


def summary_markdown(summary: pd.DataFrame, spec: Spec, meta: dict[str, Any], varied: list[str]) -> str:
    show = display_table(summary, varied)
    head = "| " + " | ".join(show.columns) + " |\n|" + "---|" * len(show.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in show.itertuples(index=False))
    return f"# {spec.name}\n\n{_caption(spec, meta, _split_column(meta))}\n\n{head}{body}"


def _split_column(meta: dict[str, Any]) -> str:
    return meta.get("split_column", "the store's group column")


def summary_html(summary: pd.DataFrame, spec: Spec, meta: dict[str, Any], varied: list[str],
                 plots: dict[str, Path]) -> str:
    from dancegenre.present.html import fragment, image_tag, page, table_html

    sections = [("Configurations", fragment("<p class=note>{{ caption }}</p>",
                                            caption=_caption(spec, meta, _split_column(meta)))
                 + table_html(display_table(summary, varied)))]
    for factor, path in plots.items():
        sections.append((f"Factor: {factor}", image_tag(path, f"held-out item accuracy by {factor}")))
    sections.append(("Spec", fragment("<pre>{{ text }}</pre>", text=spec.text)))
    return page(f"experiment: {spec.name}", sections)


def plot_factors(results: pd.DataFrame, configs: pd.DataFrame, spec: Spec, out: Path) -> dict[str, Path]:
    """One PNG per varied setting: held-out and validation item accuracy of every run, by value.

    In one-at-a-time mode a factor's plot holds the base and the configurations that
    change only that factor; in grid mode all runs, grouped by the factor's value
    (its marginal effect).
    """
    from dancegenre.present.figures import pyplot

    plt = pyplot()

    plots: dict[str, Path] = {}
    names = dict(zip(configs["config"], configs["name"]))
    plots["configuration"] = _plot_values(results.assign(configuration=results["name"]), "configuration",
                                          list(dict.fromkeys(configs["name"])), out / "configurations.png", plt)
    for factor in spec.factors:
        if factor not in configs.columns:
            continue
        if spec.mode == "one-at-a-time" and factor in spec.factors:
            keep = {c for c, n in names.items() if n == "base" or n.startswith(f"{factor}=")}
        else:
            keep = set(names)
        table = results[results["config"].isin(keep)].merge(configs[["config", factor]], on="config")
        values = list(dict.fromkeys(configs.loc[configs["config"].isin(keep), factor].astype(str)))
        if len(values) >= 2:
            plots[factor] = _plot_values(table, factor, values, out / f"factor-{factor}.png", plt)
    return plots


def _plot_values(table: pd.DataFrame, factor: str, values: list[str], path: Path, plt: Any) -> Path:
    """Item accuracy of every run in ``table``, one column of points per value of ``factor``."""
    from dancegenre.present.figures import set_title, subplots

    fig, ax = subplots(figsize=(max(4.0, 1.1 * len(values) + 2), 3.4))
    for i, v in enumerate(values):
        sel = table[table[factor].astype(str) == v]
        jitter = (np.arange(len(sel)) - len(sel) / 2) * 0.02
        ax.scatter(i - 0.12 + jitter, sel["item_accuracy"], s=14, color="C0", alpha=0.6,
                   label="held-out fold" if i == 0 else None)
        ax.scatter(i + 0.12 + jitter, sel["val_item_accuracy"], s=14, color="C1", alpha=0.6, marker="^",
                   label="validation" if i == 0 else None)
        if len(sel):
            ax.errorbar(i - 0.12, sel["item_accuracy"].mean(), yerr=sel["item_accuracy"].std(ddof=1) if len(sel) > 1 else 0,
                        color="k", capsize=4, marker="_", markersize=16)
    ax.set_xticks(range(len(values)), values, rotation=20 if max(map(len, values)) > 8 else 0)
    ax.set_xlabel(factor); ax.set_ylabel("item accuracy")
    set_title(ax, f"{factor}: each point a run (fold x seed); bar: held-out mean ± std", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
