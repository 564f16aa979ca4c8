"""keep_heap: a file's front end stops faulting its memory in again for every file."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from dancegenre.data.scheduler import keep_heap
from tests.conftest import tone, write

# Page faults a file costs once warm: the front end of one 30-s stereo mp3, five times.
FAULTS = """
import resource, sys
from dancegenre.audio.frontend import iter_segments
from dancegenre.config import FeatureConfig
from dancegenre.data.scheduler import keep_heap
if sys.argv[2] == "keep":
    assert keep_heap()
for _ in range(2):
    list(iter_segments(sys.argv[1], FeatureConfig()))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    list(iter_segments(sys.argv[1], FeatureConfig()))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def _faults_per_file(mp3: Path, mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", FAULTS, str(mp3), mode], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_the_front_end_reuses_its_freed_memory(tmp_path):
    mp3 = write(tmp_path / "clip.mp3", tone(30.0, 44100, channels=2, seed=5), 44100, "MP3")
    default, kept = _faults_per_file(mp3, "default"), _faults_per_file(mp3, "keep")
    # glibc's default gives the heap's top back after each block (about 3,600 faults a
    # file here); with the pad the warm front end faults almost nothing in
    assert kept < 50 < default, (kept, default)


def test_keep_heap_says_whether_it_applied():
    applied = keep_heap()
    assert applied == (sys.platform == "linux" and platform.libc_ver()[0] == "glibc")


def test_a_worker_started_before_numpy_still_gets_one_blas_thread():
    """threadpoolctl limits only the libraries loaded when it runs: a worker whose
    interpreter has not imported numpy yet (spawned, or forked before the command's
    imports) must still end up with one BLAS thread, not a spinning pool per worker."""
    code = ("import sys\nfrom dancegenre.data.scheduler import worker_init\n"
            "assert 'numpy' not in sys.modules\nworker_init(False)\n"
            "import numpy  # what the worker's first task then imports\n"
            "from threadpoolctl import threadpool_info\n"
            "print(max(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'))")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "4", "OMP_NUM_THREADS": "4"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
