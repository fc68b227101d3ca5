"""Peak memory of a process tree, sampled from /proc, and a command run in its own embedded Ray under it.

`Sampler` polls VmRSS and RssAnon (kB in /proc/<pid>/status; reported here in MB = 2^20 bytes) of a
root process and all its descendants every `interval` seconds and keeps each process's peak, its
kind (driver = the root; raylet, gcs, ray workers, other ray = every other descendant) and what it
was doing (its command line, which Ray rewrites to the running task's name) at its peak. VmRSS
counts the object store's shared pages in every process that maps them; RssAnon is the process's
own memory.

`measure(cmd)` runs a command (a pipelines/*.py CLI) with a private RAY_TMPDIR and no RAY_ADDRESS, so
its `init_ray` starts an embedded Ray of its own and never joins another Ray on the machine, samples
it, echoes its `[convert]`, `[predict]`, `[ray]` and `error` lines, and returns its wall-clock seconds,
the seconds after its "[ray] started" line, and the peaks. Linux only (reads /proc).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

KINDS = ("driver", "raylet", "gcs", "ray workers", "other ray")
ECHO = ("[convert]", "[predict]", "[ray]", "error")


def _children() -> dict[int, list[int]]:
    """Every process's parent id -> its children's ids, from /proc/<pid>/stat."""
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _rss_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) in kB: RssAnon leaves out the object store's shared pages (RssShmem). None
    when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS:", "RssAnon:")))
    except OSError:
        return None
    return int(fields.get("VmRSS", "0 kB").split()[0]), int(fields.get("RssAnon", "0 kB").split()[0])


def _title(pid: int) -> str:
    """The first 80 characters of a process's command line ('' when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:80].strip()
    except OSError:
        return ""


def _kind(pid: int, root: int) -> str | None:
    """The process kind, or None when its command line cannot be read (it is exiting)."""
    if pid == root:
        return "driver"
    cmd = _title(pid)
    if not cmd:
        return None
    if "raylet/raylet" in cmd:
        return "raylet"
    if "gcs_server" in cmd:
        return "gcs"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "ray workers"
    return "other ray"


class Sampler(threading.Thread):
    """Peak VmRSS and RssAnon (kB) of `root` and its descendants, sampled every `interval` seconds
    until `done` is set: per process, and of all of them together (the sum at one sample)."""

    def __init__(self, root: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.interval, self.done = root, interval, threading.Event()
        self.peak_kb: dict[int, int] = {}  # VmRSS
        self.peak_anon_kb: dict[int, int] = {}  # RssAnon
        self.kind: dict[int, str] = {}
        self.title: dict[int, str] = {}  # what the process was doing at its VmRSS peak
        self.by_title: dict[int, dict[str, int]] = {}  # per process: its peak RssAnon under each title
        self.peak_total_kb = 0
        self.peak_total_anon_kb = 0

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        """One pass over the tree: update every process's peaks and the totals'."""
        tree, todo, total, total_anon, seen = _children(), [self.root], 0, 0, set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            todo += tree.get(pid, [])
            kb = _rss_kb(pid)
            if kb is None:
                continue
            rss, anon = kb
            total, total_anon = total + rss, total_anon + anon
            # each time: a forked process changes its name at exec
            self.kind[pid] = _kind(pid, self.root) or self.kind.get(pid, "other ray")
            title = _title(pid)
            per = self.by_title.setdefault(pid, {})
            per[title] = max(per.get(title, 0), anon)
            if rss > self.peak_kb.get(pid, 0):
                self.peak_kb[pid] = rss
                self.title[pid] = title
            self.peak_anon_kb[pid] = max(self.peak_anon_kb.get(pid, 0), anon)
        self.peak_total_kb = max(self.peak_total_kb, total)
        self.peak_total_anon_kb = max(self.peak_total_anon_kb, total_anon)

    def by_kind(self) -> dict[str, dict]:
        """Per kind: processes seen, the largest one's peak VmRSS (MB), the largest peak RssAnon (MB),
        the largest one's title at its peak and its peak RssAnon (MB) under each title it had."""
        out = {}
        for k in KINDS:
            pids = [p for p in self.peak_kb if self.kind.get(p) == k]
            top = max(pids, key=lambda p: self.peak_kb[p], default=None)
            out[k] = {"processes": len(pids), "peak_rss_mb": self.peak_kb[top] / 1024 if pids else 0,
                      "peak_rss_anon_mb": max((self.peak_anon_kb[p] for p in pids), default=0) / 1024,
                      "largest": self.title.get(top, "") if pids else "",
                      "largest_by_task": {t: kb // 1024 for t, kb in self.by_title.get(top, {}).items()}}
        return out

    def peaks(self) -> dict[str, Any]:
        """by_kind, and the peaks (MB) of all processes together (VmRSS, RssAnon) and of the largest one."""
        return {"by_kind": self.by_kind(), "peak_total_mb": self.peak_total_kb / 1024,
                "peak_total_anon_mb": self.peak_total_anon_kb / 1024,
                "peak_process_mb": max(self.peak_kb.values(), default=0) / 1024}


def ray_env() -> tuple[dict[str, str], str]:
    """The environment of a command that must start its own embedded Ray: a private RAY_TMPDIR (short:
    Ray's socket paths are limited; the caller removes it), no RAY_ADDRESS, no usage stats or progress bars."""
    ray_tmp = tempfile.mkdtemp(prefix="rbc-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    return env, ray_tmp


def measure(cmd: list[str], echo: tuple[str, ...] = ECHO, interval: float = 0.2, quiet: bool = False) -> dict[str, Any]:
    """Run `cmd` in its own embedded Ray (ray_env) while a Sampler watches its process tree.

    Lines of its output starting with one of `echo` are printed (indented; not with quiet) and
    returned. Returns seconds (wall clock, start to exit), after_ray_seconds (from its first
    "[ray] started" line to its exit; = seconds when there is none), lines (the echoed lines) and
    Sampler.peaks() (MB). Raises RuntimeError with the last 40 lines of its output when it fails."""
    env, ray_tmp = ray_env()
    t0 = time.time()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        sampler = Sampler(proc.pid, interval)
        sampler.start()
        started, tail, lines = None, [], []
        for line in proc.stdout:
            if line.startswith("[ray] started") and started is None:
                started = time.time()
            if line.startswith(echo):
                lines.append(line.rstrip())
                if not quiet:
                    print("   ", line.rstrip(), flush=True)
            tail = (tail + [line])[-40:]
        rc = proc.wait()
        end = time.time()
        sampler.done.set()
        sampler.join()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({rc}):\n{''.join(tail)}")
    return {"seconds": end - t0, "after_ray_seconds": end - (started or t0), "lines": lines, **sampler.peaks()}


def pipeline(name: str) -> list[str]:
    """The start of a command line running pipelines/<name>.py of this checkout with this interpreter."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [sys.executable, os.path.join(root, "pipelines", f"{name}.py")]
