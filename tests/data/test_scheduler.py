"""--scheduler: the same stores, tables and predictions through Dask as through local processes.

The cluster is real: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, started here as separate processes (each in its own process group, so a
test can kill one whole worker, nanny included, as if its machine went away).
"""

from __future__ import annotations

import filecmp
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from dancegenre.cli.parser import main
from dancegenre.data.store import SegmentStore, prepare
from tests.conftest import tone, write

pytest.importorskip("distributed")
DASK = Path(sys.executable).with_name("dask")
STORE_FILES = ("segments.npy", "index.csv", "items.csv", "failures.csv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(DASK), *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _workers(address: str) -> int:
    from distributed import Client

    with Client(address, timeout=20) as client:
        return len(client.scheduler_info()["workers"])


@pytest.fixture
def cluster(tmp_path):
    """(address, [worker processes]) of a scheduler and two single-threaded workers."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                    tmp_path / "scheduler.log")]
    workers = [_start(["worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                       "--no-dashboard", "--memory-limit", "2GB"], tmp_path / f"worker{i}.log") for i in range(2)]
    procs += workers
    try:
        deadline = time.time() + 90
        while True:
            try:
                if _workers(address) == 2:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("*.log"))
                pytest.fail(f"the Dask cluster did not start:\n{logs}")
            time.sleep(0.5)
        yield address, workers
    finally:
        for p in procs:
            _stop(p)


@pytest.fixture(scope="module")
def local_store(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "store"
    prepare(corpus / "catalog.csv", out, workers=2, progress=False)
    return out


def _same_store(a: Path, b: Path) -> None:
    for name in STORE_FILES:
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    assert not (b / "pending").exists()


def test_prepare_on_a_cluster_equals_the_local_store(cluster, corpus, local_store, tmp_path):
    address, _ = cluster
    out = tmp_path / "store"
    assert main(["prepare", "-q", "--scheduler", address, "--shard-items", "3", str(corpus / "catalog.csv"),
                 str(out)]) == 0
    _same_store(local_store, out)
    # features and predict through the same cluster give the local results
    assert main(["features", "-q", "--scheduler", address, str(corpus / "catalog.csv"), "--out",
                 str(tmp_path / "f-dask.csv")]) == 0
    assert main(["features", "-q", "--workers", "2", str(corpus / "catalog.csv"), "--out",
                 str(tmp_path / "f-local.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "f-dask.csv"), pd.read_csv(tmp_path / "f-local.csv"))


def test_predict_on_a_cluster_equals_local(cluster, corpus, trained_run, tmp_path):
    address, _ = cluster
    files = sorted(corpus.rglob("*.flac"))[:6] + [tmp_path / "bad.mp3"]
    (tmp_path / "bad.mp3").write_bytes(b"nope" * 100)
    args = ["predict", "-q", str(trained_run), *map(str, files)]
    assert main([*args, "--scheduler", address, "--out", str(tmp_path / "dask.csv")]) == 0
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "local.csv")]) == 0
    dask_table, local_table = pd.read_csv(tmp_path / "dask.csv"), pd.read_csv(tmp_path / "local.csv")
    pd.testing.assert_frame_equal(dask_table, local_table)
    assert dask_table["error"].notna().sum() == 1


def test_a_worker_killed_mid_job_loses_nothing(cluster, corpus, tmp_path):
    """The scheduler hands a lost worker's shards to the survivor; the store is complete
    and has every item once."""
    address, workers = cluster
    source = tmp_path / "audio"
    catalog = pd.read_csv(corpus / "catalog.csv")
    catalog["path"] = [str(corpus / p) for p in catalog["path"]]
    long_rows = []
    for i in range(6):  # long files at the end keep the job running after the kill
        path = write(source / f"long{i}.flac", tone(150.0, 22050, seed=i, freq=200.0 + 40 * i), 22050)
        long_rows.append({"path": str(path), "label": "techno" if i % 2 else "edm", "track_id": f"long{i}"})
    catalog = pd.concat([catalog, pd.DataFrame(long_rows)], ignore_index=True)
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    local = tmp_path / "local"
    prepare(tmp_path / "catalog.csv", local, workers=2, progress=False)

    out = tmp_path / "store"
    errors: list[BaseException] = []

    def job() -> None:
        try:
            prepare(tmp_path / "catalog.csv", out, scheduler=address, shard_items=1, progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.time() + 120
    while len(list((out / "pending").glob("*.json"))) < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert thread.is_alive(), "the job ended before a worker could be killed"
    _stop(workers[0])
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    assert _workers(address) == 1
    _same_store(local, out)
    store = SegmentStore(out)
    assert store.items["item"].is_unique and len(store.items) == len(catalog)
    assert store.items["n_segments"].sum() == len(store.index)


def test_a_killed_client_is_resumed_by_a_rerun(cluster, corpus, local_store, tmp_path):
    address, _ = cluster
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "dancegenre", "prepare", "-q", "--scheduler", address, "--shard-items", "1",
           str(corpus / "catalog.csv"), str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((out / "pending").glob("*.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    done_before = len(list((out / "pending").glob("*.json")))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if not (done_before and "reused" in result.stdout):
        pytest.fail(f"nothing was resumed: {result.stdout}")
    _same_store(local_store, out)


def test_bad_scheduler_is_one_line(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--scheduler", "yarn", str(corpus), str(tmp_path / "s")])
    assert exit_info.value.code == 2
    assert "processes, dask-local" in capsys.readouterr().err
    port = _free_port()  # nothing listens there
    assert main(["prepare", "--scheduler", f"tcp://127.0.0.1:{port}", str(corpus), str(tmp_path / "s")]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
