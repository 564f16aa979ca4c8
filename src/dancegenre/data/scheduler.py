"""Where the per-file work of prepare, features and predict runs: local processes or Dask.

``--scheduler`` takes

- ``processes`` (default): a pool of local processes, one per core;
- ``dask-local``: a ``dask.distributed.LocalCluster`` of single-threaded worker processes;
- ``tcp://HOST:PORT`` (or ``tls://``): a running Dask scheduler and its workers.

Every stage submits the same module-level functions the same way, so a cluster run
computes exactly what a local one does.  Tasks are kept in flight a few per worker at
a time, so the client's memory does not grow with the catalog; results come back in
completion order and the stages put them in catalog order.  Dask reschedules the
tasks of a worker that dies on the surviving workers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from dancegenre.errors import ConfigError, Interrupted

IN_FLIGHT_PER_WORKER = 4  # enough to keep a worker busy, few enough to stop quickly


HEAP_TOP_PAD = 64 << 20  # bytes malloc keeps at the heap's top (see keep_heap)
_M_TOP_PAD = -2  # glibc's mallopt parameter number


def keep_heap(pad: int = HEAP_TOP_PAD) -> bool:
    """Let this process keep ``pad`` bytes of freed memory instead of returning it.

    A file's front end allocates and frees blocks of a few MB (decoded samples, the
    resampled signal, STFT chunks).  glibc's malloc hands the top of its heap back to
    the kernel whenever more than twice the last such block lies free there, so the
    next file faults every page in again: 2,500-3,600 page faults and 8 ms of system
    time per 30-s mp3 in ``prepare``, a fifth of its CPU (``bench_prepare``).  A
    64 MB pad (``mallopt(M_TOP_PAD)``, what ``MALLOC_TOP_PAD_`` sets) stops that for
    at most 64 MB more resident memory.  Only glibc has the setting: elsewhere this
    does nothing and returns False.  Forked workers inherit it."""
    import platform

    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_TOP_PAD, ctypes.c_int(pad)))
    except (OSError, AttributeError):
        return False


def worker_init(quiet_stderr: bool = True) -> None:
    """Initialiser of every decoding worker (prepare, features, predict).

    One BLAS/FFT thread per process: the workers already use every core.  The heap
    keeps its freed memory (:func:`keep_heap`; a Dask worker is not forked from the
    command).  libmpg123 prints resync notes for every corrupt mp3 straight to fd 2;
    a worker's failures come back as values, so in a local pool its stderr would only
    garble the progress bar (a Dask worker keeps its log)."""
    import numpy  # noqa: F401 - its BLAS loaded first: threadpoolctl limits only what is loaded
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    keep_heap()
    if quiet_stderr:
        from dancegenre.audio import decode as audio

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        audio._STDERR_QUIET = True
    _exit_with_parent()


def _exit_with_parent(every: float = 0.5) -> None:
    """End this worker when the process that started it is gone (killed with -9, say):
    a worker blocked on its task queue would otherwise live on as an orphan."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def check_scheduler(text: str) -> str:
    """Validate a ``--scheduler`` value; raises ConfigError."""
    if text in LOCAL_SCHEDULERS or text.startswith(("tcp://", "tls://", "inproc://")):
        return text
    raise ConfigError(f"--scheduler {text!r}: use processes, dask-local or the address of a Dask "
                      "scheduler such as tcp://10.0.0.5:8786")


LOCAL_SCHEDULERS = ("processes", "dask-local")  # whose workers are processes on this machine


def check_workers(workers: int | None, scheduler: str = "processes") -> int | None:
    """Validate a number of local processes (``--workers``): 1 to 4 per core here, since
    more only wait their turn, and a typo (an extra digit or three) would start thousands.
    None (all cores) passes, as does any count for a remote cluster's ``scheduler``.
    Raises ConfigError."""
    most = 4 * (os.cpu_count() or 1)
    if scheduler in LOCAL_SCHEDULERS and workers is not None and not 1 <= workers <= most:
        raise ConfigError(f"--workers {workers}: give 1 to {most} local processes (4 per core of this machine)")
    return workers


