"""Fine-tuning musicnn on a CPU: the cached front end against the whole network.

    DANCEGENRE_MUSICNN_WHEEL=... python -m benchmarks.bench_finetune [CLIPS_PER_GENRE] [EPOCHS]

On a musicnn store of synthetic 30-second mp3 clips (10 segments a clip), three
``dancegenre train`` commands, each timed as a user runs it (a fresh process), in the
same run:

- ``--finetune 5``: the baseline, the whole network on every step;
- ``--finetune 4``, cold: the front end's maps computed and cached first, then the mid
  and back ends trained on them;
- ``--finetune 4``, warm: a second run on the same store, the cache reused.

Prints the wall times, the seconds of one epoch (from each run's ``metrics.csv``) and
the ratios; writes bench-out/bench_finetune.json.
"""

from __future__ import annotations

import shutil
import sys

import pandas as pd

from benchmarks.common import (
    BENCH_DIR,
    dancegenre_command,
    mp3_corpus,
    save_result,
    timed_run,
)
from dancegenre.config import FeatureConfig
from dancegenre.data.store import prepare


def main(per_genre: int = 10, epochs: int = 2) -> dict:
    corpus = mp3_corpus(per_genre=per_genre)
    store = BENCH_DIR / f"store-musicnn-{per_genre}"
    if not (store / "store.json").exists():
        prepare(corpus / "catalog.csv", store, config=FeatureConfig.preset("musicnn"), progress=False)
    shutil.rmtree(store / "embeddings", ignore_errors=True)  # the cold run computes the maps
    runs = BENCH_DIR / "finetune-runs"
    shutil.rmtree(runs, ignore_errors=True)
    common = ["--model", "musicnn-msd", "--epochs", str(epochs), "--patience", str(epochs), "--batch-size", "16",
              "--split-by", "item", "-q"]
    result: dict = {"store": str(store), "epochs": epochs}
    for name, finetune in (("whole network (finetune 5)", "5"), ("cached front end, cold (finetune 4)", "4"),
                           ("cached front end, warm (finetune 4)", "4")):
        out = runs / name.split(" (")[0].replace(" ", "-").replace(",", "")
        seconds = timed_run(dancegenre_command("train", str(store), "--out", str(out), "--finetune", finetune,
                                               *common))
        epoch = float(pd.read_csv(out / "metrics.csv")["seconds"].median())
        result[name] = {"command_s": round(seconds, 1), "epoch_s": round(epoch, 2)}
        print(f"{name:40s} command {seconds:6.1f} s   one epoch {epoch:6.2f} s", flush=True)
    base = result["whole network (finetune 5)"]
    cold, warm = result["cached front end, cold (finetune 4)"], result["cached front end, warm (finetune 4)"]
    result["ratios"] = {"command_cold": round(base["command_s"] / cold["command_s"], 2),
                        "command_warm": round(base["command_s"] / warm["command_s"], 2),
                        "epoch": round(base["epoch_s"] / warm["epoch_s"], 1)}
    print(f"the whole network over the cached front end: command {result['ratios']['command_cold']}x (cold), "
          f"{result['ratios']['command_warm']}x (warm); one epoch {result['ratios']['epoch']}x")
    save_result("bench_finetune", result)
    return result


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
