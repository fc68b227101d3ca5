"""Benchmark of `prepare_data.py csv` (Ray Data): rows/s and the peak memory of every process, at two sizes.

  python pipelines/benchmark_convert.py [--rows 2000000,20000000] [--split time] [--out runs/bench-convert]

For each size, a synthetic raw log is written as Parquet files of 1M rows (string user and item
ids, a domain, a timestamp, a float and an int column, a 0/1 label; generated in 1M-row chunks, so
the generator's memory does not grow with the size). The same users and items (--users, --items,
Zipf-like) appear at both sizes, so the vocabularies are the same size and the memory ratio shows
whether memory grows with the input. The converter then runs in its own process with its own
embedded Ray (RAY_TMPDIR is private to the run, so it never joins another Ray on the machine),
while this script samples VmRSS of that process and all its descendants every 0.2 s.

Reports per size: rows/s (conversion only, from the converter's "[ray] started" line to its exit,
and end to end), the peak RSS per process kind (driver, raylet, gcs, Ray workers: the largest one,
other Ray processes) and of all of them together, as VmRSS and as RssAnon (VmRSS counts the
object store's shared pages in every process that maps them; RssAnon is the process's own
memory). Ratios large/small must be <= 1.3 (memory independent of the input size). Writes OUT/benchmark_convert.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dfei.atomic import write_json_atomic  # noqa: E402
from dfei.bench.suite import target  # noqa: E402

CHUNK = 1_000_000
KINDS = ("driver", "raylet", "gcs", "ray workers", "other ray")


def generate(out: str, rows: int, users: int, items: int, seed: int = 0) -> None:
    """rows of raw log as Parquet files of CHUNK rows under out/ (one chunk in memory at a time)."""
    os.makedirs(out, exist_ok=True)
    user_ids = pa.array([f"u{i:07d}" for i in range(users)])
    item_ids = pa.array([f"item-{i:06d}" for i in range(items)])
    domains = pa.array(["feed", "search", "mall", "live", "video", "ads"])
    start = np.datetime64("2024-01-01T00:00:00", "s").astype(np.int64)
    for c, lo in enumerate(range(0, rows, CHUNK)):
        n = min(CHUNK, rows - lo)
        rng = np.random.default_rng([seed, c])
        u = (rng.pareto(1.2, n) * users / 50).astype(np.int64) % users  # heavy-tailed activity
        i = (rng.pareto(1.1, n) * items / 100).astype(np.int64) % items  # and popularity
        d = rng.choice(6, n, p=[0.35, 0.25, 0.15, 0.1, 0.1, 0.05])
        ts = start + np.sort(rng.integers(0, 30 * 86400, n))  # 30 days, seconds; many equal times
        price = np.round(rng.lognormal(3, 1, n), 2)
        position = rng.integers(1, 50, n)
        label = (rng.random(n) < 0.05 + 0.1 * (i % 7 == 0) + 0.02 * d / 5).astype(np.int8)
        table = pa.table({
            "user_id": user_ids.take(pa.array(u)), "item_id": item_ids.take(pa.array(i)),
            "domain": domains.take(pa.array(d)), "ts": pa.array(ts, pa.timestamp("s")),
            "price": price, "position": position, "click": label})
        pq.write_table(table, os.path.join(out, f"part-{c:05d}.parquet"), row_group_size=1 << 17)


def _children() -> dict[int, list[int]]:
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
    """(VmRSS, RssAnon) in kB: RssAnon leaves out the object store's shared pages (RssShmem)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS:", "RssAnon:")))
    except OSError:
        return None
    return int(fields.get("VmRSS", "0 kB").split()[0]), int(fields.get("RssAnon", "0 kB").split()[0])