class Scheduler:
    """A pool that runs ``fn(*args)`` tasks; use :func:`open_scheduler`."""

    workers: int
    description: str

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def first_completed(self, futures: list[Any]) -> set[Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Scheduler:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map_unordered(self, fn: Callable[..., Any], tasks: dict[Any, tuple]) -> Iterator[tuple[Any, Any]]:
        """(key, fn(*args)) for every task, in completion order, a bounded number in flight."""
        queue = list(tasks.items())[::-1]
        running: dict[Any, Any] = {}
        limit = IN_FLIGHT_PER_WORKER * self.workers
        try:
            while queue or running:
                while queue and len(running) < limit:
                    key, args = queue.pop()
                    running[self.submit(fn, *args)] = key
                for fut in self.first_completed(list(running)):
                    yield running.pop(fut), fut.result()
        finally:
            for fut in running:
                fut.cancel()


class ProcessScheduler(Scheduler):
    """The one local process pool (prepare, features, predict, synth, experiment).

    ``start="fork"`` (Linux) starts a worker in milliseconds (spawn re-imports numpy,
    scipy and pandas in each); nothing forked here holds CUDA or threads that fork could
    break.  ``start="spawn"`` gives each worker a fresh interpreter (experiment: every
    training run starts torch afresh with its own thread count)."""

    def __init__(self, workers: int, initializer: Callable[[], None] | None = worker_init,
                 start: str = "fork") -> None:
        self.workers = workers
        self.description = f"{workers} local process(es)"
        ctx = get_context(start if start == "spawn" or sys.platform == "linux" else "spawn")
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.submit(fn, *args)

    def first_completed(self, futures: list[Any]) -> set[Any]:
        return wait(futures, return_when=FIRST_COMPLETED).done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskScheduler(Scheduler):
    def __init__(self, address: str, workers: int | None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("--scheduler dask needs dask.distributed: pip install 'dask[distributed]'") from None
        self._cluster = None
        if address == "dask-local":
            self._cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                         processes=True, dashboard_address=None, host="127.0.0.1")
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(address, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        threads = sum(w["nthreads"] for w in self._client.scheduler_info()["workers"].values())
        if threads == 0:
            self._client.wait_for_workers(1, timeout=60)
            threads = sum(w["nthreads"] for w in self._client.scheduler_info()["workers"].values())
        self.workers = max(1, threads)
        self.description = f"Dask at {self._client.scheduler.address} ({self.workers} worker thread(s))"
        self._client.run(worker_init, False)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        # pure=False: a task is its own work item even if an equal one ran before
        return self._client.submit(fn, *args, pure=False)

    def first_completed(self, futures: list[Any]) -> set[Any]:
        from distributed import wait as dask_wait

        return dask_wait(futures, return_when="FIRST_COMPLETED").done

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def open_scheduler(name: str = "processes", workers: int | None = None) -> Scheduler:
    """A scheduler for ``--scheduler name`` (see the module docstring)."""
    check_scheduler(name)
    check_workers(workers, name)
    if name == "processes":
        return ProcessScheduler(workers or os.cpu_count() or 1)
    return DaskScheduler(name, workers)


def parallel_map(fn: Callable[..., Any], tasks: dict[Any, tuple], *, workers: int | None, progress: bool,
                 desc: str, scheduler: str = "processes", on_result: Callable[[Any, Any], None] | None = None,
                 weight: Callable[[Any], int] | None = None) -> dict[Any, Any]:
    """``{key: fn(*args)}`` for every task, on ``scheduler``, with a progress bar.

    ``fn`` must turn bad input into a value, not an exception.  ``on_result(key,
    value)`` runs here as each task finishes (to save it for a resume).  ``weight(key)``
    is how many files a task holds, for the progress bar.  Ctrl-C raises
    :class:`Interrupted` once the finished results have been handed to ``on_result``.
    """
    from tqdm import tqdm

    check_workers(workers, scheduler)
    results: dict[Any, Any] = {}
    if not tasks:
        return results
    weight = weight or (lambda key: 1)
    bar = tqdm(total=sum(weight(k) for k in tasks), desc=desc, unit="file", disable=not progress)
    try:
        local_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
        if scheduler == "processes" and local_workers == 1:
            from threadpoolctl import threadpool_limits

            # one BLAS thread, as in a worker: a matrix product split over another number
            # of threads can round differently, and --workers must not change the store
            with threadpool_limits(1):
                for key, args in tasks.items():
                    results[key] = value = fn(*args)
                    if on_result:
                        on_result(key, value)
                    bar.update(weight(key))
        else:
            with open_scheduler(scheduler, local_workers if scheduler == "processes" else workers) as pool:
                if scheduler != "processes" and progress:
                    bar.write(f"{desc}: {pool.description}")
                for key, value in pool.map_unordered(fn, tasks):
                    results[key] = value
                    if on_result:
                        on_result(key, value)
                    bar.update(weight(key))
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(f"interrupted after {len(results)} of {len(tasks)} task(s); "
                          "run the same command again to resume") from None
    bar.close()
    return results
