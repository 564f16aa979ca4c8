"""fit(store) -> run folder with checkpoints, per-epoch metrics, curves and test results.

A plain PyTorch loop (AdamW, early stopping on validation loss, best-checkpoint
selection, optional class weights and augmentation), data-parallel through
``torch.distributed`` when started by ``torchrun``.  A run folder holds::

    best.pt        the checkpoint of the epoch with the lowest validation loss
    best.onnx      the same network as ONNX with its labels (``training.export``): predict
                   runs it without torch
    last.pt        the latest epoch plus optimizer state: ``resume=True`` continues it
    metrics.csv    one row an epoch (loss and accuracy; validation also per item)
    curves.png     loss and accuracy curves
    split.csv      every item's side (train / val / test) and group
    results.json   the test split's segment- and item-level metrics
    test-items.csv the test split's verdicts: item, label, predicted, p_<genre>...
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from dancegenre.config import FeatureConfig, ModelConfig, TrainConfig, given
from dancegenre.data.splits import grouped_split, resolve_split_column
from dancegenre.data.store import SegmentStore, batches
from dancegenre.device import resolve_device
from dancegenre.errors import (
    CheckpointError,
    ConfigError,
    EmptyInputError,
    Interrupted,
    StoreError,
    first_line,
)
from dancegenre.models.base import Network
from dancegenre.models.embedding import compute_features, store_features
from dancegenre.models.musicnn import PRETRAINED
from dancegenre.models.pretrained import load_backbone_state
from dancegenre.models.registry import (
    MODELS,
    build_model,
    count_parameters,
    model_config,
)
from dancegenre.safety import claim_folder, releasing, save_figure, write_table
from dancegenre.training.backbone import onnx_stage
from dancegenre.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from dancegenre.training.export import try_export
from dancegenre.training.runs import (
    CV_EXTRA,
    CV_FILES,
    RUN_EXTRA,
    RUN_FILES,
    SPLIT,
    Run,
    gather_test_items,
    is_finished,
    write_cv,
    write_history,
    write_results,
    write_test_items,
)
from dancegenre.training.scoring import evaluate_rows

RAM_BUDGET_BYTES = 2 << 30  # load the training segments into memory below this size


@dataclass
class TrainResult:
    """What ``fit`` returns: where the run is and how it did."""

    run_dir: Path
    checkpoint: Path
    best_epoch: int
    epochs_run: int
    split_column: str
    test: dict[str, Any]  # {"segment": metrics, "item": metrics}, empty without a test side
    history: pd.DataFrame
    seconds: float
    parameters: int
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)  # the chosen epoch's, like ``test``


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _device(name: str, rank: int) -> torch.device:
    name = resolve_device(name)
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    return torch.device(name)


def band_statistics(segments: np.ndarray, rows: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of every mel band over the given segments: two (n_mels,) float32."""
    total = np.zeros(segments.shape[1]); sq = np.zeros(segments.shape[1]); n = 0
    for x in batches(segments, rows, chunk):
        x = x.astype(np.float64)
        total += x.sum(axis=(0, 2)); sq += (x**2).sum(axis=(0, 2)); n += x.shape[0] * x.shape[2]
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean**2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