def _title(pid: int) -> str:
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
    """Peak VmRSS of `root` and its descendants, sampled every `interval` s."""

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
            tree, todo, total, total_anon = _children(), [self.root], 0, 0
            seen = set()
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
            time.sleep(self.interval)

    def by_kind(self) -> dict[str, dict]:
        out = {}
        for k in KINDS:
            pids = [p for p in self.peak_kb if self.kind.get(p) == k]
            top = max(pids, key=lambda p: self.peak_kb[p], default=None)
            out[k] = {"processes": len(pids), "peak_rss_mb": self.peak_kb[top] / 1024 if pids else 0,
                      "peak_rss_anon_mb": max((self.peak_anon_kb[p] for p in pids), default=0) / 1024,
                      "largest": self.title.get(top, "") if pids else "",
                      "largest_by_task": {t: kb // 1024 for t, kb in self.by_title.get(top, {}).items()}}
        return out


def convert(raw: str, out: str, split: str) -> dict:
    ray_tmp = tempfile.mkdtemp(prefix="rbc-", dir="/tmp")  # short: Ray's socket paths are limited
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, os.path.join(ROOT, "pipelines", "prepare_data.py"), "csv", "--input",
           os.path.join(raw, "*.parquet"), "--domain-col", "domain", "--label-col", "click", "--user-col", "user_id",
           "--time-col", "ts", "--numeric", "price,position", "--split", split, "--out", out, "--overwrite"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sampler = Sampler(proc.pid)
    sampler.start()
    started, tail = None, []
    for line in proc.stdout:
        if line.startswith("[ray] started") and started is None:
            started = time.time()
        if line.startswith(("[convert]", "[ray]", "error")):
            print("   ", line.rstrip(), flush=True)
        tail = (tail + [line])[-40:]
    rc = proc.wait()
    end = time.time()
    sampler.done.set()
    sampler.join()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if rc != 0:
        raise RuntimeError(f"conversion failed ({rc}):\n{''.join(tail)}")
    return {"seconds": end - t0, "convert_seconds": end - (started or t0), "by_kind": sampler.by_kind(),
            "peak_total_mb": sampler.peak_total_kb / 1024, "peak_total_anon_mb": sampler.peak_total_anon_kb / 1024,
            "peak_process_mb": max(sampler.peak_kb.values(), default=0) / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="2000000,20000000", help="two input sizes (default 2M,20M)")
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--split", default="time", choices=["random", "random-user", "time"],
                   help="default time: the most passes (exact cut points)")
    p.add_argument("--out", default="runs/bench-convert")
    p.add_argument("--keep", action="store_true", help="keep the raw logs and datasets (default: removed)")
    args = p.parse_args(argv)
    sizes = [int(float(s)) for s in args.rows.split(",")]
    os.makedirs(args.out, exist_ok=True)
    results: dict = {"split": args.split, "users": args.users, "items": args.items, "sizes": {}}
    for rows in sizes:
        raw, ds = os.path.join(args.out, f"raw-{rows}"), os.path.join(args.out, f"ds-{rows}")
        t0 = time.time()
        generate(raw, rows, args.users, args.items)
        gen = time.time() - t0
        print(f"[bench] {rows:,} rows generated in {gen:.0f}s; converting", flush=True)
        r = convert(raw, ds, args.split)
        spec = json.load(open(os.path.join(ds, "dataset.json")))
        r.update(rows=rows, generate_seconds=gen, rows_per_s=rows / r["convert_seconds"],
                 rows_per_s_end_to_end=rows / r["seconds"],
                 cardinalities={f["name"]: f["cardinality"] for f in spec["features"]})
        results["sizes"][str(rows)] = r
        kinds = ", ".join(f"{k} {v['peak_rss_mb']:,.0f} MB (anon {v['peak_rss_anon_mb']:,.0f})"
                          + (f" (x{v['processes']}, largest: {v['largest']!r})" if v["processes"] > 1 else "")
                          for k, v in r["by_kind"].items() if v["processes"])
        print(f"[bench] {rows:,} rows: {r['rows_per_s']:,.0f} rows/s ({r['convert_seconds']:.0f}s after Ray start, "
              f"{r['seconds']:.0f}s end to end); peak RSS {kinds}; all processes together "
              f"{r['peak_total_mb']:,.0f} MB; "
              f"vocabularies {r['cardinalities']}", flush=True)
        if not args.keep:
            shutil.rmtree(raw, ignore_errors=True)
            shutil.rmtree(ds, ignore_errors=True)
    lo, hi = results["sizes"][str(sizes[0])], results["sizes"][str(sizes[-1])]
    ratios = {k: hi["by_kind"][k]["peak_rss_mb"] / lo["by_kind"][k]["peak_rss_mb"]
              for k in KINDS if lo["by_kind"][k]["peak_rss_mb"]}
    ratios["largest process"] = hi["peak_process_mb"] / lo["peak_process_mb"]
    ratios["all processes together"] = hi["peak_total_mb"] / lo["peak_total_mb"]
    ratios.update({f"{k}, anon": hi["by_kind"][k]["peak_rss_anon_mb"] / lo["by_kind"][k]["peak_rss_anon_mb"]
                   for k in KINDS if lo["by_kind"][k]["peak_rss_anon_mb"]})
    ratios["all processes together, anon"] = hi["peak_total_anon_mb"] / lo["peak_total_anon_mb"]
    results["peak_rss_ratio"] = ratios
    for k, v in ratios.items():
        print(f"[bench] peak RSS {k}, {sizes[-1]:,} / {sizes[0]:,} rows: {v:.2f} {target(v, '<=', 1.3, '1.3')}")
    write_json_atomic(os.path.join(args.out, "benchmark_convert.json"), results)
    print(f"[bench] figures in {os.path.join(args.out, 'benchmark_convert.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
