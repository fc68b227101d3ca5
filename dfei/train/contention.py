"""Oversubscribed CPUs: how much CPU other processes took while this worker trained.

torch's intra-op pool (OpenMP) splits each operator across its threads and waits for all of them at
the operator's end. When other processes hold the cores those threads need, every operator waits
for a preempted thread's next time slice: with one busy process beside a 2-thread worker on 2
cores, train.py fell from ~45k to 1.1k samples/s (41x), while a 1-thread worker kept 42-45k
(BENCHMARKS.md, "Contention"). Nothing fails and the numbers stay right, so the run says so:
`CpuContention` compares the machine's busy CPU time (/proc/stat) with this process's own
(os.times) over an epoch, on the CPUs this process may run on (a container pinned to some CPUs
sees only those), and names the remedy when the others took more than the CPUs this worker's
threads leave free. A CPU quota without pinning (cgroup cpu.max) is not seen.

Linux only (/proc/stat); elsewhere it reports nothing.
"""
from __future__ import annotations

import os
import time

MARGIN = 0.5  # CPUs of other work tolerated beyond the free ones (Ray's own processes take ~0.1-0.2)


def _busy_cpu_seconds(cpus: set[int]) -> float | None:
    """Seconds the CPUs in `cpus` spent busy since boot (user, nice, system, irq, softirq, steal),
    from /proc/stat's per-CPU lines (in a container pinned to some CPUs, only those), or None."""
    total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
                    continue
                user, nice, system, _idle, _iowait, irq, softirq, steal = ([int(x) for x in fields] + [0] * 8)[:8]
                total += user + nice + system + irq + softirq + steal
    except (OSError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the machine's count where there is none)."""
    return len(_cpu_set())


def _cpu_set() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return set(range(os.cpu_count() or 1))


class CpuContention:
    """Measures, between start() and check(), the CPUs other processes used (busy CPU-seconds of
    the machine minus this process's, per wall second) against the CPUs left free by `threads`
    torch threads. check() returns a warning (str) when others used more than
    usable_cpus() - threads + MARGIN, else None, and restarts the window."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self._cpu_set = _cpu_set()
        self.cpus = len(self._cpu_set)
        self.start()

    def start(self) -> None:
        self._t, self._busy, self._own = time.monotonic(), _busy_cpu_seconds(self._cpu_set), _own_cpu_seconds()

    def others(self) -> float | None:
        """CPUs (average over the window) other processes used on this process's CPUs; None where
        /proc/stat is missing."""
        busy, wall = _busy_cpu_seconds(self._cpu_set), time.monotonic() - self._t
        if busy is None or self._busy is None or wall <= 0:
            return None
        return max(0.0, (busy - self._busy) - (_own_cpu_seconds() - self._own)) / wall

    def check(self, what: str) -> str | None:
        others = self.others()
        self.start()
        free = self.cpus - self.threads
        if others is None or others <= free + MARGIN:
            return None
        return (f"other processes used {others:.1f} of the {self.cpus} CPUs this worker runs on during {what} "
                f"while it runs {self.threads} torch thread(s), leaving it fewer CPUs than threads: each operator "
                "then waits for a preempted thread, which can make training tens of times slower. The results are "
                "unaffected; for speed, stop the other work or give the run fewer threads (--torch-threads 1)")