def augment_batch(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, fill: torch.Tensor,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Training-only augmentation on a (B, n_mels, T) batch.

    Random circular time shift, SpecAugment time and frequency masks (filled with each
    band's training mean), and mixup.  Returns (x, y_a, y_b, lam): the loss is
    ``lam * CE(y_a) + (1 - lam) * CE(y_b)``.
    """
    b, m, t = x.shape
    shifts = torch.randint(0, t, (b,), generator=gen)
    idx = (torch.arange(t)[None, :] + shifts[:, None]) % t
    x = torch.gather(x, 2, idx[:, None, :].expand(b, m, t).to(x.device))
    x = x.clone()
    for _ in range(cfg.time_masks):
        w = torch.randint(0, cfg.mask_width + 1, (b,), generator=gen)
        s = (torch.rand(b, generator=gen) * (t - w)).long()
        mask = (torch.arange(t)[None, :] >= s[:, None]) & (torch.arange(t)[None, :] < (s + w)[:, None])
        x = torch.where(mask[:, None, :].to(x.device), fill[None, :, None], x)
    for _ in range(cfg.freq_masks):
        w = torch.randint(0, cfg.mask_width + 1, (b,), generator=gen)
        s = (torch.rand(b, generator=gen) * (m - w)).long()
        mask = (torch.arange(m)[None, :] >= s[:, None]) & (torch.arange(m)[None, :] < (s + w)[:, None])
        x = torch.where(mask[:, :, None].to(x.device), fill[None, :, None], x)
    return mixup(x, y, cfg.mixup_for(cached_maps=False), gen)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each example with another of the batch: (x, y_a, y_b, lam); alpha 0 mixes nothing."""
    if alpha <= 0:
        return x, y, y, 1.0
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


class StageHead(nn.Module):
    """A network seen from its cached stage: ``forward(h) = net.from_stage(h)``.

    What trains and scores when the first part of the network is frozen
    (``net.cached_stage``): the head alone on cached features, or the mid and back ends
    of musicnn on its cached front end."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.config = net.config

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net.from_stage(h)


def time_crop(x: torch.Tensor, gen: torch.Generator, shortest: float = 0.65) -> torch.Tensor:
    """A random stretch of (B, C, T) framewise maps, the same for the batch: between
    ``shortest`` of T and all of it (the augmentation of a cached front end, whose
    later blocks pool over time)."""
    t = x.shape[-1]
    length = int(torch.randint(max(1, int(shortest * t)), t + 1, (1,), generator=gen))
    start = int(torch.randint(0, t - length + 1, (1,), generator=gen))
    return x[..., start : start + length]


def _plot_curves(history: pd.DataFrame, path: Path) -> None:
    from dancegenre.present.figures import pyplot, set_title, subplots

    plt = pyplot()

    fig, (ax1, ax2) = subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(history["epoch"], history["train_loss"], label="train")
    ax1.plot(history["epoch"], history["val_loss"], label="validation")
    ax1.set_xlabel("epoch"); ax1.set_ylabel("cross-entropy"); set_title(ax1, "loss"); ax1.legend()
    ax2.plot(history["epoch"], history["train_acc"], label="train (segments)")
    ax2.plot(history["epoch"], history["val_acc"], label="validation (segments)")
    ax2.plot(history["epoch"], history["val_item_acc"], label="validation (items)", linestyle="--")
    ax2.set_xlabel("epoch"); ax2.set_ylabel("accuracy"); set_title(ax2, "accuracy"); ax2.legend()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


@releasing
def fit(
    store_path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    model: str = "cnn1d",
    model_options: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Any = print,
) -> TrainResult:
    """Train a model from the registry on a prepared store.

    Parameters
    ----------
    store_path : a folder written by ``prepare``.
    out : the run folder (created).  It must be new unless ``resume``.
    model : registry name (cnn1d, crnn, cnn2d).
    model_options : ModelConfig overrides (filters, pooling, activation, dropout ...).
    config : training settings; the defaults train the study's network.
    resume : continue the interrupted run in ``out`` from its last epoch.

    Raises
    ------
    StoreError, EmptyInputError, ConfigError, CheckpointError
    """
    t0 = time.perf_counter()
    config = given(config, TrainConfig)
    rank, world = _distributed()
    device = _device(config.device, rank)
    say = log if rank == 0 else (lambda *a, **k: None)
    store = SegmentStore(store_path)
    if len(store) == 0:
        raise EmptyInputError(f"store {store_path} holds no segments")
    if len(store.labels) < 2:
        raise EmptyInputError(f"one genre only ({', '.join(store.labels)}) in {store_path}: "
                              "a classifier needs at least two")
    out = Path(out)
    last_path = out / "last.pt"
    previous, config, model_cfg = _start(store, store_path, out, model, model_options, config, resume)
    torch.manual_seed(config.seed)
    net = build_model(model_cfg)  # a bad model setting is refused before the run folder exists
    _check_fits(net, store.config)
    if rank == 0:
        claim_folder(out, "run", legacy=RUN_FILES, legacy_others=RUN_EXTRA, what="run folder")
    labels, items = _select_labels(store, config.labels)
    if model_cfg.n_classes != len(labels):
        raise CheckpointError(f"the run in {out} has {model_cfg.n_classes} classes, the store {len(labels)}")

    # ---- split (by group), stored with the run
    split_col, sides, split, rows = _split(store, items, config, previous)
    say(f"split by {split_col!r}: " + ", ".join(
        f"{s} {len(sides[s])} items / {len(rows[s])} segments" for s in ("train", "val", "test")))
    if rank == 0 and previous is None:
        _write_split_table(out / SPLIT, items, split_col, sides)

    # ---- normalisation, optimiser (the model was built before anything was written)
    label_of = store.index["label"].map({lab: i for i, lab in enumerate(labels)}).fillna(-1).astype(int).to_numpy()
    inputs = _initialise(net, store, rows["train"], previous, device=device, progress=progress and rank == 0, log=say,
                         engine=config.engine)
    scorer: nn.Module = StageHead(net) if net.cached_stage else net
    fill = net.norm.mean.detach().clone()
    opt = torch.optim.AdamW(_param_groups(net, config), lr=config.lr, weight_decay=config.weight_decay)
    averaged = _moving_average(net, config)
    kept = net if averaged is None else averaged.module  # what is validated, saved as best.pt and tested
    kept_scorer: nn.Module = scorer if averaged is None else StageHead(kept) if kept.cached_stage else kept
    criterion = _criterion(label_of[rows["train"]], len(labels), config, device)
    train_model: nn.Module = scorer
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(scorer, device_ids=[device.index] if device.type == "cuda" else None)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

    history: list[dict[str, Any]] = []
    start_epoch, best_loss, best_epoch, bad_epochs = 1, math.inf, 0, 0
    if previous is not None and previous.resume:
        state = previous.resume
        opt.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start_epoch, best_loss = state["epoch"] + 1, state["best_loss"]
        best_epoch, bad_epochs = state["best_epoch"], state["bad_epochs"]
        if averaged is not None:
            if "ema" not in state:
                raise CheckpointError(f"the run in {out} kept no moving average; resume it without --ema")
            averaged.load_state_dict(state["ema"])
        say(f"resuming {out} after epoch {state['epoch']}")

    train_rows = rows["train"]
    in_ram = inputs.nbytes / max(len(store), 1) * len(train_rows) < RAM_BUDGET_BYTES
    source = np.asarray(inputs[np.sort(train_rows)]) if in_ram else inputs
    local_rows = np.searchsorted(np.sort(train_rows), train_rows) if in_ram else train_rows
    row_labels = label_of[train_rows]
    extra_common = {"store": str(Path(store_path).resolve()), "split_column": split_col,
                    "parameters": count_parameters(net), "world_size": world}
    stopped_early = False
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            te = time.perf_counter()
            loss, acc = _train_epoch(train_model, net, opt, criterion, source, local_rows, row_labels, fill,
                                     config, epoch, device=device, rank=rank, world=world,
                                     progress=progress and rank == 0,
                                     after_step=None if averaged is None else lambda: averaged.update_parameters(net))
            val = evaluate_rows(kept_scorer, store, rows["val"], labels, device=device, inputs=inputs)
            row = {"epoch": epoch, "train_loss": loss, "train_acc": acc,
                   "val_loss": val["loss"], "val_acc": val["segment"]["accuracy"],
                   "val_item_acc": val["item"]["accuracy"], "val_item_macro_f1": val["item"]["macro_f1"],
                   "seconds": round(time.perf_counter() - te, 2)}
            history.append(row)
            improved = row["val_loss"] < best_loss - 1e-4
            if improved:
                best_loss, best_epoch, bad_epochs = row["val_loss"], epoch, 0
            else:
                bad_epochs += 1
            say(f"epoch {epoch:3d}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
                f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} item acc {row['val_item_acc']:.3f}"
                f"  {row['seconds']:.1f}s" + ("  *" if improved else ""))
            if rank == 0:
                common = dict(feature_config=store.config, train_config=config, labels=labels, split=split)
                if improved:
                    save_checkpoint(out / "best.pt", kept, **common,
                                    extra={**extra_common, "epoch": epoch, "val": row})
                save_checkpoint(last_path, net, **common, extra={**extra_common, "epoch": epoch},
                                state={"optimizer": opt.state_dict(), "epoch": epoch, "history": history,
                                       "best_loss": best_loss, "best_epoch": best_epoch,
                                       "bad_epochs": bad_epochs,
                                       **({} if averaged is None else {"ema": averaged.state_dict()})})
                write_history(out, pd.DataFrame(history))
            if bad_epochs >= config.patience:
                stopped_early = True
                say(f"early stop: no validation-loss improvement for {config.patience} epochs")
                break
    except KeyboardInterrupt:
        raise Interrupted(f"training interrupted after epoch {epoch}; resume with --resume --out {out}") from None

    if world > 1:
        dist.barrier()
    # ---- the best epoch on the test side
    net.load_state_dict(load_checkpoint(out / "best.pt").model.state_dict())
    held_out: dict[str, dict[str, Any]] = {}  # the chosen weights on the validation and test sides
    for side in ("val", "test"):
        if len(rows[side]):
            res = evaluate_rows(scorer, store, rows[side], labels, device=device, inputs=inputs)
            held_out[side] = {"segment": res["segment"], "item": res["item"], "loss": res["loss"]}
            if side == "test" and rank == 0:
                write_test_items(out, res["item_probs"], items.set_index("item")["label"], labels)
    test = held_out.get("test", {})
    result = TrainResult(run_dir=out, checkpoint=out / "best.pt", best_epoch=best_epoch,
                         epochs_run=int(max((h["epoch"] for h in history), default=0)), split_column=split_col,
                         test=test, history=pd.DataFrame(history), seconds=time.perf_counter() - t0,
                         parameters=count_parameters(net), stopped_early=stopped_early,
                         validation=held_out.get("val", {}))
    if rank == 0:
        _record(result, model_cfg, config, labels, {s: (len(sides[s]), len(rows[s])) for s in sides}, log=say)
        try_export(out / "best.pt", log=say)  # best.onnx: what predict runs without torch
    if world > 1:
        dist.barrier()
    return result


def _train_epoch(train_model: nn.Module, net: Network, opt: torch.optim.Optimizer, criterion: nn.Module,
                 source: np.ndarray, local_rows: np.ndarray, row_labels: np.ndarray, fill: torch.Tensor,
                 config: TrainConfig, epoch: int, *, device: torch.device, rank: int, world: int,
                 progress: bool, after_step: Any = None) -> tuple[float, float]:
    """One pass over this rank's share of the training rows, in the epoch's own order
    (seeded, so a resumed run repeats it); returns (mean loss, accuracy).  ``after_step``
    is called after every optimiser step (the moving average's update)."""
    from tqdm import tqdm

    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout: same on resume
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    perm = torch.randperm(len(local_rows), generator=gen).numpy()
    per_rank = len(perm) // world
    perm = perm[rank * per_rank : (rank + 1) * per_rank]
    train_model.train()
    total, correct, seen = 0.0, 0, 0
    n_batches = math.ceil(len(perm) / config.batch_size)
    bar = tqdm(range(n_batches), desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not progress,
               leave=False)
    for b in bar:
        sel = perm[b * config.batch_size : (b + 1) * config.batch_size]
        if len(sel) < 2:
            continue  # batch norm needs two examples
        x = torch.from_numpy(next(batches(source, local_rows[sel], len(sel)))).to(device)
        y = torch.from_numpy(row_labels[sel]).to(device)
        if config.augment and net.trains_on_features:  # features: mixup is what applies
            x, ya, yb, lam = mixup(x, y, config.mixup_for(cached_maps=False), gen)
        elif config.augment and net.cached_stage:  # framewise maps: a random stretch of time
            x, ya, yb, lam = mixup(time_crop(x, gen), y, config.mixup_for(cached_maps=True), gen)
        elif config.augment:
            x, ya, yb, lam = augment_batch(x, y, config, fill, gen)
        else:
            ya, yb, lam = y, y, 1.0
        logits = train_model(x)
        loss = lam * criterion(logits, ya) + (1 - lam) * criterion(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        total += float(loss.detach()) * len(sel)
        seen += len(sel)
        correct += int((logits.argmax(1) == y).sum())
        bar.set_postfix(loss=f"{total / seen:.3f}")
    bar.close()
    return total / max(seen, 1), correct / max(seen, 1)


def _record(result: TrainResult, model_cfg: ModelConfig, config: TrainConfig, labels: list[str],
            sides: dict[str, tuple[int, int]], log: Any) -> None:
    """``curves.png`` and ``results.json`` of a finished run; the test line on ``log``."""
    _plot_curves(result.history, result.run_dir / "curves.png")
    test = result.test
    write_results(result.run_dir, {
        "split": "test", "split_column": result.split_column, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "stopped_early": result.stopped_early, "model": model_cfg.to_dict(),
        "train_config": config.to_dict(), "labels": labels, "parameters": result.parameters,
        "seconds": round(result.seconds, 1),
        "sides": {s: {"items": items, "segments": segments} for s, (items, segments) in sides.items()},
        "validation": result.validation, "test": test})
    if test:
        log(f"test ({result.split_column}-grouped, {sides['test'][0]} items): item accuracy "
            f"{test['item']['accuracy']:.3f}, macro-F1 {test['item']['macro_f1']:.3f}; "
            f"segment accuracy {test['segment']['accuracy']:.3f}")


def _initialise(net: Network, store: SegmentStore, train_rows: np.ndarray, previous: Checkpoint | None, *,
                device: torch.device, progress: bool, log: Any, engine: str = "auto") -> np.ndarray:
    """Set ``net``'s normalisation from the training side (and a pretrained backbone's
    weights), or a resumed run's weights; move it to ``device``.  Returns what the
    network trains on: the store's segments, or, for a partly frozen backbone, its
    ``cached_stage`` of every segment (computed once per store and cached; with onnxruntime
    on the CPU unless ``engine`` is torch)."""
    if previous is None:
        mean, std = band_statistics(store.segments, train_rows)
        net.norm.set_stats(torch.from_numpy(mean), torch.from_numpy(std))
        if net.config.name in PRETRAINED:
            net.backbone.load_state_dict(load_backbone_state(net.config.name, log=log))
    else:
        net.load_state_dict(previous.model.state_dict())
    net.to(device)
    inputs: np.ndarray = store.segments
    stage_fn = onnx_stage(net, device, log) if net.cached_stage and engine != "torch" else None
    if net.cached_stage:
        inputs = store_features(store, net, device=device, progress=progress, log=log, stage_fn=stage_fn)
    if previous is None and hasattr(net, "feature_norm"):
        rows = np.sort(train_rows)
        if net.cached_stage in (None, "features"):  # the backbone's features: cached per store
            feats = inputs if net.trains_on_features else store_features(store, net, device=device,
                                                                         progress=progress, log=log,
                                                                         stage_fn=stage_fn)
            f = np.asarray(feats[rows])
        else:  # from the cached stage: the rest of the backbone, in eval mode
            was_training = net.training
            net.eval()
            f = compute_features(net.stage_features, inputs, rows, device=device, progress=progress,
                                 desc="feature statistics")
            net.train(was_training)
        net.feature_norm.set_stats(torch.from_numpy(f.mean(0)), torch.from_numpy(f.std(0)))
    return inputs


def _moving_average(net: Network, config: TrainConfig) -> Any:
    """``config.ema > 0``: torch's AveragedModel of ``net``, an exponential moving average
    of its parameters and buffers (batch-norm statistics too) with that decay, started
    from ``net``'s weights.  None without ``ema``."""
    if not config.ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)


def _param_groups(net: Network, config: TrainConfig) -> list[dict[str, Any]]:
    """What AdamW trains: the new layers at ``lr``, and the pretrained blocks that
    ``--finetune`` unfroze at ``backbone_lr`` (a third of ``lr`` unless given)."""
    pretrained = {id(p) for p in getattr(net, "backbone", nn.Module()).parameters()}
    trained = [p for p in net.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trained if id(p) not in pretrained], "lr": config.lr}]
    body = [p for p in trained if id(p) in pretrained]
    if body:
        groups.append({"params": body, "lr": config.backbone_lr or config.lr / 3})
    return groups


def _criterion(train_labels: np.ndarray, n_classes: int, config: TrainConfig, device: torch.device) -> nn.Module:
    """Cross-entropy, weighted by inverse class frequency on the training side if asked,
    with ``label_smoothing`` (a target of 1 - s + s/K for the genre, s/K for the others)."""
    weights = None
    if config.class_weights:
        counts = np.bincount(train_labels, minlength=n_classes).astype(np.float64)
        weights = torch.tensor(counts.sum() / (n_classes * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)


def _check_fits(net: Network, features: FeatureConfig) -> None:
    """One forward pass on two silent segments: a network whose poolings or kernels leave
    nothing of the store's segments is refused in one line, before anything is written.

    Raises ConfigError."""
    x = torch.zeros(2, features.n_mels, features.segment_frames)
    try:
        with torch.no_grad():
            net.eval()(x)
    except RuntimeError as exc:
        raise ConfigError(f"the network does not fit the store's segments ({features.n_mels} bands x "
                          f"{features.segment_frames} frames): {first_line(exc, 160)}; smaller --pool-sizes or "
                          "--kernel-size, or longer segments (prepare --segment-frames)") from None
    finally:
        net.train()


def _start(store: SegmentStore, store_path: str | os.PathLike[str], out: Path, model: str,
           model_options: dict[str, Any] | None, config: TrainConfig, resume: bool,
           ) -> tuple[Checkpoint | None, TrainConfig, ModelConfig]:
    """(the run to resume or None, the training config, the model config): a resumed
    run's own, or new ones; refuses a store with another front end than the run or
    the model needs, and a new run over an old one."""
    if resume:
        last = out / "last.pt"
        if not last.exists():
            raise CheckpointError(f"nothing to resume in {out}: no last.pt")
        previous = load_checkpoint(last)
        if previous.feature_config != store.config:
            raise StoreError(f"{store_path} was prepared with another feature config than the run in {out}")
        config, model_cfg = previous.train_config, previous.model_config
    else:
        if (out / "best.pt").exists() or (out / "last.pt").exists():
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        n_classes = len(config.labels) if config.labels else len(store.labels)
        model_cfg = model_config(model, n_classes=n_classes, n_mels=store.config.n_mels, **(model_options or {}))
        previous = None
    needs = MODELS[model_cfg.name].FRONTEND if model_cfg.name in MODELS else None
    if needs and not store.config.same_frontend(FeatureConfig.preset(needs)):
        raise ConfigError(f"{model_cfg.name} takes the {needs} front end, but {store_path} was prepared with "
                          f"the {store.config.frontend or 'a custom'} one; prepare it again with --frontend {needs}")
    return previous, config, model_cfg


def _split(store: SegmentStore, items: pd.DataFrame, config: TrainConfig, previous: Checkpoint | None,
           ) -> tuple[str, dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """(grouping column, item positions per side, the split as stored in checkpoints,
    segment rows per side): a new grouped split, or the resumed run's own."""
    split_col = resolve_split_column(items, store.group_columns, config.split_by)
    if previous is not None:
        side_of = {item: side for side, ids in previous.split["sides"].items() for item in ids}
        sides = {s: np.flatnonzero(items["item"].map(side_of).to_numpy() == s) for s in ("train", "val", "test")}
    else:
        sides = grouped_split(items, group_column=split_col, val_fraction=config.val_fraction,
                              test_fraction=config.test_fraction, seed=config.seed,
                              folds=config.folds, fold=config.fold)
    split = {"column": split_col, "seed": config.seed, "folds": config.folds, "fold": config.fold,
             "sides": {s: items["item"].iloc[pos].tolist() for s, pos in sides.items()}}
    rows = {s: _rows_of(store, items["item"].iloc[pos]) for s, pos in sides.items()}
    return split_col, sides, split, rows


def _write_split_table(path: Path, items: pd.DataFrame, split_col: str, sides: dict[str, np.ndarray]) -> None:
    """``split.csv``: item, label, group, side: which items trained, validated, tested."""
    table = items[["item", "label"]].copy()
    table["group"] = items[split_col] if split_col != "item" else items["item"]
    table["side"] = ""
    for s, pos in sides.items():
        table.loc[table.index[pos], "side"] = s
    write_table(path, table)


def _select_labels(store: SegmentStore, wanted: tuple[str, ...] | None) -> tuple[list[str], pd.DataFrame]:
    """(label names in class order, items of those labels)."""
    if not wanted:
        return store.labels, store.items
    unknown = sorted(set(wanted) - set(store.labels))
    if unknown:
        raise ConfigError(f"--labels: not in the store: {', '.join(unknown)} (it has {', '.join(store.labels)})")
    labels = sorted(set(wanted))
    if len(labels) < 2:
        raise EmptyInputError("--labels must name at least two genres")
    items = store.items[store.items["label"].isin(labels)].reset_index(drop=True)
    return labels, items


@releasing
def cross_validate(store_path: str | os.PathLike[str], *, out: str | os.PathLike[str], folds: int = 5,
                   model: str = "cnn1d", model_options: dict[str, Any] | None = None,
                   config: TrainConfig | None = None, progress: bool = True, log: Any = print,
                   ensemble: bool = False) -> dict[str, Any]:
    """Grouped k-fold cross-validation: one ``fit`` per fold in ``out/fold-<i>``.

    ``ensemble`` also writes ``out/ensemble.pt``: one checkpoint averaging the folds'
    models (frozen pretrained models only: one backbone, K heads), the model to use on
    new tracks.  It has no held-out side of its own: every item trained some fold.

    Each fold's test side is never seen by its training or early stopping (validation
    is carved from the other folds).  Finished folds are skipped on a rerun.  Writes
    ``out/cv.json`` and ``out/cv.csv``: per-fold and mean/std item- and segment-level
    accuracy and macro-F1 on the held-out folds; and ``out/cv-items.csv``: every item's
    held-out verdict and probabilities (out-of-fold), from the folds' ``test-items.csv``.
    """
    import dataclasses

    config = given(config, TrainConfig)
    if not isinstance(folds, int) or folds < 2:  # before the folder exists (0 is fit's one split, not a CV)
        raise ConfigError(f"cross-validation needs at least 2 folds, not {folds!r}")
    if ensemble:  # refused before any fold trains, not after
        from dancegenre.config import PRETRAINED_NAMES
        from dancegenre.models.registry import build_model, model_config

        if model not in PRETRAINED_NAMES:
            raise ConfigError(f"--ensemble averages pretrained models ({', '.join(PRETRAINED_NAMES)}), not {model}")
        build_model(model_config(model, n_classes=2, n_mels=96, members=folds, **(model_options or {})))
    out = claim_folder(out, "cv", legacy=CV_FILES, legacy_others=CV_EXTRA, what="cross-validation folder")
    rows = []
    for k in range(folds):
        fold_dir = out / f"fold-{k}"
        cfg = dataclasses.replace(config, folds=folds, fold=k)
        if is_finished(fold_dir):
            log(f"fold {k}: done before, reused")
        else:
            log(f"fold {k + 1}/{folds}")
            fit(store_path, out=fold_dir, model=model, model_options=model_options, config=cfg,
                resume=(fold_dir / "last.pt").exists(), progress=progress, log=log)
        r = Run(fold_dir).row()  # validation of the chosen epoch: what to compare configurations by
        rows.append({"fold": k, "items": r["test_items"],
                     **{c: r[c] for c in ("val_item_accuracy", "val_item_macro_f1", "item_accuracy", "item_macro_f1",
                                          "item_weighted_f1", "segment_accuracy", "segment_macro_f1")}})
    summary = write_cv(out, rows, f"{folds}-fold grouped cross-validation (held-out folds)")
    gather_test_items(out, folds)
    if ensemble:
        from dancegenre.models.registry import ensemble_of
        members = [load_checkpoint(out / f"fold-{k}") for k in range(folds)]
        net = ensemble_of([m.model for m in members])
        first = members[0]
        items = sorted({i for m in members for side in m.split["sides"].values() for i in side})
        split = {"column": first.split["column"], "seed": config.seed, "folds": folds, "fold": None,
                 "sides": {"train": items, "val": [], "test": []}}
        save_checkpoint(out / "ensemble.pt", net, feature_config=first.feature_config, train_config=config,
                        labels=first.labels, split=split,
                        extra={"ensemble_of": [str(m.path) for m in members], "cv": {
                            k: v for k, v in summary.items() if k.endswith(("_mean", "_std"))}})
        try_export(out / "ensemble.pt", log=log)
        log(f"ensemble of the {folds} fold models: {out / 'ensemble.pt'} (and ensemble.onnx)")
    log(f"{folds}-fold CV, held-out folds: item accuracy {summary['item_accuracy_mean']:.3f} "
        f"± {summary['item_accuracy_std']:.3f}, macro-F1 {summary['item_macro_f1_mean']:.3f} "
        f"± {summary['item_macro_f1_std']:.3f}")
    return summary


def _rows_of(store: SegmentStore, item_ids: pd.Series) -> np.ndarray:
    """Segment rows of the given items, in store order."""
    wanted = set(item_ids)
    return store.index["row"].to_numpy()[store.index["item"].isin(wanted).to_numpy()]
