"""Data benchmarks: generation speed and memory at two scales, and training memory when streaming.

  python pipelines/benchmark_data.py [--profile industrial] [--scales 0.01,0.1] [--out runs/bench-data]

Prints a table and writes benchmark_data.json. Memory figures are peak RSS: for generation the
largest process (driver or pool worker, from getrusage of the finished children), for training
rank 0's worker process. Ratios compare the two scales measured in the same run: memory should
not grow with the data (target: larger/smaller <= 1.3).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dfei.atomic import write_json_atomic  # noqa: E402
from dfei.bench.suite import target  # noqa: E402

PEAK = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def _run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of the largest process `cmd` started."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    kb = int(proc.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return time.time() - t0, kb / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="industrial", choices=["industrial", "public"])
    p.add_argument("--scales", default="0.01,0.1")
    p.add_argument("--out", default="runs/bench-data", help="writes OUT/benchmark_data.json (default runs/bench-data)")
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args(argv)
    scales = [float(s) for s in args.scales.split(",")]
    os.makedirs(args.out, exist_ok=True)
    results: dict = {"profile": args.profile, "scales": scales, "generation": {}, "training": {}}
    for scale in scales:
        data = os.path.join(args.out, f"{args.profile}-s{scale:g}")
        seconds, rss = _run([sys.executable, os.path.join(ROOT, "pipelines", "prepare_data.py"), "synthetic",
                             "--profile", args.profile, "--scale", str(scale), "--out", data, "--overwrite"])
        with open(os.path.join(data, "dataset.json")) as f:
            rows = sum(sum(v.values()) for v in json.load(f)["row_counts"].values())
        results["generation"][str(scale)] = {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                                             "peak_rss_mb": rss}
        print(f"generate x{scale}: {rows:,} rows in {seconds:.1f}s ({rows / seconds:,.0f} rows/s), peak RSS {rss:.0f} MB")
        if not args.skip_training:
            run = os.path.join(args.out, f"train-s{scale:g}")
            _run([sys.executable, os.path.join(ROOT, "pipelines", "train.py"), "--data", data, "--epochs", "1",
                  "--out", run])
            with open(os.path.join(run, "metrics.json")) as f:
                m = json.load(f)
            results["training"][str(scale)] = {"train_rows": m["history"][0]["samples"],
                                               "samples_per_s": m["timings"]["train_samples_per_s"],
                                               "worker_peak_rss_mb": m["timings"]["worker_peak_rss_mb"]}
            print(f"train 1 epoch x{scale}: {m['history'][0]['samples']:,} samples, "
                  f"{m['timings']['train_samples_per_s']:,.0f} samples/s, worker peak RSS "
                  f"{m['timings']['worker_peak_rss_mb']:.0f} MB")
    lo, hi = str(scales[0]), str(scales[-1])
    results["generation_rss_ratio"] = results["generation"][hi]["peak_rss_mb"] / results["generation"][lo]["peak_rss_mb"]
    print(f"generation peak RSS x{hi} / x{lo}: {results['generation_rss_ratio']:.2f} "
          f"{target(results['generation_rss_ratio'], '<=', 1.3, '1.3')}")
    if results["training"]:
        results["training_rss_ratio"] = (results["training"][hi]["worker_peak_rss_mb"]
                                         / results["training"][lo]["worker_peak_rss_mb"])
        print(f"training worker peak RSS x{hi} / x{lo}: {results['training_rss_ratio']:.2f} "
              f"{target(results['training_rss_ratio'], '<=', 1.3, '1.3')}")
    write_json_atomic(os.path.join(args.out, "benchmark_data.json"), results)
    print(f"[bench] figures in {os.path.join(args.out, 'benchmark_data.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
