"""The oversubscription warning: CPU time other processes take while a worker trains."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dfei.train.contention import CpuContention, usable_cpus


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat")
def test_a_busy_process_beside_a_worker_with_every_cpu_is_named():
    probe = CpuContention(threads=usable_cpus())  # threads on every CPU: no CPU is free for others
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(2.0)
        warning = probe.check("the test")
    finally:
        busy.kill()
        busy.wait()
    assert warning is not None and warning.startswith("other processes used ")
    assert f"of the {usable_cpus()} CPUs this worker runs on during the test" in warning and "--torch-threads 1" in warning


def test_sequential_cpu_workers_default_to_one_thread_fused_and_gpu_to_their_cpus():
    """Algorithm 1's small operators gain nothing from intra-op threads, and 2 threads beside a
    busy process ran 41x slower than 1 (BENCHMARKS.md "Contention"): 1 is the sequential default."""
    from dfei.config import TrainConfig
    from dfei.train.driver import default_torch_threads

    assert default_torch_threads(TrainConfig(data="/d"), 2.0) == 1
    assert default_torch_threads(TrainConfig(data="/d", mode="fused"), 2.0) == 2
    assert default_torch_threads(TrainConfig(data="/d", use_gpu=True), 4.0) == 4
    assert default_torch_threads(TrainConfig(data="/d", mode="fused"), 0.5) == 1
