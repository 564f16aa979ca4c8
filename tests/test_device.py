"""--device: the names a user may write, a CUDA device this machine lacks, and one line
instead of torch's traceback on every command and in the Python API."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dancegenre.cli.parser import main
from dancegenre.config import TrainConfig
from dancegenre.device import resolve_device
from dancegenre.errors import ConfigError

CUDA = torch.cuda.is_available()
# what a user on a laptop copies from a GPU machine's command line, and what torch rejects
ABSENT = f"cuda:{torch.cuda.device_count()}" if CUDA else "cuda"
BAD = ["", "  ", "tpu", "mps", "meta", "gpu", "cpu,cuda", "cuda:x", "cuda:-1", "auto:1", "cuda:0:1"]


@pytest.mark.parametrize("name, want", [("cpu", "cpu"), (" CPU ", "cpu"), ("cpu:0", "cpu"), ("cpu:3", "cpu"),
                                        (torch.device("cpu"), "cpu"), ("auto", "cuda" if CUDA else "cpu")])
def test_names_are_written_the_one_way(name, want):
    assert resolve_device(name) == want


@pytest.mark.parametrize("name", BAD + [None])
def test_other_names_are_refused_with_the_choices(name):
    with pytest.raises(ConfigError, match="choose auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_a_cuda_device_this_machine_lacks_is_refused():
    with pytest.raises(ConfigError, match="asked for, but") as info:
        resolve_device(ABSENT)
    if not CUDA:
        assert "use cpu" in str(info.value)
        with pytest.raises(ConfigError, match="asked for, but"):
            resolve_device("CUDA:0")


def test_the_cpu_needs_no_torch():
    code = ("import sys; from dancegenre.device import resolve_device; "
            "assert resolve_device('cpu') == 'cpu'; print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def _one_line(capsys, *args) -> str:
    code = main([str(a) for a in args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("device", [ABSENT, "tpu", ""])
def test_every_command_says_it_in_one_line(trained_run, corpus_store, corpus, tmp_path, capsys, device):
    clip = next(corpus.rglob("*.flac"))
    out = tmp_path / "out"
    for args in (["predict", "-q", trained_run, clip, "--out", out / "p.csv"],
                 ["evaluate", "-q", trained_run, "--out", out / "evaluation"],
                 ["train", "-q", corpus_store, "--out", out / "run", "--epochs", "1"]):
        line = _one_line(capsys, *args, "--device", device)
        assert f"dancegenre {args[0]}: error:" in line and "device" in line
    assert not out.exists()  # nothing written


def test_the_python_api_raises_config_error(trained_run, corpus_store, tmp_path):
    from dancegenre.inference.classifier import Classifier
    from dancegenre.inference.evaluate import evaluate
    from dancegenre.training.checkpoint import load_checkpoint
    from dancegenre.training.fit import fit

    for call in (lambda: Classifier.load(trained_run, device=ABSENT),
                 lambda: Classifier.load(trained_run, device="tpu", engine="torch"),
                 lambda: load_checkpoint(trained_run, device="gpu"),
                 lambda: evaluate(trained_run, out=tmp_path / "ev", device=ABSENT),
                 lambda: fit(corpus_store, out=tmp_path / "run", config=TrainConfig(epochs=1, device="tpu"),
                             progress=False, log=lambda *a: None)):
        with pytest.raises(ConfigError, match="device"):
            call()
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(CUDA, reason="auto is the GPU here")
def test_auto_on_a_cpu_machine_is_the_cpu_and_its_onnx_export(trained_run, corpus):
    from dancegenre.inference.classifier import Classifier

    clip = next(corpus.rglob("*.flac"))
    auto, cpu = Classifier.load(trained_run, device="auto"), Classifier.load(trained_run)
    assert auto.device == "cpu" and auto.engine == cpu.engine == "onnx"
    assert auto.predict(clip).probabilities == cpu.predict(clip).probabilities
