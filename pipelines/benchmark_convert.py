"""Benchmark of `prepare_data.py csv` (Ray Data): rows/s and the peak memory of every process, at two sizes.

  python pipelines/benchmark_convert.py [--rows 2000000,20000000] [--split time] [--out runs/bench-convert]
  python pipelines/benchmark_convert.py --rows 2000000,20000000 --users 16000000 --encode  # + encoders study

For each size, a synthetic raw log is written as Parquet files of 1M rows (string user and item
ids, a domain, a timestamp, a float and an int column, a 0/1 label; generated in 1M-row chunks, so
the generator's memory does not grow with the size). The same users and items (--users, --items;
items Zipf-like, users --user-draw) appear at both sizes, so with the default pareto draw the
vocabularies differ little and the memory ratio shows whether memory grows with the input. The
converter then runs in its own process with its own embedded Ray (RAY_TMPDIR is private to the
run, so it never joins another Ray on the machine), while this script samples VmRSS of that process
and all its descendants every 0.2 s (dfei/bench/process_memory.py).

Reports per size: rows/s (conversion only, from the converter's "[ray] started" line to its exit,
and end to end), the peak RSS per process kind (driver, raylet, gcs, Ray workers: the largest one,
other Ray processes) and of all of them together, as VmRSS and as RssAnon (VmRSS counts the
object store's shared pages in every process that maps them; RssAnon is the process's own
memory). Ratios large/small must be <= 1.3 (memory independent of the input size).

--encode adds the encoders study at the larger size (dfei/bench/convert.py encoders_study): the
same raw log converted again with `--encoders-from` the fitted dataset (rows/s and peak RSS per
kind against the fit's), a tiny checkpoint trained on the fitted dataset (not timed), and scoring
the raw log with `predict.py --input` against scoring the fitted dataset's train split with
`predict.py --data` (rows/s, peak RSS). With --encode users are drawn uniformly by default, so that
--users 16000000 gives ~10^7 distinct users in the train split of 20M rows (a 10^7-value vocabulary);
the vocabulary then grows with the input (~1.5M users at 2M rows), so the fit study's memory ratios
of such a run include the vocabulary's growth (the default pareto run measures the input size alone).
Writes OUT/benchmark_convert.json (the encoders study under "encoders").
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfei.atomic import write_json_atomic  # noqa: E402
from dfei.bench.convert import USER_DRAWS, encoders_study, fit_study  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="2000000,20000000", help="two input sizes (default 2M,20M)")
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--user-draw", choices=USER_DRAWS, help=(
        "pareto: heavy-tailed activity (few distinct users); uniform: every user equally likely (~U(1-exp(-n/U)) "
        "distinct in n rows). Default pareto, uniform with --encode"))
    p.add_argument("--split", default="time", choices=["random", "random-user", "time"],
                   help="default time: the most passes (exact cut points)")
    p.add_argument("--encode", action="store_true", help="also the encoders study at the larger size")
    p.add_argument("--out", default="runs/bench-convert")
    p.add_argument("--keep", action="store_true", help="keep the raw logs and datasets (default: removed)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(float(s)) for s in args.rows.split(",")]
    user_draw = args.user_draw or ("uniform" if args.encode else "pareto")
    path = os.path.join(args.out, "benchmark_convert.json")
    os.makedirs(args.out, exist_ok=True)
    results = fit_study(args.out, sizes, args.users, args.items, args.split, user_draw, args.keep,
                        keep_largest=args.encode)
    write_json_atomic(path, results)  # the fit study's figures survive a failure of the encoders study
    if args.encode:
        rows = max(sizes)
        results["encoders"] = encoders_study(args.out, rows, args.split, results["sizes"][str(rows)], args.users,
                                             user_draw, args.keep)
        write_json_atomic(path, results)
    print(f"[bench] figures in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
